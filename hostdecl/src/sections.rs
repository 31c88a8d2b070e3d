//! The builder's sections of the declaration: signing key, disk sizes, output formats, and the
//! images, trust keys and files that go into the image. None of them is rendered for init:
//! what init needs from them (the trust keys, the embedded images) the builder copies into the
//! image in their own places (`hostimg::TRUST_PATH`, the payload's `images/`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// `[signing]`: the key the image's manifest is signed with.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningDecl {
    /// A minisign secret key file (`builder key generate` writes one). `builder build --key`
    /// overrides it.
    #[serde(default)]
    pub key: Option<String>,
}

/// `[disk]`: sizes in MiB (1 MiB = 1,048,576 bytes). 0 or absent: the smallest that boots with
/// what the image holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskDecl {
    /// The EFI system partition (FAT32, holds the UKI). At least [`DiskDecl::ESP_MIN_MIB`].
    #[serde(default)]
    pub esp_mib: u32,
    /// Each payload slot (A holds the embedded images with their verity tree, B is the same size).
    #[serde(default)]
    pub payload_mib: u32,
    /// The data partition (ext4) as built; init grows it to the end of a larger disk on first
    /// boot. At least [`DiskDecl::DATA_MIN_MIB`].
    #[serde(default)]
    pub data_mib: u32,
    /// The whole disk. When set, the data partition takes what the others leave; it must hold
    /// at least the partitions given.
    #[serde(default)]
    pub size_mib: u32,
}

impl DiskDecl {
    /// FAT32 needs at least 65,525 clusters: with 512-byte clusters, about 33 MiB.
    pub const ESP_MIN_MIB: u32 = 33;
    /// Room for ext4's superblocks, inode tables and a small journal.
    pub const DATA_MIN_MIB: u32 = 16;

    /// A size given, or `None` for "the smallest that boots".
    pub fn given(mib: u32) -> Option<u32> {
        (mib != 0).then_some(mib)
    }
}

/// An output the builder writes per architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `NAME-ARCH.img`, a raw disk image (written sparse).
    Raw,
    /// `NAME-ARCH.qcow2`.
    Qcow2,
    /// `NAME-ARCH.vhd`, fixed VHD with Azure's 1 MiB alignment.
    Vhd,
    /// `NAME-ARCH.tar.gz` holding `disk.raw`, as Google Compute Engine imports it.
    Gce,
    /// `NAME-ARCH.img.zst`, for flashing boards.
    Zst,
    /// The direct-boot artifacts (`vmlinuz`, `initramfs.cpio.zst`, `cmdline`) for `-kernel` boots.
    Kernel,
}

impl Format {
    pub const ALL: [Format; 6] = [
        Format::Raw,
        Format::Qcow2,
        Format::Vhd,
        Format::Gce,
        Format::Zst,
        Format::Kernel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vhd => "vhd",
            Format::Gce => "gce",
            Format::Zst => "zst",
            Format::Kernel => "kernel",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Format::ALL.iter().map(|f| f.as_str()).collect();
                format!(
                    "unknown format {s:?} (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

pub(crate) fn default_formats() -> Vec<Format> {
    vec![Format::Raw]
}

/// `[[image]]`: an ACI embedded in the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDecl {
    /// The `.aci` file.
    pub path: String,
    /// The image ID the file must have (`sha512-` and 128 hex digits), pinning its bytes.
    #[serde(default)]
    pub id: Option<String>,
    /// Its detached minisign signature; default: `path` + `.minisig` when that file exists.
    #[serde(default)]
    pub signature: Option<String>,
}

/// `[[trust]]`: a public key init trusts for images, copied into the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustDecl {
    /// A minisign public key file.
    pub key: String,
    /// Trust the key only for images named by this prefix or below it (`example.com/`);
    /// default: for every image.
    #[serde(default)]
    pub prefix: Option<String>,
}

/// `[[file]]`: an extra file placed in the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDecl {
    pub source: String,
    /// Path inside the payload, relative (`etc/motd`).
    pub dest: String,
    /// Permission bits (TOML writes octal as `0o644`); default 0o644.
    #[serde(default)]
    pub mode: Option<u32>,
}

impl FileDecl {
    pub const DEFAULT_MODE: u32 = 0o644;

    pub fn mode(&self) -> u32 {
        self.mode.unwrap_or(Self::DEFAULT_MODE)
    }
}
