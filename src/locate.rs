//! (in progress: helper H2)
/// Errors locating plugin files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocateError {}
