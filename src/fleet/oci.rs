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
//! the pull with an error rather than hanging it. Authentication: anonymous only (a
//! registry that wants a token for reads is refused by the registry's own 401).

use std::future::Future;
use std::io::Write;
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
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
    registry: String,
    repository: String,
}

impl Remote {
    /// A client for `registry`/`repository` (plain HTTP for a loopback registry only).
    pub(crate) fn new(registry: &str, repository: &str) -> Self {
        let protocol = if is_loopback_host(registry) {
            ClientProtocol::HttpsExcept(vec![registry.to_owned()])
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            // Nothing here follows an image index to a platform's manifest.
            platform_resolver: None,
            ..ClientConfig::default()
        };
        Remote {
            client: oci_client::Client::new(config),
            registry: registry.to_owned(),
            repository: repository.to_owned(),
        }
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

    /// The manifest digest a tag (or digest) names now, as the registry says.
    pub(crate) async fn resolve(&self, version: &Selector) -> Result<String, FleetError> {
        let digest = self
            .client
            .fetch_manifest_digest(&self.reference(version), &RegistryAuth::Anonymous)
            .await
            .map_err(|e| self.failed("resolve tag", e))?;
        if !is_sha256_digest(&digest) {
            return Err(self.failed(
                "resolve tag",
                format!("the registry answered a digest that is not sha256: {digest:?}"),
            ));
        }
        Ok(digest)
    }

    /// The manifest `digest` names: its bytes, checked to hash to `digest` and to hold at
    /// most `bound` bytes.
    ///
    /// `oci-client` 0.18 reads a manifest response whole before handing it over (no
    /// streaming manifest call), so `bound` is checked on what was read; every blob the
    /// manifest references is bounded before it is fetched and while it streams.
    pub(crate) async fn manifest(&self, digest: &str, bound: u64) -> Result<Vec<u8>, FleetError> {
        let reference = self.reference(&Selector::Digest(digest.to_owned()));
        let (bytes, _) = self
            .client
            .pull_manifest_raw(&reference, &RegistryAuth::Anonymous, &[OCI_MANIFEST])
            .await
            .map_err(|e| match e {
                OciDistributionError::DigestError(DigestError::VerificationError {
                    expected,
                    actual,
                }) => FleetError::ManifestDigest { expected, actual },
                e => self.failed("fetch manifest", e),
            })?;
        check_manifest(digest, &bytes, bound)?;
        Ok(bytes.to_vec())
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
