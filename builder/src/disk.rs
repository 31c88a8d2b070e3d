//! The disk image's layout: where each partition of the `hostimg` contract goes, which bytes
//! the GPT structures occupy, and (in the submodules) writing the raw image with the `gpt`
//! crate and reading its GPT back.
//!
//! Layout rules (all pinned by tests):
//! - sector 0 holds the protective MBR, sector 1 the primary GPT header, sectors 2..=33 the
//!   primary table (128 entries of 128 bytes, the minimum the spec allows);
//! - partitions follow in [`Role`] order, each starting on a 1 MiB boundary and a whole number
//!   of MiB long, with no space between them; the first starts at 1 MiB;
//! - the disk ends 1 MiB after the last partition (data) unless a larger total size is asked
//!   for; that last MiB holds the backup table and header (the last 33 sectors), so the disk
//!   is a whole number of MiB (Azure's rule) and data is followed only by free space it can
//!   grow into on first boot;
//! - every GUID (disk and partitions) comes from the caller, derived from the build's inputs:
//!   the `gpt` crate's random defaults are always overwritten;
//! - partition attributes follow the Discoverable Partitions Specification: bit 60
//!   (read-only) where the spec asks for it, bit 59 (grow-file-system) on data.

// Until `builder build`, `verify` and `inspect` call it (the coordinator wires the CLI).

mod read;
mod write;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use hostimg::{ALIGN, Guid, Role, SECTOR};

pub use read::read_layout;
pub use write::{StagedImage, stage};
#[cfg(test)]
pub use write::{write, write_partition};

/// DPS attribute bit 60: the partition is read-only (mount it so).
pub const ATTR_READ_ONLY: u64 = 1 << 60;
/// DPS attribute bit 59: grow the file system to the partition's size.
pub const ATTR_GROW_FS: u64 = 1 << 59;

/// Entries in each GPT partition table, and their size.
pub const GPT_ENTRIES: u64 = 128;
pub const GPT_ENTRY_SIZE: u64 = 128;
/// Bytes of one partition table (32 sectors).
pub const GPT_TABLE_BYTES: u64 = GPT_ENTRIES * GPT_ENTRY_SIZE;

/// What a partition holds when the image is written. The rest of the partition is zeros.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Bytes(Vec<u8>),
    /// Copied from a file (a filesystem image built elsewhere), sparse where it is zero.
    File(PathBuf),
    Zeros,
}

/// One partition to lay out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    pub role: Role,
    /// Bytes; a positive multiple of 1 MiB ([`ALIGN`]).
    pub size: u64,
    /// The partition's unique GUID (PARTUUID), derived from the build's inputs.
    pub guid: Guid,
    pub content: Content,
    /// Sets DPS attribute bit 60 (payload slots).
    pub read_only: bool,
}

/// The whole disk to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    pub disk_guid: Guid,
    /// Exactly one per role, in [`Role::ALL`] order.
    pub partitions: Vec<PartitionSpec>,
    /// The disk's size in bytes (a whole MiB, at least the smallest that holds the
    /// partitions); the space after data stays free. `None`: the smallest size.
    pub total_size: Option<u64>,
}

/// A partition as placed on the disk (or as read back from its GPT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacedPartition {
    pub role: Role,
    pub guid: Guid,
    /// Byte offset of the first sector.
    pub offset: u64,
    /// Bytes.
    pub size: u64,
    /// The GPT entry's attribute bits.
    pub attributes: u64,
}

impl PlacedPartition {
    pub fn end(&self) -> u64 {
        self.offset + self.size
    }

    pub fn first_lba(&self) -> u64 {
        self.offset / SECTOR
    }

    /// Inclusive, as GPT stores it.
    pub fn last_lba(&self) -> u64 {
        self.end() / SECTOR - 1
    }
}

/// Where everything is on the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub disk_guid: Guid,
    /// Bytes, a multiple of [`SECTOR`].
    pub disk_size: u64,
    /// In [`Role::ALL`] order (which is disk order).
    pub partitions: Vec<PlacedPartition>,
}

/// What a stretch of the disk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    ProtectiveMbr,
    PrimaryHeader,
    PrimaryTable,
    Partition(Role),
    /// Space no structure claims: zeros.
    Gap,
    BackupTable,
    BackupHeader,
}

/// A stretch of the disk: [`Layout::regions`] cuts the whole disk into these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// Stable name used in the manifest and in messages (`primary-gpt-table`, `payload-a`,
    /// `gap-after-data`).
    pub name: String,
    pub kind: RegionKind,
    pub offset: u64,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(
        "the disk's partitions must be {expected} in this order, found {found}",
        expected = role_list(Role::ALL.iter().copied()),
    )]
    Roles { found: String },
    #[error("{role}: size {size} is not a positive multiple of 1 MiB")]
    Size { role: Role, size: u64 },
    #[error("payload-b must be the same size as payload-a ({a} bytes), not {b} bytes")]
    SlotSizes { a: u64, b: u64 },
    #[error("{what}: the GUID is nil; derive one from the build's inputs")]
    NilGuid { what: String },
    #[error("{what} and {other} have the same GUID {guid}")]
    DuplicateGuid {
        what: String,
        other: String,
        guid: Guid,
    },
    #[error("{role}: its content ({len} bytes) is larger than the partition ({size} bytes)")]
    ContentTooLarge { role: Role, len: u64, size: u64 },
    #[error("{role}: reading its content {path}")]
    ReadContent {
        role: Role,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("disk size {size} is not a whole number of MiB")]
    TotalSizeUnaligned { size: u64 },
    #[error("disk size {size} is smaller than the {needed} bytes the partitions need")]
    TotalSizeTooSmall { size: u64, needed: u64 },
    #[error("the partition sizes add up to more than a disk can address")]
    Overflow,
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the GPT of {path}: {message}")]
    Gpt { path: PathBuf, message: String },
    #[error("{path}: reading its GPT: {message}")]
    BadGpt { path: PathBuf, message: String },
    #[error("writing {path}: the layout given is not the plan of the disk spec given")]
    NotThePlan { path: PathBuf },
    #[error("{path} has no {role} partition")]
    NoPartition { path: PathBuf, role: Role },
}

fn role_list(roles: impl Iterator<Item = Role>) -> String {
    roles.map(|r| r.label()).collect::<Vec<_>>().join(", ")
}

impl DiskError {
    pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DiskError {
        let path = path.to_path_buf();
        move |source| DiskError::Io { op, path, source }
    }
}

/// The attribute bits a partition gets.
fn attributes(role: Role, read_only: bool) -> u64 {
    let mut a = 0;
    if read_only {
        a |= ATTR_READ_ONLY;
    }
    if role == Role::Data {
        a |= ATTR_GROW_FS;
    }
    a
}

/// The length of a partition's content, to check it fits.
fn content_len(p: &PartitionSpec) -> Result<u64, DiskError> {
    match &p.content {
        Content::Bytes(b) => Ok(b.len() as u64),
        Content::Zeros => Ok(0),
        Content::File(path) => {
            std::fs::metadata(path)
                .map(|m| m.len())
                .map_err(|source| DiskError::ReadContent {
                    role: p.role,
                    path: path.clone(),
                    source,
                })
        }
    }
}

/// Places the partitions (see the module doc for the rules) and checks the spec: roles,
/// sizes, GUIDs, and that every content fits its partition.
pub fn plan(spec: &DiskSpec) -> Result<Layout, DiskError> {
    let roles: Vec<Role> = spec.partitions.iter().map(|p| p.role).collect();
    if roles != Role::ALL {
        return Err(DiskError::Roles {
            found: if roles.is_empty() {
                "none".into()
            } else {
                role_list(roles.into_iter())
            },
        });
    }
    let mut guids: Vec<(String, Guid)> = vec![("the disk".into(), spec.disk_guid)];
    guids.extend(spec.partitions.iter().map(|p| (p.role.to_string(), p.guid)));
    for (i, (what, guid)) in guids.iter().enumerate() {
        if guid.is_nil() {
            return Err(DiskError::NilGuid { what: what.clone() });
        }
        if let Some((other, _)) = guids[..i].iter().find(|(_, g)| g == guid) {
            return Err(DiskError::DuplicateGuid {
                what: other.clone(),
                other: what.clone(),
                guid: *guid,
            });
        }
    }
    let mut offset = ALIGN;
    let mut partitions = Vec::with_capacity(spec.partitions.len());
    for p in &spec.partitions {
        if p.size == 0 || !p.size.is_multiple_of(ALIGN) {
            return Err(DiskError::Size {
                role: p.role,
                size: p.size,
            });
        }
        let len = content_len(p)?;
        if len > p.size {
            return Err(DiskError::ContentTooLarge {
                role: p.role,
                len,
                size: p.size,
            });
        }
        partitions.push(PlacedPartition {
            role: p.role,
            guid: p.guid,
            offset,
            size: p.size,
            attributes: attributes(p.role, p.read_only),
        });
        offset = offset.checked_add(p.size).ok_or(DiskError::Overflow)?;
    }
    let size_of = |r: Role| {
        spec.partitions
            .iter()
            .find(|p| p.role == r)
            .map_or(0, |p| p.size)
    };
    let (a, b) = (size_of(Role::PayloadA), size_of(Role::PayloadB));
    if a != b {
        return Err(DiskError::SlotSizes { a, b });
    }
    let needed = offset.checked_add(ALIGN).ok_or(DiskError::Overflow)?;
    let disk_size = match spec.total_size {
        None => needed,
        Some(size) if !size.is_multiple_of(ALIGN) => {
            return Err(DiskError::TotalSizeUnaligned { size });
        }
        Some(size) if size < needed => return Err(DiskError::TotalSizeTooSmall { size, needed }),
        Some(size) => size,
    };
    Ok(Layout {
        disk_guid: spec.disk_guid,
        disk_size,
        partitions,
    })
}

impl Layout {
    pub fn partition(&self, role: Role) -> Option<&PlacedPartition> {
        self.partitions.iter().find(|p| p.role == role)
    }

    /// Sectors on the disk.
    pub fn sectors(&self) -> u64 {
        self.disk_size / SECTOR
    }

    /// Offset of the backup partition table (it ends where the backup header starts).
    pub fn backup_table_offset(&self) -> u64 {
        self.disk_size.saturating_sub(SECTOR + GPT_TABLE_BYTES)
    }

    /// Cuts the whole disk, in order, into the regions the manifest covers: the GPT
    /// structures, the partitions, and every gap between them (normally two: after the primary
    /// table and after data).
    pub fn regions(&self) -> Vec<Region> {
        let primary_table = 2 * SECTOR;
        let mut out = vec![
            Region {
                name: "protective-mbr".into(),
                kind: RegionKind::ProtectiveMbr,
                offset: 0,
                size: SECTOR,
            },
            Region {
                name: "primary-gpt-header".into(),
                kind: RegionKind::PrimaryHeader,
                offset: SECTOR,
                size: SECTOR,
            },
            Region {
                name: "primary-gpt-table".into(),
                kind: RegionKind::PrimaryTable,
                offset: primary_table,
                size: GPT_TABLE_BYTES,
            },
        ];
        let mut pieces: Vec<Region> = self
            .partitions
            .iter()
            .map(|p| Region {
                name: p.role.label().into(),
                kind: RegionKind::Partition(p.role),
                offset: p.offset,
                size: p.size,
            })
            .collect();
        pieces.push(Region {
            name: "backup-gpt-table".into(),
            kind: RegionKind::BackupTable,
            offset: self.backup_table_offset(),
            size: GPT_TABLE_BYTES,
        });
        pieces.push(Region {
            name: "backup-gpt-header".into(),
            kind: RegionKind::BackupHeader,
            offset: self.disk_size.saturating_sub(SECTOR),
            size: SECTOR,
        });
        for piece in pieces {
            let end = out.last().map_or(0, |r| r.offset + r.size);
            if piece.offset > end {
                let after = out.last().map_or("start", |r| r.name.as_str());
                out.push(Region {
                    name: format!("gap-after-{after}"),
                    kind: RegionKind::Gap,
                    offset: end,
                    size: piece.offset - end,
                });
            }
            out.push(piece);
        }
        out
    }
}
