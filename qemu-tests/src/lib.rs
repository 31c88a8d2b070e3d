//! The QEMU test harness: boots guests, watches their serial console, drives them over QMP, and
//! builds the images they boot through the `builder` binary.
//!
//! A test reads like this:
//!
//! ```no_run
//! use std::time::Duration;
//! use qemu_tests::{Arch, Firmware, QemuConfig};
//!
//! # fn main() -> Result<(), qemu_tests::HarnessError> {
//! let image = qemu_tests::build_image("images/minimal.toml".as_ref(), Arch::X86_64)?;
//! let mut vm = image.direct_boot().name("boots_minimal").start()?;
//! vm.expect("init: ready", Duration::from_secs(60))?;
//! vm.powerdown()?;
//! vm.wait_exit(Duration::from_secs(30))?;
//! # Ok(())
//! # }
//! ```
//!
//! Every QEMU runs in its own process group, which `Drop for Vm` kills, pass or fail; the console
//! of each run is kept in `target/qemu-tests-logs/<name>-<arch>.log`.
//!
//! Environment: `QEMU_TESTS_ECHO=1` copies every console to the test's stderr as it arrives;
//! `QEMU_TESTS_KVM=1` uses KVM instead of TCG when the guest arch is the host's (nested KVM
//! fails on the development machine, so TCG is the default).
// Errors here end a test, at most once per test, and carry the console tail and context inline
// so tests can match on fields; their size costs nothing that matters.
#![allow(clippy::result_large_err)]

mod builder;
mod config;
mod console;
mod error;
pub mod qmp;
mod vm;

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

pub use builder::{BuiltImage, build_image, builder_bin, kernel};
pub use config::{DiskFormat, Firmware, QemuConfig};
pub use error::HarnessError;
pub use qmp::{Qmp, QmpError};
pub use vm::Vm;

/// A guest architecture: the same type the builder and init use (`hostdecl::Arch`), with
/// `as_str()`, `ALL`, `serial_console()` and `Display`.
pub use hostdecl::Arch;

/// The architecture this test process runs on.
pub fn host_arch() -> Arch {
    Arch::current().unwrap_or(Arch::X86_64)
}

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

/// The workspace root, found from this crate's manifest so tests work from any directory.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` if set (relative to the workspace), else
/// `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// Where console logs go: `<target>/qemu-tests-logs`.
pub fn logs_dir() -> PathBuf {
    target_dir().join("qemu-tests-logs")
}

/// Whether `name` in the environment is set to `1`.
fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
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

    #[test]
    fn arch_names_match_builder_and_qemu() {
        assert_eq!(Arch::X86_64.as_str(), "x86_64");
        assert_eq!(Arch::Aarch64.to_string(), "aarch64");
    }
}
