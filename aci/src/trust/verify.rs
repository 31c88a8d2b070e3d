//! The verification half of the trust store: finding the key a signature names (for a known
//! image name, or, when the name is not known yet, wherever the store holds the key),
//! checking the signature over the image's bytes before anything parses them, and only then
//! admitting the manifest's name under the scopes that key is trusted for.
//!
//! The order is the point: [`PendingVerification`] is made from the signature alone,
//! [`Accepted`] from the signature and the raw bytes (their BLAKE2b-512 or the bytes
//! themselves), and [`Verified`] from an `Accepted` and the name the archive's manifest
//! claims. Parsing an archive needs an `Accepted`, so no decompressor, tar reader or JSON
//! decoder sees the bytes of an image whose signature did not verify.

use std::fs;
use std::io::Read;

use super::{
    InsecureOptions, KEY_SUFFIX, PREFIX_DIR, ROOT_DIR, TrustError, TrustScope, TrustStore, Verified,
};
use crate::archive::{AciSummary, StreamVerifier};
use crate::sign::{Algorithm, KeyId, Prehash, Prehasher, PublicKey, SignError, Signature};

impl TrustScope {
    /// True when this scope trusts image `name`: every name for root, the prefix itself and
    /// the names below it along `/` components for a prefix.
    pub fn covers(&self, name: &str) -> bool {
        match self {
            TrustScope::Root => true,
            TrustScope::Prefix(p) => name
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        }
    }
}

impl TrustStore {
    /// Every place the store holds key `key`: root first, then each prefix in order.
    fn holders(&self, key: KeyId) -> Result<Vec<(TrustScope, PublicKey)>, TrustError> {
        let mut found: Vec<(TrustScope, PublicKey)> = Self::keys_in(&self.dir.join(ROOT_DIR))?
            .into_iter()
            .filter(|k| k.id() == key)
            .map(|k| (TrustScope::Root, k))
            .collect();
        let file = format!("{key}{KEY_SUFFIX}");
        let base = self.dir.join(PREFIX_DIR);
        let mut prefixed = Vec::new();
        let mut stack = vec![base.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(TrustError::Read { path: dir, source }),
            };
            let mut holds = false;
            for entry in entries.flatten() {
                // file_type() does not follow symlinks, so a link loop cannot make this spin.
                let Ok(ft) = entry.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(entry.path());
                } else if entry.file_name().to_str() == Some(file.as_str()) {
                    holds = true;
                }
            }
            if holds && let Ok(rel) = dir.strip_prefix(&base) {
                // keys_in checks the file holds the key its name says, as for named look-ups.
                for k in Self::keys_in(&dir)?.into_iter().filter(|k| k.id() == key) {
                    prefixed.push((TrustScope::Prefix(rel.to_string_lossy().into_owned()), k));
                }
            }
        }
        prefixed.sort_by_key(|(scope, _)| scope.to_string());
        found.extend(prefixed);
        Ok(found)
    }

    /// Decides whether `data` (the exact `.aci` bytes) may be used as image `image`, given the
    /// `.minisig` file's bytes (`None` when the image has no signature).
    ///
    /// Each refusal is its own [`TrustError`] variant: unsigned, malformed signature, untrusted
    /// key, key trusted only for another prefix, bad signature.
    pub fn verify(
        &self,
        image: &str,
        data: impl Read,
        signature: Option<&[u8]>,
        insecure: InsecureOptions,
    ) -> Result<Verified, TrustError> {
        self.prepare(image, signature, insecure)?
            .finish_reader(data)?
            .admit(image)
    }

    /// The first step of a check, before any image byte is seen, for an image whose name is
    /// known (a discovered app): parses the signature and finds the key trusted for `image`,
    /// so an unsigned or untrusted image is refused before it is downloaded. Finish it with
    /// the data's digest or the data, then [`Accepted::admit`] the manifest's name.
    pub fn prepare(
        &self,
        image: &str,
        signature: Option<&[u8]>,
        insecure: InsecureOptions,
    ) -> Result<PendingVerification, TrustError> {
        let Some(sig) = Self::signature_or_unsigned(image, signature, insecure)? else {
            return Ok(PendingVerification::unsigned(image, true));
        };
        let key = sig.key_id;
        let mut candidates = self
            .keys_for(image)?
            .into_iter()
            .filter(|(_, k)| k.id() == key);
        let Some(first) = candidates.next() else {
            return Err(self.refusal(image, key)?);
        };
        Ok(PendingVerification::signed(
            image, true, first, candidates, sig,
        ))
    }

    /// Like [`TrustStore::prepare`] for an image whose name is not known before its archive is
    /// parsed (a local file checked without a name): the key the signature names is looked up
    /// wherever the store holds it (root or any prefix). The bytes are then checked against it,
    /// and only after that is the manifest read and its name admitted under one of the key's
    /// scopes. `what` names the image in errors (its path, say).
    pub fn prepare_unnamed(
        &self,
        what: &str,
        signature: Option<&[u8]>,
        insecure: InsecureOptions,
    ) -> Result<PendingVerification, TrustError> {
        let Some(sig) = Self::signature_or_unsigned(what, signature, insecure)? else {
            return Ok(PendingVerification::unsigned(what, false));
        };
        let mut candidates = self.holders(sig.key_id)?.into_iter();
        let Some(first) = candidates.next() else {
            return Err(TrustError::UntrustedKey {
                image: what.to_string(),
                key: sig.key_id,
            });
        };
        Ok(PendingVerification::signed(
            what, false, first, candidates, sig,
        ))
    }

    /// The parsed signature; `None` for an unsigned image allowed by `insecure`.
    fn signature_or_unsigned(
        image: &str,
        signature: Option<&[u8]>,
        insecure: InsecureOptions,
    ) -> Result<Option<Signature>, TrustError> {
        let Some(signature) = signature else {
            if insecure.allow_unsigned {
                log::warn!(
                    "INSECURE: image {image} has no signature; using it anyway because unsigned images are allowed"
                );
                return Ok(None);
            }
            return Err(TrustError::Unsigned {
                image: image.to_string(),
            });
        };
        parse_signature(signature)
            .map(Some)
            .map_err(|source| TrustError::MalformedSignature {
                image: image.to_string(),
                source,
            })
    }

    /// Why key `key` may not sign `image`: unknown, or trusted only for other prefixes.
    fn refusal(&self, image: &str, key: KeyId) -> Result<TrustError, TrustError> {
        let prefixes: Vec<String> = self
            .holders(key)?
            .into_iter()
            .filter_map(|(scope, _)| match scope {
                TrustScope::Prefix(p) => Some(p),
                TrustScope::Root => None,
            })
            .collect();
        Ok(if prefixes.is_empty() {
            TrustError::UntrustedKey {
                image: image.to_string(),
                key,
            }
        } else {
            TrustError::KeyNotTrustedForImage {
                image: image.to_string(),
                key,
                prefixes,
            }
        })
    }
}

fn parse_signature(bytes: &[u8]) -> Result<Signature, SignError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| SignError::MalformedSignature("not UTF-8 text".into()))?;
    Signature::from_minisign(text)
}

/// A trust decision waiting for the image bytes: the signature parsed and its key found in the
/// store. Nothing is accepted until one of the `finish` methods returns `Ok`.
#[derive(Debug, Clone)]
pub struct PendingVerification {
    /// The image as errors name it: its name, or its path when the name is not known yet.
    image: String,
    /// Whether `image` is the name asked for (which the manifest must then carry).
    named: bool,
    check: Check,
}

#[derive(Debug, Clone)]
enum Check {
    UnsignedAllowed,
    Signed(Box<SignedCheck>),
}

#[derive(Debug, Clone)]
struct SignedCheck {
    public: PublicKey,
    /// Every scope the store trusts this exact key for (same id and key material).
    scopes: Vec<TrustScope>,
    sig: Signature,
}

impl PendingVerification {
    fn unsigned(image: &str, named: bool) -> PendingVerification {
        PendingVerification {
            image: image.to_string(),
            named,
            check: Check::UnsignedAllowed,
        }
    }

    /// `first` and `rest`: where the store holds the key the signature names, in order.
    fn signed(
        image: &str,
        named: bool,
        first: (TrustScope, PublicKey),
        rest: impl Iterator<Item = (TrustScope, PublicKey)>,
        sig: Signature,
    ) -> PendingVerification {
        let (scope, public) = first;
        let mut scopes = vec![scope.clone()];
        for (other_scope, other) in rest {
            if other == public {
                scopes.push(other_scope);
            } else {
                log::warn!(
                    "trust store: key {} is stored for {other_scope} with other key material than \
                     for {}; ignoring that copy",
                    public.id(),
                    scope
                );
            }
        }
        PendingVerification {
            image: image.to_string(),
            named,
            check: Check::Signed(Box::new(SignedCheck {
                public,
                scopes,
                sig,
            })),
        }
    }

    /// True when the signature covers the BLAKE2b-512 of the bytes (feed them to a
    /// [`crate::sign::Prehasher`] as they stream, then call
    /// [`PendingVerification::finish_prehash`]); false for legacy signatures,
    /// which need the bytes themselves ([`PendingVerification::finish_reader`]), and for
    /// allowed unsigned images.
    pub fn wants_prehash(&self) -> bool {
        matches!(&self.check, Check::Signed(c) if c.sig.algorithm == Algorithm::Prehashed)
    }

    /// The key the signature names, if signed.
    pub fn key_id(&self) -> Option<KeyId> {
        match &self.check {
            Check::Signed(c) => Some(c.sig.key_id),
            Check::UnsignedAllowed => None,
        }
    }

    /// Finishes with the data's BLAKE2b-512, computed as it streamed.
    pub fn finish_prehash(self, prehash: &Prehash) -> Result<Accepted, TrustError> {
        self.finish_with(|public, sig| public.verify_prehash(prehash, sig))
    }

    /// Finishes by reading the data (any algorithm).
    pub fn finish_reader(self, data: impl Read) -> Result<Accepted, TrustError> {
        self.finish_with(|public, sig| public.verify_reader(data, sig))
    }

    fn finish_with(
        self,
        check: impl FnOnce(&PublicKey, &Signature) -> Result<(), SignError>,
    ) -> Result<Accepted, TrustError> {
        match self.check {
            Check::UnsignedAllowed => Ok(Accepted {
                expected: self.named.then_some(self.image),
                signed: None,
            }),
            Check::Signed(c) => {
                let SignedCheck {
                    public,
                    scopes,
                    sig,
                } = *c;
                let key = sig.key_id;
                check(&public, &sig).map_err(|source| TrustError::BadSignature {
                    image: self.image.clone(),
                    key,
                    source,
                })?;
                Ok(Accepted {
                    expected: self.named.then_some(self.image),
                    signed: Some(AcceptedSignature {
                        key,
                        scopes,
                        trusted_comment: sig.trusted_comment,
                    }),
                })
            }
        }
    }
}

/// Bytes whose signature verified against a key of the store (or an unsigned image the
/// caller explicitly allowed). Only this lets an archive be parsed; the name its manifest
/// claims is then checked with [`Accepted::admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The name the check was prepared for, which the manifest must carry; `None` for an
    /// unnamed check.
    expected: Option<String>,
    signed: Option<AcceptedSignature>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct AcceptedSignature {
    key: KeyId,
    scopes: Vec<TrustScope>,
    trusted_comment: String,
}

impl Accepted {
    /// The key whose signature verified, if signed.
    pub fn key_id(&self) -> Option<KeyId> {
        self.signed.as_ref().map(|s| s.key)
    }

    /// Admits the image as `name` (the name its manifest claims) when it is the name the
    /// check was prepared for (if one was) and one of the verified key's scopes covers it: a
    /// key trusted only for `example.com` admits no image that calls itself `other.org/app`,
    /// whatever file name or URL it came under.
    pub fn admit(self, name: &str) -> Result<Verified, TrustError> {
        if let Some(expected) = self.expected
            && expected != name
        {
            return Err(TrustError::NameMismatch {
                expected,
                manifest: name.to_string(),
            });
        }
        let Some(signed) = self.signed else {
            return Ok(Verified::UnsignedAllowed);
        };
        match signed.scopes.iter().find(|s| s.covers(name)) {
            Some(scope) => Ok(Verified::Signed {
                key: signed.key,
                scope: scope.clone(),
                trusted_comment: signed.trusted_comment,
            }),
            None => Err(TrustError::KeyNotTrustedForImage {
                image: name.to_string(),
                key: signed.key,
                prefixes: signed.scopes.iter().map(|s| s.to_string()).collect(),
            }),
        }
    }
}

/// A trust check of a local archive (see [`crate::archive::unpack_verified`]): the key is
/// found before any byte is read, the bytes are hashed as they stream, the signature decides
/// before the archive is parsed, and the manifest's name is admitted after.
#[derive(Debug)]
pub struct TrustVerifier {
    pending: PendingVerification,
    prehasher: Option<Prehasher>,
}

impl TrustStore {
    /// Starts a check of a local archive as image `image` (`None`: whatever name its manifest
    /// carries, admitted under the scopes of the key that signed it) against `signature` (the
    /// `.minisig` file's bytes, `None` when there is none). `what` names the file in errors
    /// when no name is given.
    pub fn stream_verifier(
        &self,
        image: Option<&str>,
        what: &str,
        signature: Option<&[u8]>,
        insecure: InsecureOptions,
    ) -> Result<TrustVerifier, TrustError> {
        let pending = match image {
            Some(name) => self.prepare(name, signature, insecure)?,
            None => self.prepare_unnamed(what, signature, insecure)?,
        };
        let prehasher = pending.wants_prehash().then(Prehasher::new);
        Ok(TrustVerifier { pending, prehasher })
    }
}

impl StreamVerifier for TrustVerifier {
    type Accepted = Accepted;
    type Verified = Verified;
    type Error = TrustError;

    fn update(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.prehasher {
            h.update(data);
        }
    }

    fn verify(self, data: &mut dyn Read) -> Result<Accepted, TrustError> {
        match self.prehasher {
            Some(h) => self.pending.finish_prehash(&h.finish()),
            // A legacy (`Ed`) signature covers the bytes themselves and ed25519-dalek verifies
            // a whole slice, so the file is read a second time here.
            None => self.pending.finish_reader(data),
        }
    }

    fn admit(accepted: Accepted, summary: &AciSummary) -> Result<Verified, TrustError> {
        accepted.admit(&summary.manifest.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::SecretKey;

    #[test]
    fn a_prefix_covers_itself_and_names_below_it_along_components() {
        let p = TrustScope::Prefix("example.com/team".into());
        assert!(p.covers("example.com/team"));
        assert!(p.covers("example.com/team/app"));
        assert!(!p.covers("example.com/teamster"));
        assert!(!p.covers("example.com"));
        assert!(TrustScope::Root.covers("anything.org/x"));
    }

    #[test]
    fn an_unnamed_check_finds_the_key_under_every_prefix_and_admits_only_those_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = TrustStore::new(dir.path());
        let key = SecretKey::generate().unwrap();
        for p in ["b.org/x", "a.com"] {
            store
                .add(&TrustScope::Prefix(p.into()), &key.public_key())
                .unwrap();
        }
        let data = b"aci bytes";
        let sig = key.sign(data, "t").unwrap().to_minisign();
        let accepted = store
            .prepare_unnamed("f.aci", Some(sig.as_bytes()), InsecureOptions::default())
            .unwrap()
            .finish_reader(&data[..])
            .unwrap();
        assert_eq!(accepted.key_id(), Some(key.id()));
        let v = accepted.clone().admit("b.org/x/app").unwrap();
        assert!(
            matches!(v, Verified::Signed { scope: TrustScope::Prefix(ref p), .. } if p == "b.org/x")
        );
        assert!(accepted.clone().admit("a.com/app").is_ok());
        match accepted.admit("b.org/y") {
            Err(TrustError::KeyNotTrustedForImage { prefixes, .. }) => {
                assert_eq!(prefixes, ["prefix a.com", "prefix b.org/x"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unnamed_check_refuses_a_key_the_store_does_not_hold_before_reading_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = TrustStore::new(dir.path());
        let key = SecretKey::generate().unwrap();
        let sig = key.sign(b"x", "t").unwrap().to_minisign();
        let err = store
            .prepare_unnamed("f.aci", Some(sig.as_bytes()), InsecureOptions::default())
            .unwrap_err();
        assert!(
            matches!(err, TrustError::UntrustedKey { ref image, key: k } if image == "f.aci" && k == key.id())
        );
    }
}
