//! The verification pipeline, one module per stage of DESIGN's pipeline:
//!
//! ```text
//! path ─locate─▶ PluginDir ─verify─▶ Verified<Bundle> ─inspect─▶ Inspected ─load─▶ symbols
//! ```
//!
//! [`locate`] opens the directory beneath a trusted root and reads its files by descriptor;
//! [`verify`] checks the signatures, parses the [`manifest`] and checks every file against
//! it, hashing each on its one read (`digest`); [`inspect`] examines the ELF;
//! [`load`] maps the verified bytes with the dynamic loader. [`stage`] names the stages in
//! running order, for reports of where a plugin was refused.

pub(crate) mod digest;
pub mod inspect;
pub(crate) mod load;
pub(crate) mod locate;
pub(crate) mod manifest;
mod rules;
pub(crate) mod stage;
pub(crate) mod verify;
