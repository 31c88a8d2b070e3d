//! The parent side: a pod's PID 1 (pod-init), and an app's process forked into the pod.
//!
//! Why a pod-init: a PID namespace needs a PID 1. Orphans inside the pod (an app's daemonised
//! child, a shell's background job) are reparented to it, not to init, so it must reap them or
//! they stay zombies; and when it dies the kernel kills everything else in the namespace, so
//! SIGKILL to the pod-init is "kill the pod". It is a role of init itself (a clone, no exec):
//! it sets the pod's hostname in the pod's new UTS namespace, starts in its own cgroup leaf,
//! and only reaps. Apps are not its children: each is forked by init into the pod's PID
//! namespace (setns on the pod-init's pidfd before the fork), so init's one loop sees their
//! exits through pidfds, and an app that dies never takes the pod-init with it.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use super::{ChildOps, CompiledFilter, PrepareError, Prepared, RealOps, caps, run_child};
use crate::pod::exec_plan::ExecPlan;

/// A running pod-init.
#[derive(Debug)]
pub struct PodInit {
    /// In init's PID namespace.
    pub pid: Pid,
    pub pidfd: OwnedFd,
}

/// An app process just forked; `status` reads EOF once `execve` succeeded, or the child's
/// error text (the child then exits 127).
#[derive(Debug)]
pub struct Spawned {
    pub pid: Pid,
    pub pidfd: OwnedFd,
    pub status: OwnedFd,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("pod {pod}: opening the cgroup {path} for the pod-init: {source}")]
    OpenCgroup {
        pod: String,
        path: String,
        source: Errno,
    },
    #[error("pod {pod}: the hostname {hostname:?} contains a NUL byte")]
    Hostname { pod: String, hostname: String },
    #[error("pod {pod}: clone3 of the pod-init: {errno}")]
    Clone { pod: String, errno: Errno },
    #[error("opening init's own PID namespace /proc/self/ns/pid: {0}")]
    OwnPidNs(Errno),
    #[error("opening /dev/null for the app's stdin: {0}")]
    DevNull(Errno),
    #[error("reading /proc/sys/kernel/cap_last_cap: {0}")]
    CapLastCap(io::Error),
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error("creating the status pipe: {0}")]
    Pipe(Errno),
    #[error("entering the pod's PID namespace: {0}")]
    EnterPidNs(Errno),
    #[error("returning to init's PID namespace (the child {pid} was killed): {errno}")]
    LeavePidNs { pid: i32, errno: Errno },
    #[error("fork: {0}")]
    Fork(Errno),
    #[error("pidfd_open of {pid}: {errno}")]
    PidfdOpen { pid: i32, errno: Errno },
}

// Not in every libc release this workspace may resolve to; the values are the kernel's ABI.
const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: every caller passes a descriptor the kernel just returned to it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Clones the pod-init: new PID, IPC and UTS namespaces, started in `cgroup` (the pod's
/// `pod-init` leaf) by CLONE_INTO_CGROUP, so it is never counted in init's group, and the
/// pidfd from the same call (no pid reuse window).
pub fn start_pod_init(pod: &str, hostname: &str, cgroup: &Path) -> Result<PodInit, SpawnError> {
    let host = CString::new(hostname).map_err(|_| SpawnError::Hostname {
        pod: pod.into(),
        hostname: hostname.into(),
    })?;
    let cg = nix::fcntl::open(
        cgroup,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| SpawnError::OpenCgroup {
        pod: pod.into(),
        path: cgroup.display().to_string(),
        source,
    })?;
    let cg = owned(cg);
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: (libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS) as u64
            | CLONE_PIDFD
            | CLONE_INTO_CGROUP,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cg.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM and with no stack behaves as fork: the child gets a copy
    // of the address space and returns here with 0. The child runs only `pod_init_main`, which
    // never returns and does not allocate.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match rc {
        -1 => Err(SpawnError::Clone {
            pod: pod.into(),
            errno: Errno::last(),
        }),
        0 => pod_init_main(&host),
        pid => Ok(PodInit {
            pid: Pid::from_raw(pid as i32),
            pidfd: owned(pidfd),
        }),
    }
}

/// Exit codes of a pod-init that could not set itself up (it has nobody to tell but its
/// status).
const POD_INIT_HOSTNAME: i32 = 10;
const POD_INIT_SIGNALS: i32 = 11;

fn pod_init_main(hostname: &CString) -> ! {
    // SAFETY: _exit ends this process without running init's destructors or atexit handlers.
    let die = |code: i32| -> ! { unsafe { libc::_exit(code) } };
    use std::os::unix::ffi::OsStrExt;
    if nix::unistd::sethostname(std::ffi::OsStr::from_bytes(hostname.as_bytes())).is_err() {
        die(POD_INIT_HOSTNAME);
    }
    // init's handlers and mask are inherited: restore the defaults (as PID 1 of its namespace
    // the pod-init ignores default-action signals from inside the pod; SIGKILL from init
    // still ends it), and keep only SIGCHLD blocked, to wait for it.
    if RealOps::new().reset_signals().is_err() {
        die(POD_INIT_SIGNALS);
    }
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    if sigprocmask(SigmaskHow::SIG_SETMASK, Some(&chld), None).is_err() {
        die(POD_INIT_SIGNALS);
    }
    // If init is gone the pod has no supervisor; end it (this matters for tests, where the
    // parent is a test process, more than in the guest, where init's death is a panic).
    // SAFETY: PR_SET_PDEATHSIG takes a signal number only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    // SAFETY: closes every inherited descriptor above stderr; this process uses none of them.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            0,
        )
    };
    loop {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        // Returns when a SIGCHLD is pending; a blocked default-ignored signal is still queued.
        let _ = chld.wait();
    }
}

/// Forks apps into pods. Holds init's own PID namespace, opened once, to return to it after
/// each fork (`/proc/self/ns/pid` keeps naming init's namespace while the namespace for
/// children is the pod's).
#[derive(Debug)]
pub struct Spawner {
    own_pid_ns: OwnedFd,
    cap_last_cap: u32,
}

impl Spawner {
    pub fn new() -> Result<Spawner, SpawnError> {
        let fd = nix::fcntl::open(
            "/proc/self/ns/pid",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(SpawnError::OwnPidNs)?;
        Ok(Spawner {
            own_pid_ns: owned(fd),
            cap_last_cap: caps::read_cap_last_cap().map_err(SpawnError::CapLastCap)?,
        })
    }

    /// Forks the plan's process into `pod`: stdin /dev/null, stdout and stderr `output`.
    /// The app's root must already be mounted (`root::mount_root`) and its cgroup created.
    pub fn spawn(
        &self,
        pod: &PodInit,
        plan: &ExecPlan,
        filter: Option<&CompiledFilter>,
        output: BorrowedFd<'_>,
    ) -> Result<Spawned, SpawnError> {
        let prepared = Prepared::new(plan, self.cap_last_cap)?;
        let null = nix::fcntl::open(
            "/dev/null",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(SpawnError::DevNull)?;
        let null = owned(null);
        let (status_r, status_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(SpawnError::Pipe)?;

        nix::sched::setns(&pod.pidfd, CloneFlags::CLONE_NEWPID).map_err(SpawnError::EnterPidNs)?;
        // SAFETY: the child runs only `child_main`, which ends in execve or _exit and never
        // returns into init's code.
        let forked = unsafe { nix::unistd::fork() };
        if let Ok(ForkResult::Child) = forked {
            drop(status_r);
            child_main(plan, &prepared, pod, filter, null, output, status_w);
        }
        let back = nix::sched::setns(&self.own_pid_ns, CloneFlags::CLONE_NEWPID);
        drop(status_w);
        let pid = match forked {
            Ok(ForkResult::Parent { child }) => child,
            Ok(ForkResult::Child) => unreachable_child(),
            Err(e) => return Err(SpawnError::Fork(e)),
        };
        if let Err(errno) = back {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(SpawnError::LeavePidNs {
                pid: pid.as_raw(),
                errno,
            });
        }
        // SAFETY: pidfd_open takes a pid and flags; our unreaped child cannot be recycled.
        let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
        if rc < 0 {
            return Err(SpawnError::PidfdOpen {
                pid: pid.as_raw(),
                errno: Errno::last(),
            });
        }
        Ok(Spawned {
            pid,
            pidfd: owned(rc as RawFd),
            status: status_r,
        })
    }
}

fn unreachable_child() -> ! {
    // SAFETY: only reachable in the forked child, which must not return into init.
    unsafe { libc::_exit(127) }
}

fn child_main(
    plan: &ExecPlan,
    prepared: &Prepared,
    pod: &PodInit,
    filter: Option<&CompiledFilter>,
    null: OwnedFd,
    output: BorrowedFd<'_>,
    status: OwnedFd,
) -> ! {
    let error = match stdio(&null, output) {
        Err(e) => format!("setting up stdin/stdout/stderr: {e}"),
        Ok(()) => {
            drop(null);
            match run_child(
                &mut RealOps::new(),
                plan,
                prepared,
                pod.pidfd.as_raw_fd(),
                filter,
            ) {
                Err(e) => e.to_string(),
                Ok(never) => match never {},
            }
        }
    };
    let mut f = std::fs::File::from(status);
    let _ = f.write_all(error.as_bytes());
    // SAFETY: _exit ends the child without running init's destructors or atexit handlers.
    unsafe { libc::_exit(127) }
}

fn stdio(null: &OwnedFd, output: BorrowedFd<'_>) -> Result<(), Errno> {
    for (from, to) in [
        (null.as_raw_fd(), 0),
        (output.as_raw_fd(), 1),
        (output.as_raw_fd(), 2),
    ] {
        if from == to {
            // dup2 onto itself keeps FD_CLOEXEC; clear it so the app keeps the descriptor.
            nix::fcntl::fcntl(
                to,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )?;
        } else {
            nix::unistd::dup2(from, to)?;
        }
    }
    Ok(())
}

/// Blocks until the child's `execve` succeeded (EOF, `Ok`) or it reported why it failed.
pub fn wait_exec_status(status: OwnedFd) -> Result<(), String> {
    let mut text = String::new();
    match std::fs::File::from(status).read_to_string(&mut text) {
        Ok(_) if text.is_empty() => Ok(()),
        Ok(_) => Err(text),
        Err(e) => Err(format!("reading the status pipe: {e}")),
    }
}
