//! Payload slot A: a read-only erofs filesystem holding the embedded images (under
//! [`hostimg::PAYLOAD_IMAGES_DIR`]) and any extra files, followed by its dm-verity superblock
//! and hash tree, all in one partition (see `hostimg::boot_params`).
//!
//! The filesystem is written by `mkfs.erofs` 1.5 from a staging tree in a scratch directory.
//! What it would otherwise take from the build machine is pinned: every timestamp is the
//! build's epoch (`-T`), the UUID is the caller's (`-U`), every file is owned by root
//! (`--all-root`), modes are set here (0644 files, 0755 directories, whatever the umask), and
//! extended attributes are not recorded (`-x -1`), so an SELinux label or a `user.*` xattr on
//! the scratch directory cannot leak into the image. mkfs.erofs sorts directory entries itself,
//! so the order files are staged in (and the scratch filesystem's readdir order) does not matter.
//!
//! **Uncompressed.** The payload is almost all `.aci` files, which are already gzip, zstd or
//! xz streams: lz4 (the only compressor Debian's erofs-utils 1.5 offers) saves next to nothing
//! on them, while costing a decompression pass on every read in the guest and a layer of
//! physical clusters between a file's bytes and the dm-verity blocks that hold them. Stored
//! uncompressed, a file's data is a plain run of 4 KiB blocks; the output also no longer
//! depends on the lz4 library's version, one fewer thing for bit-identical rebuilds to pin.

// Until the disk image (image.rs) uses it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use hostimg::{Guid, VERITY_BLOCK, VerityParams};

use crate::tools;
use crate::verity::{self, VerityError};

/// One file in the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadFile {
    /// Relative path inside the payload, `/`-separated (`images/hello.aci`).
    pub path: String,
    pub source: Source,
}

/// Where a payload file's bytes come from. Images can be large, so they are copied from their
/// file rather than held in memory; small generated files come as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Bytes(Vec<u8>),
    File(PathBuf),
}

/// The partition's bytes and the parameters that pin them (for the UKI's command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// The erofs image padded to 4 KiB, then the verity superblock, then the hash tree.
    pub partition: Vec<u8>,
    pub verity: VerityParams,
}

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("payload path {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("payload path {0:?} is given twice")]
    Duplicate(String),
    #[error("payload path {file:?} needs {dir:?} to be a directory, but it is a file too")]
    FileIsDir { file: String, dir: String },
    #[error("payload timestamp {0} is negative (SOURCE_DATE_EPOCH must be seconds since 1970)")]
    Epoch(i64),
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("copying {} into the payload as {dest:?}", src.display())]
    Copy {
        src: PathBuf,
        dest: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Missing(#[from] tools::MissingAll),
    #[error("running {tool} to write {}", path.display())]
    Spawn {
        tool: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed ({status}) writing {}: {stderr}", path.display())]
    Tool {
        tool: &'static str,
        path: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("hashing the payload for dm-verity")]
    Verity(#[from] VerityError),
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PayloadError {
    let path = path.to_path_buf();
    move |source| PayloadError::Io { op, path, source }
}

/// The longest file name erofs stores.
const NAME_MAX: usize = 255;

/// Builds the payload partition from `files` (none is fine: the image directory is always
/// there, empty), with filesystem and verity UUID `uuid`, verity `salt`, and every timestamp
/// `epoch`. Staging happens in a temporary directory under `scratch`, removed afterwards.
pub fn build(
    files: &[PayloadFile],
    uuid: Guid,
    salt: &[u8],
    epoch: i64,
    scratch: &Path,
) -> Result<Payload, PayloadError> {
    if epoch < 0 {
        return Err(PayloadError::Epoch(epoch));
    }
    if salt.len() > verity::MAX_SALT {
        return Err(VerityError::SaltTooLong(salt.len()).into());
    }
    check_paths(files)?;
    tools::require(&[tools::MKFS_EROFS], &[])?;

    let work = tempfile::Builder::new()
        .prefix("payload.")
        .tempdir_in(scratch)
        .map_err(io("creating a staging directory in", scratch))?;
    let root = work.path().join("root");
    stage(files, &root)?;

    let image = work.path().join("payload.erofs");
    let out = Command::new(tools::MKFS_EROFS.program)
        .arg("--quiet")
        .arg("-x-1")
        .arg(format!("-T{epoch}"))
        .arg(format!("-U{uuid}"))
        .arg("--all-root")
        .arg(&image)
        .arg(&root)
        .output()
        .map_err(|source| PayloadError::Spawn {
            tool: tools::MKFS_EROFS.program,
            path: image.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(PayloadError::Tool {
            tool: tools::MKFS_EROFS.program,
            path: image,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let mut partition = fs::read(&image).map_err(io("reading the erofs image", &image))?;
    let block = VERITY_BLOCK as usize;
    partition.resize(partition.len().div_ceil(block) * block, 0);
    let tree = verity::build(&partition, salt, uuid)?;
    partition.extend_from_slice(&tree.hash_area);
    Ok(Payload {
        partition,
        verity: tree.params,
    })
}

/// Refuses paths that are not clean and relative, repeated paths, and a file that another
/// path needs as its directory.
fn check_paths(files: &[PayloadFile]) -> Result<(), PayloadError> {
    let mut seen = std::collections::BTreeSet::new();
    for f in files {
        let bad = |reason| PayloadError::BadPath {
            path: f.path.clone(),
            reason,
        };
        if f.path.is_empty() || f.path.starts_with('/') {
            return Err(bad("it must be a relative path"));
        }
        for c in f.path.split('/') {
            if c.is_empty() || c == "." || c == ".." {
                return Err(bad("it has an empty, `.` or `..` component"));
            }
            if c.len() > NAME_MAX {
                return Err(bad("a component is longer than 255 bytes"));
            }
            if c.contains('\0') {
                return Err(bad("it contains a NUL byte"));
            }
        }
        if f.path == hostimg::PAYLOAD_IMAGES_DIR {
            return Err(bad("that is the image directory, not a file"));
        }
        if !seen.insert(f.path.as_str()) {
            return Err(PayloadError::Duplicate(f.path.clone()));
        }
    }
    for f in files {
        let mut prefix = f.path.as_str();
        while let Some((dir, _)) = prefix.rsplit_once('/') {
            if seen.contains(dir) {
                return Err(PayloadError::FileIsDir {
                    file: f.path.clone(),
                    dir: dir.to_string(),
                });
            }
            prefix = dir;
        }
    }
    Ok(())
}

/// Writes the staging tree: the image directory, then every file with its parents.
fn stage(files: &[PayloadFile], root: &Path) -> Result<(), PayloadError> {
    let mkdir = |dir: &Path| -> Result<(), PayloadError> {
        fs::create_dir_all(dir).map_err(io("creating the staging directory", dir))?;
        // Every directory on the way, so the umask never shows.
        let mut d = dir;
        while d.starts_with(root) {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755))
                .map_err(io("setting the mode of", d))?;
            match d.parent() {
                Some(p) => d = p,
                None => break,
            }
        }
        Ok(())
    };
    mkdir(&root.join(hostimg::PAYLOAD_IMAGES_DIR))?;
    for f in files {
        let dest = root.join(&f.path);
        if let Some(parent) = dest.parent() {
            mkdir(parent)?;
        }
        match &f.source {
            Source::Bytes(b) => {
                fs::write(&dest, b).map_err(io("writing the staged file", &dest))?
            }
            Source::File(src) => {
                fs::copy(src, &dest).map_err(|source| PayloadError::Copy {
                    src: src.clone(),
                    dest: f.path.clone(),
                    source,
                })?;
            }
        }
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o644))
            .map_err(io("setting the mode of", &dest))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Output;

    const UUID: &str = "0c0ffee0-1234-4567-89ab-cdef01234567";

    fn uuid() -> Guid {
        UUID.parse().unwrap()
    }

    fn file(path: &str, bytes: &[u8]) -> PayloadFile {
        PayloadFile {
            path: path.to_string(),
            source: Source::Bytes(bytes.to_vec()),
        }
    }

    /// A mix: a multi-block image, an empty file, a nested extra file.
    fn sample(scratch: &Path) -> Vec<PayloadFile> {
        let big: Vec<u8> = (0..40_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let src = scratch.join("hello.aci");
        fs::write(&src, &big).unwrap();
        vec![
            PayloadFile {
                path: format!("{}/hello.aci", hostimg::PAYLOAD_IMAGES_DIR),
                source: Source::File(src),
            },
            file("images/hello.aci.minisig", b"untrusted comment: x\n"),
            file("images/empty", b""),
            file("etc/extra/note.txt", b"a note\n"),
        ]
    }

    fn run(tool: tools::Tool, args: &[&str], path: &Path) -> Output {
        tools::require(&[tool], &[]).unwrap();
        Command::new(tool.program)
            .env("TZ", "UTC")
            .args(args)
            .arg(path)
            .output()
            .unwrap()
    }

    /// Splits a built partition into its erofs part, written to `dir/erofs`.
    fn erofs_part(p: &Payload, dir: &Path) -> PathBuf {
        let n = usize::try_from(p.verity.data_blocks * VERITY_BLOCK).unwrap();
        let path = dir.join("erofs");
        fs::write(&path, &p.partition[..n]).unwrap();
        path
    }

    #[test]
    fn fsck_erofs_extracts_the_files_with_their_bytes_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let files = sample(dir.path());
        let p = build(&files, uuid(), b"salt", 1_700_000_000, dir.path()).unwrap();
        let erofs = erofs_part(&p, dir.path());
        let out_dir = dir.path().join("extracted");
        let out = run(
            tools::FSCK_EROFS,
            &[
                &format!("--extract={}", out_dir.display()),
                "--preserve-perms",
            ],
            &erofs,
        );
        assert!(out.status.success(), "{out:?}");
        for f in &files {
            let want = match &f.source {
                Source::Bytes(b) => b.clone(),
                Source::File(p) => fs::read(p).unwrap(),
            };
            let got = out_dir.join(&f.path);
            assert_eq!(fs::read(&got).unwrap(), want, "{}", f.path);
            let meta = fs::metadata(&got).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o644, "{}", f.path);
        }
        let dump = run(tools::DUMP_EROFS, &["-s"], &erofs);
        let text = String::from_utf8_lossy(&dump.stdout);
        assert!(text.contains(UUID), "{text}");
        // Owner, mode and time as erofs stores them, whoever ran the build.
        for (path, mode) in [("images/hello.aci", "0644"), ("etc/extra", "0755")] {
            let dump = run(tools::DUMP_EROFS, &[&format!("--path={path}")], &erofs);
            let text = String::from_utf8_lossy(&dump.stdout);
            assert!(
                text.contains(&format!("Uid: 0   Gid: 0  Access: {mode}")),
                "{path}: {text}"
            );
            assert!(
                text.contains("Timestamp: 2023-11-14 22:13:20"),
                "{path}: {text}"
            );
        }
    }

    #[test]
    fn an_empty_file_list_gives_a_clean_filesystem_with_the_image_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = build(&[], uuid(), b"", 0, dir.path()).unwrap();
        // The staging directory is gone.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        let erofs = erofs_part(&p, dir.path());
        let out_dir = dir.path().join("extracted");
        let out = run(
            tools::FSCK_EROFS,
            &[&format!("--extract={}", out_dir.display())],
            &erofs,
        );
        assert!(out.status.success(), "{out:?}");
        let images = out_dir.join(hostimg::PAYLOAD_IMAGES_DIR);
        assert!(images.is_dir());
        assert_eq!(fs::read_dir(&images).unwrap().count(), 0);
    }

    #[test]
    fn veritysetup_verifies_the_partition_with_our_parameters() {
        let dir = tempfile::tempdir().unwrap();
        for files in [sample(dir.path()), vec![]] {
            let p = build(&files, uuid(), b"pinned", 5, dir.path()).unwrap();
            assert!(veritysetup_verify(&p, dir.path()), "{} files", files.len());
            let mut flipped = p.clone();
            flipped.partition[100] ^= 0x80;
            assert!(!veritysetup_verify(&flipped, dir.path()));
            assert_eq!(p.partition.len() as u64 % VERITY_BLOCK, 0);
            assert_eq!(p.verity.salt, b"pinned");
        }
    }

    /// `veritysetup verify` on the partition, with data and hash as init's table has them.
    fn veritysetup_verify(p: &Payload, dir: &Path) -> bool {
        let part = dir.join("part");
        fs::write(&part, &p.partition).unwrap();
        tools::require(&[tools::VERITYSETUP], &[]).unwrap();
        let out = Command::new(tools::VERITYSETUP.program)
            .arg("verify")
            .arg(format!(
                "--hash-offset={}",
                p.verity.data_blocks * VERITY_BLOCK
            ))
            .arg(format!("--data-blocks={}", p.verity.data_blocks))
            .args([&part, &part])
            .arg(hostimg::boot_params::hex(&p.verity.root_hash))
            .output()
            .unwrap();
        out.status.success()
    }

    /// Different scratch directories, different staging order, a second later: same bytes.
    #[test]
    fn two_builds_are_identical_and_the_epoch_and_uuid_are_inputs() {
        let a_dir = tempfile::tempdir().unwrap();
        let b_dir = tempfile::tempdir().unwrap();
        let files = sample(a_dir.path());
        let a = build(&files, uuid(), b"s", 1_000, a_dir.path()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let mut reversed = files.clone();
        reversed.reverse();
        let b = build(&reversed, uuid(), b"s", 1_000, b_dir.path()).unwrap();
        assert!(a == b, "two builds differ");
        let later = build(&files, uuid(), b"s", 2_000, b_dir.path()).unwrap();
        assert_ne!(a.verity.root_hash, later.verity.root_hash);
        let other: Guid = "0c0ffee0-1234-4567-89ab-cdef01234568".parse().unwrap();
        let renamed = build(&files, other, b"s", 1_000, b_dir.path()).unwrap();
        assert_ne!(a.verity.root_hash, renamed.verity.root_hash);
    }

    #[test]
    fn unclean_repeated_conflicting_and_missing_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let build1 = |files: &[PayloadFile]| build(files, uuid(), b"", 0, dir.path());
        for p in ["", "/abs", "a//b", "a/./b", "../x", "a/..", "images"] {
            let e = build1(&[file(p, b"x")]).unwrap_err();
            assert!(matches!(e, PayloadError::BadPath { .. }), "{p:?}: {e}");
        }
        let long = "n".repeat(256);
        assert!(matches!(
            build1(&[file(&long, b"")]),
            Err(PayloadError::BadPath { .. })
        ));
        assert!(matches!(
            build1(&[file("a", b""), file("a", b"")]),
            Err(PayloadError::Duplicate(p)) if p == "a"
        ));
        assert!(matches!(
            build1(&[file("a/b/c", b""), file("a/b", b"")]),
            Err(PayloadError::FileIsDir { dir, .. }) if dir == "a/b"
        ));
        assert!(matches!(
            build(&[], uuid(), b"", -1, dir.path()),
            Err(PayloadError::Epoch(-1))
        ));
        let missing = dir.path().join("nope.aci");
        let f = PayloadFile {
            path: "images/nope.aci".to_string(),
            source: Source::File(missing.clone()),
        };
        let msg = build1(&[f]).unwrap_err().to_string();
        assert!(msg.contains(&missing.display().to_string()), "{msg}");
        assert!(msg.contains("images/nope.aci"), "{msg}");
    }
}
