//! The signals PID1 acts on, read through a signalfd so they join the one poll loop.

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::{AsFd, BorrowedFd};

use crate::console::ShutdownReason;

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("cannot disable the ctrl-alt-del reboot (reboot(RB_DISABLE_CAD))")]
    DisableCtrlAltDel(#[source] Errno),
    #[error("cannot block SIGCHLD, SIGTERM, SIGINT and SIGPWR")]
    BlockSignals(#[source] Errno),
    #[error("cannot create the signalfd")]
    CreateSignalfd(#[source] Errno),
    #[error("cannot read from the signalfd")]
    ReadSignalfd(#[source] Errno),
}

/// What a signal asks of init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A child changed state: reap.
    Child,
    Shutdown(ShutdownReason),
}

/// Maps a signal number to what init does about it; `None` for signals init does not handle.
pub fn event_for(signo: i32) -> Option<Event> {
    match Signal::try_from(signo).ok()? {
        Signal::SIGCHLD => Some(Event::Child),
        Signal::SIGTERM => Some(Event::Shutdown(ShutdownReason::Sigterm)),
        Signal::SIGINT => Some(Event::Shutdown(ShutdownReason::Sigint)),
        Signal::SIGPWR => Some(Event::Shutdown(ShutdownReason::Sigpwr)),
        _ => None,
    }
}

fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGPWR,
    ] {
        set.add(signal);
    }
    set
}

pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Makes ctrl-alt-del a SIGINT, blocks the handled signals and opens the signalfd.
    ///
    /// Blocking matters twice for PID1: the kernel drops signals whose action is SIG_DFL for
    /// init, but queues blocked ones, which the signalfd then reads. Children started through
    /// `std::process::Command` get an empty mask again.
    pub fn install() -> Result<Self, SignalError> {
        nix::sys::reboot::set_cad_enabled(false).map_err(SignalError::DisableCtrlAltDel)?;
        let set = handled();
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(SignalError::BlockSignals)?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(SignalError::CreateSignalfd)?;
        Ok(Self { fd })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Drains every pending signal.
    pub fn read(&mut self) -> Result<Vec<Event>, SignalError> {
        let mut events = Vec::new();
        loop {
            match self.fd.read_signal() {
                Ok(Some(info)) => {
                    let signo = i32::try_from(info.ssi_signo).unwrap_or(0);
                    events.extend(event_for(signo));
                }
                Ok(None) => return Ok(events),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(SignalError::ReadSignalfd(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_shutdown_signals_to_reasons() {
        assert_eq!(
            event_for(Signal::SIGTERM as i32),
            Some(Event::Shutdown(ShutdownReason::Sigterm))
        );
        assert_eq!(
            event_for(Signal::SIGINT as i32),
            Some(Event::Shutdown(ShutdownReason::Sigint))
        );
        assert_eq!(
            event_for(Signal::SIGPWR as i32),
            Some(Event::Shutdown(ShutdownReason::Sigpwr))
        );
        assert_eq!(event_for(Signal::SIGCHLD as i32), Some(Event::Child));
    }

    #[test]
    fn ignores_other_signals() {
        assert_eq!(event_for(Signal::SIGHUP as i32), None);
        assert_eq!(event_for(0), None);
        assert_eq!(event_for(9999), None);
    }

    #[test]
    fn handled_set_is_exactly_the_four() {
        let set = handled();
        for s in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGPWR,
        ] {
            assert!(set.contains(s));
        }
        assert_eq!(set.iter().count(), 4);
    }
}
