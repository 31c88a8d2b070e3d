//! What one process of an app (its main exec or an event handler) is started with: every
//! decision made before the fork, so the child only carries it out.
//!
//! `plan` builds an [`ExecPlan`] from the pod manifest, the image manifest, the declaration's
//! overrides and the rendered tree; `sys` carries it out in a forked child through the
//! recorded syscall interface. Paths inside the app are absolute in the app's view (`/proc`);
//! paths on the host are absolute in init's view.

use std::path::PathBuf;

/// The app's identity: which pod, which app, which process of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRef {
    pub pod: String,
    pub app: String,
}

/// Which process of the app a plan starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Main,
    PreStart,
    PostStop,
}

/// The root filesystem an app sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootPlan {
    /// overlayfs: `lower` read-only (the store's rendered tree), `upper` and `work` on the data
    /// partition (same filesystem, `work` empty), mounted at `target`.
    Overlay {
        lower: PathBuf,
        upper: PathBuf,
        work: PathBuf,
        target: PathBuf,
    },
    /// `readOnlyRootFS`: a read-only bind mount of `lower` at `target` (6.1's overlayfs wants
    /// two lower layers when there is no upper one).
    ReadOnlyBind { lower: PathBuf, target: PathBuf },
}

impl RootPlan {
    pub fn target(&self) -> &PathBuf {
        match self {
            RootPlan::Overlay { target, .. } | RootPlan::ReadOnlyBind { target, .. } => target,
        }
    }
}

/// One step of building the app's filesystem, in order, after the root is mounted and before
/// `pivot_root`. Every `path` is inside the app (absolute, resolved under the new root by the
/// child without following symlinks out of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountStep {
    /// A fresh filesystem: proc, sysfs, tmpfs, devpts, mqueue.
    Fs {
        fstype: &'static str,
        path: String,
        /// `MS_*` flags (nix::mount::MsFlags bits).
        flags: u64,
        data: Option<String>,
    },
    /// A bind mount of a host path (a device node, a file init wrote, a volume directory).
    Bind {
        source: PathBuf,
        path: String,
        read_only: bool,
        recursive: bool,
        /// Create the target as a file (for a file source) instead of a directory.
        file: bool,
    },
    Symlink {
        target: String,
        path: String,
    },
    /// A directory that must exist (created 0755 root-owned if missing).
    Dir {
        path: String,
    },
}

/// The user the process runs as, resolved from the image's /etc/passwd and /etc/group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the user's groups from /etc/group, then `supplementaryGIDs`.
    pub groups: Vec<u32>,
}

/// Capability sets as bit masks (bit n = capability number n, `CAP_CHOWN` = 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// The bounding set; every capability not in it is dropped from the bounding set.
    pub bounding: u64,
    /// Effective, permitted and inheritable after the user switch (the bounding set for uid 0,
    /// empty for other users).
    pub effective: u64,
    /// Raised in the ambient set (empty unless a future isolator asks).
    pub ambient: u64,
}

/// A seccomp filter by syscall names, compiled for the running arch before the fork.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompPlan {
    pub mode: SeccompMode,
    /// Syscall names as the kernel names them (`mount`, `kexec_load`).
    pub syscalls: Vec<String>,
    /// What a refused call gets: an errno value, or `None` to kill the process (SIGSYS).
    pub errno: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeccompMode {
    /// Only the listed calls are allowed.
    Allow,
    /// The listed calls are refused, everything else allowed.
    Deny,
}

/// Limits written into the app's cgroup before it joins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    /// `memory.max` in bytes.
    pub memory_max: Option<u64>,
    /// `memory.low` in bytes (`resource/memory` request).
    pub memory_low: Option<u64>,
    /// `cpu.max`: quota microseconds per 100 000 µs period (`resource/cpu` limit, millicores × 100).
    pub cpu_max_us: Option<u64>,
    /// `cpu.weight` 1..=10000 (from `os/linux/cpu-shares` or the `resource/cpu` request).
    pub cpu_weight: Option<u64>,
}

/// Everything the child does, in order: join the pod's namespaces and cgroup, new mount
/// namespace, mount `root` and `mounts`, `pivot_root`, set the hostname (pod-wide), user
/// and groups, capabilities, no_new_privs, oom_score_adj, seccomp last, `chdir`, `execve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecPlan {
    pub app: AppRef,
    pub role: Role,
    pub root: RootPlan,
    pub mounts: Vec<MountStep>,
    /// argv; `argv[0]` without `/` is looked up in the app's `PATH` inside the new root.
    pub argv: Vec<String>,
    /// The whole environment, in order, names unique.
    pub env: Vec<(String, String)>,
    /// Absolute inside the app; a missing directory fails the start.
    pub cwd: String,
    pub ids: Ids,
    pub caps: Caps,
    pub no_new_privs: bool,
    pub oom_score_adj: Option<i32>,
    pub seccomp: Option<SeccompPlan>,
    /// The app's cgroup directory (under `/sys/fs/cgroup/pods/<pod>/`), created with its
    /// limits by the parent before the fork; the child writes itself into `cgroup.procs`.
    pub cgroup: PathBuf,
    pub limits: CgroupLimits,
}
