//! QEMU as this project runs it, shared by `builder run` and `qemu-tests` so that what the tests
//! boot is what users boot: the command line per arch, machine and firmware ([`QemuConfig`],
//! [`CommandLine`]), a QMP client ([`Qmp`], [`Shutdown`]), a runner that owns a QEMU
//! process and watches its console ([`Vm`]), and sparse disk copies to boot ([`disk`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use hostos_qemu::{Arch, DiskFormat, Firmware, QemuConfig};
//!
//! # fn main() -> Result<(), hostos_qemu::Error> {
//! let mut vm = QemuConfig::new(Arch::X86_64)
//!     .firmware(Firmware::Uefi)
//!     .disk_snapshot("out/hello-x86_64.img", DiskFormat::Raw)
//!     .start()?;
//! vm.expect("init: ready", Duration::from_secs(60))?;
//! vm.powerdown()?;
//! vm.wait_exit(Duration::from_secs(30))?;
//! # Ok(())
//! # }
//! ```
// Errors here end a run, at most once, and carry the console tail and context inline so
// callers can match on fields; their size costs nothing that matters.
#![allow(clippy::result_large_err)]

mod config;
mod console;
pub mod disk;
mod error;
mod fdt;
pub mod firmware;
pub mod qmp;
mod vm;

use std::thread;
use std::time::{Duration, Instant};

pub use config::{CommandLine, DiskBus, DiskFormat, Firmware, QemuConfig, Serial};
pub use error::Error;
pub use fdt::FdtError;
pub use qmp::{Qmp, QmpError, Shutdown};
pub use vm::{Vm, die_with_parent};

/// A guest architecture: the type the builder and init use, with `as_str()`, `ALL`,
/// `serial_console()` and `Display`.
pub use hostdecl::Arch;

/// Calls `f` every `poll` until it returns `Some` or `deadline` passes; `f` always runs at least
/// once, and once more at the deadline, so a condition that became true late is not missed.
pub fn wait_until<T>(
    deadline: Instant,
    poll: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    loop {
        if let Some(value) = f() {
            return Some(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        thread::sleep(poll.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_returns_the_first_value_and_gives_up_at_the_deadline() {
        let mut calls = 0;
        let got = wait_until(
            Instant::now() + Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                calls += 1;
                (calls == 3).then_some(calls)
            },
        );
        assert_eq!(got, Some(3));

        let start = Instant::now();
        let never: Option<()> = wait_until(
            start + Duration::from_millis(50),
            Duration::from_millis(10),
            || None,
        );
        assert_eq!(never, None);
        assert!(start.elapsed() >= Duration::from_millis(50));
    }
}
