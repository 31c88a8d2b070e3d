//! Reaping: PID1 inherits every orphan and must collect every zombie.

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

#[derive(Debug, thiserror::Error)]
pub enum ReapError {
    #[error("cannot wait for exited children (waitpid(-1, WNOHANG))")]
    Wait(#[source] Errno),
}

/// The result of one reaping pass.
#[derive(Debug, Default)]
pub struct Reaped {
    /// Children collected in this pass; the supervisor will want them once pods exist.
    pub statuses: Vec<WaitStatus>,
    /// Whether init still has children.
    pub children_left: bool,
}

/// Collects every zombie child without blocking.
pub fn reap_zombies() -> Result<Reaped, ReapError> {
    let mut reaped = Reaped::default();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {
                reaped.children_left = true;
                return Ok(reaped);
            }
            Ok(status) => reaped.statuses.push(status),
            Err(Errno::ECHILD) => return Ok(reaped),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(ReapError::Wait(e)),
        }
    }
}
