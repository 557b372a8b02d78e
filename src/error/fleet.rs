//! The errors of distribution through an OCI registry (`crate::fleet`): a reference that
//! does not parse, and each step of a pull or push that refused.
//!
//! They live here, in layer 5 beside [`crate::Error`], and not in `fleet/` (layer 6):
//! [`crate::Error`] composes them, and an import may only point down the layers. A pull's
//! verification refusal carries the [`crate::Error`] the verification path returned,
//! boxed, with the [`Stage`] that refused, so a host matches the same variants it matches
//! for a local directory.

use std::path::PathBuf;

use crate::error::Error;
use crate::pipeline::stage::Stage;

/// A plugin reference (`oci://…` or `oci-layout:…`) that does not parse. Nothing was
/// fetched.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReferenceError {
    /// Neither `oci://` nor `oci-layout:` starts the reference.
    #[error("reference does not start with `oci://` or `oci-layout:`")]
    Scheme,
    /// Longer than [`crate::fleet::MAX_REFERENCE_LEN`] bytes.
    #[error("reference is {len} bytes long, more than the {max} allowed")]
    TooLong {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The registry part (`host[:port]`) is malformed.
    #[error("registry {registry:?}: {reason}")]
    Registry {
        /// The registry part as written.
        registry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The repository path is malformed.
    #[error("repository {repository:?}: {reason}")]
    Repository {
        /// The repository as written.
        repository: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The tag is malformed.
    #[error("tag {tag:?}: must be 1 to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'")]
    Tag {
        /// The tag as written.
        tag: String,
    },
    /// The digest is not `sha256:` and 64 lowercase hex digits.
    #[error("digest {digest:?}: must be sha256: followed by 64 lowercase hex digits")]
    Digest {
        /// The digest as written.
        digest: String,
    },
    /// Neither a tag nor a digest names the release (or both do).
    #[error("reference must name exactly one of a tag (`:TAG`) or a digest (`@sha256:…`)")]
    TagOrDigest,
    /// An `oci-layout:` directory is empty or holds a NUL.
    #[error("layout directory {dir:?}: {reason}")]
    LayoutDir {
        /// The directory as written.
        dir: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A pull, push or mirror that refused or failed, naming the step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The reference does not parse.
    #[error("reference {reference:?}")]
    Reference {
        /// The reference as given.
        reference: String,
        /// Why it does not parse.
        source: ReferenceError,
    },
    /// The registry (or layout directory) could not be reached, refused a request, or the
    /// transfer broke off; `detail` is the client's message.
    #[error("registry {registry}: {step}: {detail}")]
    Registry {
        /// The registry (or layout directory) asked.
        registry: String,
        /// What was being done (`"resolve tag"`, `"fetch manifest"`, `"fetch blob"`, …).
        step: &'static str,
        /// What went wrong, as the client said it.
        detail: String,
    },
    /// The OCI manifest is larger than the bound ([`crate::fleet::manifest_bound`]).
    #[error("manifest {digest}: {size} bytes, more than the limit of {limit}")]
    ManifestTooLarge {
        /// The manifest's digest.
        digest: String,
        /// Its size as declared or read so far.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// The manifest's bytes do not hash to the digest that named them.
    #[error("manifest digest mismatch: expected {expected}, got {actual}")]
    ManifestDigest {
        /// The digest the tag resolved to, or the reference named.
        expected: String,
        /// The SHA-256 of the bytes served.
        actual: String,
    },
    /// The manifest is not a skillgate plugin artifact as `crate::fleet` writes one.
    #[error("manifest {digest}: {reason}")]
    Manifest {
        /// The manifest's digest.
        digest: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A layer's title (its file name) is refused: absolute, `..`, empty component,
    /// duplicate, or missing.
    #[error("layer {title:?}: {reason}")]
    Layer {
        /// The `org.opencontainers.image.title` annotation ("" when missing).
        title: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The manifest lists more layers than the policy lets a plugin have files.
    #[error("manifest lists {count} layers, more than the {limit} a plugin may have")]
    TooManyLayers {
        /// Layers listed.
        count: usize,
        /// Files a plugin may have (its manifest and signature file included).
        limit: usize,
    },
    /// A blob's declared size is over the policy's size limit for that file; it was not
    /// fetched.
    #[error("blob for {file:?}: {size} bytes, more than the limit of {limit}")]
    BlobTooLarge {
        /// The file it would become.
        file: String,
        /// The size declared (or, past the declaration, read).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The registry served a different number of bytes than the descriptor declared
    /// (reading stopped one byte past the declared size).
    #[error("blob for {file:?}: declared {expected} bytes, served {actual}")]
    BlobLength {
        /// The file it would become.
        file: String,
        /// The declared size.
        expected: u64,
        /// The bytes received (at most `expected + 1`).
        actual: u64,
    },
    /// A blob's bytes do not hash to its descriptor's digest.
    #[error("blob for {file:?}: digest mismatch: expected {expected}, got {actual}")]
    BlobDigest {
        /// The file it would become.
        file: String,
        /// The descriptor's digest.
        expected: String,
        /// The SHA-256 of the bytes served.
        actual: String,
    },
    /// The staged release failed the verification `skillgate verify` runs; nothing was
    /// installed. `error` is that verification's error, as for a local directory.
    #[error("staged release refused at {}: {error}", stage.name())]
    Verify {
        /// The stage that refused.
        stage: Stage,
        /// Why.
        error: Box<Error>,
    },
    /// The staging directory could not be made, written or cleaned.
    #[error("staging {}", path.display())]
    Staging {
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The verified release could not be moved into the root.
    #[error("install into {}", path.display())]
    Install {
        /// The destination.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The plugin directory to push is not a signed plugin that verifies.
    #[error("push of {}: not a signed plugin that verifies: {error}", dir.display())]
    Unsigned {
        /// The directory.
        dir: PathBuf,
        /// Why it does not verify.
        error: Box<Error>,
    },
    /// The dedicated thread that runs the registry client could not start or ended
    /// without an answer.
    #[error("registry client thread: {detail}")]
    Runtime {
        /// What failed.
        detail: String,
    },
}

impl FleetError {
    /// Whether the host's side failed (I/O, a registry that cannot be reached, a reference
    /// that does not parse) rather than a check refusing the release.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            FleetError::Reference { .. }
                | FleetError::Registry { .. }
                | FleetError::Staging { .. }
                | FleetError::Install { .. }
                | FleetError::Runtime { .. }
        )
    }
}
