//! The distribution client: `oci-client` (rustls, its default) speaking to one repository,
//! behind a synchronous API.
//!
//! `oci-client` is async. Every call here runs on a tokio runtime of its own, built for
//! the call on a dedicated thread and dropped with it, so a host may call `fleet::pull`
//! from a plain thread or from inside its own tokio runtime alike (blocking the calling
//! thread until the transfer ends; nesting `block_on` in a runtime would panic).
//!
//! Plain HTTP is spoken only to a loopback registry (`127.0.0.1`, `localhost`, `[::1]`,
//! any port); every other registry is HTTPS. Every request has a deadline: connecting
//! [`CONNECT_TIMEOUT`], and each read [`READ_TIMEOUT`], so a registry that stalls ends
//! the pull with an error rather than hanging it. Authentication: anonymous only, with
//! the registry's anonymous token handshake where it asks for one (done by `oci-client`).
//!
//! # The two manifest requests made with `reqwest` directly
//!
//! `oci-client` 0.18 reads a manifest response whole before it hands it over
//! (`pull_manifest_raw`, and the GET that `fetch_manifest_digest` falls back to when a
//! registry sends no `Docker-Content-Digest`), so a hostile registry could make a pull
//! buffer any amount of memory before the size limit is looked at. The manifest HEAD and
//! GET are therefore made here, with `reqwest` — the HTTP client `oci-client` itself uses,
//! built with the same timeouts and the same HTTPS rule — and the body is read chunk by
//! chunk and refused as soon as it passes the bound (or at once, when its declared
//! `Content-Length` does). The token handshake for them is still `oci-client`'s
//! ([`oci_client::Client::auth`]); blobs and every push stay with `oci-client`, which
//! streams them. No HTTP is hand-written: these are two ordinary `reqwest` requests to
//! the distribution API's manifest URL.

use std::future::Future;
use std::io::Write;
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::RegistryOperation;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use reqwest::header::ACCEPT;
use sha2::{Digest as _, Sha256};

use crate::error::FleetError;
use crate::fleet::artifact::{OCI_MANIFEST, hex};
use crate::fleet::reference::{Selector, is_loopback_host, is_sha256_digest};

/// How long connecting to a registry may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one read from a registry may wait for bytes.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `make()`'s future to completion on a runtime of its own, on a thread of its own.
pub(crate) fn on_own_runtime<T, F, Fut>(make: F) -> Result<T, FleetError>
where
    T: Send,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<T, FleetError>>,
{
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("skillgate-oci".into())
            .spawn_scoped(scope, || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| FleetError::Runtime {
                        detail: format!("cannot build a tokio runtime: {e}"),
                    })?;
                runtime.block_on(make())
            })
            .map_err(|e| FleetError::Runtime {
                detail: format!("cannot start a thread: {e}"),
            })?;
        worker.join().unwrap_or_else(|_| {
            Err(FleetError::Runtime {
                detail: "the client thread panicked".into(),
            })
        })
    })
}

/// One repository of one registry.
pub(crate) struct Remote {
    client: oci_client::Client,
    /// For the manifest HEAD and GET alone (see the module doc).
    http: reqwest::Client,
    scheme: &'static str,
    registry: String,
    repository: String,
}

/// The header in which a registry names the digest of the manifest it serves.
const CONTENT_DIGEST: &str = "Docker-Content-Digest";

impl Remote {
    /// A client for `registry`/`repository` (plain HTTP for a loopback registry only).
    pub(crate) fn new(registry: &str, repository: &str) -> Result<Self, FleetError> {
        let loopback = is_loopback_host(registry);
        let protocol = if loopback {
            ClientProtocol::HttpsExcept(vec![registry.to_owned()])
        } else {
            ClientProtocol::Https
        };
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .https_only(!loopback)
            .build()
            .map_err(|e| FleetError::Registry {
                registry: registry.to_owned(),
                step: "start HTTP client",
                detail: e.to_string(),
            })?;
        let config = ClientConfig {
            protocol,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            // Nothing here follows an image index to a platform's manifest.
            platform_resolver: None,
            ..ClientConfig::default()
        };
        Ok(Remote {
            client: oci_client::Client::new(config),
            http,
            scheme: if loopback { "http" } else { "https" },
            registry: registry.to_owned(),
            repository: repository.to_owned(),
        })
    }

    /// The registry, for messages.
    pub(crate) fn registry(&self) -> &str {
        &self.registry
    }

    fn reference(&self, version: &Selector) -> oci_client::Reference {
        match version {
            Selector::Tag(t) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                t.clone(),
            ),
            Selector::Digest(d) => oci_client::Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                d.clone(),
            ),
        }
    }

    fn failed(&self, step: &'static str, e: impl std::fmt::Display) -> FleetError {
        FleetError::Registry {
            registry: self.registry.clone(),
            step,
            detail: e.to_string(),
        }
    }

    /// The distribution API's URL of the manifest `reference` names.
    fn manifest_url(&self, reference: &oci_client::Reference) -> String {
        let name = reference
            .digest()
            .or_else(|| reference.tag())
            .unwrap_or("latest");
        format!(
            "{}://{}/v2/{}/manifests/{name}",
            self.scheme,
            reference.resolve_registry(),
            reference.repository(),
        )
    }

    /// A manifest request to `reference`, with the anonymous pull token the registry asks
    /// for (if it asks for one), sent.
    async fn send_manifest_request(
        &self,
        method: reqwest::Method,
        reference: &oci_client::Reference,
        step: &'static str,
    ) -> Result<reqwest::Response, FleetError> {
        let token = self
            .client
            .auth(reference, &RegistryAuth::Anonymous, RegistryOperation::Pull)
            .await
            .map_err(|e| self.failed(step, e))?;
        let mut request = self
            .http
            .request(method, self.manifest_url(reference))
            .header(ACCEPT, OCI_MANIFEST);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| self.failed(step, e))?;
        let status = response.status();
        if !status.is_success() {
            // The error body is not read: it is as unbounded as any other.
            return Err(self.failed(step, format!("the registry answered {status}")));
        }
        Ok(response)
    }

    /// The body of the manifest `reference` names, refused as soon as it is known to be
    /// longer than `bound`: from its `Content-Length`, or from the bytes read so far
    /// (never more than `bound` plus one chunk). `named` names it in that error.
    async fn bounded_manifest(
        &self,
        reference: &oci_client::Reference,
        named: &str,
        bound: u64,
    ) -> Result<Vec<u8>, FleetError> {
        let too_large = |size| FleetError::ManifestTooLarge {
            digest: named.to_owned(),
            size,
            limit: bound,
        };
        let mut response = self
            .send_manifest_request(reqwest::Method::GET, reference, "fetch manifest")
            .await?;
        if let Some(declared) = response.content_length().filter(|n| *n > bound) {
            return Err(too_large(declared));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.failed("fetch manifest", e))?
        {
            let size = (body.len() as u64).saturating_add(chunk.len() as u64);
            if size > bound {
                return Err(too_large(size));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The manifest digest a tag (or digest) names now, as the registry says: its
    /// `Docker-Content-Digest` answer to a HEAD, or, from a registry that sends none, the
    /// SHA-256 of the manifest it serves (read under `bound`).
    pub(crate) async fn resolve(
        &self,
        version: &Selector,
        bound: u64,
    ) -> Result<String, FleetError> {
        let reference = self.reference(version);
        let response = self
            .send_manifest_request(reqwest::Method::HEAD, &reference, "resolve tag")
            .await?;
        let named = response
            .headers()
            .get(CONTENT_DIGEST)
            .map(|v| v.to_str().map(str::to_owned));
        let digest = match named {
            Some(Ok(digest)) => digest,
            Some(Err(_)) => {
                return Err(self.failed(
                    "resolve tag",
                    format!("the registry's {CONTENT_DIGEST} is not text"),
                ));
            }
            None => {
                let whole = format!("{}{version}", self.repository);
                let bytes = self.bounded_manifest(&reference, &whole, bound).await?;
                format!("sha256:{}", hex(&Sha256::digest(&bytes)))
            }
        };
        if !is_sha256_digest(&digest) {
            return Err(self.failed(
                "resolve tag",
                format!("the registry answered a digest that is not sha256: {digest:?}"),
            ));
        }
        if let Selector::Digest(asked) = version
            && *asked != digest
        {
            return Err(FleetError::ManifestDigest {
                expected: asked.clone(),
                actual: digest,
            });
        }
        Ok(digest)
    }

    /// The manifest `digest` names: its bytes, read under `bound` (see
    /// [`Remote::bounded_manifest`]) and checked to hash to `digest`.
    pub(crate) async fn manifest(&self, digest: &str, bound: u64) -> Result<Vec<u8>, FleetError> {
        let reference = self.reference(&Selector::Digest(digest.to_owned()));
        let bytes = self.bounded_manifest(&reference, digest, bound).await?;
        check_manifest(digest, &bytes, bound)?;
        Ok(bytes)
    }

    /// Streams the blob `digest` (declared `size` bytes) into `out`, hashing as it goes and
    /// stopping one chunk past `size`. `file` names it in errors.
    pub(crate) async fn blob_to(
        &self,
        file: &str,
        digest: &str,
        size: u64,
        out: &mut impl Write,
    ) -> Result<(), FleetError> {
        let reference = self.reference(&Selector::Digest(digest.to_owned()));
        let descriptor = OciDescriptor {
            digest: digest.to_owned(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        let mut stream = self
            .client
            .pull_blob_stream(&reference, &descriptor)
            .await
            .map_err(|e| self.failed("fetch blob", e))?;
        if let Some(announced) = stream.content_length.filter(|n| *n > size) {
            return Err(FleetError::BlobLength {
                file: file.to_owned(),
                expected: size,
                actual: announced,
            });
        }
        let mut sink = HashingSink::new(file, digest, size);
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => sink.write(&chunk, out)?,
                // `oci-client` checks the digest itself and reports a mismatch as the
                // stream's last item: the sink names it with its own hash first.
                // A transfer cut short is the registry's failure, not a refusal.
                Err(e) => {
                    if sink.complete() {
                        sink.finish()?;
                    }
                    return Err(self.failed("fetch blob", e));
                }
            }
        }
        sink.finish()
    }

    /// Pushes one blob (skipped when the registry has it already).
    pub(crate) async fn push_blob(&self, bytes: &[u8], digest: &str) -> Result<(), FleetError> {
        let reference = self.reference(&Selector::Digest(digest.to_owned()));
        let present = self
            .client
            .blob_exists(&reference, digest)
            .await
            .map_err(|e| self.failed("check blob", e))?;
        if !present {
            self.client
                .push_blob(&reference, bytes.to_vec(), digest)
                .await
                .map_err(|e| self.failed("push blob", e))?;
        }
        Ok(())
    }

    /// Pushes manifest bytes under `version` (a tag, or the manifest's own digest).
    pub(crate) async fn push_manifest(
        &self,
        version: &Selector,
        bytes: &[u8],
    ) -> Result<(), FleetError> {
        self.client
            .push_manifest_raw(
                &self.reference(version),
                bytes.to_vec(),
                http::HeaderValue::from_static(OCI_MANIFEST),
            )
            .await
            .map_err(|e| self.failed("push manifest", e))?;
        Ok(())
    }
}

/// Checks manifest bytes against their digest and the bound.
pub(crate) fn check_manifest(digest: &str, bytes: &[u8], bound: u64) -> Result<(), FleetError> {
    let len = bytes.len() as u64;
    if len > bound {
        return Err(FleetError::ManifestTooLarge {
            digest: digest.to_owned(),
            size: len,
            limit: bound,
        });
    }
    let actual = format!("sha256:{}", hex(&Sha256::digest(bytes)));
    if actual != digest {
        return Err(FleetError::ManifestDigest {
            expected: digest.to_owned(),
            actual,
        });
    }
    Ok(())
}

/// Counts and hashes a blob's bytes on their way to a file.
pub(crate) struct HashingSink<'a> {
    file: &'a str,
    digest: &'a str,
    size: u64,
    read: u64,
    hasher: Sha256,
}

impl<'a> HashingSink<'a> {
    pub(crate) fn new(file: &'a str, digest: &'a str, size: u64) -> Self {
        HashingSink {
            file,
            digest,
            size,
            read: 0,
            hasher: Sha256::new(),
        }
    }

    /// Takes one chunk: refused once more than the declared size arrived.
    pub(crate) fn write(&mut self, chunk: &[u8], out: &mut impl Write) -> Result<(), FleetError> {
        self.read = self.read.saturating_add(chunk.len() as u64);
        if self.read > self.size {
            return Err(FleetError::BlobLength {
                file: self.file.to_owned(),
                expected: self.size,
                actual: self.read,
            });
        }
        self.hasher.update(chunk);
        out.write_all(chunk).map_err(|source| FleetError::Staging {
            path: self.file.into(),
            source,
        })
    }

    /// Whether the declared size arrived.
    pub(crate) fn complete(&self) -> bool {
        self.read == self.size
    }

    /// At the end: the size and the digest must be the declared ones.
    pub(crate) fn finish(&mut self) -> Result<(), FleetError> {
        if self.read != self.size {
            return Err(FleetError::BlobLength {
                file: self.file.to_owned(),
                expected: self.size,
                actual: self.read,
            });
        }
        let actual = format!(
            "sha256:{}",
            hex(&std::mem::take(&mut self.hasher).finalize())
        );
        if actual != self.digest {
            return Err(FleetError::BlobDigest {
                file: self.file.to_owned(),
                expected: self.digest.to_owned(),
                actual,
            });
        }
        Ok(())
    }
}
