//! One entry point per parser, shared by the cargo-fuzz targets in `fuzz/` and the corpus
//! replay in `tests/fuzz_corpus.rs`. Not part of the public API.
//!
//! Every function takes bytes an attacker controls (a plugin author, a plugin, a worker, or
//! whoever can write a host's policy or key files) and must return, never panic. Results are
//! discarded: the fuzzer looks for panics, hangs and memory blow-ups; the replay test checks
//! the same inputs on stable in plain `cargo test`.

use std::path::Path;

use crate::trust::keys::{PublicKey, SecretKey};
use crate::trust::signature::verify_manifest;
use crate::trust::signature_file::{SignatureFile, sign_manifest};
use crate::trust::store::TrustStore;

// The process tests' hook that starts the real worker on a descriptor they choose: an
// internal a normal build does not expose.
pub use crate::exec::host::start_worker_on;

/// Whether `data` is a valid plugin result, as `vtcode_plugin_execute` would return it (for
/// the corpus replay: a seed meant to be valid must stay valid).
pub fn is_valid_result(data: &[u8]) -> bool {
    crate::base::ffi::decode_result(data).is_ok()
}

/// Whether `data` is exactly one well-formed worker-channel frame under a `cap`-byte payload
/// limit.
pub fn is_valid_frame(data: &[u8], cap: usize) -> bool {
    crate::base::protocol::decode_frame(data, cap).is_ok()
}

/// Whether `data` is a valid signed manifest, as if its signature had verified.
pub fn is_valid_manifest(data: &[u8]) -> bool {
    crate::pipeline::manifest::fuzz_parse(data).is_ok()
}

/// `plugin.json` as if its signature had verified.
pub fn manifest(data: &[u8]) {
    let _ = crate::pipeline::manifest::fuzz_parse(data);
}

/// `plugin.json.sig`.
pub fn signature_file(data: &[u8]) {
    if let Ok(file) = SignatureFile::parse(data) {
        // What parses must serialize and parse back to the same entries.
        let again = SignatureFile::parse(file.to_json_pretty().as_bytes());
        assert!(again.is_ok_and(|a| a.entries().len() == file.entries().len()));
    }
}

/// A plugin reference (`oci://…`, `oci-layout:…`): what parses prints back to text that
/// parses to the same reference.
pub fn oci_reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = crate::fleet::reference::parse(text) {
        let again = crate::fleet::reference::parse(&parsed.to_string());
        assert!(again.is_ok_and(|a| a == parsed));
    }
}

/// A minisign-format public key file.
pub fn public_key(data: &[u8]) {
    if let Ok(key) = PublicKey::parse_minisign(data) {
        let again = PublicKey::parse_minisign(key.to_minisign_string().as_bytes());
        assert!(again.is_ok_and(|k| k.id() == key.id()));
    }
}

/// A minisign-format secret key file.
pub fn secret_key(data: &[u8]) {
    if let Ok(key) = SecretKey::parse_minisign(data) {
        let again = SecretKey::parse_minisign(key.to_minisign_string_unencrypted().as_bytes());
        assert!(again.is_ok_and(|k| k.id() == key.id()));
    }
}

/// A host policy file.
pub fn policy(data: &[u8]) {
    let _ = crate::policy::Policy::from_json(data, Path::new("/etc/skillgate"));
}

/// What a plugin returns from `vtcode_plugin_execute`: bytes up to a NUL (or none),
/// read with the bounded copy, then UTF-8, then `PluginResult`.
pub fn ffi_result(data: &[u8]) {
    let mut buffer = data.to_vec();
    buffer.push(0);
    let limit = data.len() / 2 + 1;
    #[allow(unsafe_code)]
    // SAFETY: `buffer` is NUL-terminated and outlives the call.
    let copied = unsafe {
        crate::base::ffi::copy_bounded(
            buffer.as_ptr().cast(),
            limit,
            crate::base::ffi::SYMBOL_EXECUTE,
        )
    };
    if let Ok(bytes) = copied {
        let _ = crate::base::ffi::decode_result(&bytes);
    }
}

/// The context encoder (`encode_context_into`, [`crate::base::encode`]) against serde_json: `data` as one string
/// (lossily UTF-8) and, if it parses, as a JSON value too, in a context's input, config and
/// workspace root. Panics if the two texts differ by a byte.
pub fn context_encode(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let mut ctx = crate::PluginContext::default();
    ctx.input
        .insert(text.clone(), serde_json::Value::String(text.clone()));
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        ctx.config.insert("parsed".to_owned(), value);
    }
    ctx.workspace_root = Some(text);
    let mut ours = Vec::new();
    crate::base::ffi::encode_context_into(&ctx, &mut ours);
    let theirs = serde_json::to_vec(&ctx).unwrap_or_default();
    assert!(
        ours == theirs,
        "the context encoder and serde_json disagree"
    );
}

/// A frame from a (possibly hostile) worker: decoded and its payload parsed as the host does.
pub fn ipc_frame(data: &[u8]) {
    crate::exec::host::fuzz_host_frame(data);
}

/// A reply in the shared call region from a (possibly hostile) worker: the first 20 bytes are
/// the reply's fields (sequence u64, length u64, tag u32, little-endian), the rest the reply
/// area; checked, copied and parsed as the host does for call 1 under a 1 MiB output limit.
pub fn ring_reply(data: &[u8]) {
    let (header, area) = data.split_at(data.len().min(crate::exec::ring::REPLY_FIELDS));
    let _ = crate::exec::ring::decode_reply(header, area, 1, 1 << 20);
}

/// Whether `data` (as [`ring_reply`] reads it) is a reply the host accepts for call 1: the
/// call's result, or a fault of the call.
pub fn is_valid_ring_reply(data: &[u8]) -> bool {
    let (header, area) = data.split_at(data.len().min(crate::exec::ring::REPLY_FIELDS));
    matches!(
        crate::exec::ring::decode_reply(header, area, 1, 1 << 20),
        Ok(crate::exec::ring::Reply::Done(_))
    )
}

/// ELF bytes given to the inspector.
pub fn elf(data: &[u8]) {
    let _ = crate::pipeline::inspect::inspect_bytes(data);
}

/// The fixed key of the structured target: the fuzzer varies manifests, not keys. It is a
/// test key, trusted nowhere.
const FUZZ_SECRET_KEY: &str = "untrusted comment: skillgate fuzzing key (trusted nowhere)\nRWQAAEIyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAx2jNzW3fpbgFBGrYN2osb9pfRvEzLXI28pi3sa2I89Jnv5bdvW5mXjNkjNYlU/neBYY0btdYVx5ziKWvyt7H8KucvvNuTgqiNE3HvF0LeYr48GN6ndiwRcp46R6LEbzZldmJb/0MH+o=\n";

fn fixed_key() -> Option<SecretKey> {
    SecretKey::parse_minisign(FUZZ_SECRET_KEY.as_bytes()).ok()
}

/// A manifest the structured target builds from arbitrary fields.
#[derive(Debug, Clone)]
pub struct ManifestFields {
    /// Plugin name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Semver triple.
    pub version: (u64, u64, u64),
    /// Author.
    pub author: Option<String>,
    /// Files: path, size, digest byte.
    pub files: Vec<(String, u64, u8)>,
    /// Which byte of the signed manifest to change, and how.
    pub flip: (usize, u8),
}

/// Serializes a manifest, signs it, verifies and parses it back: it must round-trip
/// exactly, and any single-byte change must be refused by the signature check.
pub fn signed_roundtrip(fields: &ManifestFields) {
    let mut files: Vec<serde_json::Value> = fields
        .files
        .iter()
        .map(|(path, size, d)| serde_json::json!({"path": path, "sha256": format!("{:02x}", d).repeat(32), "size": size}))
        .collect();
    files.push(serde_json::json!({
        "path": crate::pipeline::manifest::library_filename(&fields.name),
        "sha256": "00".repeat(32),
        "size": 1,
    }));
    let (a, b, c) = fields.version;
    let manifest = serde_json::json!({
        "name": fields.name,
        "description": fields.description,
        "version": format!("{a}.{b}.{c}"),
        "author": fields.author,
        "abi_version": 1,
        "files": files,
    });
    let Ok(bytes) = serde_json::to_vec_pretty(&manifest) else {
        return;
    };
    let Some(key) = fixed_key() else {
        panic!("the fuzzing key must parse")
    };
    let Ok(trust) = TrustStore::from_keys([key.public()]) else {
        return;
    };
    let (id, sig) = sign_manifest(&bytes, &key);
    let mut sigfile = SignatureFile::new();
    if sigfile.add_or_replace(id, sig).is_err() {
        return;
    }
    let sig_bytes = sigfile.to_json_pretty().into_bytes();
    let authentic = verify_manifest(bytes.clone(), Some(&sig_bytes), &trust);
    let authentic = match authentic {
        Ok(a) => a,
        Err(e) => panic!("a freshly signed manifest must verify: {e}"),
    };
    assert_eq!(authentic.bytes(), &bytes[..]);
    if let Ok(parsed) = crate::pipeline::manifest::Manifest::parse(&authentic, usize::MAX) {
        assert_eq!(parsed.name(), fields.name);
        assert_eq!(parsed.metadata().description, fields.description);
        assert_eq!(
            parsed.version(),
            &crate::base::version::Version::new(a, b, c)
        );
    }
    let (at, delta) = fields.flip;
    if delta != 0 && !bytes.is_empty() {
        let mut changed = bytes.clone();
        if let Some(byte) = changed.get_mut(at % bytes.len()) {
            *byte ^= delta;
        }
        assert!(
            verify_manifest(changed, Some(&sig_bytes), &trust).is_err(),
            "a changed manifest verified"
        );
    }
}
