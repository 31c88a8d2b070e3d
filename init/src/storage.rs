//! The disk the host booted from: find it, verify and mount the payload, mount (and on first
//! boot grow) the data partition. The layout and the command-line parameters are `hostimg`'s.
//!
//! Steps, when the kernel command line carries `hostos.*` parameters (none: a direct `-kernel`
//! boot, and this does nothing):
//!
//! 1. Find the disk whose GPT holds both PARTUUIDs, rescanning for up to [`DISK_WAIT`] while
//!    drivers probe.
//! 2. Create the dm-verity device [`hostimg::PAYLOAD_DM_NAME`] over payload slot A (read-only,
//!    table from [`hostimg::VerityParams::dm_table`]), read it end to end so that a payload
//!    with any corrupted block is refused before anything mounts it (dm-verity checks a block
//!    only when it is read), then mount it erofs read-only at [`hostimg::PAYLOAD_MOUNT`].
//! 3. If the disk is larger than its GPT says, move the backup GPT to the end, extend the data
//!    partition to the last usable block and tell the kernel (`BLKPG_RESIZE_PARTITION`).
//! 4. Mount the data partition ext4 read-write at [`hostimg::DATA_MOUNT`] and, if its
//!    filesystem is smaller than the partition, grow it online (`EXT4_IOC_RESIZE_FS`). Doing
//!    this whenever the sizes differ, not only right after step 3, finishes a growth that a
//!    power cut interrupted.
//! 5. Create [`FIRST_BOOT_MARKER`] if it is missing, and say which it was.
//!
//! The syscalls go through [`StorageOps`], so the whole sequence is pinned by unit tests
//! against a recording double that holds a disk image in memory.

pub mod dm;
pub mod find;
pub mod gpt;
pub mod grow;
mod real;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hostimg::{BootParams, BootParamsError};
use nix::errno::Errno;
use nix::mount::MsFlags;

use crate::console::Line;
use dm::DmControl;
use find::{Disk, FindError, PartitionNode};
use gpt::{BlockIo, GptError};
use grow::{EXT4_SUPERBLOCK_LEN, EXT4_SUPERBLOCK_OFFSET, Ext4Error};

pub use real::RealStorage;

/// Where the kernel command line is read from.
pub const CMDLINE: &str = "/proc/cmdline";
/// How long init waits for the boot disk to appear, and how often it looks.
pub const DISK_WAIT: Duration = Duration::from_secs(10);
pub const DISK_RESCAN: Duration = Duration::from_millis(100);
/// Created on the data partition the first time init mounts it.
pub const FIRST_BOOT_MARKER: &str = "/var/.hostos-first-boot";

const MIB: u64 = 1 << 20;

/// The syscalls of the storage setup: [`RealStorage`] in the guest, a recorder in tests.
pub trait StorageOps: DmControl {
    type Io: BlockIo;
    fn say(&mut self, line: &Line<'_>);
    fn sleep(&mut self, duration: Duration);
    /// The whole disks the kernel knows now.
    fn disks(&mut self) -> io::Result<Vec<Disk>>;
    fn partition(&mut self, disk: &Disk, number: u32) -> io::Result<PartitionNode>;
    fn open(&mut self, node: &Path, write: bool) -> io::Result<Self::Io>;
    /// Reads `node` from start to end; on failure, the byte offset it failed at.
    fn read_all(&mut self, node: &Path) -> Result<u64, (u64, io::Error)>;
    fn create_dir(&mut self, path: &Path) -> io::Result<()>;
    fn mount(
        &mut self,
        source: &Path,
        target: &str,
        fstype: &'static str,
        flags: MsFlags,
    ) -> Result<(), Errno>;
    /// `BLKPG_RESIZE_PARTITION` on the whole disk; `start` and `length` in bytes.
    fn resize_partition(
        &mut self,
        disk: &Disk,
        number: u32,
        start: u64,
        length: u64,
    ) -> Result<(), Errno>;
    /// `EXT4_IOC_RESIZE_FS` on the filesystem mounted at `target`.
    fn resize_ext4(&mut self, target: &str, blocks: u64) -> Result<(), Errno>;
    fn exists(&mut self, path: &Path) -> io::Result<bool>;
    fn create_file(&mut self, path: &Path) -> io::Result<()>;
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot read the kernel command line {CMDLINE}")]
    Cmdline(#[source] io::Error),
    #[error("the kernel command line names a hostos disk, but")]
    Params(#[source] BootParamsError),
    #[error("looking for the boot disk")]
    Find(#[source] FindError),
    #[error("cannot find the node of partition {number} of {disk}")]
    PartitionNode {
        disk: PathBuf,
        number: u32,
        #[source]
        source: io::Error,
    },
    #[error(
        "payload {node}: the partition has {have} bytes, fewer than the {need} bytes of data and verity superblock hostos.verity describes"
    )]
    PayloadTooSmall { node: PathBuf, have: u64, need: u64 },
    #[error("payload {node}: cannot set up dm-verity device {name}")]
    Verity {
        node: PathBuf,
        name: &'static str,
        #[source]
        source: dm::DmError,
    },
    #[error(
        "payload {node}: dm-verity refused block {block} ({dm}): the payload does not match the root hash {root} on the kernel command line"
    )]
    Corrupt {
        node: PathBuf,
        dm: PathBuf,
        block: u64,
        root: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot create mount point {path}")]
    MountPoint {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{role} {node}: cannot mount it ({fstype}) on {target}")]
    Mount {
        role: &'static str,
        node: PathBuf,
        fstype: &'static str,
        target: &'static str,
        #[source]
        source: Errno,
    },
    #[error("data {node}: cannot grow its GPT entry to the end of {disk}")]
    GrowGpt {
        node: PathBuf,
        disk: PathBuf,
        #[source]
        source: GptError,
    },
    #[error("data {node}: the kernel refused its new size (BLKPG_RESIZE_PARTITION on {disk})")]
    GrowPartition {
        node: PathBuf,
        disk: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("data {node}: cannot read its ext4 superblock")]
    ReadSuperblock {
        node: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("data {node}: not ext4")]
    NotExt4 {
        node: PathBuf,
        #[source]
        source: Ext4Error,
    },
    #[error("data {node}: cannot grow ext4 on {target} to {blocks} blocks (EXT4_IOC_RESIZE_FS)")]
    GrowFs {
        node: PathBuf,
        target: &'static str,
        blocks: u64,
        #[source]
        source: Errno,
    },
    #[error("data: cannot check or create {path}")]
    Marker {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Reads `/proc/cmdline` and runs [`setup`].
pub fn setup_from_cmdline(ops: &mut impl StorageOps) -> Result<(), StorageError> {
    let cmdline = std::fs::read_to_string(CMDLINE).map_err(StorageError::Cmdline)?;
    setup(ops, &cmdline)
}

/// The whole storage setup (see the module docs); `Ok` without doing anything when
/// `cmdline` has no `hostos.*` parameters.
pub fn setup(ops: &mut impl StorageOps, cmdline: &str) -> Result<(), StorageError> {
    if !BootParams::present_in(cmdline) {
        return Ok(());
    }
    let params = BootParams::parse(cmdline).map_err(StorageError::Params)?;
    let attempts = (DISK_WAIT.as_millis() / DISK_RESCAN.as_millis()) as u32;
    let found = find::find_disk(ops, params.payload, params.data, attempts, DISK_RESCAN)
        .map_err(StorageError::Find)?;
    let node = |ops: &mut _, number| {
        StorageOps::partition(ops, &found.disk, number).map_err(|source| {
            StorageError::PartitionNode {
                disk: found.disk.node.clone(),
                number,
                source,
            }
        })
    };
    let payload = node(ops, found.payload.number)?;
    let data = node(ops, found.data.number)?;
    ops.say(&Line::DiskFound {
        disk: &found.disk.node.display().to_string(),
        payload: &payload.node.display().to_string(),
        data: &data.node.display().to_string(),
    });

    let block = found.gpt.block_size();
    mount_payload(ops, &params, &payload, found.payload.blocks() * block)?;
    let mut gpt = found.gpt;
    let disk_blocks = found.disk.size_bytes / block;
    let grown = if gpt.backup_lba().saturating_add(1) != disk_blocks {
        ops.open(&found.disk.node, true)
            .map_err(|source| GptError::Write {
                what: "the disk (opening it for writing)",
                source,
            })
            .and_then(|mut io| gpt.grow_last(&mut io, disk_blocks, params.data))
            .map_err(|source| StorageError::GrowGpt {
                node: data.node.clone(),
                disk: found.disk.node.clone(),
                source,
            })?
    } else {
        None
    };
    let data_bytes = match grown {
        Some(g) => {
            let start = g.first_lba * block;
            let length = (g.new_last_lba - g.first_lba + 1) * block;
            ops.resize_partition(&found.disk, g.number, start, length)
                .map_err(|source| StorageError::GrowPartition {
                    node: data.node.clone(),
                    disk: found.disk.node.clone(),
                    source,
                })?;
            ops.say(&Line::DataGrown {
                from_mib: found.data.blocks() * block / MIB,
                to_mib: length / MIB,
            });
            length
        }
        None => found.data.blocks() * block,
    };
    mount_data(ops, &data, data_bytes)
}

fn mount_payload(
    ops: &mut impl StorageOps,
    params: &BootParams,
    payload: &PartitionNode,
    have: u64,
) -> Result<(), StorageError> {
    let verity = &params.verity;
    let need = verity
        .hash_start_block()
        .saturating_mul(hostimg::VERITY_BLOCK);
    if have < need {
        return Err(StorageError::PayloadTooSmall {
            node: payload.node.clone(),
            have,
            need,
        });
    }
    let name = hostimg::PAYLOAD_DM_NAME;
    let (_, minor) =
        dm::create_readonly(ops, name, &verity.dm_table(&payload.dev)).map_err(|source| {
            StorageError::Verity {
                node: payload.node.clone(),
                name,
                source,
            }
        })?;
    // devtmpfs names device-mapper nodes dm-<minor>; /dev/mapper/<name> would need udev.
    let dm_node = PathBuf::from(format!("/dev/dm-{minor}"));
    let root = hostimg::boot_params::hex(&verity.root_hash);
    ops.read_all(&dm_node)
        .map_err(|(offset, source)| StorageError::Corrupt {
            node: payload.node.clone(),
            dm: dm_node.clone(),
            block: offset / hostimg::VERITY_BLOCK,
            root: root.clone(),
            source,
        })?;
    let target = hostimg::PAYLOAD_MOUNT;
    mount_point(ops, target)?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    ops.mount(&dm_node, target, "erofs", flags)
        .map_err(|source| StorageError::Mount {
            role: "payload",
            node: dm_node.clone(),
            fstype: "erofs",
            target,
            source,
        })?;
    ops.say(&Line::PayloadMounted {
        root_hash: root.get(..12).unwrap_or(&root),
    });
    Ok(())
}

fn mount_data(
    ops: &mut impl StorageOps,
    data: &PartitionNode,
    partition_bytes: u64,
) -> Result<(), StorageError> {
    let read_error = |source| StorageError::ReadSuperblock {
        node: data.node.clone(),
        source,
    };
    let mut sb = [0u8; EXT4_SUPERBLOCK_LEN];
    ops.open(&data.node, false)
        .and_then(|mut io| io.read_at(EXT4_SUPERBLOCK_OFFSET, &mut sb))
        .map_err(read_error)?;
    let fs = grow::parse_ext4_superblock(&sb).map_err(|source| StorageError::NotExt4 {
        node: data.node.clone(),
        source,
    })?;
    let target = hostimg::DATA_MOUNT;
    mount_point(ops, target)?;
    ops.mount(
        &data.node,
        target,
        "ext4",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )
    .map_err(|source| StorageError::Mount {
        role: "data",
        node: data.node.clone(),
        fstype: "ext4",
        target,
        source,
    })?;
    let blocks = partition_bytes / fs.block_size;
    let size = if blocks > fs.blocks {
        ops.resize_ext4(target, blocks)
            .map_err(|source| StorageError::GrowFs {
                node: data.node.clone(),
                target,
                blocks,
                source,
            })?;
        blocks * fs.block_size
    } else {
        fs.bytes()
    };
    ops.say(&Line::DataMounted { mib: size / MIB });

    let marker = Path::new(FIRST_BOOT_MARKER);
    let marker_error = |source| StorageError::Marker {
        path: marker.to_path_buf(),
        source,
    };
    let existed = ops.exists(marker).map_err(marker_error)?;
    if !existed {
        ops.create_file(marker).map_err(marker_error)?;
    }
    ops.say(&Line::FirstBoot {
        first: !existed,
        marker: FIRST_BOOT_MARKER,
    });
    Ok(())
}

fn mount_point(ops: &mut impl StorageOps, target: &str) -> Result<(), StorageError> {
    ops.create_dir(Path::new(target))
        .map_err(|source| StorageError::MountPoint {
            path: target.into(),
            source,
        })
}

#[cfg(test)]
mod tests;
