//! appc isolators into what the kernel is told: capability masks, no_new_privs, oom_score_adj,
//! a seccomp plan and cgroup limits. What is not implemented is returned by name, so the
//! caller reports it (the spec lets an executor ignore an isolator only if it says so).

use aci::manifest::{Isolator, Resource};

use super::PlanError;
use crate::pod::exec_plan::{Caps, CgroupLimits, SeccompMode, SeccompPlan};

/// Linux 6.1's capabilities, by number (`include/uapi/linux/capability.h`).
pub const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// appc's default set (spec `ace.md`): what an app keeps unless an isolator says otherwise.
pub const APPC_DEFAULT_CAPS: [&str; 14] = [
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETUID",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETFCAP",
    "CAP_SYS_CHROOT",
];

/// The bit of a capability name (`CAP_` optional, any case).
pub fn cap_bit(name: &str) -> Option<u64> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    CAPABILITIES
        .iter()
        .position(|c| *c == full)
        .map(|i| 1u64 << i)
}

fn mask(who: &str, names: &[String]) -> Result<u64, PlanError> {
    names.iter().try_fold(0u64, |m, n| {
        cap_bit(n)
            .map(|b| m | b)
            .ok_or_else(|| PlanError::Isolator {
                who: who.to_owned(),
                name: "os/linux/capabilities".into(),
                reason: format!("{n:?} is not a Linux 6.1 capability"),
            })
    })
}

pub fn default_caps_mask() -> u64 {
    APPC_DEFAULT_CAPS
        .iter()
        .filter_map(|c| cap_bit(c))
        .fold(0, |m, b| m | b)
}

/// errno names a seccomp isolator may give, and their numbers (the same on x86_64 and arm64).
const ERRNOS: &[(&str, i32)] = &[
    ("EPERM", 1),
    ("ENOENT", 2),
    ("EINTR", 4),
    ("EIO", 5),
    ("ENXIO", 6),
    ("E2BIG", 7),
    ("EBADF", 9),
    ("EAGAIN", 11),
    ("ENOMEM", 12),
    ("EACCES", 13),
    ("EFAULT", 14),
    ("EBUSY", 16),
    ("EEXIST", 17),
    ("ENODEV", 19),
    ("EINVAL", 22),
    ("ENOSPC", 28),
    ("EROFS", 30),
    ("ENOSYS", 38),
    ("EOPNOTSUPP", 95),
];

/// What the isolators of one app (bounded by its pod's) come to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The bounding set; effective for uid 0 is decided by the caller.
    pub bounding: u64,
    pub no_new_privs: bool,
    pub oom_score_adj: Option<i32>,
    /// `None`: the default filter (the caller takes `sys::seccomp::default_plan`).
    pub seccomp: Option<SeccompPlan>,
    pub limits: CgroupLimits,
    /// `(isolator name, why it is not applied)`.
    pub ignored: Vec<(String, String)>,
}

/// Applies `app` isolators, then `pod` ones as bounds: a pod memory/cpu limit caps the app's.
pub fn apply(who: &str, app: &[Isolator], pod: &[Isolator]) -> Result<Applied, PlanError> {
    let mut out = Applied {
        bounding: default_caps_mask(),
        no_new_privs: false,
        oom_score_adj: None,
        seccomp: None,
        limits: CgroupLimits::default(),
        ignored: Vec::new(),
    };
    for iso in app {
        one(who, iso, &mut out)?;
    }
    let mut bounds = Applied {
        limits: CgroupLimits::default(),
        ..out.clone()
    };
    for iso in pod {
        match iso {
            Isolator::ResourceMemory(_) | Isolator::ResourceCpu(_) => one(who, iso, &mut bounds)?,
            other => out.ignored.push((
                other.name().to_string(),
                "only app-level isolators of this kind are applied".into(),
            )),
        }
    }
    out.limits.memory_max = min_some(out.limits.memory_max, bounds.limits.memory_max);
    out.limits.cpu_max_us = min_some(out.limits.cpu_max_us, bounds.limits.cpu_max_us);
    Ok(out)
}

fn min_some(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn quantity_bytes(
    who: &str,
    name: &str,
    q: Option<&aci::manifest::Quantity>,
) -> Result<Option<u64>, PlanError> {
    q.map(|q| {
        q.to_units_ceil().ok_or_else(|| PlanError::Isolator {
            who: who.to_owned(),
            name: name.to_owned(),
            reason: format!("{} is not a size in bytes", q.as_str()),
        })
    })
    .transpose()
}

fn one(who: &str, iso: &Isolator, out: &mut Applied) -> Result<(), PlanError> {
    let name = iso.name().to_string();
    match iso {
        Isolator::ResourceMemory(Resource { request, limit, .. }) => {
            out.limits.memory_max = quantity_bytes(who, &name, limit.as_ref())?;
            out.limits.memory_low = quantity_bytes(who, &name, request.as_ref())?;
        }
        Isolator::ResourceCpu(Resource { request, limit, .. }) => {
            // cpu.max "<quota> 100000": millicores × 100 µs per 100 ms period.
            if let Some(q) = limit {
                let milli = q.to_milli_ceil().ok_or_else(|| PlanError::Isolator {
                    who: who.to_owned(),
                    name: name.clone(),
                    reason: format!("{} is not a number of cores", q.as_str()),
                })?;
                out.limits.cpu_max_us = Some(milli.saturating_mul(100).max(1000));
            }
            // A request (appc: defaults to the limit) becomes a weight relative to one core
            // (1000m = weight 100, cgroup v2's default).
            if let Some(q) = request.as_ref().or(limit.as_ref())
                && let Some(milli) = q.to_milli_ceil()
            {
                out.limits.cpu_weight = Some((milli / 10).clamp(1, 10_000));
            }
        }
        Isolator::CapabilitiesRetainSet(set) => out.bounding = mask(who, &set.set)?,
        Isolator::CapabilitiesRemoveSet(set) => {
            out.bounding = default_caps_mask() & !mask(who, &set.set)?;
        }
        Isolator::NoNewPrivileges(b) => out.no_new_privs = *b,
        Isolator::OomScoreAdj(n) => out.oom_score_adj = i32::try_from(*n).ok(),
        Isolator::CpuShares(shares) => {
            // systemd's conversion of cgroup v1 shares to v2 weight.
            let s = u64::try_from(*shares).unwrap_or(2).clamp(2, 262_144);
            out.limits.cpu_weight = Some(1 + ((s - 2) * 9999) / 262_142);
        }
        Isolator::SeccompRetainSet(set) | Isolator::SeccompRemoveSet(set) => {
            let retain = matches!(iso, Isolator::SeccompRetainSet(_));
            let errno = match set.errno.as_deref().filter(|e| !e.is_empty()) {
                None => None,
                Some(e) => Some(
                    ERRNOS
                        .iter()
                        .find(|(n, _)| *n == e)
                        .map(|(_, v)| *v)
                        .ok_or_else(|| PlanError::Isolator {
                            who: who.to_owned(),
                            name: name.clone(),
                            reason: format!("errno {e:?} is not one this executor knows"),
                        })?,
                ),
            };
            let all = set.set.iter().any(|s| s == "@appc.io/all");
            let empty = set.set.iter().any(|s| s == "@appc.io/empty");
            let syscalls: Vec<String> = set
                .set
                .iter()
                .filter(|s| !s.starts_with('@'))
                .cloned()
                .collect();
            out.seccomp = Some(if retain && all {
                // Everything retained: a deny list of nothing.
                SeccompPlan {
                    mode: SeccompMode::Deny,
                    syscalls: Vec::new(),
                    errno,
                }
            } else if retain {
                SeccompPlan {
                    mode: SeccompMode::Allow,
                    syscalls,
                    errno,
                }
            } else if empty && syscalls.is_empty() {
                SeccompPlan {
                    mode: SeccompMode::Deny,
                    syscalls: Vec::new(),
                    errno,
                }
            } else {
                SeccompPlan {
                    mode: SeccompMode::Deny,
                    syscalls,
                    errno,
                }
            });
        }
        Isolator::ResourceBlockBandwidth(_)
        | Isolator::ResourceBlockIops(_)
        | Isolator::ResourceNetworkBandwidth(_) => out.ignored.push((
            name,
            "not implemented (no io or network controller limits yet)".into(),
        )),
        Isolator::SelinuxContext(_) | Isolator::ApparmorProfile(_) => out
            .ignored
            .push((name, "the kernel has no SELinux or AppArmor".into())),
        Isolator::Sysctl(_) => out.ignored.push((
            name,
            "not implemented (pods share the host network namespace)".into(),
        )),
        Isolator::Other { .. } => out.ignored.push((name, "unknown to this executor".into())),
    }
    Ok(())
}

/// Effective/permitted/inheritable for the user: the bounding set for root, nothing otherwise.
pub fn caps_for(uid: u32, bounding: u64) -> Caps {
    Caps {
        bounding,
        effective: if uid == 0 { bounding } else { 0 },
        ambient: 0,
    }
}
