//! The QEMU test harness: builds the images tests boot through the `builder` binary, and boots
//! them with `hostos-qemu` (the QEMU command line, QMP client and VM runner `builder run` uses
//! too), adding the test defaults: logs under `target/`, and the environment switches below.
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
pub mod fetch_images;
pub mod image_server;
pub mod pods;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use builder::{BuiltImage, build_image, build_image_with, builder_bin, kernel};
pub use config::QemuConfig;
pub use hostos_qemu::{
    Arch, DiskBus, DiskFormat, Firmware, Qmp, QmpError, Serial, Shutdown, Vm, disk, qmp, wait_until,
};

/// Every way booting, watching or building can fail: `hostos-qemu`'s error, which also has
/// variants for the `builder` commands the harness runs.
pub use hostos_qemu::Error as HarnessError;

/// The architecture this test process runs on.
pub fn host_arch() -> Arch {
    Arch::current().unwrap_or(Arch::X86_64)
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

/// For tests: presses the guest's power button and expects init's orderly power-off (the
/// request, the unmount, the power-off, QEMU exiting 0) within `step` for each line, with no
/// kernel panic and no `init: fatal` on the console; panics with the harness's error chain
/// otherwise.
pub fn power_off_in_order(vm: &mut Vm, step: Duration) {
    let fail = |e: HarnessError| -> ! { panic!("{}", e.chain()) };
    vm.powerdown().unwrap_or_else(|e| fail(e));
    for marker in [
        "init: shutdown requested by power button",
        "init: unmounting filesystems",
        "init: powering off",
    ] {
        vm.expect(marker, step).unwrap_or_else(|e| fail(e));
    }
    let status = vm.wait_exit(step).unwrap_or_else(|e| fail(e));
    assert!(status.success(), "QEMU exited with {status}");
    let console = vm.console();
    assert!(
        !console.contains("Kernel panic"),
        "kernel panicked:\n{console}"
    );
    assert!(!console.contains("init: fatal"), "init failed:\n{console}");
}

/// For tests: waits until every marker is on the console, in any order (lines of different
/// pods or fetches arrive in no fixed order); returns the console, or panics after `timeout`
/// naming the markers still missing.
pub fn wait_for_all(vm: &Vm, markers: &[&str], timeout: Duration) -> String {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let console = vm.console();
        let missing: Vec<&&str> = markers.iter().filter(|m| !console.contains(**m)).collect();
        if missing.is_empty() {
            return console;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after {timeout:?} the console still lacks {missing:?}:\n{console}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether `name` in the environment is set to `1`.
fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names_match_builder_and_qemu() {
        assert_eq!(Arch::X86_64.as_str(), "x86_64");
        assert_eq!(Arch::Aarch64.to_string(), "aarch64");
    }
}
