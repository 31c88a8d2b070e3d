//! The image manifest: what the builder signs about a disk image, how it is measured, and how
//! it is kept in the image's manifest partition.
//!
//! The manifest is JSON (`serde_json`, pretty, fields in the order the structs declare them,
//! lists in disk order, so the same image always gives the same bytes). It covers the whole
//! disk: `regions` cuts the disk, in order and without overlap or hole, into the protective
//! MBR, both GPT headers and tables, every partition and every gap. Each region says how it
//! is covered:
//! - `sha256`: the SHA-256 of all its bytes (GPT structures, ESP, payload slots);
//! - `zeros`: every byte is zero (gaps);
//! - `contents-excluded`: data, which the running system writes (its GPT entry is still
//!   covered, by the tables' hashes);
//! - `signed-manifest`: the manifest partition, which must hold exactly this manifest and its
//!   signature in the framing below, then zeros.
//!
//! So a single flipped byte anywhere outside the data partition's contents fails
//! `builder verify`. The signature is minisign's (ed25519, prehashed), so `minisign -Vm
//! NAME.manifest.json -p KEY.pub` checks the copy written beside the image.
//!
//! Manifest partition framing (text header, then the two files back to back, then zeros to
//! the end of the partition):
//!
//! ```text
//! HOSTOS-MANIFEST/1\n
//! manifest.json <length in bytes>\n
//! manifest.json.minisig <length in bytes, 0 when unsigned>\n
//! \n
//! <manifest.json><manifest.json.minisig><zeros>
//! ```

// Until `builder build`, `verify` and `inspect` call it (the coordinator wires the CLI).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use aci::sign::SecretKey;
use hostimg::Role;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::disk::{self, DiskError, Layout, RegionKind, StagedImage};

mod frame;

pub use frame::{FrameError, SignedManifest, detached_paths};

/// The manifest's `format` field.
pub const FORMAT: &str = "hostos-image-manifest/1";
/// The untrusted comment every signature we write carries (minisign does not sign it; the
/// verifier insists on it so that no byte of the partition goes unchecked).
pub const UNTRUSTED_COMMENT: &str = "signature from minisign secret key";
/// A manifest partition larger than this is not read whole (ours is 1 MiB).
pub const MAX_PARTITION: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// The declaration's image name and version.
    pub name: String,
    pub version: String,
    /// `x86_64` or `aarch64`.
    pub arch: String,
    /// The version of the builder that wrote the image.
    pub builder_version: String,
    pub disk: DiskInfo,
    /// The whole disk, in order.
    pub regions: Vec<RegionEntry>,
    /// SHA-256 of the UKI (`EFI/BOOT/BOOT*.EFI` on the ESP), hex.
    pub uki_sha256: String,
    /// dm-verity root hash of payload slot A, hex (also on the UKI's command line).
    pub verity_root_hash: String,
    /// The UKI's kernel command line.
    pub cmdline: String,
    /// The ACIs in the payload.
    pub embedded_images: Vec<EmbeddedImage>,
    /// The trust keys copied into the initramfs.
    pub trust_keys: Vec<TrustKey>,
    /// Versions of the outside tools that made the filesystems (bit-identical rebuilds are
    /// promised for the same tools).
    pub tools: Vec<ToolVersion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskInfo {
    pub guid: String,
    /// Bytes.
    pub size: u64,
    pub sector_size: u64,
}

/// How a region is covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Coverage {
    Sha256,
    Zeros,
    ContentsExcluded,
    SignedManifest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionEntry {
    /// `protective-mbr`, `primary-gpt-header`, `primary-gpt-table`, a partition's label,
    /// `gap-after-<region>`, `backup-gpt-table`, `backup-gpt-header`.
    pub name: String,
    pub offset: u64,
    pub size: u64,
    pub covered: Coverage,
    /// Hex, when `covered` is `sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The GPT entry, for partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<PartitionEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionEntry {
    pub number: u32,
    pub label: String,
    pub guid: String,
    pub type_guid: String,
    /// The attribute bits, `0x` and 16 hex digits (a u64 does not survive JSON readers that
    /// use doubles).
    pub attributes: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedImage {
    /// Path inside the payload, e.g. `images/nginx.aci`.
    pub file: String,
    pub name: String,
    pub labels: Vec<Label>,
    /// `sha512-...`.
    pub image_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustKey {
    /// minisign's key id (16 upper-case hex digits).
    pub key_id: String,
    /// The image name prefix the key is trusted for; `None`: every name.
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolVersion {
    pub name: String,
    pub version: String,
}

/// What the builder knows about the image besides its bytes: everything in [`Manifest`] but
/// the disk and its regions, which [`measure`] reads from the image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFacts {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub uki_sha256: String,
    pub verity_root_hash: String,
    pub cmdline: String,
    pub embedded_images: Vec<EmbeddedImage>,
    pub trust_keys: Vec<TrustKey>,
    pub tools: Vec<ToolVersion>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {region} is not all zeros (the disk writer put something there)")]
    GapNotZero { path: PathBuf, region: String },
    #[error("serialising the manifest")]
    Json(#[source] serde_json::Error),
    #[error("signing the manifest")]
    Sign(#[source] aci::sign::SignError),
    #[error("writing the manifest partition")]
    Disk(#[source] DiskError),
    #[error("{path}: {source}")]
    Frame { path: PathBuf, source: FrameError },
    #[error("{path}: the manifest partition holds no manifest this builder reads")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the manifest partition is {size} bytes, more than the {max} this reader accepts")]
    PartitionTooLarge { size: u64, max: u64 },
}

pub(crate) fn io_err(
    op: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> ManifestError {
    let path = path.to_path_buf();
    move |source| ManifestError::Io { op, path, source }
}

/// SHA-256 of `size` bytes at `offset`.
pub fn hash_region(f: &File, offset: u64, size: u64) -> std::io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    each_chunk(f, offset, size, |c| {
        h.update(c);
        true
    })?;
    Ok(h.finalize().into())
}

/// Whether the `size` bytes at `offset` are all zero. Holes are skipped without reading them
/// (SEEK_DATA/SEEK_HOLE), so a large free tail of a sparse image costs nothing.
pub fn is_zero_region(f: &File, offset: u64, size: u64) -> std::io::Result<bool> {
    use rustix::fs::{SeekFrom, seek};
    let zero = |c: &[u8]| c.iter().all(|&b| b == 0);
    let end = offset + size;
    let mut at = offset;
    while at < end {
        let data = match seek(f, SeekFrom::Data(at)) {
            Ok(d) => d,
            // No data after `at`: the rest is a hole.
            Err(rustix::io::Errno::NXIO) => return Ok(true),
            // A filesystem without SEEK_DATA: read everything.
            Err(_) => return each_chunk(f, at, end - at, zero),
        };
        if data >= end {
            return Ok(true);
        }
        let hole = seek(f, SeekFrom::Hole(data))
            .map_err(std::io::Error::from)?
            .min(end);
        if hole <= data {
            return each_chunk(f, data, end - data, zero);
        }
        if !each_chunk(f, data, hole - data, zero)? {
            return Ok(false);
        }
        at = hole;
    }
    Ok(true)
}

/// Calls `each` on consecutive chunks until it returns false; returns whether it never did.
fn each_chunk(
    f: &File,
    offset: u64,
    size: u64,
    mut each: impl FnMut(&[u8]) -> bool,
) -> std::io::Result<bool> {
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut done = 0;
    while done < size {
        let n = usize::try_from((size - done).min(CHUNK)).unwrap_or(0);
        f.read_exact_at(&mut buf[..n], offset + done)?;
        if !each(&buf[..n]) {
            return Ok(false);
        }
        done += n as u64;
    }
    Ok(true)
}

/// Measures the image at `image` (laid out as `layout`) into a manifest. The manifest
/// partition's content does not matter here (it is covered by the signature instead).
pub fn measure(
    image: &Path,
    layout: &Layout,
    facts: ImageFacts,
) -> Result<Manifest, ManifestError> {
    let f = File::open(image).map_err(io_err("opening", image))?;
    let mut regions = Vec::new();
    for r in layout.regions() {
        let read = io_err("reading", image);
        let (covered, sha256) = match r.kind {
            RegionKind::Partition(Role::Data) => (Coverage::ContentsExcluded, None),
            RegionKind::Partition(Role::Manifest) => (Coverage::SignedManifest, None),
            RegionKind::Gap => {
                if !is_zero_region(&f, r.offset, r.size).map_err(read)? {
                    return Err(ManifestError::GapNotZero {
                        path: image.to_path_buf(),
                        region: r.name,
                    });
                }
                (Coverage::Zeros, None)
            }
            _ => {
                let h = hash_region(&f, r.offset, r.size).map_err(read)?;
                (Coverage::Sha256, Some(hex::encode(h)))
            }
        };
        let partition = match r.kind {
            RegionKind::Partition(role) => layout.partition(role).map(|p| PartitionEntry {
                number: role.number(),
                label: role.label().into(),
                guid: p.guid.to_string(),
                type_guid: role.type_guid().to_string(),
                attributes: format!("{:#018x}", p.attributes),
            }),
            _ => None,
        };
        regions.push(RegionEntry {
            name: r.name,
            offset: r.offset,
            size: r.size,
            covered,
            sha256,
            partition,
        });
    }
    Ok(Manifest {
        format: FORMAT.into(),
        name: facts.name,
        version: facts.version,
        arch: facts.arch,
        builder_version: env!("CARGO_PKG_VERSION").into(),
        disk: DiskInfo {
            guid: layout.disk_guid.to_string(),
            size: layout.disk_size,
            sector_size: hostimg::SECTOR,
        },
        regions,
        uki_sha256: facts.uki_sha256,
        verity_root_hash: facts.verity_root_hash,
        cmdline: facts.cmdline,
        embedded_images: facts.embedded_images,
        trust_keys: facts.trust_keys,
        tools: facts.tools,
    })
}

impl Manifest {
    /// The partitions' regions, in disk order.
    #[cfg(test)]
    pub fn partitions(&self) -> impl Iterator<Item = (&RegionEntry, &PartitionEntry)> {
        self.regions
            .iter()
            .filter_map(|r| r.partition.as_ref().map(|p| (r, p)))
    }

    /// The JSON bytes that are signed (pretty, with a final newline).
    pub fn to_json(&self) -> Result<Vec<u8>, ManifestError> {
        let mut json = serde_json::to_vec_pretty(self).map_err(ManifestError::Json)?;
        json.push(b'\n');
        Ok(json)
    }

    /// Signs the manifest. `file_name` (e.g. `hello-x86_64.manifest.json`) and `timestamp`
    /// (from SOURCE_DATE_EPOCH or the inputs, never the clock) go in the trusted comment
    /// minisign prints; ed25519 is deterministic, so the signature is too.
    pub fn sign(
        &self,
        key: &SecretKey,
        file_name: &str,
        timestamp: u64,
    ) -> Result<SignedManifest, ManifestError> {
        let json = self.to_json()?;
        let comment = aci::sign::default_trusted_comment(file_name, timestamp);
        let sig = key.sign(&json, &comment).map_err(ManifestError::Sign)?;
        Ok(SignedManifest {
            json,
            minisig: Some(sig.to_minisign()),
        })
    }
}

/// Measures the staged image, signs the manifest and writes it into the manifest partition.
/// Returns what was written, for the copies beside the image.
pub fn seal(
    staged: &StagedImage,
    facts: ImageFacts,
    key: &SecretKey,
    file_name: &str,
    timestamp: u64,
) -> Result<SignedManifest, ManifestError> {
    let manifest = measure(staged.path(), staged.layout(), facts)?;
    let signed = manifest.sign(key, file_name, timestamp)?;
    staged
        .write_partition(Role::Manifest, &signed.frame())
        .map_err(ManifestError::Disk)?;
    Ok(signed)
}

/// Reads the GPT and the manifest partition of `image`, without checking anything they say.
pub fn read_from_image(image: &Path) -> Result<(Layout, Vec<u8>), ManifestError> {
    let layout = disk::read_layout(image).map_err(ManifestError::Disk)?;
    let p = layout.partition(Role::Manifest).copied().ok_or_else(|| {
        ManifestError::Disk(DiskError::NoPartition {
            path: image.to_path_buf(),
            role: Role::Manifest,
        })
    })?;
    if p.size > MAX_PARTITION {
        return Err(ManifestError::PartitionTooLarge {
            size: p.size,
            max: MAX_PARTITION,
        });
    }
    let f = File::open(image).map_err(io_err("opening", image))?;
    let mut bytes = vec![0u8; usize::try_from(p.size).unwrap_or(0)];
    f.read_exact_at(&mut bytes, p.offset)
        .map_err(io_err("reading the manifest partition of", image))?;
    Ok((layout, bytes))
}

/// What an image carries, read without checking it (for `builder inspect`; `builder verify`
/// checks it).
#[derive(Debug, Clone)]
pub struct Embedded {
    pub layout: Layout,
    pub signed: SignedManifest,
    pub manifest: Manifest,
}

/// Reads the GPT, the manifest and its signature from `image`, unverified.
pub fn read_embedded(image: &Path) -> Result<Embedded, ManifestError> {
    let (layout, bytes) = read_from_image(image)?;
    let signed = SignedManifest::unframe(&bytes).map_err(|source| ManifestError::Frame {
        path: image.to_path_buf(),
        source,
    })?;
    let manifest = serde_json::from_slice(&signed.json).map_err(|source| ManifestError::Parse {
        path: image.to_path_buf(),
        source,
    })?;
    Ok(Embedded {
        layout,
        signed,
        manifest,
    })
}
