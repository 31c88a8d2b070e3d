//! The ESP writer against the outside tools that judge FAT (`fsck.vfat`, `blkid`, `file`) and
//! against `fatfs` reading the image back.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

const MIB: u64 = 1 << 20;
/// 2024-02-29T13:37:42Z.
const EPOCH: i64 = 1_709_213_862;
const VOLUME_ID: u32 = 0x1234_ABCD;

/// Bytes that do not compress or repeat, so a misplaced cluster shows.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

struct Inputs {
    uki: Vec<u8>,
    other: Vec<u8>,
    small: Vec<u8>,
}

impl Inputs {
    fn new() -> Self {
        Inputs {
            uki: noise(6 * MIB as usize, 1),
            other: noise(300_000, 2),
            small: b"timeout 0\n".to_vec(),
        }
    }

    /// A UKI where firmware looks for it, a long name, a second directory tree and an empty file.
    fn files(&self) -> Vec<EspFile<'_>> {
        vec![
            EspFile {
                path: "EFI/BOOT/BOOTX64.EFI",
                bytes: &self.uki,
            },
            EspFile {
                path: "EFI/BOOT/BOOTAA64.EFI",
                bytes: &self.other,
            },
            EspFile {
                path: "loader/entries/a-long-file-name.conf",
                bytes: &self.small,
            },
            EspFile {
                path: "EMPTY",
                bytes: &[],
            },
        ]
    }
}

/// An installed program, looked up on PATH and in the sbin directories (fsck and blkid live
/// there and a non-root PATH may lack them). Panics, naming the package, if it is missing.
fn tool(program: &str, package: &str) -> PathBuf {
    let on_path = crate::tools::find(program);
    on_path
        .or_else(|| {
            ["/usr/sbin", "/sbin"]
                .iter()
                .map(|d| Path::new(d).join(program))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("`{program}` is missing: install the Debian package {package}"))
}

fn image_file(img: &[u8]) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), img).unwrap();
    f
}

/// `fsck.vfat -n` on the image: (clean, its output).
fn fsck(img: &[u8]) -> (bool, String) {
    let f = image_file(img);
    let out = Command::new(tool("fsck.vfat", "dosfstools"))
        .arg("-n")
        .arg(f.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // fsck.fat prints its version and the summary line; anything else is a finding, even when
    // it exits 0 (it does for some notices).
    let findings: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("fsck.fat ") && !l.contains(" files, "))
        .collect();
    (out.status.success() && findings.is_empty(), text)
}

fn write(files: &[EspFile]) -> Vec<u8> {
    write_esp(min_size(files), VOLUME_ID, EPOCH, files).unwrap()
}

#[test]
fn written_image_passes_fsck_vfat() {
    let inputs = Inputs::new();
    let img = write(&inputs.files());
    let (clean, out) = fsck(&img);
    assert!(clean, "fsck.vfat -n found problems:\n{out}");
    // fsck counts directories (4), files (4) and the volume label.
    assert!(out.contains(": 9 files,"), "{out}");
}

#[test]
fn fatfs_0_3_6_alone_fails_fsck_so_the_fixup_is_needed() {
    // If this starts passing, fatfs has been upgraded to a version that writes valid
    // directories, and fixup.rs can go.
    let inputs = Inputs::new();
    let files = inputs.files();
    let raw = write_with(min_size(&files), VOLUME_ID, EPOCH, &files, false).unwrap();
    let (clean, out) = fsck(&raw);
    assert!(!clean, "fsck.vfat accepted fatfs' own output:\n{out}");
    // The two defects of rust-fatfs#117 (long names on the dot entries) and #99 (`..` of a
    // directory under the FAT32 root pointing at the root's cluster).
    assert!(out.contains("Bad short file name (.)"), "{out}");
    assert!(
        out.contains("Start does point to containing directory's parent"),
        "{out}"
    );
}

#[test]
fn files_read_back_equal_the_inputs() {
    let inputs = Inputs::new();
    let files = inputs.files();
    let img = write(&files);
    for f in &files {
        let back = read_file(&img, f.path).unwrap();
        assert_eq!(back.as_deref(), Some(f.bytes), "{}", f.path);
    }
    // FAT ignores case, as firmware looking for EFI/BOOT/BOOTX64.EFI relies on.
    assert_eq!(
        read_file(&img, "efi/boot/bootx64.efi").unwrap().as_deref(),
        Some(&inputs.uki[..])
    );
    assert_eq!(read_file(&img, "EFI/BOOT/NONE.EFI").unwrap(), None);
    assert_eq!(read_file(&img, "NOWHERE/X").unwrap(), None);
}

#[test]
fn image_holds_only_the_given_files_and_their_directories() {
    let inputs = Inputs::new();
    let img = write(&inputs.files());
    let mut names = Vec::new();
    walk(&img, &mut |path, _| {
        if !path.ends_with("/.") && !path.ends_with("/..") {
            names.push(path.to_string());
        }
    });
    names.sort();
    assert_eq!(
        names,
        [
            "EFI",
            "EFI/BOOT",
            "EFI/BOOT/BOOTAA64.EFI",
            "EFI/BOOT/BOOTX64.EFI",
            "EMPTY",
            "loader",
            "loader/entries",
            "loader/entries/a-long-file-name.conf",
        ]
    );
}

/// Calls `visit` with the path and entry of everything under the root, `.` and `..` included.
fn walk(img: &[u8], visit: &mut dyn FnMut(&str, &fatfs::DirEntry<ReadOnly>)) {
    fn go(
        dir: fatfs::Dir<ReadOnly>,
        prefix: &str,
        visit: &mut dyn FnMut(&str, &fatfs::DirEntry<ReadOnly>),
    ) {
        for e in dir.iter() {
            let e = e.unwrap();
            let name = e.file_name();
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            visit(&path, &e);
            if e.is_dir() && name != "." && name != ".." {
                go(e.to_dir(), &path, visit);
            }
        }
    }
    let fs = FileSystem::new(ReadOnly(Cursor::new(img)), FsOptions::new()).unwrap();
    go(fs.root_dir(), "", visit);
}

#[test]
fn same_inputs_give_identical_bytes_whatever_the_order() {
    let inputs = Inputs::new();
    let files = inputs.files();
    let a = write(&files);
    let b = write(&files);
    assert!(a == b, "two writes of the same files differ");
    let mut reversed = files.clone();
    reversed.reverse();
    let c = write(&reversed);
    assert!(a == c, "the order of the files changed the image");
    let other_epoch = write_esp(min_size(&files), VOLUME_ID, EPOCH + 2, &files).unwrap();
    assert!(a != other_epoch, "the epoch is not in the image");
}

#[test]
fn every_timestamp_is_the_epoch() {
    let inputs = Inputs::new();
    let img = write(&inputs.files());
    let want = clock::dos_date_time(EPOCH);
    let mut seen = 0;
    walk(&img, &mut |path, e| {
        seen += 1;
        assert_eq!(e.created(), want, "created {path}");
        assert_eq!(e.modified(), want, "modified {path}");
        assert_eq!(e.accessed(), want.date, "accessed {path}");
    });
    // 8 names, and `.`/`..` in each of the 4 directories.
    assert_eq!(seen, 16);
    // The volume-label entry, which fatfs does not list: the first entry of the root.
    let (date, time) = clock::encode(want);
    let root = root_dir_offset(&img);
    let label = &img[root..root + 32];
    assert_eq!(&label[..11], b"ESP        ");
    assert_eq!(label[11], 0x08, "volume-label attribute");
    assert_eq!(u16::from_le_bytes([label[22], label[23]]), time);
    assert_eq!(u16::from_le_bytes([label[24], label[25]]), date);
}

/// Byte offset of the FAT32 root directory's first cluster.
fn root_dir_offset(img: &[u8]) -> usize {
    let u16_at = |o: usize| usize::from(u16::from_le_bytes([img[o], img[o + 1]]));
    let u32_at =
        |o: usize| u32::from_le_bytes([img[o], img[o + 1], img[o + 2], img[o + 3]]) as usize;
    let spc = usize::from(img[0x0D]);
    let data = u16_at(0x0E) + usize::from(img[0x10]) * u32_at(0x24);
    (data + (u32_at(0x2C) - 2) * spc) * 512
}

#[test]
fn blkid_and_file_see_fat32_with_our_label_and_volume_id() {
    let inputs = Inputs::new();
    let img = write(&inputs.files());
    let f = image_file(&img);
    let out = Command::new(tool("blkid", "util-linux"))
        .args(["-p", "-o", "export"])
        .arg(f.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for want in ["TYPE=vfat", "VERSION=FAT32", "LABEL=ESP", "UUID=1234-ABCD"] {
        assert!(text.lines().any(|l| l == want), "no {want} in:\n{text}");
    }
    let out = Command::new(tool("file", "file"))
        .arg("-b")
        .arg(f.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAT (32 bit)"), "{text}");
    assert!(text.contains("serial number 0x1234abcd"), "{text}");
}

#[test]
fn min_size_fits_a_6_mib_file_and_is_the_smallest_fat32_volume() {
    let uki = noise(6 * MIB as usize, 3);
    let files = [EspFile {
        path: "EFI/BOOT/BOOTX64.EFI",
        bytes: &uki,
    }];
    let size = min_size(&files);
    assert_eq!(size, 33 * MIB);
    let img = write_esp(size, VOLUME_ID, EPOCH, &files).unwrap();
    assert_eq!(img.len() as u64, size);
    let (clean, out) = fsck(&img);
    assert!(clean, "{out}");
    let err = write_esp(size - MIB, VOLUME_ID, EPOCH, &files).unwrap_err();
    assert!(matches!(err, EspError::TooSmallForFat32 { .. }), "{err}");
    assert!(err.to_string().contains(&format!("{}", 33 * MIB)), "{err}");
}

/// Free bytes on an ESP image, as fatfs counts them.
fn free_bytes(img: &[u8]) -> u64 {
    let fs = FileSystem::new(ReadOnly(Cursor::new(img)), FsOptions::new()).unwrap();
    let stats = fs.stats().unwrap();
    u64::from(stats.free_clusters()) * u64::from(stats.cluster_size())
}

#[test]
fn min_size_for_large_files_leaves_the_slack_and_one_mib_less_does_not() {
    let big = noise(40 * MIB as usize, 4);
    let files = [EspFile {
        path: "EFI/BOOT/BOOTX64.EFI",
        bytes: &big,
    }];
    let size = min_size(&files);
    assert!(size > 40 * MIB && size.is_multiple_of(MIB), "{size}");
    let img = write_esp(size, VOLUME_ID, EPOCH, &files).unwrap();
    assert!(free_bytes(&img) >= SLACK, "{} free", free_bytes(&img));
    match write_esp(size - MIB, VOLUME_ID, EPOCH, &files) {
        Ok(smaller) => assert!(free_bytes(&smaller) < SLACK),
        Err(e) => assert!(matches!(e, EspError::NoSpace { .. }), "{e}"),
    }
}

#[test]
fn files_that_do_not_fit_are_an_error_naming_the_file() {
    let small = noise(1000, 5);
    let big = noise(40 * MIB as usize, 6);
    let files = [
        EspFile {
            path: "A.TXT",
            bytes: &small,
        },
        EspFile {
            path: "EFI/BOOT/BOOTX64.EFI",
            bytes: &big,
        },
    ];
    let err = write_esp(33 * MIB, VOLUME_ID, EPOCH, &files).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, EspError::NoSpace { .. }), "{msg}");
    assert!(msg.contains("EFI/BOOT/BOOTX64.EFI"), "{msg}");
    assert!(msg.contains(&min_size(&files).to_string()), "{msg}");
}

#[test]
fn bad_paths_are_refused_naming_the_path() {
    for path in [
        "",
        "/EFI/X",
        "EFI//X",
        "EFI/",
        "EFI/../X",
        "EFI/./X",
        "A*B",
        "A:B",
        "TRAILING.",
        "NON-ASCII-\u{e9}",
    ] {
        let files = [EspFile { path, bytes: b"x" }];
        let err = write_esp(33 * MIB, VOLUME_ID, EPOCH, &files).unwrap_err();
        assert!(matches!(err, EspError::BadPath { .. }), "{path:?}: {err}");
        assert!(err.to_string().contains(&format!("{path:?}")), "{err}");
    }
}

#[test]
fn paths_equal_but_for_case_are_refused() {
    let files = [
        EspFile {
            path: "EFI/BOOT/BOOTX64.EFI",
            bytes: b"a",
        },
        EspFile {
            path: "efi/boot/bootx64.efi",
            bytes: b"b",
        },
    ];
    let err = write_esp(33 * MIB, VOLUME_ID, EPOCH, &files).unwrap_err();
    assert!(matches!(err, EspError::DuplicatePath { .. }), "{err}");
}

#[test]
fn a_file_that_is_also_a_directory_is_refused() {
    let files = [
        EspFile {
            path: "EFI/BOOT",
            bytes: b"a",
        },
        EspFile {
            path: "EFI/BOOT/BOOTX64.EFI",
            bytes: b"b",
        },
    ];
    let err = write_esp(33 * MIB, VOLUME_ID, EPOCH, &files).unwrap_err();
    assert!(err.to_string().contains("\"EFI/BOOT\""), "{err}");
}

#[test]
fn size_beyond_the_limit_is_refused_before_allocating() {
    let err = write_esp(1 << 40, VOLUME_ID, EPOCH, &[]).unwrap_err();
    assert!(matches!(err, EspError::TooLarge { .. }), "{err}");
}

#[test]
fn size_not_a_whole_number_of_sectors_is_refused() {
    let err = write_esp(33 * MIB + 1, VOLUME_ID, EPOCH, &[]).unwrap_err();
    assert!(matches!(err, EspError::UnalignedSize { .. }), "{err}");
}

#[test]
fn epoch_before_1980_is_clamped_not_an_error() {
    let img = write_esp(
        33 * MIB,
        VOLUME_ID,
        0,
        &[EspFile {
            path: "A",
            bytes: b"x",
        }],
    )
    .unwrap();
    let mut seen = 0;
    walk(&img, &mut |_, e| {
        seen += 1;
        assert_eq!(e.modified().date.year, 1980);
        assert_eq!(e.modified().date.month, 1);
    });
    assert_eq!(seen, 1);
    assert!(fsck(&img).0, "{}", fsck(&img).1);
}

#[test]
fn layout_arithmetic_matches_what_fatfs_formats() {
    for mib in [33, 34, 64, 100, 260, 261, 300] {
        let size = mib * MIB;
        let layout = Layout::for_size(size).unwrap();
        let mut img = vec![0u8; size as usize];
        format(&mut img, &layout, 1).unwrap();
        let fs = FileSystem::new(Cursor::new(&mut img[..]), FsOptions::new()).unwrap();
        let stats = fs.stats().unwrap();
        assert_eq!(stats.total_clusters(), layout.clusters, "{mib} MiB");
        assert_eq!(stats.cluster_size(), layout.cluster_bytes, "{mib} MiB");
        assert_eq!(fs.fat_type(), FatType::Fat32, "{mib} MiB");
    }
}

#[test]
fn reading_something_that_is_not_fat_is_an_error() {
    let err = read_file(&[0u8; 4096], "EFI/BOOT/BOOTX64.EFI").unwrap_err();
    assert!(matches!(err, EspError::Open(_)), "{err}");
}

#[test]
fn directory_spanning_clusters_passes_fsck_and_reads_back() {
    // 40 names of 41 characters take 5 entries each, so the directory spans 13 clusters of 512
    // bytes and closing the gap the dot entries' long names leave moves entries across
    // cluster ends.
    let names: Vec<String> = (0..40)
        .map(|i| format!("EFI/Linux/a-rather-long-unified-kernel-image-{i:02}.efi"))
        .collect();
    let bodies: Vec<Vec<u8>> = (0..40)
        .map(|i| noise(700 + i * 37, i as u64 + 10))
        .collect();
    let files: Vec<EspFile> = names
        .iter()
        .zip(&bodies)
        .map(|(path, bytes)| EspFile { path, bytes })
        .collect();
    let img = write(&files);
    let (clean, out) = fsck(&img);
    assert!(clean, "{out}");
    for f in &files {
        assert_eq!(
            read_file(&img, f.path).unwrap().as_deref(),
            Some(f.bytes),
            "{}",
            f.path
        );
    }
}

#[test]
fn space_check_counts_exactly_the_clusters_fatfs_allocates() {
    let inputs = Inputs::new();
    let files = inputs.files();
    let size = min_size(&files);
    let img = write(&files);
    let layout = Layout::for_size(size).unwrap();
    let lens = files.iter().map(|f| (f.path, f.bytes.len() as u64));
    let needed = geometry::clusters_needed(lens, layout.cluster_bytes);
    let free = free_bytes(&img) / u64::from(layout.cluster_bytes);
    assert_eq!(u64::from(layout.clusters) - free, needed);
}

#[test]
fn fsinfo_holds_the_real_free_cluster_count() {
    let inputs = Inputs::new();
    let img = write(&inputs.files());
    let u32_at = |o: usize| u32::from_le_bytes([img[o], img[o + 1], img[o + 2], img[o + 3]]);
    let layout = Layout::for_size(img.len() as u64).unwrap();
    let fat = usize::from(u16::from_le_bytes([img[0x0E], img[0x0F]])) * 512;
    let free_in_fat = (2..layout.clusters as usize + 2)
        .filter(|c| u32_at(fat + c * 4) & 0x0FFF_FFFF == 0)
        .count();
    // FSInfo is sector 1: lead signature, then the free count at byte 488.
    assert_eq!(u32_at(512), 0x4161_5252);
    assert_eq!(u32_at(512 + 488) as usize, free_in_fat);
}
