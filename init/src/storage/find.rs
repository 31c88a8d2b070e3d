//! Finding the boot disk: the one whose GPT holds the payload and data partitions the command
//! line names by PARTUUID. No udev and no `/dev/disk/by-partuuid` in the guest, so init lists
//! `/sys/block`, reads each disk's GPT itself, and takes partition nodes from sysfs.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hostimg::Guid;

use super::StorageOps;
use super::gpt::{Entry, Gpt};

/// Where the kernel lists block devices.
pub const SYS_BLOCK: &str = "/sys/block";

/// A whole disk as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// Kernel name (`vda`, `nvme0n1`, `mmcblk0`).
    pub name: String,
    /// Its node, `/dev/<name>`.
    pub node: PathBuf,
    pub size_bytes: u64,
    /// Logical block size: the unit of GPT block addresses.
    pub block_size: u64,
}

/// A partition's device node and number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionNode {
    pub node: PathBuf,
    /// `major:minor`, as device-mapper tables name devices.
    pub dev: String,
}

/// The disk the command line describes, with its GPT and the two entries.
#[derive(Debug, Clone)]
pub struct Found {
    pub disk: Disk,
    pub gpt: Gpt,
    pub payload: Entry,
    pub data: Entry,
}

#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error("cannot list the disks in {SYS_BLOCK}")]
    List(#[source] io::Error),
    #[error(
        "no disk holds both the payload partition {payload} and the data partition {data} (waited {waited:?}; {seen})"
    )]
    NotFound {
        payload: Guid,
        data: Guid,
        waited: Duration,
        seen: String,
    },
    #[error("partition {guid} on {disk} has type {found}, not the {role} type {expected}")]
    WrongType {
        guid: Guid,
        disk: String,
        role: &'static str,
        found: Guid,
        expected: Guid,
    },
}

/// Names that are never the boot disk; reading them is slow or meaningless.
fn skipped(name: &str) -> bool {
    ["dm-", "loop", "ram", "zram", "sr", "md"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// Rescans every `interval` until a disk's GPT holds both partitions, at most `attempts` times.
pub fn find_disk(
    ops: &mut impl StorageOps,
    payload: Guid,
    data: Guid,
    attempts: u32,
    interval: Duration,
) -> Result<Found, FindError> {
    let mut seen = String::new();
    for attempt in 0..attempts.max(1) {
        if attempt > 0 {
            ops.sleep(interval);
        }
        seen.clear();
        for disk in ops.disks().map_err(FindError::List)? {
            if skipped(&disk.name) || disk.size_bytes == 0 {
                continue;
            }
            let gpt = match ops.open(&disk.node, false) {
                Ok(mut io) => Gpt::read(&mut io, disk.block_size),
                Err(e) => {
                    let _ = write!(seen, "{}: cannot open: {e}; ", disk.name);
                    continue;
                }
            };
            let gpt = match gpt {
                Ok(gpt) => gpt,
                Err(e) => {
                    let _ = write!(seen, "{}: {}; ", disk.name, crate::fatal::chain(&e));
                    continue;
                }
            };
            match (gpt.find(payload), gpt.find(data)) {
                (Some(p), Some(d)) => {
                    check_type(&disk, p, "payload", hostimg::Role::PayloadA.type_guid())?;
                    check_type(&disk, d, "data", hostimg::Role::Data.type_guid())?;
                    return Ok(Found {
                        disk,
                        gpt,
                        payload: p,
                        data: d,
                    });
                }
                (p, d) => {
                    let _ = write!(
                        seen,
                        "{}: GPT with {} partitions, {}; ",
                        disk.name,
                        gpt.entries().len(),
                        match (p, d) {
                            (Some(_), _) => "the payload but not the data partition",
                            (_, Some(_)) => "the data but not the payload partition",
                            _ => "neither",
                        }
                    );
                }
            }
        }
    }
    let seen = seen.trim_end_matches("; ");
    Err(FindError::NotFound {
        payload,
        data,
        waited: interval * attempts.saturating_sub(1),
        seen: if seen.is_empty() {
            "disks seen: none".to_owned()
        } else {
            format!("disks seen: {seen}")
        },
    })
}

fn check_type(
    disk: &Disk,
    entry: Entry,
    role: &'static str,
    expected: Guid,
) -> Result<(), FindError> {
    if entry.type_guid == expected {
        return Ok(());
    }
    Err(FindError::WrongType {
        guid: entry.unique_guid,
        disk: disk.name.clone(),
        role,
        found: entry.type_guid,
        expected,
    })
}

fn read_trimmed(path: &Path) -> io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_owned())
}

fn read_number(path: &Path) -> io::Result<u64> {
    read_trimmed(path)?.parse().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// The whole disks under `sys_block` (`/sys/block`), nodes under `dev` (`/dev`).
pub fn list_disks(sys_block: &Path, dev: &Path) -> io::Result<Vec<Disk>> {
    let mut disks = Vec::new();
    for entry in std::fs::read_dir(sys_block)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        // sysfs counts `size` in 512-byte sectors whatever the logical block size.
        let Ok(sectors) = read_number(&dir.join("size")) else {
            continue;
        };
        let block_size = read_number(&dir.join("queue/logical_block_size")).unwrap_or(512);
        disks.push(Disk {
            node: dev.join(&name),
            name,
            size_bytes: sectors.saturating_mul(512),
            block_size,
        });
    }
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(disks)
}

/// Partition `number` of `disk`: the child directory of `/sys/block/<disk>` whose `partition`
/// file holds that number (`vda2`, `nvme0n1p2`, `mmcblk0p2`).
pub fn partition_node(
    sys_block: &Path,
    dev: &Path,
    disk: &str,
    number: u32,
) -> io::Result<PartitionNode> {
    let dir = sys_block.join(disk);
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if read_number(&path.join("partition")).ok() != Some(u64::from(number)) {
            continue;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(PartitionNode {
            node: dev.join(name),
            dev: read_trimmed(&path.join("dev"))?,
        });
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "the kernel lists no partition {number} in {}",
            dir.display()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn lists_disks_with_sizes_and_finds_partitions_by_number() {
        let sys = tempfile::tempdir().unwrap();
        let s = sys.path();
        write(&s.join("vda/size"), "262144\n");
        write(&s.join("vda/queue/logical_block_size"), "512\n");
        write(&s.join("vda/vda2/partition"), "2\n");
        write(&s.join("vda/vda2/dev"), "254:2\n");
        write(&s.join("vda/vda5/partition"), "5\n");
        write(&s.join("vda/vda5/dev"), "254:5\n");
        write(&s.join("nvme0n1/size"), "8\n");
        write(&s.join("nvme0n1/nvme0n1p1/partition"), "1\n");
        write(&s.join("nvme0n1/nvme0n1p1/dev"), "259:1\n");
        let disks = list_disks(s, Path::new("/dev")).unwrap();
        assert_eq!(
            disks,
            [
                Disk {
                    name: "nvme0n1".into(),
                    node: "/dev/nvme0n1".into(),
                    size_bytes: 4096,
                    block_size: 512,
                },
                Disk {
                    name: "vda".into(),
                    node: "/dev/vda".into(),
                    size_bytes: 128 << 20,
                    block_size: 512,
                },
            ]
        );
        let p = partition_node(s, Path::new("/dev"), "vda", 5).unwrap();
        assert_eq!(
            p,
            PartitionNode {
                node: "/dev/vda5".into(),
                dev: "254:5".into()
            }
        );
        let p = partition_node(s, Path::new("/dev"), "nvme0n1", 1).unwrap();
        assert_eq!(p.node, Path::new("/dev/nvme0n1p1"));
        let err = partition_node(s, Path::new("/dev"), "vda", 3).unwrap_err();
        assert!(err.to_string().contains("no partition 3"), "{err}");
    }

    #[test]
    fn device_mapper_loop_and_optical_devices_are_not_candidates() {
        for name in ["dm-0", "loop3", "ram0", "zram0", "sr0", "md127"] {
            assert!(skipped(name), "{name}");
        }
        for name in ["vda", "sda", "nvme0n1", "mmcblk0", "xvda"] {
            assert!(!skipped(name), "{name}");
        }
    }
}
