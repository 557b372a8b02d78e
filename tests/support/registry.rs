//! A real OCI registry for the tests: Debian's `docker-registry` (the CNCF distribution
//! server, installed by `scripts/setup.sh`), started on a free loopback port with its
//! storage in a temporary directory, and a loopback TCP proxy in front of it that counts
//! the bytes it forwards and can cut every connection after N bytes.
//!
//! The registry process is killed and reaped when its [`Registry`] drops (a panicking test
//! unwinds through that too), and it is started with `PR_SET_PDEATHSIG` = SIGKILL, so it
//! dies with the test thread that started it even if the test process is killed.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where `scripts/setup.sh` puts the registry.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// How long the registry may take to answer `/v2/` after it starts.
const START_PATIENCE: Duration = Duration::from_secs(30);

/// A running registry.
pub struct Registry {
    child: Child,
    port: u16,
    tmp: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry; panics (the test fails) when the binary is missing.
    pub fn start() -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: run scripts/setup.sh (it installs Debian's docker-registry)"
        );
        let tmp = tempfile::tempdir().unwrap();
        let storage = tmp.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        // A free port: bound then released (the registry binds it next; a clash fails the
        // start below, loudly).
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = tmp.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(tmp.path().join("registry.log")).unwrap();
        let mut command = Command::new(REGISTRY_BIN);
        command
            .arg("serve")
            .arg(&config)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        die_with_parent(&mut command);
        let child = command.spawn().unwrap();
        let mut registry = Registry { child, port, tmp };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("docker-registry exited at start ({status}): {}", self.log());
            }
            if http_status(self.port, "/v2/") == Some(200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer /v2/ within {START_PATIENCE:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("registry.log")).unwrap_or_default()
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The file holding blob `digest` (`sha256:…`) in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.tmp
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child gets SIGKILL when the thread that started it ends.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: `prctl(PR_SET_PDEATHSIG)` is async-signal-safe and touches no memory of the
    // parent; it runs in the child between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// The status code of `GET path` on the loopback port, if it answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A loopback TCP proxy to `127.0.0.1:upstream`: counts the bytes it forwards from the
/// registry to the client and, when cut, drops every connection once that count passes
/// the cut.
pub struct Proxy {
    port: u16,
    stop: Arc<AtomicBool>,
    down: Arc<AtomicU64>,
    cut_after: Arc<AtomicU64>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let down = Arc::new(AtomicU64::new(0));
        let cut_after = Arc::new(AtomicU64::new(u64::MAX));
        let (s, d, c) = (stop.clone(), down.clone(), cut_after.clone());
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (d, c) = (d.clone(), c.clone());
                std::thread::spawn(move || pump_pair(client, server, &d, &c));
            }
        });
        Proxy {
            port,
            stop,
            down,
            cut_after,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Bytes forwarded from the registry so far.
    pub fn bytes_down(&self) -> u64 {
        self.down.load(Ordering::SeqCst)
    }

    /// From now on, drop every connection once `n` more bytes came down; `None` lifts it.
    pub fn cut_after(&self, n: Option<u64>) {
        let at = n.map_or(u64::MAX, |n| self.bytes_down() + n);
        self.cut_after.store(at, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn pump_pair(client: TcpStream, server: TcpStream, down: &AtomicU64, cut: &AtomicU64) {
    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = std::thread::spawn(move || {
        let (mut from, mut to) = (c2, s2);
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let (mut from, mut to) = (server, client);
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        let before = down.fetch_add(n as u64, Ordering::SeqCst);
        let limit = cut.load(Ordering::SeqCst);
        if before + n as u64 > limit {
            let keep = limit.saturating_sub(before) as usize;
            let _ = to.write_all(&buf[..keep.min(n)]);
            break;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
    let _ = up.join();
}

/// How a [`ManifestFlood`] serves its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// The GET declares the body's length in `Content-Length`.
    Declared,
    /// The GET declares no length: the body runs until the connection closes.
    Undeclared,
    /// As `Undeclared`, and the HEAD names no `Docker-Content-Digest`, so resolving a tag
    /// means reading the manifest itself.
    NoDigestHeader,
}

/// The digest a [`ManifestFlood`]'s HEAD names.
pub const FLOOD_DIGEST: &str =
    "sha256:abababababababababababababababababababababababababababababababab";

/// A hostile registry on a loopback port: `/v2/` answers 200, and every manifest it is
/// asked for is `len` bytes of whitespace, served as [`Flood`] says. It counts the body
/// bytes it manages to hand to the kernel; a client that stops reading and closes makes
/// its writes fail, which ends them.
pub struct ManifestFlood {
    port: u16,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    handlers: Arc<std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl ManifestFlood {
    pub fn start(len: u64, how: Flood) -> ManifestFlood {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let handlers = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, n, h) = (stop.clone(), sent.clone(), handlers.clone());
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let n = n.clone();
                let handler = std::thread::spawn(move || flood_connection(client, len, how, &n));
                h.lock().unwrap().push(handler);
            }
        });
        ManifestFlood {
            port,
            stop,
            sent,
            handlers,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The manifest body bytes written so far, once every connection has ended (each
    /// ends when its client closes, or after [`FLOOD_PATIENCE`] without progress).
    pub fn settled_bytes_sent(&self) -> u64 {
        let done: Vec<_> = std::mem::take(&mut *self.handlers.lock().unwrap());
        for handler in done {
            handler.join().unwrap();
        }
        self.sent.load(Ordering::SeqCst)
    }
}

impl Drop for ManifestFlood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// How long a [`ManifestFlood`] connection waits on a client that neither reads nor closes.
pub const FLOOD_PATIENCE: Duration = Duration::from_secs(20);

/// Serves the requests of one keep-alive connection until the client closes it.
fn flood_connection(mut stream: TcpStream, len: u64, how: Flood, sent: &AtomicU64) {
    stream.set_read_timeout(Some(FLOOD_PATIENCE)).unwrap();
    stream.set_write_timeout(Some(FLOOD_PATIENCE)).unwrap();
    loop {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) if head.len() < 64 * 1024 => head.push(byte[0]),
                _ => return,
            }
        }
        let head = String::from_utf8_lossy(&head);
        let mut words = head.split_whitespace();
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let manifest = path.contains("/manifests/");
        let answer = match (method, manifest) {
            ("GET", false) => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_owned(),
            ("HEAD", true) => {
                let digest = if how == Flood::NoDigestHeader {
                    String::new()
                } else {
                    format!("Docker-Content-Digest: {FLOOD_DIGEST}\r\n")
                };
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n\
                     {digest}Content-Length: {len}\r\n\r\n"
                )
            }
            ("GET", true) => {
                let length = if how == Flood::Declared {
                    format!("Content-Length: {len}\r\n")
                } else {
                    "Connection: close\r\n".to_owned()
                };
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n\
                     {length}\r\n"
                )
            }
            _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned(),
        };
        if stream.write_all(answer.as_bytes()).is_err() {
            return;
        }
        if method == "GET" && manifest {
            let chunk = [b' '; 64 * 1024];
            let mut left = len;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                if stream.write_all(&chunk[..n]).is_err() {
                    return;
                }
                sent.fetch_add(n as u64, Ordering::SeqCst);
                left -= n as u64;
            }
            if how != Flood::Declared {
                return;
            }
        }
    }
}
