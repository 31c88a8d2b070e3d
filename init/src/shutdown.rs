//! The orderly shutdown: SIGTERM, grace period, SIGKILL, sync, unmount, sync, power off.
//!
//! The steps go through [`ShutdownOps`] so their order (and the console lines between them)
//! is pinned by a unit test against a recording double.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::MntFlags;
use nix::sys::reboot::RebootMode;
use nix::sys::signal::Signal;

use crate::console::{self, Line};
use crate::mount::parse_mountinfo;
use crate::reap::reap_zombies;

/// Where the mount table is read from before unmounting.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// How long processes get to die after SIGKILL before init unmounts anyway (a process stuck
/// in uninterruptible sleep ignores even SIGKILL).
pub const KILL_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    PowerOff,
    Reboot,
}

impl PowerAction {
    pub fn line(self) -> Line<'static> {
        match self {
            Self::PowerOff => Line::PoweringOff,
            Self::Reboot => Line::Rebooting,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    #[error("cannot send {signal} to all processes")]
    KillAll {
        signal: Signal,
        #[source]
        source: Errno,
    },
    #[error("cannot read the mount table {path}")]
    ReadMountTable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot unmount {target}")]
    Unmount {
        target: String,
        #[source]
        source: Errno,
    },
    #[error("cannot power off (reboot(RB_POWER_OFF))")]
    PowerOff(#[source] Errno),
    #[error("cannot reboot (reboot(RB_AUTOBOOT))")]
    Reboot(#[source] Errno),
}

/// The side effects of a shutdown.
pub trait ShutdownOps {
    fn say(&mut self, line: &Line<'_>);
    /// kill(-1, signal): every process but init itself.
    fn kill_all(&mut self, signal: Signal) -> Result<(), Errno>;
    /// Reaps until init has no children or `timeout` passes; true when none are left.
    fn wait_for_children(&mut self, timeout: Duration) -> bool;
    fn sync(&mut self);
    /// Mount points in mount order.
    fn mount_points(&mut self) -> Result<Vec<String>, ShutdownError>;
    fn unmount(&mut self, target: &str, detach: bool) -> Result<(), Errno>;
    /// Returns only if the kernel refused.
    fn power(&mut self, action: PowerAction) -> ShutdownError;
}

/// Runs the whole sequence (after `init: shutdown requested by ...`, which pid1 prints when
/// the request arrives, and after the apps were stopped). Returns only if the final reboot(2) failed; every earlier failure
/// is logged as a warning because stopping half-way would leave the machine running.
pub fn shutdown(ops: &mut impl ShutdownOps, grace: Duration, action: PowerAction) -> ShutdownError {
    ops.say(&Line::SendingSigterm);
    signal_all(ops, Signal::SIGTERM);
    // Stopped processes cannot act on SIGTERM until continued.
    signal_all(ops, Signal::SIGCONT);
    if !ops.wait_for_children(grace) {
        ops.say(&Line::SendingSigkill);
        signal_all(ops, Signal::SIGKILL);
        ops.wait_for_children(KILL_WAIT);
    }
    ops.say(&Line::Syncing);
    ops.sync();
    ops.say(&Line::Unmounting);
    match ops.mount_points() {
        Ok(points) => unmount_all(ops, &points),
        Err(e) => ops.say(&Line::Warning(&crate::fatal::chain(&e))),
    }
    // Unmounting already wrote back what it could; this catches anything still busy.
    ops.sync();
    ops.say(&action.line());
    ops.power(action)
}

fn signal_all(ops: &mut impl ShutdownOps, signal: Signal) {
    match ops.kill_all(signal) {
        // No process besides init: nothing to signal.
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(source) => {
            let e = ShutdownError::KillAll { signal, source };
            ops.say(&Line::Warning(&crate::fatal::chain(&e)));
        }
    }
}

/// The order to unmount `points` (as listed in mountinfo): newest first, never the root.
pub fn unmount_order(points: &[String]) -> Vec<&str> {
    points
        .iter()
        .rev()
        .map(String::as_str)
        .filter(|p| *p != "/")
        .collect()
}

fn unmount_all(ops: &mut impl ShutdownOps, points: &[String]) {
    for target in unmount_order(points) {
        let result = match ops.unmount(target, false) {
            // Something still holds it open (init's own console on /dev, a process in D
            // state): detach it so the filesystem goes away once the last user does.
            Err(Errno::EBUSY) => ops.unmount(target, true),
            other => other,
        };
        match result {
            // Already gone with a detached parent.
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(source) => {
                let e = ShutdownError::Unmount {
                    target: target.to_owned(),
                    source,
                };
                ops.say(&Line::Warning(&crate::fatal::chain(&e)));
            }
        }
    }
}

/// The real system.
pub struct RealShutdown;

impl ShutdownOps for RealShutdown {
    fn say(&mut self, line: &Line<'_>) {
        console::emit(line);
    }

    fn kill_all(&mut self, signal: Signal) -> Result<(), Errno> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), signal)
    }

    fn wait_for_children(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match reap_zombies() {
                Ok(reaped) if !reaped.children_left => return true,
                Ok(_) => {}
                Err(e) => {
                    console::warn(&crate::fatal::chain(&e));
                    return false;
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Polling keeps this independent of the signalfd; shutdown is not a hot path.
            std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
        }
    }

    fn sync(&mut self) {
        nix::unistd::sync();
    }

    fn mount_points(&mut self) -> Result<Vec<String>, ShutdownError> {
        std::fs::read_to_string(MOUNTINFO)
            .map(|text| parse_mountinfo(&text))
            .map_err(|source| ShutdownError::ReadMountTable {
                path: MOUNTINFO.into(),
                source,
            })
    }

    fn unmount(&mut self, target: &str, detach: bool) -> Result<(), Errno> {
        let flags = if detach {
            MntFlags::MNT_DETACH
        } else {
            MntFlags::empty()
        };
        nix::mount::umount2(target, flags)
    }

    fn power(&mut self, action: PowerAction) -> ShutdownError {
        match action {
            PowerAction::PowerOff => match nix::sys::reboot::reboot(RebootMode::RB_POWER_OFF) {
                Err(e) => ShutdownError::PowerOff(e),
                Ok(never) => match never {},
            },
            PowerAction::Reboot => match nix::sys::reboot::reboot(RebootMode::RB_AUTOBOOT) {
                Err(e) => ShutdownError::Reboot(e),
                Ok(never) => match never {},
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Step {
        Say(String),
        Kill(Signal),
        Wait(Duration),
        Sync,
        Unmount(String, bool),
        Power(PowerAction),
    }

    struct Recorder {
        steps: Vec<Step>,
        /// Answers for successive wait_for_children calls.
        children_gone: Vec<bool>,
        mounts: Vec<String>,
        busy: Vec<&'static str>,
    }

    impl Recorder {
        fn new(children_gone: Vec<bool>) -> Self {
            Self {
                steps: Vec::new(),
                children_gone,
                mounts: ["/", "/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup"]
                    .map(String::from)
                    .to_vec(),
                busy: Vec::new(),
            }
        }
    }

    impl ShutdownOps for Recorder {
        fn say(&mut self, line: &Line<'_>) {
            self.steps.push(Step::Say(line.to_string()));
        }
        fn kill_all(&mut self, signal: Signal) -> Result<(), Errno> {
            self.steps.push(Step::Kill(signal));
            Ok(())
        }
        fn wait_for_children(&mut self, timeout: Duration) -> bool {
            self.steps.push(Step::Wait(timeout));
            if self.children_gone.is_empty() {
                true
            } else {
                self.children_gone.remove(0)
            }
        }
        fn sync(&mut self) {
            self.steps.push(Step::Sync);
        }
        fn mount_points(&mut self) -> Result<Vec<String>, ShutdownError> {
            Ok(self.mounts.clone())
        }
        fn unmount(&mut self, target: &str, detach: bool) -> Result<(), Errno> {
            self.steps.push(Step::Unmount(target.to_owned(), detach));
            if !detach && self.busy.contains(&target) {
                Err(Errno::EBUSY)
            } else {
                Ok(())
            }
        }
        fn power(&mut self, action: PowerAction) -> ShutdownError {
            self.steps.push(Step::Power(action));
            ShutdownError::PowerOff(Errno::EPERM)
        }
    }

    fn say(text: &str) -> Step {
        Step::Say(text.to_owned())
    }

    fn unmounts(steps: &[Step]) -> Vec<(String, bool)> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Unmount(t, d) => Some((t.clone(), *d)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn runs_the_sequence_in_order_when_processes_exit_in_time() {
        let mut rec = Recorder::new(vec![true]);
        let grace = Duration::from_secs(10);
        shutdown(&mut rec, grace, PowerAction::PowerOff);
        let mut expected = vec![
            say("init: sending SIGTERM to all processes"),
            Step::Kill(Signal::SIGTERM),
            Step::Kill(Signal::SIGCONT),
            Step::Wait(grace),
            say("init: syncing filesystems"),
            Step::Sync,
            say("init: unmounting filesystems"),
        ];
        for target in ["/sys/fs/cgroup", "/sys", "/dev/pts", "/dev", "/proc"] {
            expected.push(Step::Unmount(target.into(), false));
        }
        expected.extend([
            Step::Sync,
            say("init: powering off"),
            Step::Power(PowerAction::PowerOff),
        ]);
        assert_eq!(rec.steps, expected);
    }

    #[test]
    fn sends_sigkill_only_after_grace_period_runs_out() {
        let mut rec = Recorder::new(vec![false, true]);
        shutdown(&mut rec, Duration::from_secs(3), PowerAction::PowerOff);
        assert_eq!(
            rec.steps[..8],
            [
                say("init: sending SIGTERM to all processes"),
                Step::Kill(Signal::SIGTERM),
                Step::Kill(Signal::SIGCONT),
                Step::Wait(Duration::from_secs(3)),
                say("init: sending SIGKILL to all processes"),
                Step::Kill(Signal::SIGKILL),
                Step::Wait(KILL_WAIT),
                say("init: syncing filesystems"),
            ]
        );
    }

    #[test]
    fn never_sends_sigkill_when_everything_exited() {
        let mut rec = Recorder::new(vec![true]);
        shutdown(&mut rec, Duration::ZERO, PowerAction::Reboot);
        assert!(!rec.steps.contains(&Step::Kill(Signal::SIGKILL)));
        assert_eq!(rec.steps.last(), Some(&Step::Power(PowerAction::Reboot)));
        assert!(rec.steps.contains(&say("init: rebooting")));
    }

    #[test]
    fn detaches_busy_mounts_and_never_unmounts_root() {
        let mut rec = Recorder::new(vec![true]);
        rec.busy = vec!["/dev"];
        shutdown(&mut rec, Duration::ZERO, PowerAction::PowerOff);
        let done = unmounts(&rec.steps);
        assert!(done.contains(&("/dev".into(), false)));
        assert!(done.contains(&("/dev".into(), true)));
        assert!(!done.iter().any(|(t, _)| t == "/"));
        // No warning: the detach succeeded.
        assert!(
            !rec.steps
                .iter()
                .any(|s| matches!(s, Step::Say(t) if t.contains("warning")))
        );
    }

    #[test]
    fn unmounts_stacked_mounts_newest_first() {
        let points: Vec<String> = ["/", "/run", "/run/x", "/run"].map(String::from).to_vec();
        assert_eq!(unmount_order(&points), ["/run", "/run/x", "/run"]);
    }
}
