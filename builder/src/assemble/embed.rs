//! What the declaration asks to carry into the image besides kernel and init: the trust keys
//! (into the initramfs, as the trust store init uses), the ACIs to embed and the extra files
//! (into the payload). Each embedded ACI is checked the way init will check it: its signature
//! over the raw bytes against the declaration's own trust keys first, only then its manifest
//! and Image ID (against the declaration's pin, if any).

use std::fs;
use std::io::BufReader;
use std::path::Path;

use anyhow::{Context, Result, bail};

use aci::sign::PublicKey;
use aci::trust::{InsecureOptions, TrustScope, TrustStore};

use hostdecl::Arch;

use crate::image::Declaration;
use crate::manifest;
use crate::payload::{PayloadFile, Source};

/// The trust keys, as files for the initramfs and as facts for the manifest.
pub struct TrustKeys {
    /// A trust store with exactly the declaration's keys (for checking embedded images).
    pub store: TrustStore,
    /// `(path inside the initramfs, key file text)`, sorted by path.
    pub files: Vec<(String, Vec<u8>)>,
    pub facts: Vec<manifest::TrustKey>,
}

/// Reads every `[[trust]]` key into a fresh store under `scratch`.
pub fn trust_keys(d: &Declaration, scratch: &Path) -> Result<TrustKeys> {
    let dir = scratch.join("trust");
    let store = TrustStore::new(&dir);
    let mut facts = Vec::new();
    for t in &d.inputs.trust {
        let (path, site) = (&t.key.value, &t.key.site);
        let text = fs::read_to_string(path)
            .with_context(|| format!("{site}: reading {}", path.display()))?;
        let key = PublicKey::from_minisign(&text)
            .with_context(|| format!("{site}: {} is not a minisign public key", path.display()))?;
        let prefix = t.prefix.as_ref().map(|p| p.value.clone());
        let scope = match &prefix {
            Some(p) => TrustScope::Prefix(p.clone()),
            None => TrustScope::Root,
        };
        store.add(&scope, &key).with_context(|| {
            format!(
                "{site}: adding {} to the image's trust store",
                path.display()
            )
        })?;
        facts.push(manifest::TrustKey {
            key_id: key.id().to_string(),
            prefix,
        });
    }
    let mut files = Vec::new();
    if dir.is_dir() {
        collect(&dir, &dir, &mut files)?;
    }
    files.sort();
    Ok(TrustKeys {
        store,
        files,
        facts,
    })
}

/// Every file below `dir`, as `(TRUST_PATH/relative path, bytes)`.
fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, out)?;
        } else if !entry.file_name().to_string_lossy().starts_with('.') {
            let rel = path
                .strip_prefix(root)
                .with_context(|| format!("{} is outside {}", path.display(), root.display()))?;
            let inside = format!(
                "{}/{}",
                hostimg::TRUST_PATH.trim_start_matches('/'),
                rel.display()
            );
            out.push((
                inside,
                fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
            ));
        }
    }
    Ok(())
}

/// The payload's files and the manifest's facts about the embedded images.
pub struct Embedded {
    pub files: Vec<PayloadFile>,
    pub images: Vec<manifest::EmbeddedImage>,
    /// The same images as `[[pod]]` resolution sees them.
    pub available: Vec<hostdecl::AvailableImage>,
    /// `(name, sha256 of the bytes)` of every payload file, for the identity seed.
    pub digests: Vec<(String, [u8; 32])>,
}

/// The appc `arch` label value of an image built for `arch`.
pub fn appc_arch(arch: Arch) -> &'static str {
    arch.appc_arch()
}

/// The payload of `arch`: the `[[image]]`s whose `arch` label is this arch's (or that have
/// none), and the `[[file]]`s. With `skip_checks` (`builder build --skip-image-checks`) an
/// image's signature is not checked, so images init must refuse can be embedded for tests.
pub fn payload(
    d: &Declaration,
    trust: &TrustKeys,
    arch: Arch,
    skip_checks: bool,
) -> Result<Embedded> {
    let mut files = Vec::new();
    let mut images = Vec::new();
    let mut digests = Vec::new();
    let mut available = Vec::new();
    for (i, img) in d.inputs.images.iter().enumerate() {
        let field = img.path.site.to_string();
        let path = img.path.value.clone();
        let open = || {
            fs::File::open(&path)
                .map(BufReader::new)
                .with_context(|| format!("{field}.path: opening {}", path.display()))
        };
        let what = path.display().to_string();
        let sig = match &img.signature {
            Some(sig_ref) => Some(fs::read(&sig_ref.value).with_context(|| {
                format!("{}: reading {}", sig_ref.site, sig_ref.value.display())
            })?),
            None if skip_checks => None,
            None => bail!(
                "{field}: {} has no signature ({}.minisig): every embedded image must be signed by a [[trust]] key, as init checks it",
                path.display(),
                path.display()
            ),
        };
        let summary = if skip_checks {
            eprintln!(
                "warning: {field}: {what}: embedded without checking its signature (--skip-image-checks); init checks it at boot"
            );
            aci::archive::read_aci(open()?, &aci::archive::ReadOptions::default())
                .with_context(|| format!("{field}: reading {what}"))?
        } else {
            let checking =
                || format!("{field}: verifying {what} with the declaration's [[trust]] keys");
            let pending = trust
                .store
                .prepare_unnamed(&what, sig.as_deref(), InsecureOptions::default())
                .with_context(checking)?;
            let accepted = pending.finish_reader(open()?).with_context(checking)?;
            let summary = aci::archive::read_aci(open()?, &aci::archive::ReadOptions::default())
                .with_context(|| format!("{field}: reading {what} (its signature verified)"))?;
            accepted
                .admit(&summary.manifest.name)
                .with_context(|| format!("{field}: {what}"))?;
            summary
        };
        let labels: Vec<(String, String)> = summary
            .manifest
            .labels
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        if let Some((_, label)) = labels.iter().find(|(n, _)| n == "arch")
            && label != appc_arch(arch)
        {
            // An image for another arch: that arch's build embeds it.
            continue;
        }
        let id = summary.id.to_string();
        if let Some(pin) = &img.id
            && pin.value != id
        {
            bail!(
                "{}: {what} has Image ID {id}, not the pinned {}",
                pin.site,
                pin.value
            );
        }
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("image-{i}.aci"));
        let inside = format!("{}/{file_name}", hostimg::PAYLOAD_IMAGES_DIR);
        if files.iter().any(|f: &PayloadFile| f.path == inside) {
            bail!("{field}: two embedded images are both called {file_name}");
        }
        // The verified signature stands for the file's bytes (an ed25519 signature over them or
        // their BLAKE2b hash), so hashing it identifies the file without another pass over it.
        // Unchecked, it does not: then the Image ID (a hash of the contents) stands in, with
        // the signature's own bytes.
        digests.push((format!("{inside}.id"), sha256(id.as_bytes())));
        files.push(PayloadFile {
            path: inside.clone(),
            source: Source::File(path.clone()),
        });
        if let Some(sig) = sig {
            digests.push((format!("{inside}.minisig"), sha256(&sig)));
            files.push(PayloadFile {
                path: format!("{inside}.minisig"),
                source: Source::Bytes(sig),
            });
        }
        available.push(hostdecl::AvailableImage {
            embedded: hostdecl::EmbeddedImage {
                file: inside.clone(),
                signature: format!("{inside}.minisig"),
                id: id.clone(),
                name: summary.manifest.name.to_string(),
            },
            labels,
        });
        images.push(manifest::EmbeddedImage {
            file: inside,
            name: summary.manifest.name.clone(),
            labels: summary
                .manifest
                .labels
                .iter()
                .map(|(name, value)| manifest::Label {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            image_id: id,
        });
    }
    for f in &d.inputs.files {
        let (path, site) = (&f.source.value, &f.source.site);
        let bytes =
            fs::read(path).with_context(|| format!("{site}: reading {}", path.display()))?;
        let dest = f.dest.trim_start_matches('/').to_string();
        if files.iter().any(|p: &PayloadFile| p.path == dest) {
            bail!("{site}: {dest} is already in the payload");
        }
        digests.push((dest.clone(), sha256(&bytes)));
        files.push(PayloadFile {
            path: dest,
            source: Source::Bytes(bytes),
        });
    }
    Ok(Embedded {
        files,
        images,
        available,
        digests,
    })
}

pub fn sha256(b: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(b).into()
}
