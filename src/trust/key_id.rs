//! [`KeyId`]: the 8-byte name of a public key, and the one way a list of them is printed.
//!
//! The id is derived from the key ([`KeyId::derive`]), never taken from a file: the key
//! number minisign writes is unsigned and chosen by whoever wrote the file. Everything else
//! in `trust/` names keys by this type, so it sits at the bottom of the folder.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

/// Length of a key id in bytes.
pub(crate) const KEY_ID_LEN: usize = 8;
/// Domain separation for [`KeyId::derive`].
const KEY_ID_DOMAIN: &[u8] = b"skillgate key id v1\0";

/// An 8-byte key id, as minisign stores it in key and signature files.
///
/// Shown (and parsed) the way minisign shows it: the bytes read as a little-endian `u64`,
/// as 16 uppercase hexadecimal digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    /// The id skillgate gives a public key: the first 8 bytes of
    /// `SHA-256("skillgate key id v1\0" ‖ public key)`.
    pub fn derive(key: &VerifyingKey) -> KeyId {
        let mut h = Sha256::new();
        h.update(KEY_ID_DOMAIN);
        h.update(key.as_bytes());
        let digest = h.finalize();
        let mut id = [0u8; KEY_ID_LEN];
        for (dst, src) in id.iter_mut().zip(digest.iter()) {
            *dst = *src;
        }
        KeyId(id)
    }

    /// The raw bytes, in file order.
    pub fn as_bytes(&self) -> &[u8; KEY_ID_LEN] {
        &self.0
    }

    /// An id from raw bytes in file order.
    pub fn from_bytes(bytes: [u8; KEY_ID_LEN]) -> Self {
        KeyId(bytes)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A key id string is not 16 hexadecimal digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed key id: expected 16 hexadecimal digits")]
pub struct MalformedKeyId;

impl FromStr for KeyId {
    type Err = MalformedKeyId;

    /// Accepts exactly 16 hexadecimal digits (either case), nothing else: no sign, no `0x`,
    /// no whitespace.
    fn from_str(s: &str) -> Result<Self, MalformedKeyId> {
        if s.len() != 2 * KEY_ID_LEN || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(MalformedKeyId);
        }
        let n = u64::from_str_radix(s, 16).map_err(|_| MalformedKeyId)?;
        Ok(KeyId(n.to_le_bytes()))
    }
}

impl serde::Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = KeyId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key id of 16 hexadecimal digits")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KeyId, E> {
                v.parse()
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(v), &self))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// A list of key ids as error messages print it: `A, B, C`, or `none`.
pub(crate) struct KeyIds<'a>(pub(crate) &'a [KeyId]);

impl fmt::Display for KeyIds<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, id) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{id}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn key_id_displays_as_minisign_does() {
        let id = KeyId::from_bytes([0x71, 0xad, 0x4b, 0xd1, 0xd6, 0x5f, 0x90, 0x93]);
        assert_eq!(id.to_string(), "93905FD6D14BAD71");
        assert_eq!(format!("{id:?}"), "KeyId(93905FD6D14BAD71)");
        assert_eq!("93905FD6D14BAD71".parse::<KeyId>().unwrap(), id);
        assert_eq!("93905fd6d14bad71".parse::<KeyId>().unwrap(), id);
        let zero_nibble = KeyId::from_bytes([0x46, 0, 0, 0, 0, 0, 0, 0x0b]);
        assert_eq!(zero_nibble.to_string(), "0B00000000000046");
    }

    #[test]
    fn key_id_parse_is_strict() {
        for bad in [
            "",
            "93905FD6D14BAD7",
            "93905FD6D14BAD711",
            "+3905FD6D14BAD71",
            "0x905FD6D14BAD71",
            " 93905FD6D14BAD7",
            "93905FD6D14BAD7G",
            "９3905FD6D14BAD7",
        ] {
            assert!(
                matches!(bad.parse::<KeyId>(), Err(MalformedKeyId)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn key_id_serde_is_the_display_string() {
        let id = KeyId::from_bytes([0x71, 0xad, 0x4b, 0xd1, 0xd6, 0x5f, 0x90, 0x93]);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"93905FD6D14BAD71\"");
        assert_eq!(serde_json::from_str::<KeyId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<KeyId>("\"93905FD6D14BAD7\"").is_err());
        assert!(serde_json::from_str::<KeyId>("42").is_err());
    }

    #[test]
    fn a_list_of_ids_prints_once_with_commas_or_none() {
        let a = KeyId::from_bytes([1, 0, 0, 0, 0, 0, 0, 0]);
        let b = KeyId::from_bytes([2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(KeyIds(&[]).to_string(), "none");
        assert_eq!(
            KeyIds(&[a, b]).to_string(),
            "0000000000000001, 0000000000000002"
        );
    }
}
