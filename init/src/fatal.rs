//! Fatal errors and panics: log the whole chain, then power off or reboot on purpose.
//!
//! PID1 must never exit (the kernel panics when it does), so every path here ends in
//! reboot(2) or, if even that fails, in sleeping forever.

use std::error::Error;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::console::{self, Line};
use crate::shutdown::{PowerAction, RealShutdown, ShutdownOps};

/// Reboot instead of powering off after a fatal error; set from the declaration's
/// `init.on_fatal` once it is read. A static so the panic hook can see it.
static REBOOT_ON_FATAL: AtomicBool = AtomicBool::new(false);

pub fn set_fatal_action(action: PowerAction) {
    REBOOT_ON_FATAL.store(action == PowerAction::Reboot, Ordering::Relaxed);
}

fn fatal_action() -> PowerAction {
    if REBOOT_ON_FATAL.load(Ordering::Relaxed) {
        PowerAction::Reboot
    } else {
        PowerAction::PowerOff
    }
}

/// An error and all its sources, joined with ": ".
pub fn chain(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Logs `err` with its chain and powers off or reboots per the declaration.
pub fn die(err: &dyn Error) -> ! {
    // The error may predate stdio setup; without a console the reason would be lost.
    let _ = console::attach_stdio();
    console::emit(&Line::Fatal(&chain(err)));
    power_now()
}

/// Syncs and powers off or reboots at once, without the orderly shutdown: after a fatal error
/// init cannot trust its own state enough to run it.
fn power_now() -> ! {
    let action = fatal_action();
    let mut ops = RealShutdown;
    ops.sync();
    ops.say(&action.line());
    let err = ops.power(action);
    console::emit(&Line::Fatal(&chain(&err)));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Makes a panic a logged, deliberate power-off (or reboot) rather than the kernel panic that
/// PID1 exiting would cause. Runs before the abort of the `guest` profile.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| String::from("(no message)"));
        // One line, so the marker stays greppable.
        let text = format!("panic{location}: {message}").replace('\n', " ");
        console::emit(&Line::Fatal(&text));
        power_now();
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::InitError;
    use crate::mount::MountError;
    use nix::errno::Errno;

    #[test]
    fn joins_whole_chain_with_colons() {
        let err = InitError::Mount(MountError::Mount {
            fstype: "devtmpfs",
            target: "/dev",
            source: Errno::ENODEV,
        });
        assert_eq!(
            chain(&err),
            "mounting the early filesystems failed: cannot mount devtmpfs on /dev: ENODEV: No such device"
        );
    }

    #[test]
    fn single_error_has_no_separator() {
        let err = std::io::Error::other("boom");
        assert_eq!(chain(&err), "boom");
    }

    #[test]
    fn fatal_action_follows_declaration() {
        set_fatal_action(PowerAction::Reboot);
        assert_eq!(fatal_action(), PowerAction::Reboot);
        set_fatal_action(PowerAction::PowerOff);
        assert_eq!(fatal_action(), PowerAction::PowerOff);
    }
}
