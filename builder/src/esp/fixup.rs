//! Corrections to the directories `fatfs` 0.3.6 writes, applied to the finished image.
//!
//! 0.3.6 (the released version) gets two things wrong in every directory it creates, both fixed
//! only on its unreleased master (rafalh/rust-fatfs#117/#100 and #99):
//! - it writes a long-file-name entry before the `.` and `..` entries, so `.` is not the first
//!   entry and `..` not the second, which FAT requires and `fsck.fat` rejects;
//! - in a directory directly under the FAT32 root, `..` points to the root's cluster (2), where
//!   FAT says 0 means "the root"; `fsck.fat` reads that as two directories sharing clusters.
//!
//! After `fatfs` has written and unmounted the volume, this walks the tree from the root through
//! the FAT, and in each subdirectory drops the long-name entries of `.` and `..`, moves every
//! later entry up to close the gap, and rewrites both dot entries' cluster numbers. It also dates
//! the volume-label entry, which `fatfs` formats with a zero (invalid) date.
//!
//! The third directory fix on fatfs' master, zeroing a FAT32 root directory's clusters when the
//! root grows, needs no correction here: the image starts as zeros and nothing is ever deleted.

use std::collections::BTreeSet;

use super::geometry::DIR_ENTRY;

const ENTRY: usize = DIR_ENTRY as usize;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_LFN: u8 = 0x0F;
const DELETED: u8 = 0xE5;
const END_OF_CHAIN: u32 = 0x0FFF_FFF8;
const DOT: [u8; 11] = *b".          ";
const DOTDOT: [u8; 11] = *b"..         ";

/// A raw FAT32 structure was not what `fatfs` writes, so the fixup stopped.
#[derive(Debug, thiserror::Error)]
pub enum FixupError {
    #[error("the boot sector's {field} is not a FAT32 value this writer produces")]
    BootSector { field: &'static str },
    #[error("directory {dir:?} refers to cluster {cluster}, outside the volume")]
    BadCluster { dir: String, cluster: u32 },
    #[error("the cluster chain of directory {dir:?} loops")]
    ChainLoop { dir: String },
    #[error("directory {dir:?} has no `.` and `..` entries")]
    MissingDotEntries { dir: String },
}

type Entry = [u8; ENTRY];

/// The parts of a FAT32 volume the fixup reads and writes.
struct Volume<'a> {
    img: &'a mut [u8],
    fat_offset: usize,
    data_offset: usize,
    cluster_bytes: usize,
    clusters: u32,
    root: u32,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl<'a> Volume<'a> {
    fn open(img: &'a mut [u8]) -> Result<Self, FixupError> {
        let bad = |field| FixupError::BootSector { field };
        if img.len() < 512 {
            return Err(bad("size"));
        }
        let bytes_per_sector = usize::from(le16(img, 0x0B));
        let sectors_per_cluster = usize::from(img[0x0D]);
        let reserved = usize::from(le16(img, 0x0E));
        let fats = usize::from(img[0x10]);
        let total_sectors = le32(img, 0x20) as usize;
        let sectors_per_fat = le32(img, 0x24) as usize;
        let root = le32(img, 0x2C);
        if bytes_per_sector != 512 {
            return Err(bad("bytes per sector"));
        }
        if sectors_per_cluster == 0 || !sectors_per_cluster.is_power_of_two() {
            return Err(bad("sectors per cluster"));
        }
        if total_sectors.checked_mul(512) != Some(img.len()) {
            return Err(bad("total sectors"));
        }
        let data_sector = reserved + fats * sectors_per_fat;
        let data_sectors = total_sectors
            .checked_sub(data_sector)
            .ok_or(bad("FAT size"))?;
        let clusters =
            u32::try_from(data_sectors / sectors_per_cluster).map_err(|_| bad("size"))?;
        if sectors_per_fat * 512 < (clusters as usize + 2) * 4 {
            return Err(bad("sectors per FAT"));
        }
        if root < 2 || root - 2 >= clusters {
            return Err(bad("root cluster"));
        }
        Ok(Volume {
            img,
            fat_offset: reserved * 512,
            data_offset: data_sector * 512,
            cluster_bytes: sectors_per_cluster * 512,
            clusters,
            root,
        })
    }

    fn in_volume(&self, cluster: u32) -> bool {
        cluster >= 2 && cluster - 2 < self.clusters
    }

    fn cluster_range(&self, cluster: u32) -> std::ops::Range<usize> {
        let start = self.data_offset + (cluster as usize - 2) * self.cluster_bytes;
        start..start + self.cluster_bytes
    }

    /// The clusters of the chain starting at `first`, in order.
    fn chain(&self, first: u32, dir: &str) -> Result<Vec<u32>, FixupError> {
        let mut chain = Vec::new();
        let mut cluster = first;
        loop {
            if !self.in_volume(cluster) {
                return Err(FixupError::BadCluster {
                    dir: dir.to_string(),
                    cluster,
                });
            }
            if chain.len() > self.clusters as usize {
                return Err(FixupError::ChainLoop {
                    dir: dir.to_string(),
                });
            }
            chain.push(cluster);
            let next = le32(self.img, self.fat_offset + cluster as usize * 4) & 0x0FFF_FFFF;
            if next >= END_OF_CHAIN {
                return Ok(chain);
            }
            cluster = next;
        }
    }

    fn read_dir(&self, chain: &[u32]) -> Vec<Entry> {
        let mut entries = Vec::new();
        for &c in chain {
            for raw in self.img[self.cluster_range(c)].chunks_exact(ENTRY) {
                let mut e = [0u8; ENTRY];
                e.copy_from_slice(raw);
                entries.push(e);
            }
        }
        entries
    }

    fn write_dir(&mut self, chain: &[u32], entries: &[Entry]) {
        let per_cluster = self.cluster_bytes / ENTRY;
        for (&c, group) in chain.iter().zip(entries.chunks(per_cluster)) {
            let range = self.cluster_range(c);
            for (slot, e) in self.img[range].chunks_exact_mut(ENTRY).zip(group) {
                slot.copy_from_slice(e);
            }
        }
    }
}

fn name(e: &Entry) -> [u8; 11] {
    let mut n = [0u8; 11];
    n.copy_from_slice(&e[..11]);
    n
}

fn is_lfn(e: &Entry) -> bool {
    e[11] & 0x3F == ATTR_LFN
}

fn first_cluster(e: &Entry) -> u32 {
    (u32::from(le16(e, 20)) << 16) | u32::from(le16(e, 26))
}

fn set_first_cluster(e: &mut Entry, cluster: u32) {
    let [lo0, lo1, hi0, hi1] = cluster.to_le_bytes();
    e[20] = hi0;
    e[21] = hi1;
    e[26] = lo0;
    e[27] = lo1;
}

/// The 8.3 name of a short entry as text, for error messages.
fn display_name(e: &Entry) -> String {
    let base = String::from_utf8_lossy(&e[..8]).trim_end().to_string();
    let ext = String::from_utf8_lossy(&e[8..11]).trim_end().to_string();
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

/// Rewrites a subdirectory's entries: `.` and `..` first without long-name entries, `.` pointing
/// at `own`, `..` at `parent` (0 for the root); every other entry kept, in order.
fn fix_dot_entries(
    entries: &[Entry],
    own: u32,
    parent: u32,
    dir: &str,
) -> Result<Vec<Entry>, FixupError> {
    let mut out: Vec<Entry> = Vec::with_capacity(entries.len());
    let mut pending_lfn: Vec<Entry> = Vec::new();
    for e in entries {
        if e[0] == 0 {
            break;
        }
        if e[0] != DELETED && is_lfn(e) {
            pending_lfn.push(*e);
            continue;
        }
        let n = name(e);
        if n == DOT || n == DOTDOT {
            pending_lfn.clear();
        } else {
            out.append(&mut pending_lfn);
        }
        out.push(*e);
    }
    out.append(&mut pending_lfn);
    let missing = || FixupError::MissingDotEntries {
        dir: dir.to_string(),
    };
    match out.as_mut_slice() {
        [dot, dotdot, ..] if name(dot) == DOT && name(dotdot) == DOTDOT => {
            set_first_cluster(dot, own);
            set_first_cluster(dotdot, parent);
        }
        _ => return Err(missing()),
    }
    out.resize(entries.len(), [0u8; ENTRY]);
    Ok(out)
}

/// Sets the date and time fields of a short entry (created, accessed, modified).
fn stamp(e: &mut Entry, date: u16, time: u16) {
    e[13] = 0;
    e[14..16].copy_from_slice(&time.to_le_bytes());
    e[16..18].copy_from_slice(&date.to_le_bytes());
    e[18..20].copy_from_slice(&date.to_le_bytes());
    e[22..24].copy_from_slice(&time.to_le_bytes());
    e[24..26].copy_from_slice(&date.to_le_bytes());
}

/// Applies every correction to a FAT32 image `fatfs` 0.3.6 wrote and unmounted. `date`/`time`
/// are the DOS encodings given to the volume-label entry.
pub(super) fn fix(img: &mut [u8], date: u16, time: u16) -> Result<(), FixupError> {
    let mut vol = Volume::open(img)?;
    let root = vol.root;
    let mut visited = BTreeSet::new();
    // (directory's cluster, the cluster its `..` must name, its path)
    let mut todo = vec![(root, 0u32, String::new())];
    while let Some((cluster, parent, path)) = todo.pop() {
        let shown = if path.is_empty() { "/" } else { path.as_str() };
        if !visited.insert(cluster) {
            return Err(FixupError::ChainLoop {
                dir: shown.to_string(),
            });
        }
        let chain = vol.chain(cluster, shown)?;
        let mut entries = vol.read_dir(&chain);
        if cluster == root {
            for e in entries.iter_mut().take_while(|e| e[0] != 0) {
                if e[0] != DELETED && !is_lfn(e) && e[11] & ATTR_VOLUME_ID != 0 {
                    stamp(e, date, time);
                }
            }
        } else {
            entries = fix_dot_entries(&entries, cluster, parent, shown)?;
        }
        vol.write_dir(&chain, &entries);
        // On FAT32 a `..` that means the root holds 0, not the root's cluster.
        let child_parent = if cluster == root { 0 } else { cluster };
        for e in entries.iter().take_while(|e| e[0] != 0) {
            let n = name(e);
            let is_subdir = e[0] != DELETED
                && !is_lfn(e)
                && e[11] & ATTR_DIRECTORY != 0
                && e[11] & ATTR_VOLUME_ID == 0
                && n != DOT
                && n != DOTDOT;
            if is_subdir {
                let child_path = format!("{path}/{}", display_name(e));
                todo.push((first_cluster(e), child_parent, child_path));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sfn(n: &[u8; 11], attr: u8, cluster: u32) -> Entry {
        let mut e = [0u8; ENTRY];
        e[..11].copy_from_slice(n);
        e[11] = attr;
        set_first_cluster(&mut e, cluster);
        e
    }

    fn lfn(order: u8) -> Entry {
        let mut e = [0u8; ENTRY];
        e[0] = order;
        e[11] = ATTR_LFN;
        e
    }

    #[test]
    fn dot_entries_lose_long_names_and_get_fat32_clusters() {
        let file_lfn = lfn(0x41);
        let file = sfn(b"BOOTX64 EFI", 0x20, 9);
        let entries = vec![
            lfn(0x41),
            sfn(&DOT, ATTR_DIRECTORY, 5),
            lfn(0x41),
            sfn(&DOTDOT, ATTR_DIRECTORY, 2),
            file_lfn,
            file,
            [0u8; ENTRY],
            [0u8; ENTRY],
        ];
        let out = fix_dot_entries(&entries, 5, 0, "/EFI").unwrap();
        assert_eq!(out.len(), entries.len());
        assert_eq!(name(&out[0]), DOT);
        assert_eq!(first_cluster(&out[0]), 5);
        assert_eq!(name(&out[1]), DOTDOT);
        assert_eq!(first_cluster(&out[1]), 0);
        assert_eq!(out[2], file_lfn, "a file's long name stays in front of it");
        assert_eq!(out[3], file);
        assert!(out[4..].iter().all(|e| e.iter().all(|&b| b == 0)));
    }

    #[test]
    fn directory_without_dot_entries_is_an_error() {
        let entries = vec![sfn(b"BOOTX64 EFI", 0x20, 9), [0u8; ENTRY]];
        let err = fix_dot_entries(&entries, 5, 0, "/EFI").unwrap_err();
        assert!(err.to_string().contains("/EFI"), "{err}");
    }

    #[test]
    fn non_fat32_boot_sector_is_refused() {
        let mut img = vec![0u8; 4096];
        let err = fix(&mut img, 0, 0).unwrap_err();
        assert!(matches!(err, FixupError::BootSector { .. }), "{err}");
    }
}
