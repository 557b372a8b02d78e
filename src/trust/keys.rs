//! Keys in minisign's file layout, key ids, and the trust store.
//!
//! Threats answered here: a key file that lies about which key it holds, a public key that
//! would let anyone forge signatures, and a trust store that quietly trusts less (or more)
//! than its directory says.
//!
//! - A key's identity is [`KeyId::derive`]d from the public key itself. The key number that
//!   minisign writes into a file is unsigned and chosen by whoever wrote the file, so it is
//!   kept only as a hint ([`PublicKey::file_key_id`]) and never used to decide trust.
//! - Public keys for which [`VerifyingKey::is_weak`] holds (small-order points, for which a
//!   single signature verifies many messages) are refused when they are loaded, and
//!   signatures are only ever checked with `verify_strict`.
//! - A secret key file whose public half does not match its seed, or whose checksum does not
//!   match, is refused rather than repaired.
//! - [`TrustStore::load_dir`] fails closed: every `*.pub` file must be a regular file holding
//!   a valid key, and two files holding the same key are an error, so a typo or a planted
//!   symlink cannot silently change the set of trusted keys.
//!
//! Every input is capped in size before it is parsed.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use blake2::{Blake2b256, Digest};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Largest key file accepted; real ones are under 400 bytes.
pub const MAX_KEY_FILE_SIZE: usize = 4 * 1024;

/// Prefix of the first line of every minisign key file.
const COMMENT_PREFIX: &[u8] = b"untrusted comment: ";
/// minisign's label for Ed25519 (`sig_alg`).
const SIG_ALG: [u8; 2] = *b"Ed";
/// minisign's label for scrypt-encrypted secret keys (`kdf_alg`).
const KDF_SCRYPT: [u8; 2] = *b"Sc";
/// minisign's label for unencrypted secret keys (`kdf_alg`).
const KDF_NONE: [u8; 2] = [0, 0];
/// minisign's label for the BLAKE2b-256 secret key checksum (`chk_alg`).
const CHK_ALG: [u8; 2] = *b"B2";
/// Domain separation for [`KeyId::derive`].
const KEY_ID_DOMAIN: &[u8] = b"skillgate key id v1\0";

const KEY_ID_LEN: usize = 8;
const PUBLIC_KEY_LEN: usize = 32;
const SEED_LEN: usize = 32;
const KEYPAIR_LEN: usize = SEED_LEN + PUBLIC_KEY_LEN;
const CHECKSUM_LEN: usize = 32;
const SALT_LEN: usize = 32;
/// `key id ‖ seed ‖ public key ‖ checksum`: the part of a secret key minisign encrypts.
const KEYNUM_SK_LEN: usize = KEY_ID_LEN + KEYPAIR_LEN + CHECKSUM_LEN;
/// Most memory an encrypted key file may make scrypt use (minisign's default).
const MAX_KDF_MEMORY: u64 = 1 << 30;
/// Most `N·r·p` an encrypted key file may ask for (twice minisign's default).
const MAX_KDF_WORK: u64 = 1 << 24;
/// `sig_alg ‖ key_id ‖ public key`.
const PUBLIC_FILE_LEN: usize = 2 + KEY_ID_LEN + PUBLIC_KEY_LEN;
/// `sig_alg ‖ kdf_alg ‖ chk_alg ‖ salt ‖ opslimit ‖ memlimit ‖ key_id ‖ keypair ‖ checksum`.
const SECRET_FILE_LEN: usize =
    2 + 2 + 2 + SALT_LEN + 8 + 8 + KEY_ID_LEN + KEYPAIR_LEN + CHECKSUM_LEN;

/// Where a key in a [`TrustStore`] came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyOrigin {
    /// Read from this file.
    File(PathBuf),
    /// Given in memory, at this position of the list passed to [`TrustStore::from_keys`].
    Position(usize),
    /// Added later with [`TrustStore::add_key`].
    Added,
}

impl fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyOrigin::File(path) => write!(f, "{}", path.display()),
            KeyOrigin::Position(i) => write!(f, "key #{i}"),
            KeyOrigin::Added => f.write_str("a key added to the store"),
        }
    }
}

/// Errors reading or using keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key file or the trust store directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A key file could not be used; `source` says why.
    #[error("key file {}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What was wrong with its contents.
        source: Box<KeyError>,
    },
    /// A key file in the trust store is a symlink, a directory, a FIFO or anything else that is
    /// not a regular file.
    #[error("{} is a symlink or not a regular file", path.display())]
    NotRegularFile {
        /// The offending path.
        path: PathBuf,
    },
    /// The input is larger than [`MAX_KEY_FILE_SIZE`].
    #[error("key file is larger than {max} bytes")]
    TooLarge {
        /// The cap.
        max: usize,
    },
    /// The text is not laid out as a minisign key file.
    #[error("malformed key file: {what}")]
    Malformed {
        /// What was wrong.
        what: &'static str,
    },
    /// The decoded key has the wrong length.
    #[error("malformed {what}: expected {expected} bytes, found {actual}")]
    WrongLength {
        /// Which kind of key.
        what: &'static str,
        /// The length minisign uses.
        expected: usize,
        /// The decoded length.
        actual: usize,
    },
    /// The key is not labelled Ed25519 (`Ed`), or its checksum is not labelled BLAKE2b (`B2`),
    /// or its key derivation is neither `Sc` nor none.
    #[error("unsupported algorithm label {found:02x?} for {what}")]
    UnsupportedAlgorithm {
        /// Which label.
        what: &'static str,
        /// The label found.
        found: [u8; 2],
    },
    /// The secret key is scrypt-encrypted and no password was given.
    #[error("secret key is encrypted and no password was given")]
    PasswordRequired,
    /// The password could not be obtained (prompt, file or environment).
    #[error("cannot get the password: {detail}")]
    PasswordUnavailable {
        /// What went wrong.
        detail: String,
    },
    /// The encrypted secret key's checksum does not match after decryption: the password
    /// is wrong (or the file was altered).
    #[error("wrong password for this secret key (its checksum does not match)")]
    WrongPassword,
    /// The scrypt parameters of an encrypted key are out of the range this tool accepts.
    #[error("scrypt parameters opslimit={opslimit} memlimit={memlimit} are not accepted: {why}")]
    KdfParams {
        /// From the key file.
        opslimit: u64,
        /// From the key file.
        memlimit: u64,
        /// Which bound they break.
        why: &'static str,
    },
    /// The secret key's BLAKE2b-256 checksum does not match its contents.
    #[error("secret key checksum mismatch")]
    ChecksumMismatch,
    /// The public half stored in the secret key is not the one derived from its seed.
    #[error("secret key is inconsistent: its public half does not match its seed")]
    InconsistentSecretKey,
    /// The bytes are not a valid Ed25519 point.
    #[error("invalid Ed25519 public key (file key id {file_key_id})")]
    InvalidPublicKey {
        /// The key id written in the file.
        file_key_id: KeyId,
    },
    /// The public key is a small-order point, for which signatures prove nothing.
    #[error("weak Ed25519 public key {key_id} refused")]
    WeakKey {
        /// The derived id of the refused key.
        key_id: KeyId,
    },
    /// A signature did not verify under `verify_strict`.
    #[error("signature does not verify under key {key_id}")]
    BadSignature {
        /// The key that was used.
        key_id: KeyId,
    },
    /// Two entries of the trust store hold the same key.
    #[error("key {key_id} appears twice in the trust store: {first} and {second}")]
    DuplicateKey {
        /// The key's derived id.
        key_id: KeyId,
        /// Where it was first seen.
        first: KeyOrigin,
        /// Where it was seen again.
        second: KeyOrigin,
    },
    /// A revocation statement in the trust store is malformed or not signed well enough.
    #[error("revocation statement {}: {source}", path.display())]
    Revocation {
        /// The statement file.
        path: PathBuf,
        /// What is wrong with it.
        source: Box<crate::trust::rules::RevocationError>,
    },
    /// A key id string is not 16 hexadecimal digits.
    #[error("malformed key id: expected 16 hexadecimal digits")]
    MalformedKeyId,
}

impl KeyError {
    /// The error without the [`KeyError::InFile`] wrappers that name the file.
    pub fn innermost(&self) -> &KeyError {
        let mut e = self;
        while let KeyError::InFile { source, .. } = e {
            e = source;
        }
        e
    }
}

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

impl FromStr for KeyId {
    type Err = KeyError;

    /// Accepts exactly 16 hexadecimal digits (either case), nothing else: no sign, no `0x`,
    /// no whitespace.
    fn from_str(s: &str) -> Result<Self, KeyError> {
        if s.len() != 2 * KEY_ID_LEN || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(KeyError::MalformedKeyId);
        }
        let n = u64::from_str_radix(s, 16).map_err(|_| KeyError::MalformedKeyId)?;
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

/// A usable Ed25519 public key: not weak, identified by its derived [`KeyId`].
///
/// Two values are equal when they hold the same key, whatever their files said.
#[derive(Clone)]
pub struct PublicKey {
    key: VerifyingKey,
    id: KeyId,
    file_key_id: Option<KeyId>,
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for PublicKey {}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("id", &self.id)
            .field("file_key_id", &self.file_key_id)
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// Wraps a verifying key, refusing weak (small-order) keys.
    pub fn from_verifying_key(key: VerifyingKey) -> Result<Self, KeyError> {
        let id = KeyId::derive(&key);
        if key.is_weak() {
            return Err(KeyError::WeakKey { key_id: id });
        }
        Ok(PublicKey {
            key,
            id,
            file_key_id: None,
        })
    }

    /// Parses a minisign public key file (two lines: an untrusted comment, then base64 of
    /// `"Ed" ‖ key id ‖ public key`).
    ///
    /// The key id in the file is kept only as [`PublicKey::file_key_id`]; the key's identity
    /// is always derived from the key.
    pub fn parse_minisign(text: &[u8]) -> Result<Self, KeyError> {
        let raw = decode_key_file(text)?;
        if raw.len() != PUBLIC_FILE_LEN {
            return Err(wrong_length("public key", PUBLIC_FILE_LEN, raw.len()));
        }
        let (alg, rest) = split_array::<2>(&raw, "public key")?;
        let (file_id, rest) = split_array::<KEY_ID_LEN>(rest, "public key")?;
        let (pk, _) = split_array::<PUBLIC_KEY_LEN>(rest, "public key")?;
        if alg != SIG_ALG {
            return Err(KeyError::UnsupportedAlgorithm {
                what: "signature algorithm",
                found: alg,
            });
        }
        let file_key_id = KeyId(file_id);
        let key = VerifyingKey::from_bytes(&pk)
            .map_err(|_| KeyError::InvalidPublicKey { file_key_id })?;
        let mut public = PublicKey::from_verifying_key(key)?;
        public.file_key_id = Some(file_key_id);
        Ok(public)
    }

    /// Reads and parses a minisign public key file.
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let text = read_capped(path, false)?;
        PublicKey::parse_minisign(&text).map_err(|e| in_file(path, e))
    }

    /// This key as a minisign public key file, with the derived id as minisign's key number.
    pub fn to_minisign_string(&self) -> String {
        let mut raw = Vec::with_capacity(PUBLIC_FILE_LEN);
        raw.extend_from_slice(&SIG_ALG);
        raw.extend_from_slice(self.id.as_bytes());
        raw.extend_from_slice(self.key.as_bytes());
        format!(
            "untrusted comment: skillgate public key {}\n{}\n",
            self.id,
            STANDARD.encode(&raw)
        )
    }

    /// The key's identity, derived from the key.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key id written in the file this key was read from, if any. Unsigned: a hint only.
    pub fn file_key_id(&self) -> Option<KeyId> {
        self.file_key_id
    }

    /// The Ed25519 key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Checks `sig` over `msg` with `verify_strict` (canonical `S`, no small-order `R`).
    pub fn verify_strict(&self, msg: &[u8], sig: &Signature) -> Result<(), KeyError> {
        self.key
            .verify_strict(msg, sig)
            .map_err(|_| KeyError::BadSignature { key_id: self.id })
    }
}

/// An Ed25519 signing key. The key material is zeroized when dropped and never printed.
#[derive(Clone)]
pub struct SecretKey {
    key: SigningKey,
    public: PublicKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("id", &self.public.id)
            .finish_non_exhaustive()
    }
}

impl SecretKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Self {
        SecretKey::from_signing_key(SigningKey::generate(&mut rand_core::OsRng))
    }

    fn from_signing_key(key: SigningKey) -> Self {
        let verifying = key.verifying_key();
        // A clamped Ed25519 scalar is a non-zero multiple of 8 below the group order times 8,
        // so the public point always has order L: it is never weak. Not checked again here.
        let public = PublicKey {
            id: KeyId::derive(&verifying),
            key: verifying,
            file_key_id: None,
        };
        SecretKey { key, public }
    }

    /// Parses an unencrypted minisign secret key file; an encrypted one gives
    /// [`KeyError::PasswordRequired`]. See [`SecretKey::parse_minisign_with`].
    pub fn parse_minisign(text: &[u8]) -> Result<Self, KeyError> {
        SecretKey::parse_minisign_with(text, || Err(KeyError::PasswordRequired))
    }

    /// Parses a minisign secret key file, encrypted or not. `password` is called only if
    /// the key is scrypt-encrypted.
    ///
    /// The public half stored in the file must be the one derived from the seed. The checksum
    /// must match, except that an all-zero checksum is accepted for unencrypted keys because
    /// `minisign -G -W` writes one. For an encrypted key the checksum is what tells a wrong
    /// password ([`KeyError::WrongPassword`]), as in minisign.
    pub fn parse_minisign_with(
        text: &[u8],
        password: impl FnOnce() -> Result<Zeroizing<Vec<u8>>, KeyError>,
    ) -> Result<Self, KeyError> {
        let raw = Zeroizing::new(decode_key_file(text)?);
        if raw.len() != SECRET_FILE_LEN {
            return Err(wrong_length("secret key", SECRET_FILE_LEN, raw.len()));
        }
        let (sig_alg, rest) = split_array::<2>(&raw, "secret key")?;
        let (kdf_alg, rest) = split_array::<2>(rest, "secret key")?;
        let (chk_alg, rest) = split_array::<2>(rest, "secret key")?;
        let (salt, rest) = split_array::<SALT_LEN>(rest, "secret key")?;
        let (opslimit, rest) = split_array::<8>(rest, "secret key")?;
        let (memlimit, rest) = split_array::<8>(rest, "secret key")?;
        let (sealed, _) = split_array::<KEYNUM_SK_LEN>(rest, "secret key")?;
        let mut keynum_sk = Zeroizing::new(sealed);

        if sig_alg != SIG_ALG {
            return Err(KeyError::UnsupportedAlgorithm {
                what: "signature algorithm",
                found: sig_alg,
            });
        }
        if chk_alg != CHK_ALG {
            return Err(KeyError::UnsupportedAlgorithm {
                what: "checksum algorithm",
                found: chk_alg,
            });
        }
        let encrypted = match kdf_alg {
            KDF_NONE => false,
            KDF_SCRYPT => true,
            found => {
                return Err(KeyError::UnsupportedAlgorithm {
                    what: "key derivation",
                    found,
                });
            }
        };
        if encrypted {
            let params = KdfParams {
                opslimit: u64::from_le_bytes(opslimit),
                memlimit: u64::from_le_bytes(memlimit),
            };
            // Checked before asking for a password: a key file must not make us spend
            // unbounded memory or time.
            let scrypt = params.scrypt_params()?;
            let password = password()?;
            let stream = kdf_stream(&password, &salt, &scrypt)?;
            for (b, k) in keynum_sk.iter_mut().zip(stream.iter()) {
                *b ^= *k;
            }
        }
        let (file_id, rest) = split_array::<KEY_ID_LEN>(keynum_sk.as_slice(), "secret key")?;
        let (keypair, rest) = split_array::<KEYPAIR_LEN>(rest, "secret key")?;
        let keypair = Zeroizing::new(keypair);
        let (checksum, _) = split_array::<CHECKSUM_LEN>(rest, "secret key")?;

        let expected = secret_checksum(&file_id, &keypair);
        if encrypted {
            if !constant_time_eq(&expected, &checksum) {
                return Err(KeyError::WrongPassword);
            }
        } else {
            let all_zero = checksum.iter().all(|b| *b == 0);
            if !all_zero && !constant_time_eq(&expected, &checksum) {
                return Err(KeyError::ChecksumMismatch);
            }
        }
        // Checks that the stored public half is the one the seed gives.
        let key = SigningKey::from_keypair_bytes(&keypair)
            .map_err(|_| KeyError::InconsistentSecretKey)?;
        let mut secret = SecretKey::from_signing_key(key);
        secret.public.file_key_id = Some(KeyId(file_id));
        Ok(secret)
    }

    /// Reads and parses an unencrypted minisign secret key file.
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let text = read_capped(path, false)?;
        SecretKey::parse_minisign(&text).map_err(|e| in_file(path, e))
    }

    /// Reads and parses a minisign secret key file, calling `password` if it is encrypted.
    pub fn read_file_with(
        path: &Path,
        password: impl FnOnce() -> Result<Zeroizing<Vec<u8>>, KeyError>,
    ) -> Result<Self, KeyError> {
        let text = read_capped(path, false)?;
        SecretKey::parse_minisign_with(&text, password).map_err(|e| in_file(path, e))
    }

    /// Whether a secret key file's contents are scrypt-encrypted (so a password is needed).
    pub fn is_encrypted_minisign(text: &[u8]) -> Result<bool, KeyError> {
        let raw = Zeroizing::new(decode_key_file(text)?);
        Ok(raw.get(2..4) == Some(KDF_SCRYPT.as_slice()))
    }

    /// This key as a minisign secret key file encrypted as `minisign -G` does: the 104 bytes
    /// `key id ‖ seed ‖ public key ‖ checksum` XORed with scrypt(password, random salt) using
    /// libsodium's `crypto_pwhash_scryptsalsa208sha256` parameter choice for `params`.
    pub fn to_minisign_string_encrypted(
        &self,
        password: &[u8],
        params: KdfParams,
    ) -> Result<String, KeyError> {
        let scrypt = params.scrypt_params()?;
        let mut salt = [0u8; SALT_LEN];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut salt);
        let id = self.public.id;
        let keypair = Zeroizing::new(self.key.to_keypair_bytes());
        let mut keynum_sk = Zeroizing::new(Vec::with_capacity(KEYNUM_SK_LEN));
        keynum_sk.extend_from_slice(id.as_bytes());
        keynum_sk.extend_from_slice(keypair.as_slice());
        keynum_sk.extend_from_slice(&secret_checksum(id.as_bytes(), &keypair));
        let stream = kdf_stream(password, &salt, &scrypt)?;
        for (b, k) in keynum_sk.iter_mut().zip(stream.iter()) {
            *b ^= *k;
        }
        let mut raw = Vec::with_capacity(SECRET_FILE_LEN);
        raw.extend_from_slice(&SIG_ALG);
        raw.extend_from_slice(&KDF_SCRYPT);
        raw.extend_from_slice(&CHK_ALG);
        raw.extend_from_slice(&salt);
        raw.extend_from_slice(&params.opslimit.to_le_bytes());
        raw.extend_from_slice(&params.memlimit.to_le_bytes());
        raw.extend_from_slice(&keynum_sk);
        Ok(format!(
            "untrusted comment: skillgate secret key (scrypt-encrypted)\n{}\n",
            STANDARD.encode(&raw)
        ))
    }

    /// This key as an unencrypted minisign secret key file (as `minisign -G -W` writes, but
    /// with the derived id as key number and a correct checksum).
    pub fn to_minisign_string_unencrypted(&self) -> String {
        let id = self.public.id;
        let keypair = self.key.to_keypair_bytes();
        let mut raw = Vec::with_capacity(SECRET_FILE_LEN);
        raw.extend_from_slice(&SIG_ALG);
        raw.extend_from_slice(&KDF_NONE);
        raw.extend_from_slice(&CHK_ALG);
        raw.extend_from_slice(&[0u8; SALT_LEN]);
        raw.extend_from_slice(&0u64.to_le_bytes());
        raw.extend_from_slice(&0u64.to_le_bytes());
        raw.extend_from_slice(id.as_bytes());
        raw.extend_from_slice(&keypair);
        raw.extend_from_slice(&secret_checksum(id.as_bytes(), &keypair));
        format!(
            "untrusted comment: skillgate secret key (unencrypted)\n{}\n",
            STANDARD.encode(&raw)
        )
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public.clone()
    }

    /// The derived id of the public half.
    pub fn id(&self) -> KeyId {
        self.public.id
    }

    /// Signs `msg` (pure Ed25519, no prehash).
    pub fn sign(&self, msg: &[u8]) -> Signature {
        use ed25519_dalek::Signer;
        self.key.sign(msg)
    }
}

/// The set of public keys a host trusts, by derived id, and the signed revocations found
/// beside them.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    keys: BTreeMap<KeyId, PublicKey>,
    /// Where each key came from, for [`KeyError::DuplicateKey`].
    origins: BTreeMap<KeyId, KeyOrigin>,
    revocations: BTreeMap<KeyId, crate::trust::rules::Revocation>,
}

impl TrustStore {
    /// A store that trusts nothing; verification against it always fails.
    pub fn empty() -> Self {
        TrustStore::default()
    }

    /// A store holding `keys`; the same key given twice is an error.
    pub fn from_keys(keys: impl IntoIterator<Item = PublicKey>) -> Result<Self, KeyError> {
        let mut store = TrustStore::empty();
        for (i, key) in keys.into_iter().enumerate() {
            store.insert(key, KeyOrigin::Position(i))?;
        }
        Ok(store)
    }

    /// Adds one key, keeping every key and revocation already in the store; the same key
    /// twice is an error. A revocation already in force stays in force: adding a key never
    /// makes a revoked key count again.
    pub fn add_key(&mut self, key: PublicKey) -> Result<(), KeyError> {
        self.insert(key, KeyOrigin::Added)
    }

    /// Loads every `*.pub` file directly in `dir` (not recursively), in file name order,
    /// then every revocation statement `*.revoked` (with its `*.revoked.sig`): see
    /// [`crate::trust::rules::RevocationStatement`].
    ///
    /// Fails closed: a `*.pub` or `*.revoked` entry that is a symlink or not a regular file,
    /// or that does not hold a valid, non-weak key or an effective revocation, is an error
    /// naming the file, as is the same key in two files. Other files (a README, say) are
    /// ignored.
    pub fn load_dir(dir: &Path) -> Result<Self, KeyError> {
        let io_err = |source| KeyError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut paths = Vec::new();
        let mut revocations = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let name = entry.file_name();
            let is_key = name.as_bytes().ends_with(b".pub");
            let is_revocation = name
                .as_bytes()
                .ends_with(crate::trust::rules::REVOCATION_SUFFIX.as_bytes());
            if !is_key && !is_revocation {
                continue;
            }
            let path = entry.path();
            // `file_type` does not follow symlinks.
            let file_type = entry.file_type().map_err(|source| KeyError::Io {
                path: path.clone(),
                source,
            })?;
            if !file_type.is_file() {
                return Err(KeyError::NotRegularFile { path });
            }
            if is_key {
                paths.push(path);
            } else {
                revocations.push(path);
            }
        }
        paths.sort();
        revocations.sort();

        let mut store = TrustStore::empty();
        for path in paths {
            // Opened with O_NOFOLLOW and checked again through the descriptor, in case the
            // entry was replaced after it was listed.
            let text = read_capped(&path, true)?;
            let key = PublicKey::parse_minisign(&text).map_err(|e| in_file(&path, e))?;
            store.insert(key, KeyOrigin::File(path))?;
        }
        let mut statements = Vec::with_capacity(revocations.len());
        for path in revocations {
            let mut sig_path = path.clone().into_os_string();
            sig_path.push(".sig");
            let sig_path = PathBuf::from(sig_path);
            let statement = read_capped(&path, true)?;
            let signatures =
                match read_capped_n(&sig_path, crate::trust::signature::MAX_SIGNATURE_FILE_SIZE) {
                    Ok(s) => s,
                    Err(KeyError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        return Err(KeyError::Revocation {
                            path,
                            source: Box::new(crate::trust::rules::RevocationError::Signatures(
                                crate::trust::signature::SignatureError::Missing,
                            )),
                        });
                    }
                    Err(e) => return Err(e),
                };
            statements.push((path, statement, signatures));
        }
        // Self-revocations first: a key that revoked itself does not help revoke others.
        statements.sort_by_key(|(_, st, sig)| !crate::trust::rules::is_self_revocation(st, sig));
        let mut self_revoked = std::collections::BTreeSet::new();
        for (path, statement, signatures) in statements {
            store
                .add_revocation_inner(&statement, &signatures, &self_revoked)
                .map_err(|source| KeyError::Revocation {
                    path,
                    source: Box::new(source),
                })?;
            self_revoked.extend(
                store
                    .revocations
                    .values()
                    .filter(|r| r.self_signed())
                    .map(|r| r.revokes()),
            );
        }
        Ok(store)
    }

    /// Adds a revocation statement and its signature file (as found in a trust store
    /// directory); an error if it does not take effect.
    pub fn add_revocation(
        &mut self,
        statement: &[u8],
        signatures: &[u8],
    ) -> Result<(), crate::trust::rules::RevocationError> {
        let self_revoked = self
            .revocations
            .values()
            .filter(|r| r.self_signed())
            .map(|r| r.revokes())
            .collect();
        self.add_revocation_inner(statement, signatures, &self_revoked)
    }

    fn add_revocation_inner(
        &mut self,
        statement: &[u8],
        signatures: &[u8],
        self_revoked: &std::collections::BTreeSet<KeyId>,
    ) -> Result<(), crate::trust::rules::RevocationError> {
        let r = crate::trust::rules::verify_revocation(statement, signatures, self, self_revoked)?;
        self.revocations.insert(r.revokes(), r);
        Ok(())
    }

    /// The effective revocation of `id`, if the store holds one.
    pub fn revocation(&self, id: &KeyId) -> Option<&crate::trust::rules::Revocation> {
        self.revocations.get(id)
    }

    fn insert(&mut self, key: PublicKey, origin: KeyOrigin) -> Result<(), KeyError> {
        let id = key.id();
        match self.origins.entry(id) {
            Entry::Occupied(first) => Err(KeyError::DuplicateKey {
                key_id: id,
                first: first.get().clone(),
                second: origin,
            }),
            Entry::Vacant(slot) => {
                slot.insert(origin);
                self.keys.insert(id, key);
                Ok(())
            }
        }
    }

    /// The trusted key with this id.
    pub fn get(&self, id: &KeyId) -> Option<&PublicKey> {
        self.keys.get(id)
    }

    /// How many keys are trusted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted ids, in order.
    pub fn ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.keys()
    }
}

/// The scrypt cost of an encrypted secret key, as minisign stores it: libsodium's
/// `opslimit` and `memlimit`, from which `N`, `r` and `p` are derived exactly as
/// `crypto_pwhash_scryptsalsa208sha256` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// libsodium's `opslimit`.
    pub opslimit: u64,
    /// libsodium's `memlimit`, in bytes.
    pub memlimit: u64,
}

impl KdfParams {
    /// What `minisign -G` uses (libsodium's `*_SENSITIVE`): `N = 2^20, r = 8, p = 1`, 1 GiB.
    pub const MINISIGN: KdfParams = KdfParams {
        opslimit: 33_554_432,
        memlimit: 1_073_741_824,
    };
    /// libsodium's `*_INTERACTIVE`: `N = 2^14, r = 8, p = 1`, 16 MiB. For tests and
    /// throwaway keys only.
    pub const INTERACTIVE: KdfParams = KdfParams {
        opslimit: 524_288,
        memlimit: 16_777_216,
    };

    /// libsodium's `pickparams`, then the bounds this tool enforces.
    fn scrypt_params(self) -> Result<scrypt::Params, KeyError> {
        let refuse = |why| KeyError::KdfParams {
            opslimit: self.opslimit,
            memlimit: self.memlimit,
            why,
        };
        let opslimit = self.opslimit.max(32_768);
        let r: u64 = 8;
        let log_n_for = |max_n: u64| -> u32 {
            let mut log_n = 1u32;
            while log_n < 63 && (1u64 << log_n) <= max_n / 2 {
                log_n += 1;
            }
            log_n
        };
        let (log_n, p) = if opslimit < self.memlimit / 32 {
            (log_n_for(opslimit / (r * 4)), 1u64)
        } else {
            let log_n = log_n_for(self.memlimit / (r * 128));
            let max_rp = ((opslimit / 4) >> log_n).min(0x3fff_ffff);
            (log_n, max_rp / r)
        };
        let n = 1u64
            .checked_shl(log_n)
            .ok_or_else(|| refuse("N overflows"))?;
        let memory = n
            .checked_mul(r * 128)
            .ok_or_else(|| refuse("memory overflows"))?;
        if memory > MAX_KDF_MEMORY {
            return Err(refuse("more than 1 GiB of memory"));
        }
        let work = n
            .checked_mul(r)
            .and_then(|w| w.checked_mul(p))
            .ok_or_else(|| refuse("work overflows"))?;
        if work > MAX_KDF_WORK {
            return Err(refuse("N·r·p above 2^24"));
        }
        let log_n = u8::try_from(log_n).map_err(|_| refuse("N out of range"))?;
        let r = u32::try_from(r).map_err(|_| refuse("r out of range"))?;
        let p = u32::try_from(p).map_err(|_| refuse("p out of range"))?;
        scrypt::Params::new(log_n, r, p, 32).map_err(|_| refuse("rejected by scrypt"))
    }
}

/// The 104-byte stream minisign XORs over `key id ‖ seed ‖ public key ‖ checksum`.
fn kdf_stream(
    password: &[u8],
    salt: &[u8; SALT_LEN],
    params: &scrypt::Params,
) -> Result<Zeroizing<[u8; KEYNUM_SK_LEN]>, KeyError> {
    let mut stream = Zeroizing::new([0u8; KEYNUM_SK_LEN]);
    scrypt::scrypt(password, salt, params, stream.as_mut_slice()).map_err(|_| {
        KeyError::Malformed {
            what: "scrypt output length",
        }
    })?;
    Ok(stream)
}

fn in_file(path: &Path, e: KeyError) -> KeyError {
    KeyError::InFile {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

fn wrong_length(what: &'static str, expected: usize, actual: usize) -> KeyError {
    KeyError::WrongLength {
        what,
        expected,
        actual,
    }
}

/// Splits `N` bytes off the front of `bytes`.
fn split_array<'a, const N: usize>(
    bytes: &'a [u8],
    what: &'static str,
) -> Result<([u8; N], &'a [u8]), KeyError> {
    let (head, tail) = bytes
        .split_at_checked(N)
        .ok_or(KeyError::Malformed { what })?;
    let head = <[u8; N]>::try_from(head).map_err(|_| KeyError::Malformed { what })?;
    Ok((head, tail))
}

/// minisign's checksum: BLAKE2b-256(`"Ed"` ‖ key id ‖ seed ‖ public key).
fn secret_checksum(key_id: &[u8; KEY_ID_LEN], keypair: &[u8; KEYPAIR_LEN]) -> [u8; CHECKSUM_LEN] {
    let mut h = Blake2b256::new();
    h.update(SIG_ALG);
    h.update(key_id);
    h.update(keypair);
    let digest = h.finalize();
    let mut out = [0u8; CHECKSUM_LEN];
    for (dst, src) in out.iter_mut().zip(digest.iter()) {
        *dst = *src;
    }
    out
}

/// Compares without an early exit; the checksum is computed from secret material.
fn constant_time_eq(a: &[u8; CHECKSUM_LEN], b: &[u8; CHECKSUM_LEN]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Checks the two-line layout and returns the decoded second line.
///
/// Accepts one trailing newline, and CRLF line ends; nothing else.
fn decode_key_file(text: &[u8]) -> Result<Vec<u8>, KeyError> {
    if text.len() > MAX_KEY_FILE_SIZE {
        return Err(KeyError::TooLarge {
            max: MAX_KEY_FILE_SIZE,
        });
    }
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    let mut lines = text.split(|b| *b == b'\n');
    let strip_cr = |line: &'static str, l: Option<&[u8]>| -> Result<Vec<u8>, KeyError> {
        let l = l.ok_or(KeyError::Malformed { what: line })?;
        Ok(l.strip_suffix(b"\r").unwrap_or(l).to_vec())
    };
    let comment = strip_cr("missing comment line", lines.next())?;
    let data = strip_cr("missing key line", lines.next())?;
    if lines.next().is_some() {
        return Err(KeyError::Malformed {
            what: "more than two lines",
        });
    }
    if !comment.starts_with(COMMENT_PREFIX) {
        return Err(KeyError::Malformed {
            what: "first line is not an untrusted comment",
        });
    }
    if comment.contains(&b'\r') || data.contains(&b'\r') {
        return Err(KeyError::Malformed {
            what: "stray carriage return",
        });
    }
    STANDARD.decode(&data).map_err(|_| KeyError::Malformed {
        what: "key line is not valid padded base64",
    })
}

/// Reads at most [`MAX_KEY_FILE_SIZE`] bytes from a regular file ([`crate::base::capped`]); with
/// `nofollow`, a symlink is refused.
fn read_capped(path: &Path, nofollow: bool) -> Result<Vec<u8>, KeyError> {
    read_capped_inner(path, nofollow, MAX_KEY_FILE_SIZE)
}

/// [`read_capped`] with another cap, never following a symlink.
fn read_capped_n(path: &Path, max: usize) -> Result<Vec<u8>, KeyError> {
    read_capped_inner(path, true, max)
}

fn read_capped_inner(path: &Path, nofollow: bool, max: usize) -> Result<Vec<u8>, KeyError> {
    use crate::base::capped::{CappedError, Links};
    let links = if nofollow {
        Links::Refuse
    } else {
        Links::Follow
    };
    let cap = u64::try_from(max).unwrap_or(u64::MAX);
    crate::base::capped::read_capped(path, cap, links).map_err(|e| match e {
        CappedError::Open { path, source } | CappedError::Read { path, source } => {
            KeyError::Io { path, source }
        }
        CappedError::NotRegularFile { path, .. } => KeyError::NotRegularFile { path },
        CappedError::TooLarge { path, .. } => in_file(&path, KeyError::TooLarge { max }),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    macro_rules! vector {
        ($name:literal) => {
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/vectors/keys/",
                $name
            ))
            .as_slice()
        };
    }

    /// Runs minisign; the interop tests fail if it is missing unless
    /// `SKILLGATE_SKIP_MINISIGN=1` says to skip them.
    fn minisign(args: &[&std::ffi::OsStr], dir: &Path) -> Option<std::process::Output> {
        match Command::new("minisign")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) => Some(out),
            Err(e) if std::env::var_os("SKILLGATE_SKIP_MINISIGN").is_some() => {
                eprintln!("skipping minisign interop: {e}");
                None
            }
            Err(e) => panic!("minisign not runnable ({e}); set SKILLGATE_SKIP_MINISIGN=1 to skip"),
        }
    }

    /// A bad input and the check its error must pass.
    type Case = (&'static [u8], fn(&KeyError) -> bool);

    fn public_with_point(point: [u8; 32]) -> Vec<u8> {
        let mut raw = b"Ed".to_vec();
        raw.extend_from_slice(&[7; 8]);
        raw.extend_from_slice(&point);
        format!("untrusted comment: t\n{}\n", STANDARD.encode(raw)).into_bytes()
    }

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
                matches!(bad.parse::<KeyId>(), Err(KeyError::MalformedKeyId)),
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
    fn key_id_is_derived_from_the_key() {
        let key = SecretKey::generate();
        let vk = *key.public().verifying_key();
        let mut h = Sha256::new();
        h.update(b"skillgate key id v1\0");
        h.update(vk.as_bytes());
        let digest = h.finalize();
        assert_eq!(KeyId::derive(&vk).as_bytes()[..], digest[..8]);
        assert_eq!(key.id(), KeyId::derive(&vk));
    }

    #[test]
    fn public_key_round_trip() {
        let key = SecretKey::generate().public();
        let text = key.to_minisign_string();
        assert!(text.starts_with(&format!(
            "untrusted comment: skillgate public key {}\n",
            key.id()
        )));
        assert!(text.ends_with('\n'));
        let back = PublicKey::parse_minisign(text.as_bytes()).unwrap();
        assert_eq!(back.verifying_key(), key.verifying_key());
        assert_eq!(back.id(), key.id());
        assert_eq!(back.file_key_id(), Some(key.id()));
    }

    #[test]
    fn secret_key_round_trip() {
        let key = SecretKey::generate();
        let text = key.to_minisign_string_unencrypted();
        assert!(text.starts_with("untrusted comment: skillgate secret key (unencrypted)\n"));
        let back = SecretKey::parse_minisign(text.as_bytes()).unwrap();
        assert_eq!(back.id(), key.id());
        assert_eq!(back.public().verifying_key(), key.public().verifying_key());
        let sig = back.sign(b"message");
        key.public().verify_strict(b"message", &sig).unwrap();
        assert!(matches!(
            key.public().verify_strict(b"messagf", &sig),
            Err(KeyError::BadSignature { key_id }) if key_id == key.id()
        ));
        // The checksum we write is the real one, not zeros.
        let raw = STANDARD.decode(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(raw.len(), SECRET_FILE_LEN);
        assert_eq!(&raw[..6], b"Ed\0\0B2");
        assert_ne!(raw[126..], [0u8; 32]);
        assert_eq!(&raw[54..62], key.id().as_bytes());
    }

    #[test]
    fn secret_key_debug_hides_the_key() {
        let key = SecretKey::generate();
        let debug = format!("{key:?}");
        let seed = key.key.to_bytes();
        assert!(debug.contains(&key.id().to_string()));
        for hex in [
            format!("{:?}", seed),
            format!(
                "{:02x}{:02x}{:02x}{:02x}",
                seed[0], seed[1], seed[2], seed[3]
            ),
            format!(
                "{:02X}{:02X}{:02X}{:02X}",
                seed[0], seed[1], seed[2], seed[3]
            ),
        ] {
            assert!(!debug.contains(&hex), "{debug}");
        }
        assert!(!debug.contains("SigningKey"));
    }

    #[test]
    fn minisign_fixture_parses() {
        let public = PublicKey::parse_minisign(vector!("minisign-valid.pub")).unwrap();
        let secret = SecretKey::parse_minisign(vector!("minisign-valid-unencrypted.key")).unwrap();
        assert_eq!(secret.public().verifying_key(), public.verifying_key());
        assert_eq!(secret.id(), public.id());
        // minisign prints this id without its leading zero: B1630732EACE346.
        assert_eq!(
            public.file_key_id().unwrap().to_string(),
            "0B1630732EACE346"
        );
        assert_ne!(public.file_key_id(), Some(public.id()));
        let sig = secret.sign(b"hello");
        public.verify_strict(b"hello", &sig).unwrap();
        let fixed = SecretKey::parse_minisign(vector!("secret-correct-checksum.key")).unwrap();
        assert_eq!(fixed.id(), public.id());
    }

    #[test]
    fn line_endings_tolerated() {
        let want = PublicKey::parse_minisign(vector!("minisign-valid.pub")).unwrap();
        for text in [
            vector!("public-crlf.pub"),
            vector!("public-no-final-newline.pub"),
        ] {
            assert_eq!(PublicKey::parse_minisign(text).unwrap(), want);
        }
    }

    #[test]
    fn malformed_public_keys_rejected() {
        let cases: &[Case] = &[
            (vector!("public-truncated-base64.pub"), |e| {
                matches!(e, KeyError::Malformed { .. })
            }),
            (vector!("public-base64-inner-space.pub"), |e| {
                matches!(e, KeyError::Malformed { .. })
            }),
            (vector!("public-three-lines.pub"), |e| {
                matches!(e, KeyError::Malformed { .. })
            }),
            (vector!("public-two-final-newlines.pub"), |e| {
                matches!(e, KeyError::Malformed { .. })
            }),
            (vector!("public-no-comment.pub"), |e| {
                matches!(e, KeyError::Malformed { .. })
            }),
            (vector!("public-comment-not-untrusted.pub"), |e| {
                matches!(e, KeyError::Malformed { .. })
            }),
            (vector!("public-short.pub"), |e| {
                matches!(
                    e,
                    KeyError::WrongLength {
                        expected: 42,
                        actual: 41,
                        ..
                    }
                )
            }),
            (vector!("public-too-large.pub"), |e| {
                matches!(e, KeyError::TooLarge { .. })
            }),
            (
                vector!("public-wrong-sig-alg.pub"),
                |e| matches!(e, KeyError::UnsupportedAlgorithm { found, .. } if found == b"ED"),
            ),
            (vector!("public-not-a-point.pub"), |e| {
                matches!(e, KeyError::InvalidPublicKey { .. })
            }),
            (b"", |e| matches!(e, KeyError::Malformed { .. })),
            (b"\n", |e| matches!(e, KeyError::Malformed { .. })),
        ];
        for (i, (text, check)) in cases.iter().enumerate() {
            let err = match PublicKey::parse_minisign(text) {
                Ok(k) => panic!("case {i} accepted: {k:?}"),
                Err(e) => e,
            };
            assert!(check(&err), "case {i}: {err:?}");
        }
    }

    #[test]
    fn weak_keys_rejected() {
        for text in [
            vector!("public-weak-identity.pub"),
            vector!("public-weak-order2.pub"),
            vector!("public-weak-order4.pub"),
        ] {
            let err = PublicKey::parse_minisign(text).unwrap_err();
            assert!(matches!(err, KeyError::WeakKey { .. }), "{err:?}");
        }
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let vk = VerifyingKey::from_bytes(&identity).unwrap();
        assert!(matches!(
            PublicKey::from_verifying_key(vk),
            Err(KeyError::WeakKey { key_id }) if key_id == KeyId::derive(&vk)
        ));
        assert!(matches!(
            PublicKey::parse_minisign(&public_with_point(identity)),
            Err(KeyError::WeakKey { .. })
        ));
    }

    #[test]
    fn malformed_secret_keys_rejected() {
        let cases: &[Case] = &[
            (vector!("secret-checksum-mismatch.key"), |e| {
                matches!(e, KeyError::ChecksumMismatch)
            }),
            (vector!("secret-inconsistent-public-half.key"), |e| {
                matches!(e, KeyError::InconsistentSecretKey)
            }),
            (vector!("secret-encrypted-scrypt.key"), |e| {
                matches!(e, KeyError::PasswordRequired)
            }),
            (
                vector!("secret-unknown-kdf.key"),
                |e| matches!(e, KeyError::UnsupportedAlgorithm { found, .. } if found == b"Xx"),
            ),
            (
                vector!("secret-wrong-checksum-alg.key"),
                |e| matches!(e, KeyError::UnsupportedAlgorithm { found, .. } if found == b"B3"),
            ),
            (
                vector!("secret-wrong-sig-alg.key"),
                |e| matches!(e, KeyError::UnsupportedAlgorithm { found, .. } if found == b"ED"),
            ),
            (vector!("secret-base64-unpadded.key"), |e| {
                matches!(e, KeyError::Malformed { .. })
            }),
            (vector!("secret-truncated.key"), |e| {
                matches!(
                    e,
                    KeyError::WrongLength {
                        expected: 158,
                        actual: 157,
                        ..
                    }
                )
            }),
            // A public key file is not a secret key file, and the other way round.
            (vector!("minisign-valid.pub"), |e| {
                matches!(e, KeyError::WrongLength { .. })
            }),
        ];
        for (i, (text, check)) in cases.iter().enumerate() {
            let err = match SecretKey::parse_minisign(text) {
                Ok(k) => panic!("case {i} accepted: {k:?}"),
                Err(e) => e,
            };
            assert!(check(&err), "case {i}: {err:?}");
        }
        assert!(matches!(
            PublicKey::parse_minisign(vector!("minisign-valid-unencrypted.key")),
            Err(KeyError::WrongLength { .. })
        ));
    }

    #[test]
    fn key_made_by_minisign_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let Some(out) = minisign(
            &["-G", "-W", "-p", "k.pub", "-s", "k.key"].map(std::ffi::OsStr::new),
            dir.path(),
        ) else {
            return;
        };
        assert!(out.status.success(), "{out:?}");
        let public = PublicKey::read_file(&dir.path().join("k.pub")).unwrap();
        let secret = SecretKey::read_file(&dir.path().join("k.key")).unwrap();
        assert_eq!(secret.id(), public.id());
        let comment = std::fs::read_to_string(dir.path().join("k.pub")).unwrap();
        let shown = comment.lines().next().unwrap().rsplit(' ').next().unwrap();
        let hint = public.file_key_id().unwrap();
        assert_eq!(
            u64::from_str_radix(shown, 16).unwrap(),
            u64::from_le_bytes(*hint.as_bytes())
        );
        let sig = secret.sign(b"plugin bytes");
        public.verify_strict(b"plugin bytes", &sig).unwrap();
    }

    #[test]
    fn minisign_signs_with_our_key_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate();
        std::fs::write(
            dir.path().join("our.key"),
            key.to_minisign_string_unencrypted(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("our.pub"),
            key.public().to_minisign_string(),
        )
        .unwrap();
        std::fs::write(dir.path().join("file.txt"), b"signed by minisign\n").unwrap();
        let Some(out) = minisign(
            &["-S", "-s", "our.key", "-m", "file.txt"].map(std::ffi::OsStr::new),
            dir.path(),
        ) else {
            return;
        };
        assert!(out.status.success(), "{out:?}");
        let out = minisign(
            &["-V", "-p", "our.pub", "-m", "file.txt"].map(std::ffi::OsStr::new),
            dir.path(),
        )
        .unwrap();
        assert!(out.status.success(), "{out:?}");
        // The signature file names our derived id as minisign's key number.
        let sig = std::fs::read_to_string(dir.path().join("file.txt.minisig")).unwrap();
        let raw = STANDARD.decode(sig.lines().nth(1).unwrap()).unwrap();
        assert_eq!(&raw[2..10], key.id().as_bytes());
        // And a tampered file is refused by minisign too.
        std::fs::write(dir.path().join("file.txt"), b"signed by minisign!\n").unwrap();
        let out = minisign(
            &["-V", "-p", "our.pub", "-m", "file.txt"].map(std::ffi::OsStr::new),
            dir.path(),
        )
        .unwrap();
        assert!(!out.status.success(), "{out:?}");
    }

    fn minisign_with_stdin(
        args: &[&str],
        dir: &Path,
        stdin: &[u8],
    ) -> Option<std::process::Output> {
        use std::io::Write;
        let mut child = match Command::new("minisign")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) if std::env::var_os("SKILLGATE_SKIP_MINISIGN").is_some() => {
                eprintln!("skipping minisign interop: {e}");
                return None;
            }
            Err(e) => panic!("minisign not runnable ({e}); set SKILLGATE_SKIP_MINISIGN=1 to skip"),
        };
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        Some(child.wait_with_output().unwrap())
    }

    fn pw(p: &str) -> impl FnOnce() -> Result<Zeroizing<Vec<u8>>, KeyError> + '_ {
        move || Ok(Zeroizing::new(p.as_bytes().to_vec()))
    }

    #[test]
    fn kdf_params_follow_libsodium() {
        let p = KdfParams::MINISIGN.scrypt_params().unwrap();
        assert_eq!((p.log_n(), p.r(), p.p()), (20, 8, 1));
        let p = KdfParams::INTERACTIVE.scrypt_params().unwrap();
        assert_eq!((p.log_n(), p.r(), p.p()), (14, 8, 1));
        // Too much memory, or a tiny memlimit with a huge opslimit (large p): refused.
        for params in [
            KdfParams {
                opslimit: 1 << 34,
                memlimit: 1 << 31,
            },
            KdfParams {
                opslimit: 1 << 40,
                memlimit: 1024,
            },
        ] {
            assert!(matches!(
                params.scrypt_params(),
                Err(KeyError::KdfParams { .. })
            ));
        }
    }

    #[test]
    fn encrypted_key_round_trip_and_wrong_password() {
        let key = SecretKey::generate();
        let text = key
            .to_minisign_string_encrypted(b"correct horse", KdfParams::INTERACTIVE)
            .unwrap();
        assert!(SecretKey::is_encrypted_minisign(text.as_bytes()).unwrap());
        let back = SecretKey::parse_minisign_with(text.as_bytes(), pw("correct horse")).unwrap();
        assert_eq!(back.id(), key.id());
        assert!(matches!(
            SecretKey::parse_minisign_with(text.as_bytes(), pw("correct horsf")),
            Err(KeyError::WrongPassword)
        ));
        assert!(matches!(
            SecretKey::parse_minisign(text.as_bytes()),
            Err(KeyError::PasswordRequired)
        ));
        let plain = key.to_minisign_string_unencrypted();
        assert!(!SecretKey::is_encrypted_minisign(plain.as_bytes()).unwrap());
        // The password callback is not called for an unencrypted key.
        SecretKey::parse_minisign_with(plain.as_bytes(), || panic!("asked for a password"))
            .unwrap();
    }

    #[test]
    fn encrypted_key_made_by_minisign_is_read_with_its_password() {
        let dir = tempfile::tempdir().unwrap();
        // minisign reads the password (twice) from standard input when it is not a tty.
        let Some(out) = minisign_with_stdin(
            &["-G", "-p", "k.pub", "-s", "k.key"],
            dir.path(),
            b"s3cret pw\ns3cret pw\n",
        ) else {
            return;
        };
        assert!(out.status.success(), "{out:?}");
        let public = PublicKey::read_file(&dir.path().join("k.pub")).unwrap();
        let path = dir.path().join("k.key");
        let secret = SecretKey::read_file_with(&path, pw("s3cret pw")).unwrap();
        assert_eq!(secret.id(), public.id());
        let err = SecretKey::read_file_with(&path, pw("s3cret pX")).unwrap_err();
        assert!(
            matches!(err.innermost(), KeyError::WrongPassword),
            "{err:?}"
        );
    }

    #[test]
    fn minisign_signs_with_our_encrypted_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate();
        let text = key
            .to_minisign_string_encrypted(b"pw for minisign", KdfParams::INTERACTIVE)
            .unwrap();
        std::fs::write(dir.path().join("our.key"), text).unwrap();
        std::fs::write(
            dir.path().join("our.pub"),
            key.public().to_minisign_string(),
        )
        .unwrap();
        std::fs::write(dir.path().join("f.txt"), b"data\n").unwrap();
        let Some(out) = minisign_with_stdin(
            &["-S", "-s", "our.key", "-m", "f.txt"],
            dir.path(),
            b"pw for minisign\n",
        ) else {
            return;
        };
        assert!(out.status.success(), "{out:?}");
        let out =
            minisign_with_stdin(&["-V", "-p", "our.pub", "-m", "f.txt"], dir.path(), b"").unwrap();
        assert!(out.status.success(), "{out:?}");
        let out = minisign_with_stdin(
            &["-S", "-s", "our.key", "-m", "f.txt"],
            dir.path(),
            b"wrong\n",
        )
        .unwrap();
        assert!(!out.status.success(), "{out:?}");
    }

    #[test]
    fn read_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.pub");
        std::fs::write(&path, vector!("public-weak-identity.pub")).unwrap();
        let err = PublicKey::read_file(&path).unwrap_err();
        assert!(matches!(&err, KeyError::InFile { path: p, .. } if *p == path));
        assert!(matches!(err.innermost(), KeyError::WeakKey { .. }));
        let missing = dir.path().join("missing.key");
        assert!(matches!(
            SecretKey::read_file(&missing),
            Err(KeyError::Io { path, .. }) if path == missing
        ));
        let big = dir.path().join("big.pub");
        std::fs::write(&big, vec![b'A'; MAX_KEY_FILE_SIZE + 1]).unwrap();
        assert!(matches!(
            PublicKey::read_file(&big).unwrap_err().innermost(),
            KeyError::TooLarge { .. }
        ));
        assert!(matches!(
            PublicKey::read_file(dir.path()),
            Err(KeyError::NotRegularFile { .. })
        ));
    }

    #[test]
    fn trust_store_from_keys_refuses_duplicates() {
        let a = SecretKey::generate().public();
        let b = SecretKey::generate().public();
        let store = TrustStore::from_keys([a.clone(), b.clone()]).unwrap();
        assert_eq!(store.len(), 2);
        assert!(!store.is_empty());
        assert_eq!(store.get(&a.id()), Some(&a));
        let mut ids: Vec<KeyId> = vec![a.id(), b.id()];
        ids.sort();
        assert_eq!(store.ids().copied().collect::<Vec<_>>(), ids);
        assert!(matches!(
            TrustStore::from_keys([a.clone(), b, a.clone()]),
            Err(KeyError::DuplicateKey {
                key_id,
                first: KeyOrigin::Position(0),
                second: KeyOrigin::Position(2),
            }) if key_id == a.id()
        ));
        assert!(TrustStore::empty().is_empty());
    }

    #[test]
    fn trust_store_load_dir() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretKey::generate().public();
        let b = SecretKey::generate().public();
        std::fs::write(dir.path().join("a.pub"), a.to_minisign_string()).unwrap();
        std::fs::write(dir.path().join("b.pub"), b.to_minisign_string()).unwrap();
        std::fs::write(dir.path().join("README.md"), "not a key").unwrap();
        std::fs::write(dir.path().join("old.pub.bak"), "not a key").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/c.pub"), "not read: not recursive").unwrap();
        let store = TrustStore::load_dir(dir.path()).unwrap();
        assert_eq!(store.len(), 2);
        assert_eq!(store.get(&a.id()), Some(&a));
        assert!(store.get(&b.id()).is_some());
    }

    #[test]
    fn trust_store_load_dir_fails_closed() {
        let key = SecretKey::generate().public();
        let fresh = || {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("good.pub"), key.to_minisign_string()).unwrap();
            dir
        };

        let dir = fresh();
        std::fs::write(dir.path().join("copy.pub"), key.to_minisign_string()).unwrap();
        let err = TrustStore::load_dir(dir.path()).unwrap_err();
        assert!(
            matches!(&err, KeyError::DuplicateKey {
                key_id,
                first: KeyOrigin::File(first),
                second: KeyOrigin::File(second),
            } if *key_id == key.id()
                && first.ends_with("copy.pub")
                && second.ends_with("good.pub")),
            "{err:?}"
        );

        let dir = fresh();
        let bad = dir.path().join("bad.pub");
        std::fs::write(&bad, vector!("public-truncated-base64.pub")).unwrap();
        let err = TrustStore::load_dir(dir.path()).unwrap_err();
        assert!(
            matches!(&err, KeyError::InFile { path, source }
                if *path == bad && matches!(**source, KeyError::Malformed { .. })),
            "{err:?}"
        );

        let dir = fresh();
        let link = dir.path().join("link.pub");
        std::os::unix::fs::symlink(dir.path().join("good.pub"), &link).unwrap();
        assert!(matches!(
            TrustStore::load_dir(dir.path()),
            Err(KeyError::NotRegularFile { path }) if path == link
        ));

        let dir = fresh();
        let sub = dir.path().join("dir.pub");
        std::fs::create_dir(&sub).unwrap();
        assert!(matches!(
            TrustStore::load_dir(dir.path()),
            Err(KeyError::NotRegularFile { path }) if path == sub
        ));

        let dir = fresh();
        let empty = dir.path().join("empty.pub");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            TrustStore::load_dir(dir.path()).unwrap_err().innermost(),
            KeyError::Malformed { .. }
        ));

        let dir = fresh();
        let missing = dir.path().join("nope");
        assert!(matches!(
            TrustStore::load_dir(&missing),
            Err(KeyError::Io { path, .. }) if path == missing
        ));
    }
}
