//! A throwaway OCI registry for the benches: Debian's `docker-registry` (the CNCF
//! distribution server, installed by `scripts/setup.sh`) serving plain HTTP on a loopback
//! port, its storage in a temporary directory. The process is killed and reaped when the
//! [`Registry`] drops, and runs under `setpriv --pdeathsig KILL`, so it also dies when the
//! bench is killed (no `unsafe` `pre_exec` needed).
//!
//! Hand-written rather than shared with `tests/support/registry.rs`: a bench cannot import
//! the test support module, and this one needs neither the proxy nor the storage paths.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `scripts/setup.sh` installs the registry.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A running registry on `127.0.0.1:port`.
pub struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts the registry and waits (at most 30 s) until `GET /v2/` answers 200.
    pub fn start() -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: run scripts/setup.sh"
        );
        let dir = tempfile::Builder::new()
            .prefix("skillgate-bench-registry")
            .tempdir()
            .unwrap();
        // A port the kernel just handed out; the registry binds it next.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let storage = dir.path().join("storage");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", REGISTRY_BIN, "serve"])
            .arg(&config)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut registry = Registry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = registry.child.try_wait().unwrap() {
                panic!("docker-registry exited ({status}): {}", registry.log());
            }
            if get(port, "/v2/", "*/*", &mut std::io::sink()).is_ok_and(|(status, _)| status == 200)
            {
                return registry;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer: {}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One plain HTTP/1.1 `GET path` on its own loopback connection (`Connection: close`),
/// with `Accept: accept`: returns the status and the body's length; the body is read in
/// 256 KiB pieces and written to `body_to` (`std::io::sink()` discards it). The body must
/// be exactly `Content-Length` bytes when the head gives one.
pub fn get(
    port: u16,
    path: &str,
    accept: &str,
    body_to: &mut dyn Write,
) -> std::io::Result<(u16, u64)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = vec![0u8; 256 * 1024];
    // Read until the end of the head; what follows it in `buf` is the body's start.
    let mut have = 0;
    let head_end = loop {
        let n = s.read(&mut buf[have..])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        have += n;
        if let Some(at) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        assert!(have < buf.len(), "response head over 256 KiB");
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    let length: Option<u64> = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    });
    body_to.write_all(&buf[head_end..have])?;
    let mut body = (have - head_end) as u64;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        body_to.write_all(&buf[..n])?;
        body += n as u64;
    }
    if let Some(expected) = length {
        assert_eq!(body, expected, "GET {path}: body length");
    }
    Ok((status, body))
}
