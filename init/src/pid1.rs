//! The PID1 lifecycle: bring the host up, wait for events, shut down in order.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::time::{ClockId, clock_gettime};

use crate::console::{self, Line, ShutdownReason};
use crate::decl::{self, Settings};
use crate::error::InitError;
use crate::fatal;
use crate::hostname;
use crate::mount::{self, EARLY_MOUNTS, RealMountOps};
use crate::power_button::{Activity, INPUT_DIR, PowerButtons};
use crate::reap;
use crate::shutdown::{self, PowerAction, RealShutdown};
use crate::signals::{Event, Signals};
use crate::storage::{self, RealStorage};

/// How often /dev/input is scanned again while drivers may still be probing, and for how long.
const RESCAN_INTERVAL: Duration = Duration::from_millis(250);
const RESCAN_WINDOW: Duration = Duration::from_secs(10);

/// Refuses to run unless this process is PID 1: everything below remounts and powers off the
/// machine it runs on.
pub fn check_pid1() -> Result<(), InitError> {
    let pid = nix::unistd::getpid().as_raw();
    if pid == 1 {
        Ok(())
    } else {
        Err(InitError::NotPid1 { pid })
    }
}

/// Runs init. Never returns: every way out is a power-off or a reboot.
pub fn run() -> ! {
    fatal::install_panic_hook();
    let started = Instant::now();
    let boottime = clock_gettime(ClockId::CLOCK_BOOTTIME).ok();
    let error = match boot(started, boottime) {
        Ok(mut host) => host.serve(),
        Err(e) => e,
    };
    fatal::die(&error)
}

/// The state of a running host.
struct Host {
    settings: Settings,
    signals: Signals,
    buttons: PowerButtons,
    started: Instant,
    next_scan: Option<Instant>,
}

fn boot(started: Instant, boottime: Option<nix::sys::time::TimeSpec>) -> Result<Host, InitError> {
    let outcomes = mount::mount_all(&mut RealMountOps, EARLY_MOUNTS)?;
    console::attach_stdio()?;
    let boottime_ms = boottime.map_or(0, |t| {
        let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
        let millis = u64::try_from(t.tv_nsec() / 1_000_000).unwrap_or(0);
        secs.saturating_mul(1000).saturating_add(millis)
    });
    console::emit(&Line::Started {
        version: env!("CARGO_PKG_VERSION"),
        arch: std::env::consts::ARCH,
        boottime_ms,
    });
    for (target, outcome) in outcomes {
        if outcome == mount::Outcome::AlreadyMounted {
            console::warn(&format!("{target} was already mounted; keeping it"));
        }
    }

    let loaded = decl::load(Path::new(hostdecl::RENDERED_PATH))?;
    fatal::set_fatal_action(loaded.settings.on_fatal);
    if loaded.defaulted {
        console::warn(&format!(
            "no host declaration at {}; using defaults (hostname {})",
            hostdecl::RENDERED_PATH,
            loaded.settings.hostname
        ));
    }
    let settings = loaded.settings;

    hostname::set_hostname(&settings.hostname)?;
    console::emit(&Line::HostnameSet(&settings.hostname));

    // After the declaration, so a disk that fails ends the boot per its `on_fatal`. The
    // error is fatal on its own terms: its chain starts with the part of the disk at fault
    // (`payload /dev/vda2: dm-verity ...`).
    if let Err(e) = storage::setup_from_cmdline(&mut RealStorage::default()) {
        fatal::die(&e);
    }

    let signals = Signals::install()?;
    let mut buttons = PowerButtons::new(INPUT_DIR);
    if let Err(e) = buttons.scan() {
        console::warn(&fatal::chain(&e));
    }
    console::emit(&Line::Ready);
    Ok(Host {
        settings,
        signals,
        buttons,
        started,
        next_scan: Some(Instant::now() + RESCAN_INTERVAL),
    })
}

impl Host {
    /// The event loop. Returns only the error that ends it; a shutdown never returns unless
    /// the final reboot(2) fails.
    fn serve(&mut self) -> InitError {
        loop {
            let (signal_ready, ready_devices) = match self.wait() {
                Ok(ready) => ready,
                Err(e) => return e,
            };
            if signal_ready {
                let events = match self.signals.read() {
                    Ok(events) => events,
                    Err(e) => return e.into(),
                };
                for event in events {
                    match event {
                        Event::Child => reap_and_log(),
                        Event::Shutdown(reason) => return self.shutdown(&reason),
                    }
                }
            }
            // Highest index first: a device that went away is removed from the list.
            for index in ready_devices.into_iter().rev() {
                match self.buttons.read(index) {
                    Ok(Activity::Pressed(name)) => {
                        return self.shutdown(&ShutdownReason::PowerButton(name));
                    }
                    Ok(Activity::Nothing | Activity::Gone) => {}
                    Err(e) => console::warn(&fatal::chain(&e)),
                }
            }
            self.rescan_if_due();
        }
    }

    /// Polls the signalfd and the input devices; returns whether the signalfd is readable and
    /// the indexes of the readable devices.
    fn wait(&mut self) -> Result<(bool, Vec<usize>), InitError> {
        let timeout = match self.next_scan {
            Some(at) => {
                let ms = at.saturating_duration_since(Instant::now()).as_millis();
                PollTimeout::from(u16::try_from(ms).unwrap_or(u16::MAX))
            }
            None => PollTimeout::NONE,
        };
        let mut fds = Vec::with_capacity(1 + self.buttons.len());
        fds.push(PollFd::new(self.signals.fd(), PollFlags::POLLIN));
        fds.extend(
            self.buttons
                .fds()
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
        );
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Ok((false, Vec::new())),
            Err(e) => return Err(InitError::Poll(e)),
        }
        let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
        let signal_ready = fds.first().is_some_and(ready);
        let devices = fds
            .iter()
            .skip(1)
            .enumerate()
            .filter(|(_, fd)| ready(fd))
            .map(|(index, _)| index)
            .collect();
        Ok((signal_ready, devices))
    }

    fn rescan_if_due(&mut self) {
        let Some(at) = self.next_scan else {
            return;
        };
        let now = Instant::now();
        if now < at {
            return;
        }
        if let Err(e) = self.buttons.scan() {
            console::warn(&fatal::chain(&e));
        }
        self.next_scan =
            (now.duration_since(self.started) < RESCAN_WINDOW).then(|| now + RESCAN_INTERVAL);
    }

    fn shutdown(&mut self, reason: &ShutdownReason) -> InitError {
        shutdown::shutdown(
            &mut RealShutdown,
            reason,
            self.settings.shutdown_grace,
            PowerAction::PowerOff,
        )
        .into()
    }
}

fn reap_and_log() {
    // Nothing supervises children yet; collecting them is all that is owed.
    if let Err(e) = reap::reap_zombies() {
        console::warn(&fatal::chain(&e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_run_unless_pid1() {
        // The test runner is never PID 1.
        let err = check_pid1().expect_err("not pid 1");
        assert!(matches!(err, InitError::NotPid1 { .. }));
        assert!(err.to_string().starts_with("refusing to run as process "));
    }
}
