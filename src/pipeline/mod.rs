//! The verification pipeline, one module per stage of DESIGN's pipeline:
//!
//! ```text
//! path ─locate─▶ PluginDir ─verify─▶ Verified<Bundle> ─inspect─▶ Inspected ─load─▶ symbols
//! ```
//!
//! [`locate`] opens the directory beneath a trusted root; [`verify`] checks the signatures,
//! parses the [`manifest`] and checks every file against it; [`inspect`] examines the ELF;
//! [`load`] maps the verified bytes with the dynamic loader.

pub mod inspect;
pub mod load;
pub mod locate;
pub mod manifest;
mod rules;
pub mod verify;
