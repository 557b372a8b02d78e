//! Trust material: keys, the trust store, signature files and their verification, the
//! signer rules, revocation and the version marks that refuse rollbacks.

pub mod keys;
pub mod rules;
pub mod signature;

// The paths of the flat layout, kept while the API is narrowed.
pub use rules::*;
