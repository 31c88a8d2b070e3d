//! Safe unpacking of a checked entry stream into a directory: options, staging beside the
//! target, layers. The filesystem calls are in `fs_sink`. Every filesystem call is relative
//! to a directory fd opened by walking components with `O_NOFOLLOW`, and files are created with
//! `O_EXCL | O_NOFOLLOW`, so no symlink (from the archive or already in the target) is ever
//! followed and nothing is written outside the target.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::ArchiveError;
use super::fs_sink::UnpackSink;
use super::path::Components;
use super::reader::{AciSummary, EntryMeta, ReadOptions, walk};
use super::tree::PathTree;

/// What to lay out in the target directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// `TARGET/manifest` and `TARGET/rootfs/...`, like `rkt image extract`.
    #[default]
    Image,
    /// The rootfs contents directly in `TARGET`.
    RootfsOnly,
}

/// Whether entries get the owners recorded in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Owners {
    /// Preserve when running as root (only root can give files away), else leave as the caller.
    #[default]
    Auto,
    Preserve,
    Ignore,
}

/// appc `pathWhitelist` filtering: a non-directory entry is kept only if every set (the image's
/// own whitelist and those of the images that depend on it) lists its rootfs path. A hard link
/// whose target is filtered out is dropped as well (there is nothing to link to); a filtered-out
/// symlink is not written, so entries below its path land in a plain directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathFilter {
    sets: Vec<HashSet<String>>,
}

impl PathFilter {
    /// Adds one whitelist; an empty list means "no filter" in appc and is ignored.
    pub fn with_whitelist(mut self, paths: &[String]) -> Self {
        if !paths.is_empty() {
            self.sets.push(paths.iter().cloned().collect());
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// `path` is rootfs-absolute, e.g. `/etc/passwd`.
    pub fn allows(&self, path: &str) -> bool {
        self.sets.iter().all(|s| s.contains(path))
    }
}

#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    pub read: ReadOptions,
    pub layout: Layout,
    pub owners: Owners,
    /// Set extended attributes recorded in the archive (PAX `SCHILY.xattr.*`).
    pub xattrs: bool,
    /// Layer mode for rendering: an entry replaces what an earlier layer left at its path (a
    /// symlink, even one to a directory, is replaced, never followed; directories merge).
    /// Off, an existing path is an error.
    pub overwrite: bool,
    pub filter: PathFilter,
}

impl UnpackOptions {
    /// The defaults for extracting one image: refuse devices, default limits, keep xattrs.
    pub fn extract() -> Self {
        UnpackOptions {
            xattrs: true,
            ..UnpackOptions::default()
        }
    }
}

/// Reads, checks and unpacks the ACI from `r` into `target`.
///
/// When `target` is missing or an empty directory, the image is unpacked into a sibling temp
/// directory that is renamed onto `target` only once every entry was checked and written; on
/// any error the temp directory is removed, so a refused archive leaves nothing (an empty
/// `target` stays empty). Into a non-empty `target` (layering by hand) entries are written in
/// place and, on error, the caller removes what was written. Either way symlinks and hard links
/// are created only after the whole archive passed its checks, so a refused archive never
/// leaves a link on disk, and nothing outside `target` is touched.
pub fn unpack<R: Read>(
    r: R,
    target: &Path,
    opts: &UnpackOptions,
) -> Result<AciSummary, ArchiveError> {
    let Some(stage) = Stage::new(target)? else {
        return unpack_in_place(r, target, opts);
    };
    let summary = unpack_in_place(r, &stage.path, opts)?;
    stage.place(target)?;
    Ok(summary)
}

/// A sibling temp directory an image is unpacked into before it is renamed onto the target;
/// removed on drop unless placed.
pub(crate) struct Stage {
    pub(crate) path: PathBuf,
}

static STAGE_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Stage {
    /// None when `target` already holds something (unpack in place) or has no parent to stage
    /// beside.
    pub(crate) fn new(target: &Path) -> Result<Option<Stage>, ArchiveError> {
        let open_err = |source: io::Error| ArchiveError::OpenTarget {
            path: target.to_path_buf(),
            source,
        };
        match std::fs::read_dir(target) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Ok(None);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(open_err(e)),
        }
        let Some(leaf) = target.file_name() else {
            return Ok(None);
        };
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(parent).map_err(open_err)?;
        let path = parent.join(format!(
            ".{}.unpack-{}-{}",
            leaf.to_string_lossy(),
            std::process::id(),
            STAGE_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(open_err)?;
        Ok(Some(Stage { path }))
    }

    /// Renames the finished tree onto `target` (replacing it when it is an empty directory).
    pub(crate) fn place(self, target: &Path) -> Result<(), ArchiveError> {
        std::fs::rename(&self.path, target).map_err(|source| ArchiveError::PlaceTarget {
            path: target.to_path_buf(),
            source,
        })?;
        std::mem::forget(self);
        Ok(())
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub(crate) fn unpack_in_place<R: Read>(
    r: R,
    target: &Path,
    opts: &UnpackOptions,
) -> Result<AciSummary, ArchiveError> {
    let open_err = |source: io::Error| ArchiveError::OpenTarget {
        path: target.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(target).map_err(open_err)?;
    let target_fd = rustix::fs::open(
        target,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| open_err(e.into()))?;
    let root = match opts.layout {
        Layout::RootfsOnly => target_fd.try_clone().map_err(open_err)?,
        Layout::Image => {
            match rustix::fs::mkdirat(&target_fd, "rootfs", Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(open_err(e.into())),
            }
            rustix::fs::openat(
                &target_fd,
                "rootfs",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| open_err(e.into()))?
        }
    };
    let summary = unpack_into(r, root.as_fd(), opts)?;
    if opts.layout == Layout::Image {
        write_manifest(target_fd.as_fd(), &summary.manifest_json, opts.overwrite)?;
    }
    Ok(summary)
}

/// What carries over from one layer of a tree to the next: the symlinks already in the tree
/// (so chains through them are checked) and directory metadata, which is applied once after
/// the last layer, since a read-only directory from a lower layer must not stop a later layer
/// writing into it.
#[derive(Debug, Default)]
pub(crate) struct Layers {
    links: PathTree,
    dirs: BTreeMap<Components, (EntryMeta, String)>,
    rootfs_meta: Option<EntryMeta>,
}

/// Unpacks one ACI into an open rootfs directory, directory metadata included.
pub(crate) fn unpack_into<R: Read>(
    r: R,
    root: BorrowedFd<'_>,
    opts: &UnpackOptions,
) -> Result<AciSummary, ArchiveError> {
    let mut layers = Layers::default();
    let summary = unpack_layer(r, root, opts, &mut layers)?;
    finish_layers(root, opts, layers)?;
    Ok(summary)
}

/// Unpacks one layer of a tree; call [`finish_layers`] after the last one.
pub(crate) fn unpack_layer<R: Read>(
    r: R,
    root: BorrowedFd<'_>,
    opts: &UnpackOptions,
    layers: &mut Layers,
) -> Result<AciSummary, ArchiveError> {
    let mut sink = UnpackSink::new(root, opts, &mut layers.dirs, &mut layers.rootfs_meta);
    let summary = walk(r, &opts.read, &opts.filter, &mut layers.links, &mut sink)?;
    // Only now, with every entry checked, may links exist on disk.
    sink.create_links()?;
    Ok(summary)
}

/// Gives every directory of the tree its mode, owner and times, deepest first.
pub(crate) fn finish_layers(
    root: BorrowedFd<'_>,
    opts: &UnpackOptions,
    mut layers: Layers,
) -> Result<(), ArchiveError> {
    let mut sink = UnpackSink::new(root, opts, &mut layers.dirs, &mut layers.rootfs_meta);
    sink.finish()
}

fn write_manifest(dir: BorrowedFd<'_>, json: &[u8], overwrite: bool) -> Result<(), ArchiveError> {
    let err = |source: io::Error| ArchiveError::WriteFile {
        entry: "manifest".to_string(),
        source,
    };
    let mut flags = OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    flags |= if overwrite {
        OFlags::TRUNC
    } else {
        OFlags::EXCL
    };
    let fd = rustix::fs::openat(dir, "manifest", flags, Mode::from_raw_mode(0o644))
        .map_err(|e| err(e.into()))?;
    File::from(fd).write_all(json).map_err(err)
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
