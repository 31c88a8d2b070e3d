//! Ed25519 detached signatures in minisign's file formats: key pairs, `.minisig` files, signing
//! and verifying the exact bytes of an `.aci`.
//!
//! Formats (as written and read by minisign 0.11; every line ends in `\n`, base64 is standard
//! with padding):
//! - public key: `untrusted comment: minisign public key <ID>` then
//!   base64(`"Ed"` ‖ key id (8 bytes) ‖ public key (32 bytes)).
//! - secret key: an untrusted comment, then base64(`"Ed"` ‖ kdf (`"Sc"` scrypt or two zero bytes
//!   for no password) ‖ `"B2"` ‖ salt (32) ‖ opslimit (u64 LE) ‖ memlimit (u64 LE) ‖
//!   [key id (8) ‖ seed+public key (64) ‖ BLAKE2b-256 checksum (32)]). With a password the
//!   bracketed part is XORed with scrypt(password, salt) using libsodium's parameter choice.
//! - signature: an untrusted comment, base64(algorithm ‖ key id ‖ signature (64)), then
//!   `trusted comment: <text>` and base64 of the "global" signature over (signature ‖ text).
//!   Algorithm `"Ed"` signs the bytes themselves (legacy), `"ED"` signs their BLAKE2b-512
//!   (prehashed, minisign's default since 0.10, and ours).
//!
//! The key id shown to people is the 8 id bytes read as a little-endian u64 in upper-case hex,
//! as minisign prints it, so `builder` and `minisign` name a key the same way.

use std::fmt;
use std::io::Read;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Blake2b512, Digest};
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};

use crate::archive::{AciSummary, StreamVerifier};

/// The prefix of every untrusted comment line.
const UNTRUSTED_PREFIX: &str = "untrusted comment: ";
/// The prefix of the trusted comment line of a signature.
const TRUSTED_PREFIX: &str = "trusted comment: ";
/// minisign reads at most this many bytes of a trusted comment line (its TRUSTEDCOMMENTMAXBYTES
/// includes the prefix and the line end); longer ones it cannot verify.
const TRUSTED_COMMENT_MAX: usize = 8192 - TRUSTED_PREFIX.len() - 2;
/// minisign refuses legacy signatures over more than 1 GiB (it must hold the data in memory);
/// we do the same so a huge download cannot exhaust the guest's memory.
const LEGACY_MAX_BYTES: u64 = 1 << 30;

const ALG_LEGACY: [u8; 2] = *b"Ed";
const ALG_PREHASHED: [u8; 2] = *b"ED";
const KDF_SCRYPT: [u8; 2] = *b"Sc";
const KDF_NONE: [u8; 2] = [0, 0];
const CHK_BLAKE2: [u8; 2] = *b"B2";

const PUBLIC_KEY_LEN: usize = 2 + 8 + 32;
const SIGNATURE_LEN: usize = 2 + 8 + 64;
/// key id + seed/public key + checksum: the part scrypt's stream encrypts.
const SECRET_PAYLOAD_LEN: usize = 8 + 64 + 32;
const SECRET_KEY_LEN: usize = 2 + 2 + 2 + 32 + 8 + 8 + SECRET_PAYLOAD_LEN;

/// Errors from reading, writing, making and checking keys and signatures.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("malformed minisign public key: {0}")]
    MalformedPublicKey(String),
    #[error("malformed minisign secret key: {0}")]
    MalformedSecretKey(String),
    #[error("malformed minisign signature: {0}")]
    MalformedSignature(String),
    #[error("the secret key is encrypted: a password is needed to use it")]
    PasswordRequired,
    #[error("wrong password for the secret key (its checksum does not match after decryption)")]
    WrongPassword,
    #[error("unsupported scrypt parameters in the secret key: {0}")]
    KdfParams(String),
    #[error("signature was made by key {signature}, not by the given key {key}")]
    KeyIdMismatch { signature: KeyId, key: KeyId },
    #[error("signature by key {0} does not match the data (tampered or a different file)")]
    BadSignature(KeyId),
    #[error("the trusted comment of the signature by key {0} was altered")]
    BadTrustedComment(KeyId),
    #[error("comment must be one line without carriage returns and at most {max} bytes", max = TRUSTED_COMMENT_MAX)]
    InvalidComment,
    #[error(
        "the signature by key {0} is a legacy (`Ed`) one over the data itself, not over its hash"
    )]
    NotPrehashed(KeyId),
    #[error("legacy (non-prehashed) signatures cover at most 1 GiB of data")]
    LegacyTooLarge,
    #[error("reading the signed data")]
    Read(#[source] std::io::Error),
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
}

/// The 8-byte key id minisign stores beside each key and signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// Parses minisign's display form (16 hex digits, any case).
    pub fn from_hex(s: &str) -> Option<KeyId> {
        if s.len() != 16 {
            return None;
        }
        let v = u64::from_str_radix(s, 16).ok()?;
        Some(KeyId(v.to_le_bytes()))
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

/// Which bytes the signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `Ed`: the data itself.
    Legacy,
    /// `ED`: BLAKE2b-512 of the data.
    Prehashed,
}

/// Splits a minisign file into lines, tolerating CRLF and trailing blank lines.
fn lines(text: &str) -> Vec<&str> {
    text.lines().map(|l| l.trim_end_matches('\r')).collect()
}

fn decode_fixed<const N: usize>(b64: &str) -> Result<[u8; N], String> {
    let bytes = B64
        .decode(b64.trim())
        .map_err(|e| format!("invalid base64: {e}"))?;
    <[u8; N]>::try_from(bytes.as_slice())
        .map_err(|_| format!("expected {N} bytes, found {}", bytes.len()))
}

fn check_comment(comment: &str) -> Result<(), SignError> {
    if comment.contains(['\n', '\r']) || comment.len() > TRUSTED_COMMENT_MAX {
        return Err(SignError::InvalidComment);
    }
    Ok(())
}

/// A public key: id and ed25519 verifying key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    id: KeyId,
    key: VerifyingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id)
    }
}

impl PublicKey {
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Reads a public key file (`untrusted comment: ...` then base64), or the bare base64 line
    /// that `minisign -P` takes.
    pub fn from_minisign(text: &str) -> Result<PublicKey, SignError> {
        let lines = lines(text);
        let b64 = match lines.as_slice() {
            [single] => single,
            [_comment, key, rest @ ..] if rest.iter().all(|l| l.trim().is_empty()) => key,
            _ => {
                return Err(SignError::MalformedPublicKey(
                    "expected a comment line and one base64 line".into(),
                ));
            }
        };
        Self::from_base64(b64)
    }

    /// Reads the base64 key line alone.
    pub fn from_base64(b64: &str) -> Result<PublicKey, SignError> {
        let raw: [u8; PUBLIC_KEY_LEN] = decode_fixed(b64).map_err(SignError::MalformedPublicKey)?;
        if raw[..2] != ALG_LEGACY {
            return Err(SignError::MalformedPublicKey(
                "unsupported signature algorithm (expected \"Ed\")".into(),
            ));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&raw[2..10]);
        let mut key = [0u8; 32];
        key.copy_from_slice(&raw[10..]);
        let key = VerifyingKey::from_bytes(&key)
            .map_err(|_| SignError::MalformedPublicKey("not a valid ed25519 point".into()))?;
        Ok(PublicKey { id: KeyId(id), key })
    }

    /// The base64 line (what `minisign -P` accepts).
    pub fn to_base64(&self) -> String {
        let mut raw = Vec::with_capacity(PUBLIC_KEY_LEN);
        raw.extend_from_slice(&ALG_LEGACY);
        raw.extend_from_slice(&self.id.0);
        raw.extend_from_slice(self.key.as_bytes());
        B64.encode(raw)
    }

    /// The whole public key file, as minisign writes it (its comment prints the key id with
    /// `%PRIX64`, without leading zeros, unlike the padded form [`KeyId`] displays).
    pub fn to_minisign(&self) -> String {
        format!(
            "{UNTRUSTED_PREFIX}minisign public key {:X}\n{}\n",
            u64::from_le_bytes(self.id.0),
            self.to_base64()
        )
    }

    /// Checks `sig` over the bytes in `data`: key id, the signature itself and the trusted
    /// comment's global signature.
    pub fn verify(&self, data: &[u8], sig: &Signature) -> Result<(), SignError> {
        self.verify_reader(data, sig)
    }

    /// Like [`PublicKey::verify`], streaming the data (prehashed signatures need constant
    /// memory; legacy ones are read whole, up to 1 GiB).
    pub fn verify_reader(&self, mut data: impl Read, sig: &Signature) -> Result<(), SignError> {
        match sig.algorithm {
            Algorithm::Prehashed => {
                self.check_key_id(sig)?;
                let mut hasher = Prehasher::new();
                hasher.update_from(&mut data)?;
                self.verify_prehash(&hasher.finish(), sig)
            }
            Algorithm::Legacy => {
                self.check_key_id(sig)?;
                let mut buf = Vec::new();
                let read = data
                    .take(LEGACY_MAX_BYTES + 1)
                    .read_to_end(&mut buf)
                    .map_err(SignError::Read)?;
                if read as u64 > LEGACY_MAX_BYTES {
                    return Err(SignError::LegacyTooLarge);
                }
                let signature = ed25519_dalek::Signature::from_bytes(&sig.signature);
                if self.key.verify(&buf, &signature).is_err() {
                    return Err(SignError::BadSignature(self.id));
                }
                self.verify_global(sig)
            }
        }
    }

    /// Checks a prehashed (`ED`) signature against the BLAKE2b-512 of the data, computed while
    /// the data streamed past (so a download is hashed without being read twice).
    pub fn verify_prehash(&self, prehash: &Prehash, sig: &Signature) -> Result<(), SignError> {
        self.check_key_id(sig)?;
        if sig.algorithm != Algorithm::Prehashed {
            return Err(SignError::NotPrehashed(self.id));
        }
        let signature = ed25519_dalek::Signature::from_bytes(&sig.signature);
        if self.key.verify(&prehash.0, &signature).is_err() {
            return Err(SignError::BadSignature(self.id));
        }
        self.verify_global(sig)
    }

    fn check_key_id(&self, sig: &Signature) -> Result<(), SignError> {
        if sig.key_id != self.id {
            return Err(SignError::KeyIdMismatch {
                signature: sig.key_id,
                key: self.id,
            });
        }
        Ok(())
    }

    /// The global signature covers the signature and the trusted comment.
    fn verify_global(&self, sig: &Signature) -> Result<(), SignError> {
        let global = ed25519_dalek::Signature::from_bytes(&sig.global_signature);
        let mut signed = sig.signature.to_vec();
        signed.extend_from_slice(sig.trusted_comment.as_bytes());
        self.key
            .verify(&signed, &global)
            .map_err(|_| SignError::BadTrustedComment(self.id))
    }
}

/// One public key's check of a local archive (see [`crate::archive::unpack_verified`]): the
/// bytes are hashed before anything parses them. No trust store is involved; the caller chose
/// the key.
#[derive(Debug)]
pub struct KeyVerifier {
    public: PublicKey,
    sig: Signature,
    prehasher: Option<Prehasher>,
}

impl KeyVerifier {
    pub fn new(public: PublicKey, sig: Signature) -> KeyVerifier {
        let prehasher = (sig.algorithm == Algorithm::Prehashed).then(Prehasher::new);
        KeyVerifier {
            public,
            sig,
            prehasher,
        }
    }

    fn decide(self, data: &mut dyn Read) -> Result<(), SignError> {
        match self.prehasher {
            Some(h) => self.public.verify_prehash(&h.finish(), &self.sig),
            // A legacy (`Ed`) signature covers the bytes themselves and ed25519-dalek verifies
            // a whole slice, so the file is read a second time here.
            None => self.public.verify_reader(data, &self.sig),
        }
    }
}

impl StreamVerifier for KeyVerifier {
    type Accepted = ();
    type Verified = ();
    type Error = SignError;

    fn update(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.prehasher {
            h.update(data);
        }
    }

    fn verify(self, data: &mut dyn Read) -> Result<(), SignError> {
        self.decide(data)
    }

    /// The caller chose the key for this file, whatever the image calls itself.
    fn admit(_accepted: (), _summary: &AciSummary) -> Result<(), SignError> {
        Ok(())
    }
}

/// BLAKE2b-512 of data fed in pieces: what a prehashed (`ED`) signature signs.
#[derive(Clone, Default)]
pub struct Prehasher(Blake2b512);

impl fmt::Debug for Prehasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Prehasher")
    }
}

/// The finished BLAKE2b-512 digest of the signed data.
#[derive(Clone, PartialEq, Eq)]
pub struct Prehash([u8; 64]);

impl fmt::Debug for Prehash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Prehash({})", hex::encode(self.0))
    }
}

impl Prehasher {
    pub fn new() -> Prehasher {
        Prehasher(Blake2b512::new())
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    fn update_from(&mut self, data: &mut impl Read) -> Result<(), SignError> {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SignError::Read(e)),
            };
            self.0.update(&buf[..n]);
        }
    }

    pub fn finish(self) -> Prehash {
        Prehash(self.0.finalize().into())
    }
}

/// How hard scrypt works to protect a secret key: libsodium's `opslimit`/`memlimit` pair, which
/// minisign stores in the key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfLimits {
    pub opslimit: u64,
    pub memlimit: u64,
}

impl KdfLimits {
    /// minisign's default (libsodium's "sensitive"): 1 GiB of memory, seconds of CPU.
    pub const SENSITIVE: KdfLimits = KdfLimits {
        opslimit: 33_554_432,
        memlimit: 1_073_741_824,
    };
    /// libsodium's minimum (16 MiB budget, N = 2^10): for tests only.
    pub const MINIMUM: KdfLimits = KdfLimits {
        opslimit: 32_768,
        memlimit: 16_777_216,
    };

    /// libsodium's mapping from (opslimit, memlimit) to scrypt's (log2 N, r, p); minisign keys
    /// store only the limits, so we must derive the same parameters to decrypt them.
    fn scrypt_params(self) -> Result<scrypt::Params, SignError> {
        let opslimit = self.opslimit.max(32_768);
        let r: u64 = 8;
        let first_log2_above = |max_n: u64| {
            let mut n_log2 = 1u32;
            while n_log2 < 63 && (1u64 << n_log2) <= max_n / 2 {
                n_log2 += 1;
            }
            n_log2
        };
        let (n_log2, p) = if opslimit < self.memlimit / 32 {
            (first_log2_above(opslimit / (r * 4)), 1u64)
        } else {
            let n_log2 = first_log2_above(self.memlimit / (r * 128));
            let maxrp = ((opslimit / 4) >> n_log2).min(0x3fff_ffff);
            (n_log2, maxrp / r)
        };
        // Refuse absurd parameters from an untrusted file before allocating 128·N·r bytes.
        if n_log2 > 24 || p == 0 || p > 16 {
            return Err(SignError::KdfParams(format!(
                "log2(N)={n_log2}, r={r}, p={p} from opslimit={} memlimit={}",
                self.opslimit, self.memlimit
            )));
        }
        let (n_log2, p) = (n_log2 as u8, p as u32);
        scrypt::Params::new(n_log2, 8, p, 32).map_err(|e| SignError::KdfParams(e.to_string()))
    }

    fn stream(
        self,
        password: &str,
        salt: &[u8; 32],
    ) -> Result<[u8; SECRET_PAYLOAD_LEN], SignError> {
        let params = self.scrypt_params()?;
        let mut out = [0u8; SECRET_PAYLOAD_LEN];
        scrypt::scrypt(password.as_bytes(), salt, &params, &mut out)
            .map_err(|e| SignError::KdfParams(e.to_string()))?;
        Ok(out)
    }
}

/// A secret key: its id and the ed25519 signing key.
pub struct SecretKey {
    id: KeyId,
    key: SigningKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.id)
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], SignError> {
    let mut buf = [0u8; N];
    getrandom::getrandom(&mut buf).map_err(|e| SignError::Random(e.to_string()))?;
    Ok(buf)
}

/// BLAKE2b-256 over algorithm ‖ key id ‖ secret key: minisign's check that a decryption worked.
fn secret_checksum(id: &KeyId, sk64: &[u8; 64]) -> [u8; 32] {
    let mut h = Blake2b::<U32>::new();
    h.update(ALG_LEGACY);
    h.update(id.0);
    h.update(sk64);
    h.finalize().into()
}

impl SecretKey {
    /// A new random key pair with a random key id, as `minisign -G` makes.
    pub fn generate() -> Result<SecretKey, SignError> {
        let seed: [u8; 32] = random_bytes()?;
        let id: [u8; 8] = random_bytes()?;
        Ok(SecretKey {
            id: KeyId(id),
            key: SigningKey::from_bytes(&seed),
        })
    }

    pub fn id(&self) -> KeyId {
        self.id
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// Whether a secret key file needs a password.
    pub fn is_encrypted(text: &str) -> Result<bool, SignError> {
        let raw = Self::raw(text)?;
        Ok(raw[2..4] == KDF_SCRYPT)
    }

    fn raw(text: &str) -> Result<[u8; SECRET_KEY_LEN], SignError> {
        let lines = lines(text);
        let b64 = match lines.as_slice() {
            [_comment, key, rest @ ..] if rest.iter().all(|l| l.trim().is_empty()) => key,
            _ => {
                return Err(SignError::MalformedSecretKey(
                    "expected a comment line and one base64 line".into(),
                ));
            }
        };
        let raw: [u8; SECRET_KEY_LEN] = decode_fixed(b64).map_err(SignError::MalformedSecretKey)?;
        if raw[..2] != ALG_LEGACY {
            return Err(SignError::MalformedSecretKey(
                "unsupported signature algorithm (expected \"Ed\")".into(),
            ));
        }
        if raw[4..6] != CHK_BLAKE2 {
            return Err(SignError::MalformedSecretKey(
                "unsupported checksum (expected \"B2\")".into(),
            ));
        }
        if raw[2..4] != KDF_SCRYPT && raw[2..4] != KDF_NONE {
            return Err(SignError::MalformedSecretKey(
                "unsupported key derivation function".into(),
            ));
        }
        Ok(raw)
    }

    /// Reads a secret key file. `password` is needed only when the file is encrypted.
    pub fn from_minisign(text: &str, password: Option<&str>) -> Result<SecretKey, SignError> {
        let raw = Self::raw(text)?;
        let mut payload = [0u8; SECRET_PAYLOAD_LEN];
        payload.copy_from_slice(&raw[SECRET_KEY_LEN - SECRET_PAYLOAD_LEN..]);
        let encrypted = raw[2..4] == KDF_SCRYPT;
        if encrypted {
            let password = password.ok_or(SignError::PasswordRequired)?;
            let mut salt = [0u8; 32];
            salt.copy_from_slice(&raw[6..38]);
            let le = |r: &[u8]| {
                let mut b = [0u8; 8];
                b.copy_from_slice(r);
                u64::from_le_bytes(b)
            };
            let limits = KdfLimits {
                opslimit: le(&raw[38..46]),
                memlimit: le(&raw[46..54]),
            };
            let stream = limits.stream(password, &salt)?;
            for (b, s) in payload.iter_mut().zip(stream) {
                *b ^= s;
            }
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&payload[..8]);
        let id = KeyId(id);
        let mut sk64 = [0u8; 64];
        sk64.copy_from_slice(&payload[8..72]);
        let chk = &payload[72..];
        // minisign leaves the checksum zero in keys made without a password (-W) and only checks
        // it after decrypting; we check it whenever it is set.
        let chk_set = chk.iter().any(|&b| b != 0);
        if (encrypted || chk_set) && chk != secret_checksum(&id, &sk64) {
            return Err(if encrypted {
                SignError::WrongPassword
            } else {
                SignError::MalformedSecretKey("checksum does not match".into())
            });
        }
        let key = SigningKey::from_keypair_bytes(&sk64).map_err(|_| {
            SignError::MalformedSecretKey("public half does not match the secret seed".into())
        })?;
        Ok(SecretKey { id, key })
    }

    fn file(&self, kdf: [u8; 2], salt: [u8; 32], limits: KdfLimits, payload: &[u8]) -> String {
        let mut raw = Vec::with_capacity(SECRET_KEY_LEN);
        raw.extend_from_slice(&ALG_LEGACY);
        raw.extend_from_slice(&kdf);
        raw.extend_from_slice(&CHK_BLAKE2);
        raw.extend_from_slice(&salt);
        raw.extend_from_slice(&limits.opslimit.to_le_bytes());
        raw.extend_from_slice(&limits.memlimit.to_le_bytes());
        raw.extend_from_slice(payload);
        let comment = if kdf == KDF_NONE {
            "minisign secret key (not password protected)"
        } else {
            "minisign encrypted secret key"
        };
        format!("{UNTRUSTED_PREFIX}{comment}\n{}\n", B64.encode(raw))
    }

    fn payload(&self) -> [u8; SECRET_PAYLOAD_LEN] {
        let sk64 = self.key.to_keypair_bytes();
        let mut payload = [0u8; SECRET_PAYLOAD_LEN];
        payload[..8].copy_from_slice(&self.id.0);
        payload[8..72].copy_from_slice(&sk64);
        payload[72..].copy_from_slice(&secret_checksum(&self.id, &sk64));
        payload
    }

    /// The secret key file without a password (minisign's `-W` form). Keep it private: anyone
    /// who reads it can sign as this key.
    pub fn to_minisign_unencrypted(&self) -> String {
        self.file(
            KDF_NONE,
            [0; 32],
            KdfLimits {
                opslimit: 0,
                memlimit: 0,
            },
            &self.payload(),
        )
    }

    /// The secret key file encrypted with `password` (minisign's default form).
    pub fn to_minisign_encrypted(
        &self,
        password: &str,
        limits: KdfLimits,
    ) -> Result<String, SignError> {
        let salt: [u8; 32] = random_bytes()?;
        let stream = limits.stream(password, &salt)?;
        let mut payload = self.payload();
        for (b, s) in payload.iter_mut().zip(stream) {
            *b ^= s;
        }
        Ok(self.file(KDF_SCRYPT, salt, limits, &payload))
    }

    /// Signs `data` prehashed (`ED`, minisign's default).
    pub fn sign(&self, data: &[u8], trusted_comment: &str) -> Result<Signature, SignError> {
        self.sign_reader(data, trusted_comment)
    }

    /// Signs what `data` yields, prehashed, in constant memory.
    pub fn sign_reader(
        &self,
        mut data: impl Read,
        trusted_comment: &str,
    ) -> Result<Signature, SignError> {
        let mut hasher = Prehasher::new();
        hasher.update_from(&mut data)?;
        let digest = hasher.finish();
        self.sign_message(Algorithm::Prehashed, &digest.0, trusted_comment)
    }

    /// Signs `data` itself (`Ed`, minisign's `-l`): for verifiers older than minisign 0.10.
    pub fn sign_legacy(&self, data: &[u8], trusted_comment: &str) -> Result<Signature, SignError> {
        self.sign_message(Algorithm::Legacy, data, trusted_comment)
    }

    fn sign_message(
        &self,
        algorithm: Algorithm,
        message: &[u8],
        trusted_comment: &str,
    ) -> Result<Signature, SignError> {
        check_comment(trusted_comment)?;
        let signature = self.key.sign(message).to_bytes();
        let mut signed = signature.to_vec();
        signed.extend_from_slice(trusted_comment.as_bytes());
        let global_signature = self.key.sign(&signed).to_bytes();
        Ok(Signature {
            algorithm,
            key_id: self.id,
            signature,
            untrusted_comment: "signature from minisign secret key".into(),
            trusted_comment: trusted_comment.into(),
            global_signature,
        })
    }
}

/// A parsed `.minisig` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub algorithm: Algorithm,
    pub key_id: KeyId,
    signature: [u8; 64],
    /// Not covered by any signature: display only.
    pub untrusted_comment: String,
    /// Covered by the global signature; checked by [`PublicKey::verify`].
    pub trusted_comment: String,
    global_signature: [u8; 64],
}

impl Signature {
    /// Parses a `.minisig` file: four lines (untrusted comment, signature, trusted comment,
    /// global signature).
    pub fn from_minisign(text: &str) -> Result<Signature, SignError> {
        let bad = |m: &str| SignError::MalformedSignature(m.into());
        let lines = lines(text);
        let (untrusted, sig, trusted, global) = match lines.as_slice() {
            [u, s, t, g, rest @ ..] if rest.iter().all(|l| l.trim().is_empty()) => (u, s, t, g),
            _ => return Err(bad("expected four lines")),
        };
        let untrusted = untrusted
            .strip_prefix(UNTRUSTED_PREFIX)
            .ok_or_else(|| bad("first line must start with \"untrusted comment: \""))?;
        let trusted = trusted
            .strip_prefix(TRUSTED_PREFIX)
            .ok_or_else(|| bad("third line must start with \"trusted comment: \""))?;
        if trusted.len() > TRUSTED_COMMENT_MAX {
            return Err(bad("trusted comment too long"));
        }
        let raw: [u8; SIGNATURE_LEN] = decode_fixed(sig).map_err(SignError::MalformedSignature)?;
        let algorithm = match [raw[0], raw[1]] {
            ALG_LEGACY => Algorithm::Legacy,
            ALG_PREHASHED => Algorithm::Prehashed,
            _ => return Err(bad("unsupported signature algorithm")),
        };
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&raw[2..10]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&raw[10..]);
        let global_signature: [u8; 64] = decode_fixed(global)
            .map_err(|e| SignError::MalformedSignature(format!("global signature: {e}")))?;
        Ok(Signature {
            algorithm,
            key_id: KeyId(key_id),
            signature,
            untrusted_comment: untrusted.into(),
            trusted_comment: trusted.into(),
            global_signature,
        })
    }

    /// The `.minisig` file text.
    pub fn to_minisign(&self) -> String {
        let mut raw = Vec::with_capacity(SIGNATURE_LEN);
        raw.extend_from_slice(match self.algorithm {
            Algorithm::Legacy => &ALG_LEGACY,
            Algorithm::Prehashed => &ALG_PREHASHED,
        });
        raw.extend_from_slice(&self.key_id.0);
        raw.extend_from_slice(&self.signature);
        format!(
            "{UNTRUSTED_PREFIX}{}\n{}\n{TRUSTED_PREFIX}{}\n{}\n",
            self.untrusted_comment,
            B64.encode(raw),
            self.trusted_comment,
            B64.encode(self.global_signature)
        )
    }
}

/// minisign's default trusted comment for a file signed at `unix_time`.
pub fn default_trusted_comment(file_name: &str, unix_time: u64) -> String {
    // A name with a line break cannot go in a one-line comment; such names are only mangled here.
    let name: String = file_name
        .chars()
        .map(|c| if c == '\n' || c == '\r' { '_' } else { c })
        .collect();
    format!("timestamp:{unix_time}\tfile:{name}\thashed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_comment_prints_the_id_without_leading_zeros_like_minisign() {
        let mut raw = B64
            .decode(SecretKey::generate().unwrap().public_key().to_base64())
            .unwrap();
        raw[2..10].copy_from_slice(&0x0123_4567_89AB_CDEFu64.to_le_bytes());
        let key = PublicKey::from_base64(&B64.encode(raw)).unwrap();
        let text = key.to_minisign();
        assert!(
            text.starts_with("untrusted comment: minisign public key 123456789ABCDEF\n"),
            "{text}"
        );
        assert_eq!(PublicKey::from_minisign(&text).unwrap(), key);
    }

    fn key() -> SecretKey {
        SecretKey::generate().unwrap()
    }

    #[test]
    fn key_id_displays_as_minisign_prints_it() {
        // From `minisign -G`: id bytes 67 49 10 ab 73 4e 70 66 print as 66704E73AB104967.
        let id = KeyId([0x67, 0x49, 0x10, 0xab, 0x73, 0x4e, 0x70, 0x66]);
        assert_eq!(id.to_string(), "66704E73AB104967");
        assert_eq!(KeyId::from_hex("66704e73ab104967"), Some(id));
    }

    #[test]
    fn reads_a_public_key_written_by_minisign() {
        let text = "untrusted comment: minisign public key 66704E73AB104967\n\
                    RWRnSRCrc05wZtd6P1ui4oa+pSC1dWk+DY13bwCHQ9UUu44PWTb0l/d6\n";
        let pk = PublicKey::from_minisign(text).unwrap();
        assert_eq!(pk.id().to_string(), "66704E73AB104967");
        assert_eq!(pk.to_minisign(), text);
    }

    #[test]
    fn verifies_a_signature_made_by_minisign() {
        let pk = PublicKey::from_base64("RWRnSRCrc05wZtd6P1ui4oa+pSC1dWk+DY13bwCHQ9UUu44PWTb0l/d6")
            .unwrap();
        let prehashed = "untrusted comment: signature from minisign secret key\n\
            RURnSRCrc05wZozBpvQO6OhQogWrpKRgjioPQOseGfRCGfsKQiUqfB/jHOdkemViHo6fdCqXEO//VDjOED0RcFg5VYc9+lJiYwo=\n\
            trusted comment: timestamp:1795351036\tfile:f\thashed\n\
            rMvaV3MaNqeqa7NDXlQojrCgTH9JjucImwX14+iS4wEAbsXmoqh3tiRr3n6ieeOI+1VWsa2Z3CFCGTQNUZeRAA==\n";
        let legacy = "untrusted comment: signature from minisign secret key\n\
            RWRnSRCrc05wZv6yEPvyqOzIZ2VLKWfaUvw1QUkQE3kuwSP2e0Q2pZOuIVN0q972RTDQTFCR0RFZ/+UtbSapKML6NXF4GDPPnws=\n\
            trusted comment: timestamp:1795351036\tfile:f\n\
            n0o7fgY6+Ra2S//0uaNlFrhIDBLrv6gDtvBY6sb/8rnwD32PvG48ZOIYALEsjkvZWawt15P+LfyMII9N5LuyCg==\n";
        for text in [prehashed, legacy] {
            let sig = Signature::from_minisign(text).unwrap();
            pk.verify(b"hello\n", &sig).unwrap();
            assert!(matches!(
                pk.verify(b"hello!\n", &sig),
                Err(SignError::BadSignature(_))
            ));
            assert_eq!(sig.to_minisign(), text);
        }
    }

    #[test]
    fn sign_then_verify_round_trips_both_algorithms() {
        let sk = key();
        let pk = sk.public_key();
        for sig in [
            sk.sign(b"data", "c").unwrap(),
            sk.sign_legacy(b"data", "c").unwrap(),
        ] {
            let parsed = Signature::from_minisign(&sig.to_minisign()).unwrap();
            assert_eq!(parsed, sig);
            pk.verify(b"data", &parsed).unwrap();
        }
    }

    #[test]
    fn rejects_tampered_data() {
        let sk = key();
        let sig = sk.sign(b"data", "c").unwrap();
        let err = sk.public_key().verify(b"dat4", &sig).unwrap_err();
        assert!(matches!(err, SignError::BadSignature(id) if id == sk.id()));
    }

    #[test]
    fn rejects_altered_trusted_comment() {
        let sk = key();
        let text = sk.sign(b"data", "timestamp:1").unwrap().to_minisign();
        let altered = text.replace("timestamp:1", "timestamp:2");
        let sig = Signature::from_minisign(&altered).unwrap();
        let err = sk.public_key().verify(b"data", &sig).unwrap_err();
        assert!(matches!(err, SignError::BadTrustedComment(_)));
    }

    #[test]
    fn rejects_signature_by_another_key() {
        let (a, b) = (key(), key());
        let sig = a.sign(b"data", "c").unwrap();
        let err = b.public_key().verify(b"data", &sig).unwrap_err();
        assert!(matches!(err, SignError::KeyIdMismatch { .. }));
    }

    #[test]
    fn rejects_malformed_signature_files() {
        let sk = key();
        let good = sk.sign(b"data", "c").unwrap().to_minisign();
        let lines: Vec<&str> = good.lines().collect();
        let cases = [
            String::new(),
            "garbage".to_string(),
            good.replacen("untrusted comment: ", "comment: ", 1),
            good.replacen("trusted comment: ", "trusted: ", 1),
            format!("{}\n{}x\n{}\n{}\n", lines[0], lines[1], lines[2], lines[3]),
            format!("{}\nAAAA\n{}\n{}\n", lines[0], lines[2], lines[3]),
            format!("{}\n{}\n{}\nAAAA\n", lines[0], lines[1], lines[2]),
            format!("{}\n{}\n{}\n", lines[0], lines[1], lines[2]),
            good.replacen(
                "untrusted comment: signature from minisign secret key\nRU",
                "untrusted comment: x\nRX",
                1,
            ),
        ];
        for case in cases {
            assert!(
                matches!(
                    Signature::from_minisign(&case),
                    Err(SignError::MalformedSignature(_))
                ),
                "accepted {case:?}"
            );
        }
    }

    #[test]
    fn unencrypted_secret_key_round_trips() {
        let sk = key();
        let text = sk.to_minisign_unencrypted();
        assert!(!SecretKey::is_encrypted(&text).unwrap());
        let back = SecretKey::from_minisign(&text, None).unwrap();
        assert_eq!(back.id(), sk.id());
        assert_eq!(back.public_key(), sk.public_key());
    }

    #[test]
    fn reads_an_unencrypted_secret_key_written_by_minisign() {
        // `minisign -G -W`: zero kdf, salt, limits and checksum.
        let text = "untrusted comment: minisign encrypted secret key\n\
            RWQAAEIyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAZ0kQq3NOcGZBoA/QDhS0W/E5UM7cS5BNQR9Jx2o6ehC5WGAsKWmy39d6P1ui4oa+pSC1dWk+DY13bwCHQ9UUu44PWTb0l/d6AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
        let sk = SecretKey::from_minisign(text, None).unwrap();
        assert_eq!(sk.id().to_string(), "66704E73AB104967");
        assert_eq!(
            sk.public_key().to_base64(),
            "RWRnSRCrc05wZtd6P1ui4oa+pSC1dWk+DY13bwCHQ9UUu44PWTb0l/d6"
        );
    }

    #[test]
    fn encrypted_secret_key_needs_the_right_password() {
        let sk = key();
        let text = sk.to_minisign_encrypted("pw", KdfLimits::MINIMUM).unwrap();
        assert!(SecretKey::is_encrypted(&text).unwrap());
        assert!(matches!(
            SecretKey::from_minisign(&text, None),
            Err(SignError::PasswordRequired)
        ));
        assert!(matches!(
            SecretKey::from_minisign(&text, Some("wrong")),
            Err(SignError::WrongPassword)
        ));
        let back = SecretKey::from_minisign(&text, Some("pw")).unwrap();
        assert_eq!(back.public_key(), sk.public_key());
    }

    #[test]
    fn scrypt_parameters_follow_libsodium() {
        let p = KdfLimits::MINIMUM.scrypt_params().unwrap();
        assert_eq!((p.log_n(), p.r(), p.p()), (10, 8, 1));
        // minisign's default needs N = 2^20: allowed (it is what minisign writes).
        let p = KdfLimits::SENSITIVE.scrypt_params().unwrap();
        assert_eq!((p.log_n(), p.r(), p.p()), (20, 8, 1));
        let huge = KdfLimits {
            opslimit: u64::MAX,
            memlimit: u64::MAX,
        };
        assert!(matches!(huge.scrypt_params(), Err(SignError::KdfParams(_))));
    }

    #[test]
    fn refuses_multiline_trusted_comment() {
        assert!(matches!(
            key().sign(b"x", "a\nb"),
            Err(SignError::InvalidComment)
        ));
    }
}
