//! A [`SeccompPlan`] compiled to a BPF program for the running architecture, in the parent
//! before the fork (the child only installs it).
//!
//! Names become numbers through the `syscalls` crate's per-arch tables, because seccompiler
//! keeps its own table private. The arches differ (aarch64 has no `open`, `fork`, `poll`...):
//! a name known on another supported arch but not this one is left out with a note; a name
//! known on none is an error. The filter checks the arch (seccompiler puts the audit-arch
//! check first), so a call made through another ABI is killed.

use std::collections::BTreeMap;
use std::str::FromStr;

use nix::errno::Errno;
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

use crate::pod::exec_plan::{SeccompMode, SeccompPlan};

/// A filter ready to install.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledFilter {
    pub program: BpfProgram,
    /// What was left out and why, for the console (`isolator ... ignored`-style lines).
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: unknown syscall {0:?} (not a Linux syscall on x86_64 or aarch64)")]
    UnknownSyscall(String),
    #[error("seccomp: the running arch {0} is not supported")]
    Arch(&'static str),
    #[error("seccomp: compiling the filter: {0}")]
    Compile(String),
}

/// The calls an allow-list always gets: without them the app could not be started (execve)
/// or could not end (exit, exit_group).
const ALWAYS_ALLOWED: &[&str] = &["execve", "exit", "exit_group"];

/// The filter an app gets when it has no seccomp isolator: a deny-list of calls that
/// administer the kernel or escape a container (modules, kexec, mounts and namespaces, clock,
/// keyring, ptrace and cross-process memory, swap, reboot, obsolete calls), close to rkt's
/// `@rkt/default-blacklist` and docker's default profile; refused calls get EPERM.
///
/// rkt itself applied its `@rkt/default-whitelist` by default. A deny-list is chosen here (the
/// issue 9 contract) because a hand-kept allow-list breaks apps on every call it misses (new
/// ones such as `clone3` or `rseq` in a newer libc, and the lists differ per arch), while what
/// matters for isolation is the short list of calls below. The app's own isolators replace it.
pub const DEFAULT_DENY: &[&str] = &[
    "_sysctl",
    "acct",
    "add_key",
    "adjtimex",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "perf_event_open",
    "personality",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "sysfs",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
];

/// The deny-list plan used when the app has no seccomp isolator.
pub fn default_plan() -> SeccompPlan {
    SeccompPlan {
        mode: SeccompMode::Deny,
        syscalls: DEFAULT_DENY.iter().map(|s| s.to_string()).collect(),
        errno: Some(Errno::EPERM as i32),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub fn running() -> Result<Arch, SeccompError> {
        match std::env::consts::ARCH {
            "x86_64" => Ok(Arch::X86_64),
            "aarch64" => Ok(Arch::Aarch64),
            other => Err(SeccompError::Arch(other)),
        }
    }

    fn number(self, name: &str) -> Option<i64> {
        match self {
            Arch::X86_64 => syscalls::x86_64::Sysno::from_str(name)
                .ok()
                .map(|s| s.id().into()),
            Arch::Aarch64 => syscalls::aarch64::Sysno::from_str(name)
                .ok()
                .map(|s| s.id().into()),
        }
    }

    fn target(self) -> TargetArch {
        match self {
            Arch::X86_64 => TargetArch::x86_64,
            Arch::Aarch64 => TargetArch::aarch64,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
}

/// Compiles for the running arch.
pub fn compile(plan: &SeccompPlan) -> Result<CompiledFilter, SeccompError> {
    compile_for(plan, Arch::running()?)
}

/// Compiles for `arch` (tests compile for both).
pub fn compile_for(plan: &SeccompPlan, arch: Arch) -> Result<CompiledFilter, SeccompError> {
    let mut notes = Vec::new();
    let mut rules = BTreeMap::new();
    let extra: &[&str] = match plan.mode {
        SeccompMode::Allow => ALWAYS_ALLOWED,
        SeccompMode::Deny => &[],
    };
    for name in plan
        .syscalls
        .iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
    {
        match arch.number(name) {
            // An empty rule list matches the call whatever its arguments.
            Some(n) => {
                rules.insert(n, Vec::new());
            }
            None if [Arch::X86_64, Arch::Aarch64]
                .iter()
                .any(|a| a.number(name).is_some()) =>
            {
                notes.push(format!("syscall {name} does not exist on {}", arch.name()));
            }
            None => return Err(SeccompError::UnknownSyscall(name.to_string())),
        }
    }
    if plan.mode == SeccompMode::Deny
        && let Some(n) = ALWAYS_ALLOWED
            .iter()
            .find_map(|n| arch.number(n).filter(|k| rules.contains_key(k)).map(|_| *n))
    {
        return Err(SeccompError::Compile(format!(
            "the deny-list refuses {n}, so the app could never start or end"
        )));
    }
    let refused = match plan.errno {
        Some(e) => SeccompAction::Errno(e.unsigned_abs()),
        None => SeccompAction::KillProcess,
    };
    let (mismatch, matched) = match plan.mode {
        SeccompMode::Allow => (refused, SeccompAction::Allow),
        SeccompMode::Deny => (SeccompAction::Allow, refused),
    };
    let filter = SeccompFilter::new(rules, mismatch, matched, arch.target())
        .map_err(|e| SeccompError::Compile(e.to_string()))?;
    let program: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| SeccompError::Compile(e.to_string()))?;
    Ok(CompiledFilter { program, notes })
}

/// `seccomp(SECCOMP_SET_MODE_FILTER)` on the calling thread. Not seccompiler's
/// `apply_filter`, which sets no_new_privs on its own: whether it is set is the plan's call.
pub(super) fn install(filter: &CompiledFilter) -> Result<(), Errno> {
    let len = u16::try_from(filter.program.len()).map_err(|_| Errno::E2BIG)?;
    let prog = libc::sock_fprog {
        len,
        // seccompiler's sock_filter is #[repr(C)] with the kernel's layout, as libc's is.
        filter: filter.program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `len` instructions that live through the call; the kernel
    // copies them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc < 0 { Err(Errno::last()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(mode: SeccompMode, names: &[&str]) -> SeccompPlan {
        SeccompPlan {
            mode,
            syscalls: names.iter().map(|s| s.to_string()).collect(),
            errno: Some(1),
        }
    }

    #[test]
    fn a_name_missing_on_aarch64_is_noted_not_refused() {
        let p = plan(SeccompMode::Deny, &["open", "mount"]);
        let arm = compile_for(&p, Arch::Aarch64).unwrap();
        assert_eq!(arm.notes, ["syscall open does not exist on aarch64"]);
        let x86 = compile_for(&p, Arch::X86_64).unwrap();
        assert!(x86.notes.is_empty());
        assert!(x86.program.len() > arm.program.len());
    }

    #[test]
    fn a_name_unknown_on_every_arch_is_an_error() {
        let e = compile_for(
            &plan(SeccompMode::Deny, &["mount", "frobnicate"]),
            Arch::X86_64,
        )
        .unwrap_err();
        assert!(matches!(e, SeccompError::UnknownSyscall(n) if n == "frobnicate"));
    }

    #[test]
    fn the_default_deny_list_compiles_on_both_arches() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let f = compile_for(&default_plan(), arch).unwrap();
            assert!(!f.program.is_empty());
        }
    }

    #[test]
    fn a_deny_list_refusing_execve_is_an_error() {
        let e = compile_for(&plan(SeccompMode::Deny, &["execve"]), Arch::X86_64).unwrap_err();
        assert!(matches!(e, SeccompError::Compile(m) if m.contains("execve")));
    }

    #[test]
    fn an_allow_list_always_allows_execve_and_exit() {
        let small = compile_for(&plan(SeccompMode::Allow, &["read"]), Arch::X86_64).unwrap();
        let with = compile_for(
            &plan(
                SeccompMode::Allow,
                &["read", "execve", "exit", "exit_group"],
            ),
            Arch::X86_64,
        )
        .unwrap();
        assert_eq!(small.program, with.program);
    }
}
