//! FAT32 layout arithmetic: how many clusters a volume of a given size has (the same formulas
//! `fatfs` 0.3.6 formats with, pinned by a test against it), and how many clusters a set of files
//! and their directories take, so sizes are checked before anything is written.

use std::collections::BTreeMap;

/// Bytes per sector: the only size UEFI firmware reliably reads from a disk image.
pub(super) const SECTOR: u64 = 512;
/// Fewer clusters than this and every FAT implementation reads the volume as FAT16.
pub(super) const MIN_FAT32_CLUSTERS: u32 = 65_525;
/// Cluster numbers above this collide with FAT32's reserved and end-of-chain values.
const MAX_FAT32_CLUSTERS: u32 = 0x0FFF_FFF4;
/// `fatfs` reserves 8 sectors on FAT32 (boot sector, FSInfo, backup boot sector at 6).
const RESERVED_SECTORS: u32 = 8;
/// Two FATs, as every formatter writes and fsck expects.
const FATS: u32 = 2;
/// A directory entry is 32 bytes.
pub(super) const DIR_ENTRY: u64 = 32;
/// UTF-16 code units of a name carried by one long-file-name entry.
const LFN_CHARS: usize = 13;
const MIB: u64 = 1 << 20;

/// The layout of a FAT32 volume of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    pub(super) total_sectors: u32,
    pub(super) cluster_bytes: u32,
    pub(super) clusters: u32,
}

impl Layout {
    /// The layout `fatfs` formats a volume of `size` bytes with (`size` a multiple of
    /// [`SECTOR`]), or `None` if the sector count does not fit FAT's 32-bit field. The number of
    /// clusters may be below [`MIN_FAT32_CLUSTERS`]; callers check.
    pub(super) fn for_size(size: u64) -> Option<Layout> {
        let total_sectors = u32::try_from(size / SECTOR).ok()?;
        let cluster_bytes = cluster_bytes_for(size);
        let spc = cluster_bytes / 512;
        // fatfs' `determine_sectors_per_fat`: a FAT large enough for every cluster plus the two
        // reserved entries, rounded towards the larger FAT.
        let t1 = u64::from(total_sectors.checked_sub(RESERVED_SECTORS)?) + 2 * u64::from(spc);
        let t2 = u64::from(spc * 512 * 8 / 32 + FATS);
        let sectors_per_fat = t1.div_ceil(t2);
        let data_sectors = u64::from(total_sectors)
            .checked_sub(u64::from(RESERVED_SECTORS) + u64::from(FATS) * sectors_per_fat)?;
        let clusters = u32::try_from(data_sectors / u64::from(spc)).ok()?;
        Some(Layout {
            total_sectors,
            cluster_bytes,
            clusters,
        })
    }

    pub(super) fn is_fat32(&self) -> bool {
        (MIN_FAT32_CLUSTERS..=MAX_FAT32_CLUSTERS).contains(&self.clusters)
    }
}

/// The cluster size for a FAT32 volume of `size` bytes, by the table `fatfs` and Microsoft's
/// formatter use: 512 B up to 260 MiB (which keeps the smallest FAT32 volume near 33 MiB), 4 KiB up
/// to 8 GiB, then doubling per size doubling up to 32 KiB.
fn cluster_bytes_for(size: u64) -> u32 {
    const GIB: u64 = 1 << 30;
    if size <= 260 * MIB {
        512
    } else if size <= 8 * GIB {
        4096
    } else {
        let kib = size.next_power_of_two() / (2 * GIB);
        u32::try_from(kib.saturating_mul(1024)).map_or(32 * 1024, |b| b.min(32 * 1024))
    }
}

/// Clusters a file of `len` bytes occupies.
pub(super) fn file_clusters(len: u64, cluster_bytes: u32) -> u64 {
    len.div_ceil(u64::from(cluster_bytes))
}

/// Directory entries `fatfs` 0.3.6 writes for one name: a long-file-name entry per 13 UTF-16
/// units (it writes them for every name, 8.3 or not) and the short entry.
fn entries_for_name(name: &str) -> u64 {
    let units = name.encode_utf16().count();
    units.div_ceil(LFN_CHARS) as u64 + 1
}

/// Clusters used by everything in `paths` (each `(path, len)`, `/`-separated and already
/// validated), directories included, on a volume with `cluster_bytes` clusters. The count is
/// what `fatfs` allocates while writing, before the fixup: its `.`/`..` long-name entries take
/// directory space even though the fixup removes them again.
pub(super) fn clusters_needed<'p>(
    paths: impl IntoIterator<Item = (&'p str, u64)>,
    cluster_bytes: u32,
) -> u64 {
    // Directory (uppercased path, "" = root) -> entries in it. The root holds the volume
    // label; a subdirectory starts with `.` and `..`, each after the long-name entry fatfs
    // 0.3.6 writes for it.
    let mut dirs: BTreeMap<String, u64> = BTreeMap::from([(String::new(), 1)]);
    let mut data = 0u64;
    for (path, len) in paths {
        let mut parts: Vec<&str> = path.split('/').collect();
        let Some(file) = parts.pop() else { continue };
        let mut parent = String::new();
        for dir in parts {
            let key = if parent.is_empty() {
                dir.to_ascii_uppercase()
            } else {
                format!("{parent}/{}", dir.to_ascii_uppercase())
            };
            if !dirs.contains_key(&key) {
                *dirs.entry(parent).or_default() += entries_for_name(dir);
                dirs.insert(key.clone(), 4);
            }
            parent = key;
        }
        *dirs.entry(parent).or_default() += entries_for_name(file);
        data += file_clusters(len, cluster_bytes);
    }
    let per_cluster = u64::from(cluster_bytes) / DIR_ENTRY;
    let dir_clusters: u64 = dirs.values().map(|n| n.div_ceil(per_cluster).max(1)).sum();
    data + dir_clusters
}

/// The smallest multiple of 1 MiB whose FAT32 layout has room for `needed(cluster_bytes)`
/// clusters plus `slack` bytes, or `None` if no volume FAT32 can describe is large enough.
pub(super) fn smallest_size(needed: impl Fn(u32) -> u64, slack: u64) -> Option<u64> {
    // The smallest FAT32 volume is about 33 MiB; start there and step by 1 MiB. Above that the
    // loop runs about once per MiB of content, which is arithmetic only.
    let mut mib = 32u64;
    loop {
        let size = mib * MIB;
        let layout = Layout::for_size(size)?;
        let want = needed(layout.cluster_bytes) + slack.div_ceil(u64::from(layout.cluster_bytes));
        if layout.is_fat32() && u64::from(layout.clusters) >= want {
            return Some(size);
        }
        mib += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_fat32_volume_is_33_mib() {
        assert!(!Layout::for_size(32 * MIB).unwrap().is_fat32());
        let l = Layout::for_size(33 * MIB).unwrap();
        assert!(l.is_fat32(), "{l:?}");
        assert_eq!(l.cluster_bytes, 512);
        assert_eq!(smallest_size(|_| 0, 0), Some(33 * MIB));
    }

    #[test]
    fn large_volume_switches_to_4k_clusters() {
        assert_eq!(Layout::for_size(260 * MIB).unwrap().cluster_bytes, 512);
        let l = Layout::for_size(261 * MIB).unwrap();
        assert_eq!(l.cluster_bytes, 4096);
        assert!(l.is_fat32(), "{l:?}");
    }

    #[test]
    fn volume_beyond_32_bit_sector_count_has_no_layout() {
        assert_eq!(Layout::for_size((u64::from(u32::MAX) + 1) * SECTOR), None);
    }

    #[test]
    fn directories_are_counted_once_and_case_insensitively() {
        let one = clusters_needed([("EFI/BOOT/A.EFI", 0)], 512);
        let two = clusters_needed([("EFI/BOOT/A.EFI", 0), ("efi/boot/B.EFI", 0)], 512);
        // root, EFI, BOOT: one cluster each, however many small files BOOT holds.
        assert_eq!(one, 3);
        assert_eq!(two, 3);
    }

    #[test]
    fn full_directory_takes_another_cluster() {
        // BOOT holds 4 dot entries; 6 files of 2 entries each make 16 = one 512-byte cluster,
        // a 7th spills into a second.
        let names: Vec<String> = (0..7).map(|i| format!("EFI/BOOT/F{i}.EFI")).collect();
        let six = clusters_needed(names[..6].iter().map(|n| (n.as_str(), 0)), 512);
        let seven = clusters_needed(names.iter().map(|n| (n.as_str(), 0)), 512);
        assert_eq!(seven, six + 1);
    }

    #[test]
    fn file_data_rounds_up_to_whole_clusters() {
        assert_eq!(clusters_needed([("A", 1)], 512), 2);
        assert_eq!(clusters_needed([("A", 513)], 512), 3);
        assert_eq!(clusters_needed([("A", 0)], 512), 1);
    }
}
