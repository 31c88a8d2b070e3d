//! Capabilities of an app: the bounding set dropped to the plan's mask, the user switch kept
//! from clearing what a non-root user is given, then effective/permitted/inheritable and
//! ambient set.
//!
//! Own code over `prctl` and `capset` (libc) rather than the `caps` crate: the plan already
//! carries the sets as bit masks, which is exactly what `capset` v3 takes, while `caps` works
//! in `HashSet<Capability>` and would need a conversion each way for ~60 lines of calls.

use std::io;

use nix::errno::Errno;

use super::{ChildError, ChildOps, step};
use crate::pod::exec_plan::{Caps, Ids};

pub const CAP_SYS_ADMIN: u32 = 21;
/// CAP_CHECKPOINT_RESTORE, the last one Linux 6.1 knows; used only if the kernel has no
/// `/proc/sys/kernel/cap_last_cap` (the file, not this constant, is what counts).
const CAP_LAST_CAP_FALLBACK: u32 = 40;

/// Reads the highest capability number the running kernel knows.
pub fn read_cap_last_cap() -> io::Result<u32> {
    match std::fs::read_to_string("/proc/sys/kernel/cap_last_cap") {
        Ok(s) => s.trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("/proc/sys/kernel/cap_last_cap: not a number: {s:?}"),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(CAP_LAST_CAP_FALLBACK),
        Err(e) => Err(e),
    }
}

/// The capabilities to drop from the bounding set: every one the kernel knows that is not in
/// `bounding`.
pub fn bounding_drops(bounding: u64, last_cap: u32) -> impl Iterator<Item = u32> {
    (0..=last_cap.min(63)).filter(move |c| bounding & (1 << c) == 0)
}

/// The user switch with the capability sets around it (the part of `run_child` between the
/// mounts and no_new_privs):
/// - the bounding set first, while the process is still root with CAP_SETPCAP;
/// - a non-root user who is to keep capabilities needs PR_SET_KEEPCAPS across `setresuid`,
///   which otherwise clears the permitted and effective sets (the effective set is cleared
///   anyway and raised again by `capset`);
/// - `capset` after the switch for every user, so the inheritable set is reduced too (the
///   switch leaves it alone);
/// - ambient capabilities last: they must be in permitted and inheritable.
pub fn apply(
    ops: &mut dyn ChildOps,
    caps: &Caps,
    ids: &Ids,
    last_cap: u32,
) -> Result<(), ChildError> {
    for c in bounding_drops(caps.bounding, last_cap) {
        ops.capbset_drop(c)
            .map_err(step("prctl PR_CAPBSET_DROP", c))?;
    }
    let kept = (caps.effective | caps.ambient) & caps.bounding;
    let keepcaps = ids.uid != 0 && kept != 0;
    if keepcaps {
        ops.set_keepcaps(true)
            .map_err(step("prctl", "PR_SET_KEEPCAPS 1"))?;
    }
    ops.setgroups(&ids.groups)
        .map_err(step("setgroups", format!("{:?}", ids.groups)))?;
    ops.setresgid(ids.gid).map_err(step("setresgid", ids.gid))?;
    ops.setresuid(ids.uid).map_err(step("setresuid", ids.uid))?;
    if keepcaps {
        ops.set_keepcaps(false)
            .map_err(step("prctl", "PR_SET_KEEPCAPS 0"))?;
    }
    ops.capset(caps.effective & caps.bounding, kept, kept)
        .map_err(step("capset", format!("{kept:#x}")))?;
    for c in (0..=last_cap.min(63)).filter(|c| caps.ambient & caps.bounding & (1 << c) != 0) {
        ops.ambient_raise(c)
            .map_err(step("prctl PR_CAP_AMBIENT_RAISE", c))?;
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn check(rc: libc::c_long) -> Result<(), Errno> {
    if rc < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// `capset` v3 on the calling thread: two 32-bit words per set.
pub(super) fn capset(effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let word = |m: u64, i: u32| (m >> (32 * i)) as u32;
    let data = [0, 1].map(|i| CapData {
        effective: word(effective, i),
        permitted: word(permitted, i),
        inheritable: word(inheritable, i),
    });
    // SAFETY: the header and the two data structs match the kernel's v3 layout and outlive
    // the call; the kernel only reads the data.
    check(unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    })
}

fn prctl(option: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> Result<(), Errno> {
    // SAFETY: the options used here take integer arguments only.
    let rc = unsafe { libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    check(rc.into())
}

pub(super) fn capbset_drop(cap: u32) -> Result<(), Errno> {
    prctl(libc::PR_CAPBSET_DROP, cap.into(), 0)
}

pub(super) fn set_keepcaps(on: bool) -> Result<(), Errno> {
    prctl(libc::PR_SET_KEEPCAPS, on.into(), 0)
}

pub(super) fn ambient_raise(cap: u32) -> Result<(), Errno> {
    prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
        cap.into(),
    )
}

pub(super) fn set_no_new_privs() -> Result<(), Errno> {
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0)
}
