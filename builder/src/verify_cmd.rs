//! `builder verify IMAGE --key PUB`: checks a disk image against its signed manifest and
//! names the first part that differs.
//!
//! Order: find the manifest partition through the GPT (the backup GPT if the primary is
//! damaged), check the signature with the given public key, then walk the manifest's regions
//! in disk order (MBR, GPT structures, partitions, gaps) and compare each with the image.

// Until `builder build`, `verify` and `inspect` call it (the coordinator wires the CLI).

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use aci::sign::{KeyId, PublicKey, SignError, Signature};
use anyhow::Context as _;
use hostimg::Role;

use crate::manifest::{
    self, Coverage, FORMAT, FrameError, Manifest, ManifestError, SignedManifest, UNTRUSTED_COMMENT,
};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{}: finding the manifest partition", path.display())]
    Locate {
        path: PathBuf,
        #[source]
        source: ManifestError,
    },
    #[error("{}: the image is unsigned (its manifest partition holds no signed manifest)", path.display())]
    Unsigned { path: PathBuf },
    #[error("{}: manifest: {source}", path.display())]
    Frame { path: PathBuf, source: FrameError },
    #[error("{}: manifest: the signature is malformed", path.display())]
    MalformedSignature {
        path: PathBuf,
        #[source]
        source: SignError,
    },
    #[error(
        "{}: wrong key: the manifest is signed by key {signature}, not by the given key {key}",
        path.display()
    )]
    WrongKey {
        path: PathBuf,
        signature: KeyId,
        key: KeyId,
    },
    #[error(
        "{}: manifest: the signature by key {key} does not match the manifest (it was altered after signing)",
        path.display()
    )]
    BadSignature { path: PathBuf, key: KeyId },
    #[error(
        "{}: manifest: the signature's trusted comment was altered (key {key})",
        path.display()
    )]
    BadTrustedComment { path: PathBuf, key: KeyId },
    #[error("{}: manifest: signature check failed", path.display())]
    Signature {
        path: PathBuf,
        #[source]
        source: SignError,
    },
    #[error(
        "{}: manifest: the signature's untrusted comment or encoding differs from what the builder writes",
        path.display()
    )]
    SignatureForm { path: PathBuf },
    #[error("{}: manifest: signed, but not a manifest this builder reads: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("{}: {what}: the image has {found}, the signed manifest says {signed}", path.display())]
    Disk {
        path: PathBuf,
        what: &'static str,
        found: String,
        signed: String,
    },
    #[error("{}: {region}: {how}", path.display())]
    Differs {
        path: PathBuf,
        region: String,
        how: &'static str,
    },
    #[error("{}: reading {region}", path.display())]
    Read {
        path: PathBuf,
        region: String,
        #[source]
        source: std::io::Error,
    },
}

/// What a successful verification found.
#[derive(Debug, Clone)]
pub struct Verified {
    pub manifest: Manifest,
    pub key_id: KeyId,
    pub trusted_comment: String,
    /// Bytes compared with a hash or checked to be zero.
    pub bytes_checked: u64,
    /// The manifest and signature as the image holds them.
    pub signed: SignedManifest,
}

/// The command: reads the public key file and verifies; prints a short summary.
pub fn run(image: &Path, key: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(key)
        .with_context(|| format!("reading the public key {}", key.display()))?;
    let public = PublicKey::from_minisign(&text)
        .with_context(|| format!("reading the public key {}", key.display()))?;
    let v = verify(image, &public)?;
    let m = &v.manifest;
    println!(
        "{}: OK: {} {} ({}), disk {} ({} bytes), signed by key {}",
        image.display(),
        m.name,
        m.version,
        m.arch,
        m.disk.guid,
        m.disk.size,
        v.key_id
    );
    println!(
        "  {} regions checked ({} bytes); the data partition's contents are not covered",
        m.regions.len(),
        v.bytes_checked
    );
    println!("  trusted comment: {}", v.trusted_comment);
    let (json, sig) = manifest::detached_paths(image);
    if json.exists() {
        let same = std::fs::read(&json).ok() == Some(v.signed.json.clone())
            && std::fs::read_to_string(&sig).ok() == v.signed.minisig;
        if !same {
            anyhow::bail!(
                "{} (or its .minisig) beside the image differs from the manifest inside it",
                json.display()
            );
        }
        println!("  {} and its .minisig match the image", json.display());
    }
    Ok(())
}

/// Checks the image at `image` against its manifest and `key`; see the module doc.
pub fn verify(image: &Path, key: &PublicKey) -> Result<Verified, VerifyError> {
    let path = image.to_path_buf();
    let (_layout, partition) =
        manifest::read_from_image(image).map_err(|source| VerifyError::Locate {
            path: path.clone(),
            source,
        })?;
    let signed = match SignedManifest::unframe(&partition) {
        Ok(s) => s,
        Err(FrameError::Empty) => return Err(VerifyError::Unsigned { path }),
        Err(source) => return Err(VerifyError::Frame { path, source }),
    };
    let sig = match signed.signature() {
        None => return Err(VerifyError::Unsigned { path }),
        Some(Err(source)) => return Err(VerifyError::MalformedSignature { path, source }),
        Some(Ok(sig)) => sig,
    };
    check_signature(&path, key, &signed, &sig)?;
    let m: Manifest =
        serde_json::from_slice(&signed.json).map_err(|e| VerifyError::Unreadable {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    if m.format != FORMAT {
        return Err(VerifyError::Unreadable {
            path,
            reason: format!("format {:?}, expected {FORMAT:?}", m.format),
        });
    }
    check_tiling(&path, &m)?;
    let f = File::open(image).map_err(|source| VerifyError::Read {
        path: path.clone(),
        region: "the image".into(),
        source,
    })?;
    let len = f
        .metadata()
        .map_err(|source| VerifyError::Read {
            path: path.clone(),
            region: "the image".into(),
            source,
        })?
        .len();
    if len != m.disk.size {
        return Err(VerifyError::Disk {
            path,
            what: "disk size",
            found: format!("{len} bytes"),
            signed: format!("{} bytes", m.disk.size),
        });
    }
    let bytes_checked = check_regions(&path, &f, &m, &signed)?;
    Ok(Verified {
        key_id: sig.key_id,
        trusted_comment: sig.trusted_comment.clone(),
        manifest: m,
        bytes_checked,
        signed,
    })
}

fn check_signature(
    path: &Path,
    key: &PublicKey,
    signed: &SignedManifest,
    sig: &Signature,
) -> Result<(), VerifyError> {
    let path = path.to_path_buf();
    match key.verify(&signed.json, sig) {
        Ok(()) => {}
        Err(SignError::KeyIdMismatch { signature, key }) => {
            return Err(VerifyError::WrongKey {
                path,
                signature,
                key,
            });
        }
        Err(SignError::BadSignature(key)) => return Err(VerifyError::BadSignature { path, key }),
        Err(SignError::BadTrustedComment(key)) => {
            return Err(VerifyError::BadTrustedComment { path, key });
        }
        Err(source) => return Err(VerifyError::Signature { path, source }),
    }
    // minisign signs neither the untrusted comment nor the line structure: insist on the
    // exact text we write, so that no byte of the partition is unchecked.
    if sig.untrusted_comment != UNTRUSTED_COMMENT
        || signed.minisig.as_deref() != Some(sig.to_minisign().as_str())
    {
        return Err(VerifyError::SignatureForm { path });
    }
    Ok(())
}

/// The regions must cut the disk in order, without overlap or hole, and say how each is
/// covered consistently.
fn check_tiling(path: &Path, m: &Manifest) -> Result<(), VerifyError> {
    let bad = |reason: String| VerifyError::Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    let mut at = 0u64;
    for r in &m.regions {
        if r.offset != at {
            return Err(bad(format!(
                "region {} starts at {}, expected {at}",
                r.name, r.offset
            )));
        }
        at = r
            .offset
            .checked_add(r.size)
            .ok_or_else(|| bad(format!("region {} overflows", r.name)))?;
        if (r.covered == Coverage::Sha256) != r.sha256.is_some() {
            return Err(bad(format!(
                "region {} has a sha256 only for `sha256`",
                r.name
            )));
        }
        let role = r
            .partition
            .as_ref()
            .and_then(|p| Role::from_label(&p.label));
        let allowed = match r.covered {
            Coverage::ContentsExcluded => role == Some(Role::Data),
            Coverage::SignedManifest => role == Some(Role::Manifest),
            Coverage::Sha256 | Coverage::Zeros => true,
        };
        if !allowed {
            return Err(bad(format!("region {} cannot be {:?}", r.name, r.covered)));
        }
    }
    if at != m.disk.size {
        return Err(bad(format!(
            "the regions end at {at}, the disk at {}",
            m.disk.size
        )));
    }
    Ok(())
}

/// Compares every region with the image, in disk order; returns the bytes checked.
fn check_regions(
    path: &Path,
    f: &File,
    m: &Manifest,
    signed: &SignedManifest,
) -> Result<u64, VerifyError> {
    let mut checked = 0;
    for r in &m.regions {
        let read = |source| VerifyError::Read {
            path: path.to_path_buf(),
            region: r.name.clone(),
            source,
        };
        let differs = |how| VerifyError::Differs {
            path: path.to_path_buf(),
            region: r.name.clone(),
            how,
        };
        match r.covered {
            Coverage::ContentsExcluded => continue,
            Coverage::Sha256 => {
                let h = manifest::hash_region(f, r.offset, r.size).map_err(read)?;
                if r.sha256.as_deref() != Some(hex::encode(h).as_str()) {
                    return Err(differs("sha256 differs from the signed manifest"));
                }
            }
            Coverage::Zeros => {
                if !manifest::is_zero_region(f, r.offset, r.size).map_err(read)? {
                    return Err(differs("not all zeros, as the signed manifest says it is"));
                }
            }
            Coverage::SignedManifest => {
                let frame = signed.frame();
                let len = frame.len() as u64;
                if len > r.size {
                    return Err(differs("the manifest is larger than its partition"));
                }
                let mut here = vec![0u8; frame.len()];
                f.read_exact_at(&mut here, r.offset).map_err(read)?;
                if here != frame {
                    return Err(differs(
                        "does not hold exactly the signed manifest in the builder's framing",
                    ));
                }
                if !manifest::is_zero_region(f, r.offset + len, r.size - len).map_err(read)? {
                    return Err(differs("not all zeros after the signed manifest"));
                }
            }
        }
        checked += r.size;
    }
    Ok(checked)
}
