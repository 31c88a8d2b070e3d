//! The data partition's filesystem: an empty ext4 written by `mke2fs` into a (sparse) file,
//! bit-identical for the same inputs, and ready to be grown online by the guest's kernel.
//!
//! What mke2fs would otherwise take from the build machine or the clock is pinned:
//! - Its configuration is ours ([`MKE2FS_CONF`], through `MKE2FS_CONFIG`), not the host's
//!   `/etc/mke2fs.conf`: the features, 4 KiB blocks, 256-byte inodes and one inode per 16 KiB
//!   at every size. (Debian's file would give a filesystem under 512 MiB 1 KiB blocks.)
//! - The UUID (`-U`) and the directory hash seed (`-E hash_seed=`) are the caller's.
//! - Every timestamp is the build's epoch: `E2FSPROGS_FAKE_TIME` for e2fsprogs 1.47.0,
//!   `SOURCE_DATE_EPOCH` for 1.47.1 and later.
//! - The root directory is owned by root whoever runs the build (`root_owner=0:0`), and the
//!   inode tables are written now (`lazy_itable_init=0`) rather than by the guest kernel's
//!   lazyinit thread on first mount.
//!
//! One thing stays the build machine's: mke2fs records whether its `char` is signed
//! (`signed_directory_hash`), so builds on x86_64 and on aarch64 hosts differ in that flag.
//! Both are read correctly by any kernel.
//!
//! Growth: the image is small and init grows it to the end of the disk on first boot, with the
//! filesystem mounted (`EXT4_IOC_RESIZE_FS`). That uses the reserved GDT blocks of
//! `resize_inode`, which we size for growth to [`GROW_LIMIT`] (mke2fs's own default covers
//! only 1024 times the initial size: 64 GiB from 64 MiB). Past that the kernel converts the
//! filesystem to `meta_bg` as it grows, which costs nothing up front.

// Until the disk image (image.rs) uses it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use hostimg::Guid;

use crate::tools;

/// The smallest data filesystem we make: 16 MiB leaves about 11 MiB free after the 4 MiB
/// journal and the metadata. The partition is grown to the disk on first boot anyway.
pub const MIN_SIZE: u64 = 16 << 20;
/// Reserved GDT blocks cover online growth up to this size (1 TiB: 128 descriptor blocks).
pub const GROW_LIMIT: u64 = 1 << 40;
const BLOCK: u64 = 4096;
/// The filesystem label (also the partition's GPT name).
pub const LABEL: &str = "data";

/// mke2fs's whole configuration. The size types (`floppy`, `small`, ...) mke2fs picks by size
/// are defined only so it does not warn; none of them changes anything.
pub const MKE2FS_CONF: &str = "\
[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384
\treserved_ratio = 5.0

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
\tfloppy = {
\t\tinode_ratio = 16384
\t}
\tsmall = {
\t\tinode_ratio = 16384
\t}
\tbig = {
\t\tinode_ratio = 16384
\t}
\thuge = {
\t\tinode_ratio = 16384
\t}
";

/// Environment variables mke2fs reads that would change what it writes.
const MKE2FS_ENV: [&str; 5] = [
    "MKE2FS_DEVICE_SECTSIZE",
    "MKE2FS_DEVICE_PHYS_SECTSIZE",
    "MKE2FS_FIRST_META_BG",
    "MKE2FS_SYNC",
    "E2FSPROGS_UNDO_DIR",
];

#[derive(Debug, thiserror::Error)]
pub enum DataFsError {
    #[error(
        "data filesystem size {size} bytes: it must be a multiple of {BLOCK} and at least \
         {MIN_SIZE} (16 MiB)"
    )]
    Size { size: u64 },
    #[error(
        "data filesystem timestamp {0} is negative (SOURCE_DATE_EPOCH must be seconds since 1970)"
    )]
    Epoch(i64),
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Missing(#[from] tools::MissingAll),
    #[error("running {tool} on {}", path.display())]
    Spawn {
        tool: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed ({status}) on {}: {stderr}", path.display())]
    Tool {
        tool: &'static str,
        path: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Writes an empty ext4 filesystem of `size` bytes to `path` (created or truncated; sparse),
/// labelled [`LABEL`], with filesystem UUID `uuid`, directory hash seed `hash_seed`, and every
/// timestamp `epoch`.
pub fn make_ext4(
    path: &Path,
    size: u64,
    uuid: Guid,
    hash_seed: Guid,
    epoch: i64,
) -> Result<(), DataFsError> {
    if size < MIN_SIZE || !size.is_multiple_of(BLOCK) {
        return Err(DataFsError::Size { size });
    }
    if epoch < 0 {
        return Err(DataFsError::Epoch(epoch));
    }
    tools::require(&[tools::MKE2FS], &[])?;
    let io = |op, p: &Path| {
        let path = p.to_path_buf();
        move |source| DataFsError::Io { op, path, source }
    };

    let mut conf =
        tempfile::NamedTempFile::new().map_err(io("creating", Path::new("mke2fs.conf")))?;
    conf.write_all(MKE2FS_CONF.as_bytes())
        .map_err(io("writing", conf.path()))?;
    File::create(path)
        .and_then(|f| f.set_len(size))
        .map_err(io("creating the data filesystem image", path))?;

    let mut extended = format!("hash_seed={hash_seed},root_owner=0:0,lazy_itable_init=0,nodiscard");
    if size < GROW_LIMIT {
        extended.push_str(&format!(",resize={}", GROW_LIMIT / BLOCK));
    }
    let mut cmd = Command::new(tools::MKE2FS.program);
    for var in MKE2FS_ENV {
        cmd.env_remove(var);
    }
    let out = cmd
        .env("MKE2FS_CONFIG", conf.path())
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .args(["-t", "ext4", "-F", "-q", "-L", LABEL])
        .arg(format!("-U{uuid}"))
        .arg(format!("-E{extended}"))
        .arg(path)
        .output()
        .map_err(|source| DataFsError::Spawn {
            tool: tools::MKE2FS.program,
            path: path.to_path_buf(),
            source,
        })?;
    // mke2fs warns on stderr and still succeeds; a warning means our configuration no longer
    // says everything (a newer mke2fs wanting something we do not pin), so treat it as failure.
    if !out.status.success() || !out.stderr.is_empty() {
        return Err(DataFsError::Tool {
            tool: tools::MKE2FS.program,
            path: path.to_path_buf(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const UUID: &str = "d47a0000-1111-4222-8333-444455556666";
    const SEED: &str = "5eed0000-1111-4222-8333-444455556666";

    fn make(path: &Path, size: u64, epoch: i64) {
        make_ext4(
            path,
            size,
            UUID.parse().unwrap(),
            SEED.parse().unwrap(),
            epoch,
        )
        .unwrap();
    }

    fn run(tool: tools::Tool, args: &[&str], path: &Path) -> std::process::Output {
        tools::require(&[tool], &[]).unwrap();
        Command::new(tool.program)
            .env("TZ", "UTC")
            .args(args)
            .arg(path)
            .output()
            .unwrap()
    }

    /// `dumpe2fs -h`'s value for `key`.
    fn field(header: &str, key: &str) -> String {
        header
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("no {key} in {header}"))
            .trim()
            .to_string()
    }

    fn header(path: &Path) -> String {
        let out = run(tools::DUMPE2FS, &["-h"], path);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn e2fsck_finds_the_filesystem_clean() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("data.ext4");
        make(&img, 64 << 20, 0);
        let out = run(tools::E2FSCK, &["-fn"], &img);
        assert!(out.status.success(), "{out:?}");
    }

    #[test]
    fn uuid_seed_label_time_and_features_are_as_asked() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("data.ext4");
        make(&img, 64 << 20, 1_700_000_000);
        let h = header(&img);
        assert_eq!(field(&h, "Filesystem UUID"), UUID);
        assert_eq!(field(&h, "Directory Hash Seed"), SEED);
        assert_eq!(field(&h, "Filesystem volume name"), LABEL);
        assert_eq!(field(&h, "Filesystem created"), "Tue Nov 14 22:13:20 2023");
        assert_eq!(field(&h, "Last write time"), "Tue Nov 14 22:13:20 2023");
        assert_eq!(field(&h, "Block size"), "4096");
        assert_eq!(field(&h, "Block count"), (16384).to_string());
        let features = field(&h, "Filesystem features");
        for f in [
            "has_journal",
            "resize_inode",
            "64bit",
            "metadata_csum",
            "extent",
        ] {
            assert!(
                features.split(' ').any(|x| x == f),
                "{f} missing: {features}"
            );
        }
    }

    /// The descriptor blocks reserved for growth, plus the ones in use, describe at least
    /// GROW_LIMIT bytes of block groups: online growth to 1 TiB needs no conversion.
    #[test]
    fn reserved_gdt_blocks_cover_growth_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("data.ext4");
        make(&img, 64 << 20, 0);
        let h = header(&img);
        let num = |k| field(&h, k).parse::<u64>().unwrap();
        let reserved = num("Reserved GDT blocks");
        let per_group = num("Blocks per group");
        let desc_size = num("Group descriptor size");
        let groups = num("Block count").div_ceil(per_group);
        let in_use = groups.div_ceil(BLOCK / desc_size);
        let covered = (reserved + in_use) * (BLOCK / desc_size) * per_group * BLOCK;
        assert!(
            covered >= GROW_LIMIT,
            "{reserved} reserved GDT blocks cover {covered} bytes"
        );
        // ...and not absurdly more (a sign the resize= option was misread).
        assert!(covered < 2 * GROW_LIMIT, "{covered}");
    }

    /// Different directories, a second apart: the same bytes; and the file is sparse.
    #[test]
    fn two_builds_are_identical_and_sparse() {
        let a_dir = tempfile::tempdir().unwrap();
        let b_dir = tempfile::tempdir().unwrap();
        let a = a_dir.path().join("a.ext4");
        let b = b_dir.path().join("b.ext4");
        make(&a, 64 << 20, 42);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        make(&b, 64 << 20, 42);
        let (a_bytes, b_bytes) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(a_bytes.len(), 64 << 20);
        assert!(a_bytes == b_bytes, "two builds differ");
        let allocated = std::fs::metadata(&a).unwrap().blocks() * 512;
        assert!(
            allocated < 16 << 20,
            "{allocated} bytes allocated for 64 MiB"
        );
        make(&b, 64 << 20, 43);
        assert!(
            std::fs::read(&b).unwrap() != a_bytes,
            "the epoch is an input"
        );
    }

    #[test]
    fn the_smallest_size_works_and_smaller_or_ragged_sizes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("data.ext4");
        make(&img, MIN_SIZE, 0);
        assert!(run(tools::E2FSCK, &["-fn"], &img).status.success());
        let g: Guid = UUID.parse().unwrap();
        for size in [MIN_SIZE - BLOCK, MIN_SIZE + 512, 0] {
            let e = make_ext4(&img, size, g, g, 0).unwrap_err();
            assert!(matches!(e, DataFsError::Size { .. }), "{size}: {e}");
        }
        assert!(matches!(
            make_ext4(&img, MIN_SIZE, g, g, -5),
            Err(DataFsError::Epoch(-5))
        ));
    }

    #[test]
    fn an_unwritable_path_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("no/such/dir/data.ext4");
        let g: Guid = UUID.parse().unwrap();
        let e = make_ext4(&img, MIN_SIZE, g, g, 0).unwrap_err();
        assert!(e.to_string().contains("no/such/dir/data.ext4"), "{e}");
    }
}
