//! (in progress: helper H1)
/// Errors verifying signatures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {}
