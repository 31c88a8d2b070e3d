//! The trust store: which minisign public keys may sign which image names (rkt's semantics),
//! and the one verification entry point that decides whether an image's bytes may be used.
//!
//! On-disk layout under a trust directory `TRUST`:
//! - `TRUST/root.d/<KEYID>.pub`: a key trusted for every image.
//! - `TRUST/prefix.d/<prefix>/<KEYID>.pub`: a key trusted for images whose name is `<prefix>` or
//!   lies below it along `/`-separated path components. The prefix is an AC identifier
//!   (`[a-z0-9-._~/]`, no empty, `.` or `..` components), stored as nested directories as rkt
//!   does, so `prefix.d/example.com/<KEYID>.pub` trusts `example.com/app` and
//!   `example.com/app/x` but not `example.community/app`.
//!
//! `<KEYID>` is the key id as minisign prints it (16 upper-case hex digits); each file is a
//! minisign public key file. A file whose key id differs from its name is ignored (with a
//! warning): trust is granted only by a file that is unambiguously the key it names.

use std::fs;
use std::path::{Path, PathBuf};

use crate::sign::{KeyId, PublicKey, SignError};

mod verify;
pub use verify::{Accepted, PendingVerification, TrustVerifier};

const ROOT_DIR: &str = "root.d";
const PREFIX_DIR: &str = "prefix.d";
const KEY_SUFFIX: &str = ".pub";

/// Explicit opt-outs of security checks. Every one defaults to off and logs a warning when it
/// lets something through, so an insecure run is visible in the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsecureOptions {
    /// Accept an image that has no signature at all. A signature that is present is still
    /// checked: a bad or untrusted one is refused even with this set.
    pub allow_unsigned: bool,
    /// Allow plain `http://` for discovery and fetching (HTTPS is tried first).
    pub allow_http: bool,
}

/// Where a key is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustScope {
    /// Every image.
    Root,
    /// Images named by this prefix or below it.
    Prefix(String),
}

impl std::fmt::Display for TrustScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrustScope::Root => f.write_str("all images (root)"),
            TrustScope::Prefix(p) => write!(f, "prefix {p}"),
        }
    }
}

/// The outcome of a successful [`TrustStore::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// Signed by `key`, trusted through `scope`.
    Signed {
        key: KeyId,
        scope: TrustScope,
        trusted_comment: String,
    },
    /// No signature, accepted only because [`InsecureOptions::allow_unsigned`] was set.
    UnsignedAllowed,
}

impl Verified {
    /// The signing key, if the image was signed.
    pub fn key_id(&self) -> Option<KeyId> {
        match self {
            Verified::Signed { key, .. } => Some(*key),
            Verified::UnsignedAllowed => None,
        }
    }
}

/// Why an image may not be used, or why the store could not be read or changed. Every refusal
/// names the image, the key (when there is one) and the reason.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("image {image} is not signed (no signature found); refusing it")]
    Unsigned { image: String },
    #[error("image {image}: the signature file is malformed")]
    MalformedSignature {
        image: String,
        #[source]
        source: SignError,
    },
    #[error(
        "image {image} is signed by key {key}, which is not in the trust store; add it with `builder aci trust` if you trust it"
    )]
    UntrustedKey { image: String, key: KeyId },
    #[error(
        "image {image} is signed by key {key}, which is trusted only for {}; not for this image",
        prefixes.join(", ")
    )]
    KeyNotTrustedForImage {
        image: String,
        key: KeyId,
        prefixes: Vec<String>,
    },
    #[error("image {image}: the signature by trusted key {key} does not match (tampered image)")]
    BadSignature {
        image: String,
        key: KeyId,
        #[source]
        source: SignError,
    },
    #[error("the image was checked as {expected}, but its manifest names it {manifest}")]
    NameMismatch { expected: String, manifest: String },
    #[error("{0:?} is not a valid image-name prefix (AC identifier path components expected)")]
    InvalidPrefix(String),
    #[error("{0:?} is not a valid image name")]
    InvalidImageName(String),
    #[error("reading trust store entry {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing trust store entry {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key {key} is already trusted for {scope} (at {path}) with different key material")]
    Conflict {
        key: KeyId,
        scope: TrustScope,
        path: PathBuf,
    },
}

/// Checks `prefix` (or an image name) is an AC identifier. That check refuses empty, `.` and
/// `..` components (a separator never starts, ends or doubles), so the name maps to a directory
/// inside `prefix.d` and nowhere else.
fn valid_path_name(name: &str) -> bool {
    crate::manifest::is_ac_identifier(name)
}

/// Normalises a prefix: a trailing `/` (`example.com/`) means the same as none.
fn normalise_prefix(prefix: &str) -> Result<String, TrustError> {
    let p = prefix.strip_suffix('/').unwrap_or(prefix);
    if valid_path_name(p) {
        Ok(p.to_string())
    } else {
        Err(TrustError::InvalidPrefix(prefix.to_string()))
    }
}

/// The prefixes that cover `image`, shortest first: `a.com`, `a.com/x`, `a.com/x/y`.
fn covering_prefixes(image: &str) -> Vec<&str> {
    image
        .match_indices('/')
        .map(|(i, _)| &image[..i])
        .chain(std::iter::once(image))
        .collect()
}

/// A trust directory (see the module docs for its layout).
#[derive(Debug, Clone)]
pub struct TrustStore {
    dir: PathBuf,
}

impl TrustStore {
    /// A store rooted at `dir`. Nothing is read until it is used; a missing directory is an
    /// empty store.
    pub fn new(dir: impl Into<PathBuf>) -> TrustStore {
        TrustStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn scope_dir(&self, scope: &TrustScope) -> Result<PathBuf, TrustError> {
        Ok(match scope {
            TrustScope::Root => self.dir.join(ROOT_DIR),
            TrustScope::Prefix(p) => self.dir.join(PREFIX_DIR).join(normalise_prefix(p)?),
        })
    }

    /// Trusts `key` for `scope`. Returns the file written. Adding the same key again is a
    /// no-op; a different key under the same id is refused.
    pub fn add(&self, scope: &TrustScope, key: &PublicKey) -> Result<PathBuf, TrustError> {
        let dir = self.scope_dir(scope)?;
        let path = dir.join(format!("{}{KEY_SUFFIX}", key.id()));
        match fs::read_to_string(&path) {
            Ok(existing) => {
                return match PublicKey::from_minisign(&existing) {
                    Ok(k) if &k == key => Ok(path),
                    _ => Err(TrustError::Conflict {
                        key: key.id(),
                        scope: scope.clone(),
                        path,
                    }),
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(TrustError::Read { path, source }),
        }
        fs::create_dir_all(&dir).map_err(|source| TrustError::Write {
            path: dir.clone(),
            source,
        })?;
        // Written to a temporary name and renamed so a reader never sees half a key.
        let tmp = dir.join(format!(".{}.tmp", key.id()));
        fs::write(&tmp, key.to_minisign())
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|source| TrustError::Write {
                path: path.clone(),
                source,
            })?;
        Ok(path)
    }

    /// Reads the keys directly in `dir` (not below it). A missing directory has none.
    fn keys_in(dir: &Path) -> Result<Vec<PublicKey>, TrustError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(TrustError::Read {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        };
        let mut keys = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| TrustError::Read {
                path: dir.to_path_buf(),
                source,
            })?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(KEY_SUFFIX))
                .and_then(KeyId::from_hex)
            else {
                continue;
            };
            let path = entry.path();
            if !path.is_file() {
                continue;
            }
            let text = fs::read_to_string(&path).map_err(|source| TrustError::Read {
                path: path.clone(),
                source,
            })?;
            match PublicKey::from_minisign(&text) {
                Ok(key) if key.id() == id => keys.push(key),
                Ok(key) => log::warn!(
                    "trust store: ignoring {}: it holds key {}, not the key its name says",
                    path.display(),
                    key.id()
                ),
                Err(e) => log::warn!("trust store: ignoring {}: {e}", path.display()),
            }
        }
        keys.sort_by_key(|k| k.id());
        Ok(keys)
    }

    /// Every key trusted for `image`, with the scope that trusts it: all root keys, then the
    /// keys of each covering prefix, shortest first.
    pub fn keys_for(&self, image: &str) -> Result<Vec<(TrustScope, PublicKey)>, TrustError> {
        if !valid_path_name(image) {
            return Err(TrustError::InvalidImageName(image.to_string()));
        }
        let mut out: Vec<(TrustScope, PublicKey)> = Self::keys_in(&self.dir.join(ROOT_DIR))?
            .into_iter()
            .map(|k| (TrustScope::Root, k))
            .collect();
        for prefix in covering_prefixes(image) {
            let dir = self.dir.join(PREFIX_DIR).join(prefix);
            for k in Self::keys_in(&dir)? {
                out.push((TrustScope::Prefix(prefix.to_string()), k));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::SecretKey;

    struct Fixture {
        _dir: tempfile::TempDir,
        store: TrustStore,
        key: SecretKey,
    }

    fn fixture(scope: Option<TrustScope>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = TrustStore::new(dir.path().join("trust"));
        let key = SecretKey::generate().unwrap();
        if let Some(scope) = scope {
            store.add(&scope, &key.public_key()).unwrap();
        }
        Fixture {
            _dir: dir,
            store,
            key,
        }
    }

    fn sig(key: &SecretKey, data: &[u8]) -> Vec<u8> {
        key.sign(data, "t").unwrap().to_minisign().into_bytes()
    }

    fn check(
        f: &Fixture,
        image: &str,
        data: &[u8],
        s: Option<&[u8]>,
    ) -> Result<Verified, TrustError> {
        f.store.verify(image, data, s, InsecureOptions::default())
    }

    #[test]
    fn covering_prefixes_follow_path_components() {
        assert_eq!(
            covering_prefixes("a.com/x/y"),
            ["a.com", "a.com/x", "a.com/x/y"]
        );
        assert_eq!(covering_prefixes("a.com"), ["a.com"]);
    }

    #[test]
    fn root_key_is_trusted_for_every_image() {
        let f = fixture(Some(TrustScope::Root));
        for image in ["example.com/app", "other.org/x/y", "z"] {
            let v = check(&f, image, b"aci", Some(&sig(&f.key, b"aci"))).unwrap();
            assert_eq!(v.key_id(), Some(f.key.id()));
        }
    }

    #[test]
    fn prefix_key_is_trusted_below_its_prefix_along_path_components() {
        let f = fixture(Some(TrustScope::Prefix("example.com/".into())));
        let s = sig(&f.key, b"aci");
        for image in ["example.com", "example.com/app", "example.com/app/x"] {
            let v = check(&f, image, b"aci", Some(&s)).unwrap();
            assert!(
                matches!(v, Verified::Signed { scope: TrustScope::Prefix(ref p), .. } if p == "example.com")
            );
        }
    }

    #[test]
    fn prefix_key_is_refused_for_a_name_that_only_shares_characters() {
        let f = fixture(Some(TrustScope::Prefix("example.com".into())));
        let err = check(
            &f,
            "example.community/app",
            b"aci",
            Some(&sig(&f.key, b"aci")),
        )
        .unwrap_err();
        match &err {
            TrustError::KeyNotTrustedForImage {
                image,
                key,
                prefixes,
            } => {
                assert_eq!(image, "example.community/app");
                assert_eq!(*key, f.key.id());
                assert_eq!(prefixes, &["example.com".to_string()]);
            }
            other => panic!("unexpected {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("example.community/app") && text.contains(&f.key.id().to_string()));
        assert!(text.contains("example.com"), "{text}");
    }

    #[test]
    fn refuses_unsigned_image() {
        let f = fixture(Some(TrustScope::Root));
        let err = check(&f, "example.com/app", b"aci", None).unwrap_err();
        assert!(matches!(err, TrustError::Unsigned { ref image } if image == "example.com/app"));
    }

    #[test]
    fn insecure_option_accepts_unsigned_but_still_checks_present_signatures() {
        let f = fixture(None);
        let insecure = InsecureOptions {
            allow_unsigned: true,
            ..Default::default()
        };
        let v = f
            .store
            .verify("a.com/x", &b"aci"[..], None, insecure)
            .unwrap();
        assert_eq!(v, Verified::UnsignedAllowed);
        let s = sig(&f.key, b"aci");
        let err = f
            .store
            .verify("a.com/x", &b"aci"[..], Some(&s), insecure)
            .unwrap_err();
        assert!(matches!(err, TrustError::UntrustedKey { .. }));
    }

    #[test]
    fn refuses_key_not_in_store() {
        let f = fixture(Some(TrustScope::Root));
        let other = SecretKey::generate().unwrap();
        let err = check(&f, "a.com/x", b"aci", Some(&sig(&other, b"aci"))).unwrap_err();
        assert!(matches!(err, TrustError::UntrustedKey { key, .. } if key == other.id()));
        assert!(err.to_string().contains(&other.id().to_string()));
    }

    #[test]
    fn refuses_tampered_bytes() {
        let f = fixture(Some(TrustScope::Root));
        let err = check(&f, "a.com/x", b"aci!", Some(&sig(&f.key, b"aci"))).unwrap_err();
        assert!(matches!(err, TrustError::BadSignature { key, .. } if key == f.key.id()));
        assert!(err.to_string().contains("a.com/x"));
    }

    #[test]
    fn refuses_malformed_signature() {
        let f = fixture(Some(TrustScope::Root));
        for bad in [&b"not a signature"[..], &[0xff, 0xfe][..]] {
            let err = check(&f, "a.com/x", b"aci", Some(bad)).unwrap_err();
            assert!(
                matches!(err, TrustError::MalformedSignature { .. }),
                "{err:?}"
            );
        }
    }

    #[test]
    fn ignores_key_file_whose_name_is_another_id() {
        let f = fixture(None);
        let dir = f.store.dir().join(ROOT_DIR);
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("0000000000000001.pub"),
            f.key.public_key().to_minisign(),
        )
        .unwrap();
        let err = check(&f, "a.com/x", b"aci", Some(&sig(&f.key, b"aci"))).unwrap_err();
        assert!(matches!(err, TrustError::UntrustedKey { .. }), "{err:?}");
    }

    #[test]
    fn refuses_prefixes_that_escape_the_store() {
        let f = fixture(None);
        for p in ["../x", "a/../b", "/abs", "a//b", "UPPER", ""] {
            let err = f
                .store
                .add(&TrustScope::Prefix(p.into()), &f.key.public_key())
                .unwrap_err();
            assert!(matches!(err, TrustError::InvalidPrefix(_)), "{p}");
        }
    }

    #[test]
    fn adding_a_different_key_under_the_same_id_is_refused() {
        let f = fixture(Some(TrustScope::Root));
        let path = f.store.add(&TrustScope::Root, &f.key.public_key()).unwrap();
        assert!(path.ends_with(format!("root.d/{}.pub", f.key.id())));
        // Same id, other key material.
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut raw = b64
            .decode(SecretKey::generate().unwrap().public_key().to_base64())
            .unwrap();
        raw[2..10].copy_from_slice(&f.key.id().0);
        let forged = PublicKey::from_base64(&b64.encode(raw)).unwrap();
        assert_eq!(forged.id(), f.key.id());
        assert!(matches!(
            f.store.add(&TrustScope::Root, &forged),
            Err(TrustError::Conflict { .. })
        ));
    }
}
