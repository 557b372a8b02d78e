//! Plugins for a fleet of hosts: what a host needs beyond a local directory when releases
//! come from a registry. [`freshness`] asks a TUF repository whether a release is current.

pub mod freshness;
