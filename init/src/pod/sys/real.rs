//! [`ChildOps`] on the running kernel.
//!
//! Paths inside the app's root are untrusted: the rootfs is image content and may hold
//! symlinks such as `proc -> /` or `etc -> ../../..`. A path given to `mount(2)` as a string
//! would follow them out of the root (into init's own tree). So every `*_in_root` path is
//! resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` from an fd of the new root:
//! symlinks are followed as if the root were `/`, `..` stops at it, and /proc magic links are
//! refused. Creation walks one component at a time from such an fd (`mkdirat`,
//! `openat(O_CREAT|O_EXCL|O_NOFOLLOW)`, `symlinkat` on the parent's fd), and a mount goes onto
//! the resolved fd through `/proc/self/fd/<n>`, which names exactly that dentry. A remount
//! resolves the path again, so it reaches the mount just made rather than the one below it.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Pid, Uid};

use super::{ChildOps, CompiledFilter, Source, caps, seccomp};

/// The real kernel. Holds the new root's fd between `open_root` and the pivot.
#[derive(Debug, Default)]
pub struct RealOps {
    root: Option<OwnedFd>,
}

impl RealOps {
    pub fn new() -> RealOps {
        RealOps::default()
    }

    fn root(&self) -> Result<BorrowedFd<'_>, Errno> {
        self.root.as_ref().map(|f| f.as_fd()).ok_or(Errno::EBADF)
    }

    /// Opens `path` (inside the root) as an O_PATH fd without leaving the root.
    fn resolve(&self, path: &str, extra: OFlag) -> Result<OwnedFd, Errno> {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC | extra)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let fd = openat2(self.root()?.as_raw_fd(), relative(path), how)?;
        // SAFETY: openat2 returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The parent directory of `path` (resolved in the root) and the last component.
    fn parent<'p>(&self, path: &'p str) -> Result<(OwnedFd, &'p str), Errno> {
        let trimmed = path.trim_end_matches('/');
        let (dir, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
        if name.is_empty() || name == "." || name == ".." {
            return Err(Errno::EINVAL);
        }
        Ok((self.resolve(dir, OFlag::O_DIRECTORY)?, name))
    }
}

/// `/a/b` → `a/b`; the root itself → `.`.
fn relative(path: &str) -> &str {
    match path.trim_start_matches('/') {
        "" => ".",
        p => p,
    }
}

fn proc_fd(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn mount_raw(
    source: Source<'_>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), Errno> {
    match source {
        Source::None => nix::mount::mount(None::<&str>, target, fstype, flags, data),
        Source::Name(n) => nix::mount::mount(Some(n), target, fstype, flags, data),
        Source::Host(p) => nix::mount::mount(Some(p), target, fstype, flags, data),
    }
}

fn write_file(path: &str, value: &[u8]) -> Result<(), Errno> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_errno)?;
    f.write_all(value).map_err(io_errno)
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

impl ChildOps for RealOps {
    fn close_fds_on_exec(&mut self) -> Result<(), Errno> {
        // SAFETY: close_range with CLOSE_RANGE_CLOEXEC closes nothing; it only sets a flag.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
            )
        };
        if rc < 0 { Err(Errno::last()) } else { Ok(()) }
    }

    fn reset_signals(&mut self) -> Result<(), Errno> {
        for s in Signal::iterator() {
            if matches!(s, Signal::SIGKILL | Signal::SIGSTOP) {
                continue;
            }
            // SAFETY: SIG_DFL installs no handler code; nothing else runs in this process.
            unsafe { nix::sys::signal::signal(s, SigHandler::SigDfl) }?;
        }
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
    }

    fn setns(&mut self, fd: RawFd, nstype: CloneFlags) -> Result<(), Errno> {
        // SAFETY: the caller keeps the pidfd open for the duration of the call.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        nix::sched::setns(fd, nstype)
    }

    fn setpgid(&mut self) -> Result<(), Errno> {
        nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))
    }

    fn join_cgroup(&mut self, cgroup: &Path) -> Result<(), Errno> {
        let path = cgroup.join("cgroup.procs");
        write_file(&path.to_string_lossy(), b"0")
    }

    fn write_oom_score_adj(&mut self, value: i32) -> Result<(), Errno> {
        write_file("/proc/self/oom_score_adj", value.to_string().as_bytes())
    }

    fn unshare(&mut self, flags: CloneFlags) -> Result<(), Errno> {
        nix::sched::unshare(flags)
    }

    fn mount(
        &mut self,
        source: Source<'_>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno> {
        mount_raw(source, target, fstype, flags, data)
    }

    fn open_root(&mut self, root: &Path) -> Result<(), Errno> {
        // The root's own path is init's (trusted); only what is below it is image content.
        let fd = nix::fcntl::open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // SAFETY: open returned a new descriptor that nothing else owns.
        self.root = Some(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(())
    }

    fn mkdir_in_root(&mut self, path: &str) -> Result<(), Errno> {
        let mut done = String::new();
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            if part == ".." {
                return Err(Errno::EINVAL);
            }
            let dir = self.resolve(&done, OFlag::O_DIRECTORY)?;
            match nix::sys::stat::mkdirat(
                Some(dir.as_raw_fd()),
                part,
                Mode::from_bits_truncate(0o755),
            ) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
            done.push('/');
            done.push_str(part);
        }
        // An existing entry must be a directory (or a symlink to one inside the root).
        self.resolve(&done, OFlag::O_DIRECTORY).map(drop)
    }

    fn create_file_in_root(&mut self, path: &str) -> Result<(), Errno> {
        let (dir, name) = self.parent(path)?;
        match nix::fcntl::openat(
            Some(dir.as_raw_fd()),
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        ) {
            Ok(fd) => nix::unistd::close(fd),
            Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn symlink_in_root(&mut self, target: &str, path: &str) -> Result<(), Errno> {
        let (dir, name) = self.parent(path)?;
        match nix::unistd::symlinkat(target, Some(dir.as_raw_fd()), name) {
            Err(Errno::EEXIST) => Ok(()),
            r => r,
        }
    }

    fn mount_in_root(
        &mut self,
        source: Source<'_>,
        path: &str,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno> {
        let fd = self.resolve(path, OFlag::empty())?;
        mount_raw(source, &proc_fd(&fd), fstype, flags, data)
    }

    fn chdir(&mut self, path: &Path) -> Result<(), Errno> {
        nix::unistd::chdir(path)
    }

    fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> Result<(), Errno> {
        nix::unistd::pivot_root(new_root, put_old)
    }

    fn umount2(&mut self, target: &Path, flags: MntFlags) -> Result<(), Errno> {
        self.root = None;
        nix::mount::umount2(target, flags)
    }

    fn chroot(&mut self, path: &Path) -> Result<(), Errno> {
        self.root = None;
        nix::unistd::chroot(path)
    }

    fn capbset_drop(&mut self, cap: u32) -> Result<(), Errno> {
        caps::capbset_drop(cap)
    }

    fn set_keepcaps(&mut self, on: bool) -> Result<(), Errno> {
        caps::set_keepcaps(on)
    }

    fn setgroups(&mut self, groups: &[u32]) -> Result<(), Errno> {
        let groups: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&groups)
    }

    fn setresgid(&mut self, gid: u32) -> Result<(), Errno> {
        let g = Gid::from_raw(gid);
        nix::unistd::setresgid(g, g, g)
    }

    fn setresuid(&mut self, uid: u32) -> Result<(), Errno> {
        let u = Uid::from_raw(uid);
        nix::unistd::setresuid(u, u, u)
    }

    fn capset(&mut self, effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno> {
        caps::capset(effective, permitted, inheritable)
    }

    fn ambient_raise(&mut self, cap: u32) -> Result<(), Errno> {
        caps::ambient_raise(cap)
    }

    fn set_no_new_privs(&mut self) -> Result<(), Errno> {
        caps::set_no_new_privs()
    }

    fn install_seccomp(&mut self, filter: &CompiledFilter) -> Result<(), Errno> {
        seccomp::install(filter)
    }

    fn execve(&mut self, path: &CString, argv: &[CString], env: &[CString]) -> Errno {
        match nix::unistd::execve(path, argv, env) {
            Err(e) => e,
            Ok(never) => match never {},
        }
    }
}
