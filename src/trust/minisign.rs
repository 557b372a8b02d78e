//! minisign's key files: the two-line layout, the public key file, and the secret key box
//! (scrypt-encrypted or not, with its BLAKE2b checksum).
//!
//! Threats answered here: a key file crafted to confuse the parser, a secret key file whose
//! public half does not match its seed or whose checksum does not match (refused rather
//! than repaired), and an encrypted key whose scrypt parameters would make us spend
//! unbounded memory or time (bounded before a password is even asked for). Every key file
//! is capped in size before it is decoded.
//!
//! The methods here are [`PublicKey`]'s and [`SecretKey`]'s: this module holds their file
//! format, apart from what a key is ([`super::keys`]). Keys written here are read by
//! minisign and the other way round (tested against the real `minisign`).
//!
//! Longer than most files here because it is one concept, one file format, and most of it
//! is its tests: a vector file per malformed input and the interop runs against `minisign`.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use blake2::{Blake2b256, Digest};
use ed25519_dalek::{SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::base::capped::Links;
use crate::trust::formats::MAX_KEY_FILE_SIZE;
use crate::trust::key_id::{KEY_ID_LEN, KeyId};
use crate::trust::keys::{KeyError, PublicKey, SecretKey, in_file, read_key_file};

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

impl PublicKey {
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
        let file_key_id = KeyId::from_bytes(file_id);
        let key = VerifyingKey::from_bytes(&pk)
            .map_err(|_| KeyError::InvalidPublicKey { file_key_id })?;
        Ok(PublicKey::from_verifying_key(key)?.with_file_key_id(file_key_id))
    }

    /// Reads and parses a minisign public key file.
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let text = read_key_file(path, Links::Follow)?;
        PublicKey::parse_minisign(&text).map_err(|e| in_file(path, e))
    }

    /// This key as a minisign public key file, with the derived id as minisign's key number.
    pub fn to_minisign_string(&self) -> String {
        let mut raw = Vec::with_capacity(PUBLIC_FILE_LEN);
        raw.extend_from_slice(&SIG_ALG);
        raw.extend_from_slice(self.id().as_bytes());
        raw.extend_from_slice(self.verifying_key().as_bytes());
        format!(
            "untrusted comment: skillgate public key {}\n{}\n",
            self.id(),
            STANDARD.encode(&raw)
        )
    }
}

impl SecretKey {
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
        Ok(SecretKey::from_signing_key(key).with_file_key_id(KeyId::from_bytes(file_id)))
    }

    /// Reads and parses an unencrypted minisign secret key file.
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let text = read_key_file(path, Links::Follow)?;
        SecretKey::parse_minisign(&text).map_err(|e| in_file(path, e))
    }

    /// Reads and parses a minisign secret key file, calling `password` if it is encrypted.
    pub fn read_file_with(
        path: &Path,
        password: impl FnOnce() -> Result<Zeroizing<Vec<u8>>, KeyError>,
    ) -> Result<Self, KeyError> {
        let text = read_key_file(path, Links::Follow)?;
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
        let id = self.id();
        let keypair = self.keypair_bytes();
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
        let id = self.id();
        let keypair = self.keypair_bytes();
        let mut raw = Vec::with_capacity(SECRET_FILE_LEN);
        raw.extend_from_slice(&SIG_ALG);
        raw.extend_from_slice(&KDF_NONE);
        raw.extend_from_slice(&CHK_ALG);
        raw.extend_from_slice(&[0u8; SALT_LEN]);
        raw.extend_from_slice(&0u64.to_le_bytes());
        raw.extend_from_slice(&0u64.to_le_bytes());
        raw.extend_from_slice(id.as_bytes());
        raw.extend_from_slice(keypair.as_slice());
        raw.extend_from_slice(&secret_checksum(id.as_bytes(), &keypair));
        format!(
            "untrusted comment: skillgate secret key (unencrypted)\n{}\n",
            STANDARD.encode(&raw)
        )
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

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
}
