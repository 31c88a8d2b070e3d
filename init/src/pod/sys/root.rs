//! An app's root filesystem in init's mount namespace: mounted before the first process of a
//! run (pre-start, main and post-stop share it), unmounted and its upper layer wiped before the
//! next run, so each run starts from a fresh copy of the image.
//!
//! The wipe walks the tree by file descriptors (`openat(O_NOFOLLOW|O_DIRECTORY)`,
//! `unlinkat`), never by path: the upper layer holds whatever the app wrote, including
//! symlinks to init's own files, and a path-based `remove_dir_all` racing a rename could be
//! led outside the directory.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag, fstatat};
use nix::unistd::UnlinkatFlags;

use crate::pod::exec_plan::RootPlan;

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("creating {path}: {source}")]
    Mkdir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: overlayfs options cannot carry ',', ':' or '\\' in a path")]
    BadPath { path: PathBuf },
    #[error("mounting {what} on {target}: {errno}")]
    Mount {
        what: &'static str,
        target: PathBuf,
        errno: Errno,
    },
    #[error("unmounting {target}: {errno}")]
    Unmount { target: PathBuf, errno: Errno },
    #[error("wiping {path}: {op} {name}: {errno}")]
    Wipe {
        path: PathBuf,
        op: &'static str,
        name: String,
        errno: Errno,
    },
}

fn mkdir_all(path: &Path) -> Result<(), RootError> {
    std::fs::create_dir_all(path).map_err(|source| RootError::Mkdir {
        path: path.to_path_buf(),
        source,
    })
}

fn option_path(p: &Path) -> Result<&str, RootError> {
    match p.to_str() {
        Some(s) if !s.contains([',', ':', '\\']) => Ok(s),
        _ => Err(RootError::BadPath {
            path: p.to_path_buf(),
        }),
    }
}

/// The overlay's mount options: lower read-only, upper and work on the data partition.
pub fn overlay_options(lower: &Path, upper: &Path, work: &Path) -> Result<String, RootError> {
    Ok(format!(
        "lowerdir={},upperdir={},workdir={}",
        option_path(lower)?,
        option_path(upper)?,
        option_path(work)?
    ))
}

/// Mounts the plan's root at its target (creating the target, and upper/work, if missing).
/// nosuid and nodev: setuid binaries and device nodes from an image are not honoured.
pub fn mount_root(plan: &RootPlan) -> Result<(), RootError> {
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    match plan {
        RootPlan::Overlay {
            lower,
            upper,
            work,
            target,
        } => {
            let data = overlay_options(lower, upper, work)?;
            for d in [upper, work, target] {
                mkdir_all(d)?;
            }
            nix::mount::mount(Some("overlay"), target, Some("overlay"), base, Some(&*data)).map_err(
                |errno| RootError::Mount {
                    what: "overlay",
                    target: target.clone(),
                    errno,
                },
            )
        }
        RootPlan::ReadOnlyBind { lower, target } => {
            mkdir_all(target)?;
            let err = |what| {
                move |errno| RootError::Mount {
                    what,
                    target: target.clone(),
                    errno,
                }
            };
            nix::mount::mount(
                Some(lower),
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(err("bind"))?;
            // The read-only flag takes a remount of the bind (the first call ignores it).
            nix::mount::mount(
                None::<&str>,
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | base,
                None::<&str>,
            )
            .map_err(err("read-only remount"))
        }
    }
}

/// Unmounts the root (detached: a process of the app that is still exiting keeps it busy).
/// A root that is not mounted is fine.
pub fn unmount_root(plan: &RootPlan) -> Result<(), RootError> {
    let target = plan.target();
    match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(errno) => Err(RootError::Unmount {
            target: target.clone(),
            errno,
        }),
    }
}

/// Before a new run: unmount the root and empty upper and work (kept as empty directories).
pub fn reset_root(plan: &RootPlan) -> Result<(), RootError> {
    unmount_root(plan)?;
    if let RootPlan::Overlay { upper, work, .. } = plan {
        wipe_dir(upper)?;
        wipe_dir(work)?;
    }
    Ok(())
}

/// Removes everything inside `dir` (not `dir` itself), without following any symlink. A
/// missing `dir` is already empty.
pub fn wipe_dir(dir: &Path) -> Result<(), RootError> {
    let err = |op, name: &str| {
        let name = name.to_string();
        move |errno| RootError::Wipe {
            path: dir.to_path_buf(),
            op,
            name,
            errno,
        }
    };
    let fd = match nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(err("open", "")(e)),
    };
    // SAFETY: open returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    wipe_fd(fd, &mut |op, name, errno| err(op, name)(errno))
}

type OnError<'a> = dyn FnMut(&'static str, &str, Errno) -> RootError + 'a;

fn wipe_fd(dir: OwnedFd, on_err: &mut OnError<'_>) -> Result<(), RootError> {
    let raw: RawFd = dir.as_raw_fd();
    let mut names = Vec::new();
    {
        let mut d = Dir::from_fd(nix::unistd::dup(raw).map_err(|e| on_err("dup", "", e))?)
            .map_err(|e| on_err("read", "", e))?;
        for entry in d.iter() {
            let entry = entry.map_err(|e| on_err("read", "", e))?;
            let name = entry.file_name().to_owned();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            names.push((name, entry.file_type()));
        }
    }
    for (name, kind) in names {
        let shown = name.to_string_lossy().into_owned();
        let is_dir = match kind {
            Some(t) => t == Type::Directory,
            None => {
                let st = fstatat(Some(raw), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(|e| on_err("stat", &shown, e))?;
                SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
            }
        };
        if is_dir {
            let sub = nix::fcntl::openat(
                Some(raw),
                name.as_c_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| on_err("open", &shown, e))?;
            // SAFETY: openat returned a new descriptor that nothing else owns.
            wipe_fd(unsafe { OwnedFd::from_raw_fd(sub) }, on_err)?;
            nix::unistd::unlinkat(Some(raw), name.as_c_str(), UnlinkatFlags::RemoveDir)
                .map_err(|e| on_err("rmdir", &shown, e))?;
        } else {
            nix::unistd::unlinkat(Some(raw), name.as_c_str(), UnlinkatFlags::NoRemoveDir)
                .map_err(|e| on_err("unlink", &shown, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wipe_empties_the_tree_and_never_follows_a_symlink_out() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"x").unwrap();
        let upper = tempfile::tempdir().unwrap();
        let u = upper.path();
        std::fs::create_dir_all(u.join("a/b/c")).unwrap();
        std::fs::write(u.join("a/b/c/f"), b"1").unwrap();
        std::os::unix::fs::symlink(outside.path(), u.join("a/out")).unwrap();
        std::os::unix::fs::symlink(outside.path(), u.join("top")).unwrap();
        wipe_dir(u).unwrap();
        assert_eq!(std::fs::read_dir(u).unwrap().count(), 0);
        assert!(outside.path().join("keep").exists());
    }

    #[test]
    fn wipe_of_a_missing_directory_is_fine() {
        let t = tempfile::tempdir().unwrap();
        wipe_dir(&t.path().join("nope")).unwrap();
    }

    #[test]
    fn wipe_refuses_a_symlink_as_the_directory_itself() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"x").unwrap();
        let t = tempfile::tempdir().unwrap();
        let link = t.path().join("upper");
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();
        assert!(wipe_dir(&link).is_err());
        assert!(outside.path().join("keep").exists());
    }

    #[test]
    fn overlay_options_refuse_separators_in_paths() {
        let ok = overlay_options(Path::new("/l"), Path::new("/u"), Path::new("/w")).unwrap();
        assert_eq!(ok, "lowerdir=/l,upperdir=/u,workdir=/w");
        assert!(overlay_options(Path::new("/l,x"), Path::new("/u"), Path::new("/w")).is_err());
        assert!(overlay_options(Path::new("/l"), Path::new("/u:v"), Path::new("/w")).is_err());
    }
}
