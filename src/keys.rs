//! (in progress: helper H1)
/// Errors reading or using keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {}
