//! Carrying out an [`ExecPlan`]: every syscall the app's child makes goes through the narrow
//! [`ChildOps`] interface, in the order [`run_child`] fixes, so that order and the flags are
//! pinned by unit tests against a recording double (`record`), without root.
//!
//! - `spawn`: the parent side (pod-init, fork into the pod's PID namespace, the status pipe).
//! - `real`: [`ChildOps`] on the running kernel.
//! - `root`: mounting an app's root (overlay or read-only bind) in init's namespace, wiping it.
//! - `cgroup`: the cgroup v2 tree (host setup, pod and app groups, OOM count, kill).
//! - `seccomp`: a [`SeccompPlan`](super::exec_plan::SeccompPlan) compiled to BPF for this arch.
//! - `caps`: the capability sets (bounding, effective/permitted/inheritable, ambient).
//!
//! The order of [`run_child`], and where it departs from the contract's list:
//! 1. join the pod's IPC and UTS namespaces (setns on the pod-init's pidfd), own process group,
//!    the app's cgroup, `oom_score_adj`. The score is written here, while the process is still
//!    root and dumpable: after a switch to another user `/proc/self/oom_score_adj` belongs to
//!    root and the write would fail.
//! 2. a new mount namespace, everything private, the plan's mount steps under the new root
//!    (resolved inside it, see `real`), `pivot_root` (or, when init still runs on the
//!    initramfs, which `pivot_root` refuses, a move of the new root onto `/` and a chroot).
//! 3. capabilities dropped from the bounding set (needs CAP_SETPCAP, so while still root),
//!    keepcaps when a non-root user keeps capabilities, setgroups, setresgid, setresuid, the
//!    remaining sets (capset, ambient).
//! 4. no_new_privs, then `chdir` to the working directory as the app's user (so a directory the
//!    user may not enter fails the start, as it would for the app), seccomp, `execve`. chdir
//!    comes before seccomp so that a filter need not allow it; seccomp is the last call before
//!    `execve`, which every filter this module compiles allows.

pub mod caps;
pub mod cgroup;
mod real;
#[cfg(test)]
pub mod record;
pub mod root;
pub mod seccomp;
pub mod spawn;

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::exec_plan::{ExecPlan, MountStep};
pub use real::RealOps;
pub use seccomp::CompiledFilter;

/// Where a mount's source comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// No source (propagation changes, remounts).
    None,
    /// A filesystem's name as shown in the mount table (`proc`, `tmpfs`).
    Name(&'a str),
    /// A host path (bind mounts), resolved in init's view before the pivot.
    Host(&'a Path),
}

/// The syscalls the app's child makes, one method each. Paths named `in_root` are inside the
/// app (absolute, as the app sees them) and are resolved under the root opened by
/// [`ChildOps::open_root`] without leaving it; other paths are in the child's current view.
pub trait ChildOps {
    /// Marks every descriptor from 3 up close-on-exec, so the app inherits only 0, 1 and 2.
    fn close_fds_on_exec(&mut self) -> Result<(), Errno>;
    /// Empties the signal mask and restores default dispositions (init blocks the signals it
    /// reads from a signalfd; a blocked mask survives `execve`).
    fn reset_signals(&mut self) -> Result<(), Errno>;
    fn setns(&mut self, fd: RawFd, nstype: CloneFlags) -> Result<(), Errno>;
    /// `setpgid(0, 0)`: the app leads its own process group.
    fn setpgid(&mut self) -> Result<(), Errno>;
    /// Writes "0" (the calling process) into `<cgroup>/cgroup.procs`.
    fn join_cgroup(&mut self, cgroup: &Path) -> Result<(), Errno>;
    fn write_oom_score_adj(&mut self, value: i32) -> Result<(), Errno>;
    fn unshare(&mut self, flags: CloneFlags) -> Result<(), Errno>;
    fn mount(
        &mut self,
        source: Source<'_>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno>;
    /// Opens the new root (a host path, mounted by the parent) for the `*_in_root` calls.
    fn open_root(&mut self, root: &Path) -> Result<(), Errno>;
    /// Creates the directory and its missing parents (0755), none of them through a symlink.
    fn mkdir_in_root(&mut self, path: &str) -> Result<(), Errno>;
    /// Creates an empty file (0644) as a bind target if nothing is there; parents must exist.
    fn create_file_in_root(&mut self, path: &str) -> Result<(), Errno>;
    fn symlink_in_root(&mut self, target: &str, path: &str) -> Result<(), Errno>;
    fn mount_in_root(
        &mut self,
        source: Source<'_>,
        path: &str,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno>;
    fn chdir(&mut self, path: &Path) -> Result<(), Errno>;
    fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> Result<(), Errno>;
    fn umount2(&mut self, target: &Path, flags: MntFlags) -> Result<(), Errno>;
    fn chroot(&mut self, path: &Path) -> Result<(), Errno>;
    fn capbset_drop(&mut self, cap: u32) -> Result<(), Errno>;
    fn set_keepcaps(&mut self, on: bool) -> Result<(), Errno>;
    fn setgroups(&mut self, groups: &[u32]) -> Result<(), Errno>;
    fn setresgid(&mut self, gid: u32) -> Result<(), Errno>;
    fn setresuid(&mut self, uid: u32) -> Result<(), Errno>;
    /// capset v3: effective, permitted, inheritable masks.
    fn capset(&mut self, effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno>;
    fn ambient_raise(&mut self, cap: u32) -> Result<(), Errno>;
    fn set_no_new_privs(&mut self) -> Result<(), Errno>;
    fn install_seccomp(&mut self, filter: &CompiledFilter) -> Result<(), Errno>;
    /// Returns only on failure.
    fn execve(&mut self, path: &CString, argv: &[CString], env: &[CString]) -> Errno;
}

/// A failed step of the child, reported through the status pipe.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("{op} {what}: {errno}")]
    Step {
        op: &'static str,
        what: String,
        errno: Errno,
    },
    #[error("{argv0}: not found in PATH {path}")]
    NotFound { argv0: String, path: String },
}

fn step(op: &'static str, what: impl std::fmt::Display) -> impl FnOnce(Errno) -> ChildError {
    let what = what.to_string();
    move |errno| ChildError::Step { op, what, errno }
}

/// The parts of a plan the child needs as C strings, made before the fork so that the child
/// allocates as little as it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    /// `execve` candidates in order: `argv[0]` itself when it has a `/`, else one per `PATH`
    /// entry (execvp's rule; an empty entry is the working directory).
    pub candidates: Vec<CString>,
    /// The `PATH` searched, for the error message.
    pub path: String,
    /// `/proc/sys/kernel/cap_last_cap` of the running kernel.
    pub cap_last_cap: u32,
}

/// appc's default `PATH` when the plan's environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A plan's string that cannot be passed to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("{field} contains a NUL byte: {value:?}")]
    Nul { field: &'static str, value: String },
    #[error("the plan has an empty argv")]
    NoArgv,
}

fn cstring(field: &'static str, value: String) -> Result<CString, PrepareError> {
    CString::new(value.clone()).map_err(|_| PrepareError::Nul { field, value })
}

impl Prepared {
    pub fn new(plan: &ExecPlan, cap_last_cap: u32) -> Result<Prepared, PrepareError> {
        let argv0 = plan.argv.first().ok_or(PrepareError::NoArgv)?;
        let path = plan
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or(DEFAULT_PATH, |(_, v)| v.as_str())
            .to_string();
        let candidates = if argv0.contains('/') {
            vec![argv0.clone()]
        } else {
            path.split(':')
                .map(|dir| match dir {
                    "" => argv0.clone(),
                    d => format!("{}/{argv0}", d.trim_end_matches('/')),
                })
                .collect()
        };
        Ok(Prepared {
            argv: plan
                .argv
                .iter()
                .map(|a| cstring("argv", a.clone()))
                .collect::<Result<_, _>>()?,
            env: plan
                .env
                .iter()
                .map(|(k, v)| cstring("environment", format!("{k}={v}")))
                .collect::<Result<_, _>>()?,
            candidates: candidates
                .into_iter()
                .map(|c| cstring("argv[0]", c))
                .collect::<Result<_, _>>()?,
            path,
            cap_last_cap,
        })
    }
}

/// The flags every bind of a host path into an app gets: no setuid binaries, no device nodes
/// beyond the ones bound on purpose (device binds leave nodev off).
fn bind_flags(recursive: bool) -> MsFlags {
    if recursive {
        MsFlags::MS_BIND | MsFlags::MS_REC
    } else {
        MsFlags::MS_BIND
    }
}

fn mount_steps(ops: &mut dyn ChildOps, steps: &[MountStep]) -> Result<(), ChildError> {
    for s in steps {
        match s {
            MountStep::Fs {
                fstype,
                path,
                flags,
                data,
            } => {
                ops.mkdir_in_root(path).map_err(step("mkdir", path))?;
                let flags = MsFlags::from_bits_truncate(*flags);
                ops.mount_in_root(
                    Source::Name(fstype),
                    path,
                    Some(fstype),
                    flags,
                    data.as_deref(),
                )
                .map_err(step("mount", format!("{fstype} on {path}")))?;
            }
            MountStep::Bind {
                source,
                path,
                read_only,
                recursive,
                file,
            } => {
                if *file {
                    if let Some((parent, _)) = path.rsplit_once('/')
                        && !parent.is_empty()
                    {
                        ops.mkdir_in_root(parent).map_err(step("mkdir", parent))?;
                    }
                    ops.create_file_in_root(path)
                        .map_err(step("create", path))?;
                } else {
                    ops.mkdir_in_root(path).map_err(step("mkdir", path))?;
                }
                let what = format!("{} on {path}", source.display());
                ops.mount_in_root(
                    Source::Host(source),
                    path,
                    None,
                    bind_flags(*recursive),
                    None,
                )
                .map_err(step("bind", &what))?;
                if *read_only {
                    // MS_RDONLY is ignored on the first bind: it takes a remount of the new
                    // mount (the real ops resolve the path again, so they reach the new mount).
                    ops.mount_in_root(
                        Source::None,
                        path,
                        None,
                        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                        None,
                    )
                    .map_err(step("remount read-only", &what))?;
                }
            }
            MountStep::Symlink { target, path } => {
                if let Some((parent, _)) = path.rsplit_once('/')
                    && !parent.is_empty()
                {
                    ops.mkdir_in_root(parent).map_err(step("mkdir", parent))?;
                }
                ops.symlink_in_root(target, path)
                    .map_err(step("symlink", format!("{path} -> {target}")))?;
            }
            MountStep::Dir { path } => {
                ops.mkdir_in_root(path).map_err(step("mkdir", path))?;
            }
        }
    }
    Ok(())
}

/// Enters the new root. `pivot_root(".", ".")` stacks the old root on top of the new one, so
/// the old root is detached without a directory for it inside the (untrusted) image. The
/// kernel refuses `pivot_root` while the current root is the initramfs (rootfs has no parent
/// mount, EINVAL); then the new root is moved onto `/` and chrooted into, as switch_root does.
/// The covered rootfs stays unreachable: `..` from the new root leads to rootfs' `/`, which the
/// moved mount covers again.
fn enter_root(ops: &mut dyn ChildOps, root: &Path) -> Result<(), ChildError> {
    let dot = Path::new(".");
    ops.chdir(root).map_err(step("chdir", root.display()))?;
    match ops.pivot_root(dot, dot) {
        Ok(()) => ops
            .umount2(dot, MntFlags::MNT_DETACH)
            .map_err(step("umount", "the old root"))?,
        Err(Errno::EINVAL) => {
            ops.mount(
                Source::Host(dot),
                Path::new("/"),
                None,
                MsFlags::MS_MOVE,
                None,
            )
            .map_err(step("move mount", root.display()))?;
            ops.chroot(dot).map_err(step("chroot", root.display()))?;
        }
        Err(e) => return Err(step("pivot_root", root.display())(e)),
    }
    ops.chdir(Path::new("/")).map_err(step("chdir", "/"))
}

/// Runs the plan in the forked child, in the order the module documents. Returns only with
/// an error, which the caller writes to the status pipe before `_exit(127)`.
pub fn run_child(
    ops: &mut dyn ChildOps,
    plan: &ExecPlan,
    prepared: &Prepared,
    pod_pidfd: RawFd,
    filter: Option<&CompiledFilter>,
) -> Result<Infallible, ChildError> {
    ops.close_fds_on_exec()
        .map_err(step("close_range", "3.."))?;
    ops.reset_signals().map_err(step("reset", "signals"))?;
    ops.setns(
        pod_pidfd,
        CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS,
    )
    .map_err(step("setns", "the pod's IPC and UTS namespaces"))?;
    ops.setpgid().map_err(step("setpgid", "0 0"))?;
    ops.join_cgroup(&plan.cgroup)
        .map_err(step("join cgroup", plan.cgroup.display()))?;
    if let Some(adj) = plan.oom_score_adj {
        ops.write_oom_score_adj(adj)
            .map_err(step("write oom_score_adj", adj))?;
    }

    ops.unshare(CloneFlags::CLONE_NEWNS)
        .map_err(step("unshare", "mount namespace"))?;
    ops.mount(
        Source::None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
    .map_err(step("make private", "/"))?;
    let root: &PathBuf = plan.root.target();
    ops.open_root(root)
        .map_err(step("open root", root.display()))?;
    mount_steps(ops, &plan.mounts)?;
    enter_root(ops, root)?;

    caps::apply(ops, &plan.caps, &plan.ids, prepared.cap_last_cap)?;

    // A filter without no_new_privs needs CAP_SYS_ADMIN in the effective set. As systemd does
    // for SystemCallFilter= (which rkt's apps ran under), no_new_privs is implied otherwise.
    let needs_nnp = filter.is_some() && plan.caps.effective & (1 << caps::CAP_SYS_ADMIN) == 0;
    if plan.no_new_privs || needs_nnp {
        ops.set_no_new_privs()
            .map_err(step("prctl", "PR_SET_NO_NEW_PRIVS"))?;
    }
    ops.chdir(Path::new(&plan.cwd))
        .map_err(step("chdir", &plan.cwd))?;
    if let Some(f) = filter {
        ops.install_seccomp(f)
            .map_err(step("seccomp", "install the filter"))?;
    }
    exec(ops, prepared)
}

/// execvp's rule: try each candidate; a missing file or directory moves on, a file that may
/// not be executed is remembered and reported when nothing else works.
fn exec(ops: &mut dyn ChildOps, prepared: &Prepared) -> Result<Infallible, ChildError> {
    let mut denied = None;
    for c in &prepared.candidates {
        match ops.execve(c, &prepared.argv, &prepared.env) {
            Errno::ENOENT | Errno::ENOTDIR => continue,
            Errno::EACCES => denied = Some(c),
            e => return Err(step("execve", c.to_string_lossy())(e)),
        }
    }
    if let Some(c) = denied {
        return Err(step("execve", c.to_string_lossy())(Errno::EACCES));
    }
    let argv0 = prepared
        .argv
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    if argv0.contains('/') {
        return Err(step("execve", argv0)(Errno::ENOENT));
    }
    Err(ChildError::NotFound {
        argv0,
        path: prepared.path.clone(),
    })
}

#[cfg(test)]
mod tests;
