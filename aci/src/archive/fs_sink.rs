//! The unpacker's filesystem side: the sink that writes each checked entry below the root
//! directory fd, fd-relative and without following symlinks, creates links after the whole
//! archive passed, and applies metadata (never through a symlink).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use super::ArchiveError;
use super::path::Components;
use super::reader::{Entry, EntryKind, EntryMeta, Sink};
use super::unpack::{Owners, UnpackOptions};

pub(crate) struct UnpackSink<'a> {
    root: BorrowedFd<'a>,
    opts: &'a UnpackOptions,
    owners: bool,
    /// Directories get their mode and mtime last: children would change the mtime, and a
    /// read-only mode would stop us creating them. Keyed by path, so a later layer's metadata
    /// for the same directory wins.
    dirs: &'a mut BTreeMap<Components, (EntryMeta, String)>,
    rootfs_meta: &'a mut Option<EntryMeta>,
    /// The last parent directory opened; tar entries come grouped by directory.
    cache: Option<(Components, OwnedFd)>,
    /// Symlinks and hard links, created in archive order once the whole archive was checked:
    /// the final pass over links can still refuse it.
    pending: Vec<PendingLink>,
}

struct PendingLink {
    parent: Components,
    leaf: Vec<u8>,
    kind: EntryKind,
    meta: EntryMeta,
    name: String,
}

const WALK_FLAGS: OFlags = OFlags::PATH
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn io_err(e: Errno) -> io::Error {
    e.into()
}

impl<'a> UnpackSink<'a> {
    pub(crate) fn new(
        root: BorrowedFd<'a>,
        opts: &'a UnpackOptions,
        dirs: &'a mut BTreeMap<Components, (EntryMeta, String)>,
        rootfs_meta: &'a mut Option<EntryMeta>,
    ) -> Self {
        let owners = match opts.owners {
            Owners::Auto => rustix::process::geteuid().is_root(),
            Owners::Preserve => true,
            Owners::Ignore => false,
        };
        UnpackSink {
            root,
            opts,
            owners,
            dirs,
            rootfs_meta,
            cache: None,
            pending: Vec::new(),
        }
    }

    /// Opens the directory `comps` below the root one component at a time without following
    /// symlinks. Missing directories are created (tar allows omitting parents). In overwrite
    /// mode a non-directory from an earlier layer in the way is replaced.
    fn open_dir(
        &self,
        comps: &[Vec<u8>],
        entry: &str,
        create: bool,
    ) -> Result<OwnedFd, ArchiveError> {
        let err = |source: io::Error| ArchiveError::CreateDir {
            entry: entry.to_string(),
            source,
        };
        let mut cur = rustix::fs::openat(self.root, ".", WALK_FLAGS, Mode::empty())
            .map_err(|e| err(e.into()))?;
        for c in comps {
            let next = match rustix::fs::openat(&cur, c.as_slice(), WALK_FLAGS, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&cur, c.as_slice(), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(err(e.into())),
                    }
                    rustix::fs::openat(&cur, c.as_slice(), WALK_FLAGS, Mode::empty())
                        .map_err(|e| err(e.into()))?
                }
                Err(Errno::LOOP | Errno::NOTDIR) if create && self.opts.overwrite => {
                    rustix::fs::unlinkat(&cur, c.as_slice(), AtFlags::empty()).map_err(|e| {
                        ArchiveError::RemoveExisting {
                            entry: entry.to_string(),
                            source: e.into(),
                        }
                    })?;
                    rustix::fs::mkdirat(&cur, c.as_slice(), Mode::from_raw_mode(0o755))
                        .map_err(|e| err(e.into()))?;
                    rustix::fs::openat(&cur, c.as_slice(), WALK_FLAGS, Mode::empty())
                        .map_err(|e| err(e.into()))?
                }
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    return Err(ArchiveError::PathThroughSymlink {
                        entry: entry.to_string(),
                    });
                }
                Err(e) => return Err(err(e.into())),
            };
            cur = next;
        }
        Ok(cur)
    }

    fn parent(&mut self, comps: &[Vec<u8>], entry: &str) -> Result<OwnedFd, ArchiveError> {
        let hit = matches!(&self.cache, Some((p, _)) if p.as_slice() == comps);
        if !hit {
            let fd = self.open_dir(comps, entry, true)?;
            self.cache = Some((comps.to_vec(), fd));
        }
        let fd = self.cache.as_ref().map(|(_, fd)| fd.try_clone());
        match fd {
            Some(Ok(fd)) => Ok(fd),
            Some(Err(source)) => Err(ArchiveError::CreateDir {
                entry: entry.to_string(),
                source,
            }),
            None => Err(ArchiveError::CreateDir {
                entry: entry.to_string(),
                source: io::Error::other("parent directory vanished"),
            }),
        }
    }

    /// Layer mode: clears the way for `leaf`. Returns true when an existing directory should be
    /// kept (a directory over a directory merges).
    fn clear(
        &mut self,
        parent: &OwnedFd,
        comps: &[Vec<u8>],
        is_dir: bool,
        entry: &str,
    ) -> Result<bool, ArchiveError> {
        let Some(leaf) = comps.last() else {
            return Ok(true);
        };
        let leaf = leaf.as_slice();
        let stat = match rustix::fs::statat(parent, leaf, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => {
                return Err(ArchiveError::RemoveExisting {
                    entry: entry.to_string(),
                    source: e.into(),
                });
            }
        };
        let existing_dir = FileType::from_raw_mode(stat.st_mode) == FileType::Directory;
        if existing_dir && is_dir {
            return Ok(true);
        }
        let res = if existing_dir {
            // The cached parent may be inside the tree being removed, and so may directories
            // whose metadata is still to be applied.
            self.cache = None;
            self.dirs.retain(|k, _| !k.starts_with(comps));
            remove_tree(parent.as_fd(), leaf)
        } else {
            rustix::fs::unlinkat(parent, leaf, AtFlags::empty()).map_err(io_err)
        };
        res.map_err(|source| ArchiveError::RemoveExisting {
            entry: entry.to_string(),
            source,
        })?;
        Ok(false)
    }

    fn ids(
        &self,
        meta: &EntryMeta,
        entry: &str,
    ) -> Result<Option<(rustix::fs::Uid, rustix::fs::Gid)>, ArchiveError> {
        if !self.owners {
            return Ok(None);
        }
        let id = |what, v: u64| {
            u32::try_from(v)
                .ok()
                .filter(|v| *v != u32::MAX)
                .ok_or(ArchiveError::ValueOutOfRange {
                    entry: entry.to_string(),
                    what,
                    value: v,
                })
        };
        Ok(Some((
            rustix::fs::Uid::from_raw(id("uid", meta.uid)?),
            rustix::fs::Gid::from_raw(id("gid", meta.gid)?),
        )))
    }

    fn times(meta: &EntryMeta, entry: &str) -> Result<Timestamps, ArchiveError> {
        let secs = i64::try_from(meta.mtime).map_err(|_| ArchiveError::ValueOutOfRange {
            entry: entry.to_string(),
            what: "mtime",
            value: meta.mtime,
        })?;
        let t = Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        };
        Ok(Timestamps {
            last_access: t,
            last_modification: t,
        })
    }

    /// Owner, then mode (chown clears set-id bits), xattrs, then times, on an open file or dir.
    fn apply_fd(
        &self,
        fd: BorrowedFd<'_>,
        meta: &EntryMeta,
        entry: &str,
    ) -> Result<(), ArchiveError> {
        let set = |what, r| set_metadata(entry, what, r);
        if let Some((uid, gid)) = self.ids(meta, entry)? {
            set("owner", rustix::fs::fchown(fd, Some(uid), Some(gid)))?;
        }
        set(
            "mode",
            rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode & 0o7777)),
        )?;
        if self.opts.xattrs {
            for (name, value) in &meta.xattrs {
                match rustix::fs::fsetxattr(fd, name.as_slice(), value, XattrFlags::empty()) {
                    // The target filesystem cannot store them at all (some tmpfs builds).
                    Ok(()) | Err(Errno::OPNOTSUPP) => {}
                    Err(e) => set("xattrs", Err(e))?,
                }
            }
        }
        set(
            "mtime",
            rustix::fs::futimens(fd, &Self::times(meta, entry)?),
        )
    }

    /// Owner and times for entries that cannot be opened (symlinks, device nodes, fifos).
    fn apply_at(
        &self,
        parent: &OwnedFd,
        leaf: &[u8],
        meta: &EntryMeta,
        entry: &str,
        mode: bool,
    ) -> Result<(), ArchiveError> {
        let set = |what, r| set_metadata(entry, what, r);
        if let Some((uid, gid)) = self.ids(meta, entry)? {
            set(
                "owner",
                rustix::fs::chownat(
                    parent,
                    leaf,
                    Some(uid),
                    Some(gid),
                    AtFlags::SYMLINK_NOFOLLOW,
                ),
            )?;
        }
        if mode {
            set(
                "mode",
                chmod_nofollow(
                    parent.as_fd(),
                    leaf,
                    Mode::from_raw_mode(meta.mode & 0o7777),
                ),
            )?;
        }
        set(
            "mtime",
            rustix::fs::utimensat(
                parent,
                leaf,
                &Self::times(meta, entry)?,
                AtFlags::SYMLINK_NOFOLLOW,
            ),
        )
    }

    pub(crate) fn finish(&mut self) -> Result<(), ArchiveError> {
        self.cache = None;
        let mut dirs: Vec<_> = std::mem::take(self.dirs).into_iter().collect();
        // Deepest first, so setting a parent's mtime is the last change to it.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0.len()));
        for (comps, (meta, name)) in &dirs {
            let fd = self.open_rw_dir(comps, name)?;
            self.apply_fd(fd.as_fd(), meta, name)?;
        }
        if let Some(meta) = self.rootfs_meta.take() {
            self.apply_fd(self.root, &meta, "rootfs")?;
        }
        Ok(())
    }

    /// Creates the symlinks and hard links the archive holds, in archive order.
    pub(crate) fn create_links(&mut self) -> Result<(), ArchiveError> {
        for link in std::mem::take(&mut self.pending) {
            let name = link.name.as_str();
            let parent = self.parent(&link.parent, name)?;
            let leaf = link.leaf.as_slice();
            match &link.kind {
                EntryKind::Symlink { target } => {
                    rustix::fs::symlinkat(target.as_slice(), &parent, leaf).map_err(|err| {
                        if err == Errno::EXIST {
                            ArchiveError::EntryExists {
                                entry: name.to_string(),
                            }
                        } else {
                            ArchiveError::CreateSymlink {
                                entry: name.to_string(),
                                source: err.into(),
                            }
                        }
                    })?;
                    self.apply_at(&parent, leaf, &link.meta, name, false)?;
                }
                EntryKind::Hardlink { target } => {
                    let Some((tleaf, tparent)) = target.split_last() else {
                        return Err(ArchiveError::HardlinkEscape {
                            entry: name.to_string(),
                            target: "/".to_string(),
                        });
                    };
                    let tparent = self.open_dir(tparent, name, false)?;
                    // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
                    rustix::fs::linkat(&tparent, tleaf.as_slice(), &parent, leaf, AtFlags::empty())
                        .map_err(|err| {
                            if err == Errno::EXIST {
                                ArchiveError::EntryExists {
                                    entry: name.to_string(),
                                }
                            } else {
                                ArchiveError::CreateHardlink {
                                    entry: name.to_string(),
                                    source: err.into(),
                                }
                            }
                        })?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn open_rw_dir(&self, comps: &[Vec<u8>], entry: &str) -> Result<OwnedFd, ArchiveError> {
        let (leaf, parent) = match comps.split_last() {
            Some(split) => split,
            None => {
                return rustix::fs::openat(
                    self.root,
                    ".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| ArchiveError::CreateDir {
                    entry: entry.to_string(),
                    source: e.into(),
                });
            }
        };
        let parent = self.open_dir(parent, entry, false)?;
        rustix::fs::openat(
            &parent,
            leaf.as_slice(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ArchiveError::CreateDir {
            entry: entry.to_string(),
            source: e.into(),
        })
    }
}

/// Copy buffer for file contents: large enough that syscalls are not the bottleneck.
const COPY_BUF: usize = 256 * 1024;

impl Sink for UnpackSink<'_> {
    fn rootfs(&mut self, meta: &EntryMeta) -> Result<(), ArchiveError> {
        *self.rootfs_meta = Some(meta.clone());
        Ok(())
    }

    fn entry(&mut self, e: &Entry<'_>, data: &mut dyn Read) -> Result<(), ArchiveError> {
        let Some((leaf, parent_comps)) = e.comps.split_last() else {
            return Ok(());
        };
        let leaf = leaf.as_slice();
        let name = e.name;
        let parent = self.parent(parent_comps, name)?;
        if self.opts.overwrite && self.clear(&parent, e.comps, *e.kind == EntryKind::Dir, name)? {
            self.dirs
                .insert(e.comps.to_vec(), (e.meta.clone(), name.to_string()));
            return Ok(());
        }
        let exists = |source: Errno| {
            if source == Errno::EXIST {
                ArchiveError::EntryExists {
                    entry: name.to_string(),
                }
            } else {
                ArchiveError::CreateNode {
                    entry: name.to_string(),
                    source: source.into(),
                }
            }
        };
        match e.kind {
            EntryKind::Dir => {
                match rustix::fs::mkdirat(&parent, leaf, Mode::from_raw_mode(0o700)) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => {
                        // Created earlier as an implicit parent: fine. Anything else is not.
                        let st = rustix::fs::statat(&parent, leaf, AtFlags::SYMLINK_NOFOLLOW)
                            .map_err(|e| ArchiveError::CreateDir {
                                entry: name.to_string(),
                                source: e.into(),
                            })?;
                        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                            return Err(ArchiveError::EntryExists {
                                entry: name.to_string(),
                            });
                        }
                    }
                    Err(err) => {
                        return Err(ArchiveError::CreateDir {
                            entry: name.to_string(),
                            source: err.into(),
                        });
                    }
                }
                self.dirs
                    .insert(e.comps.to_vec(), (e.meta.clone(), name.to_string()));
            }
            EntryKind::File { .. } => {
                let fd = rustix::fs::openat(
                    &parent,
                    leaf,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|err| match exists(err) {
                    ArchiveError::CreateNode { entry, source } => {
                        ArchiveError::WriteFile { entry, source }
                    }
                    other => other,
                })?;
                let mut file = File::from(fd);
                copy(data, &mut file).map_err(|source| ArchiveError::WriteFile {
                    entry: name.to_string(),
                    source,
                })?;
                self.apply_fd(file.as_fd(), e.meta, name)?;
            }
            EntryKind::Symlink { .. } | EntryKind::Hardlink { .. } => {
                self.pending.push(PendingLink {
                    parent: parent_comps.to_vec(),
                    leaf: leaf.to_vec(),
                    kind: e.kind.clone(),
                    meta: e.meta.clone(),
                    name: name.to_string(),
                });
            }
            EntryKind::Char { major, minor } | EntryKind::Block { major, minor } => {
                let ft = if matches!(e.kind, EntryKind::Char { .. }) {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                rustix::fs::mknodat(
                    &parent,
                    leaf,
                    ft,
                    Mode::from_raw_mode(0o600),
                    rustix::fs::makedev(*major, *minor),
                )
                .map_err(exists)?;
                self.apply_at(&parent, leaf, e.meta, name, true)?;
            }
            EntryKind::Fifo => {
                rustix::fs::mknodat(&parent, leaf, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
                    .map_err(exists)?;
                self.apply_at(&parent, leaf, e.meta, name, true)?;
            }
        }
        Ok(())
    }
}

/// `chmod` of `leaf` that never follows a symlink there (`fchmodat` ignores
/// `AT_SYMLINK_NOFOLLOW` before Linux 6.6): the node is opened `O_PATH | O_NOFOLLOW`, must not be
/// a symlink, and is changed through its `/proc/self/fd` entry, which names that very inode.
pub(crate) fn chmod_nofollow(parent: BorrowedFd<'_>, leaf: &[u8], mode: Mode) -> Result<(), Errno> {
    let fd = rustix::fs::openat(
        parent,
        leaf,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
        return Err(Errno::LOOP);
    }
    let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    rustix::fs::chmod(proc_path.as_str(), mode)
}

fn copy(r: &mut dyn Read, w: &mut File) -> io::Result<u64> {
    let mut buf = vec![0u8; COPY_BUF];
    let mut total = 0;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Removes `name` under `parent` and everything below it, fd-relative and without following
/// symlinks (a symlink is unlinked, not entered).
pub(crate) fn remove_tree(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let fd = rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut children = Vec::new();
    for ent in Dir::read_from(&fd)? {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            children.push((n.to_vec(), ent.file_type()));
        }
    }
    for (child, ft) in children {
        let is_dir = match ft {
            FileType::Directory => true,
            FileType::Unknown => {
                let st = rustix::fs::statat(&fd, child.as_slice(), AtFlags::SYMLINK_NOFOLLOW)?;
                FileType::from_raw_mode(st.st_mode) == FileType::Directory
            }
            _ => false,
        };
        if is_dir {
            remove_tree(fd.as_fd(), &child)?;
        } else {
            rustix::fs::unlinkat(&fd, child.as_slice(), AtFlags::empty())?;
        }
    }
    rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

/// A failed metadata call on `entry` as the archive error naming what was being set.
fn set_metadata(entry: &str, what: &'static str, r: Result<(), Errno>) -> Result<(), ArchiveError> {
    r.map_err(|e| ArchiveError::SetMetadata {
        entry: entry.to_string(),
        what,
        source: e.into(),
    })
}
