//! Self-test of the harness against the distribution's UEFI firmware alone (no kernel of ours):
//! console markers, the expect cursor, timeouts, QEMU exiting early, QMP, and cleanup.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use qemu_tests::{Arch, Firmware, HarnessError, QemuConfig};

/// OVMF/AAVMF print this before starting the boot option (the built-in shell, with no disks).
const BOOT_MANAGER: &str = "BdsDxe";
const SHELL_BANNER: &str = "UEFI Interactive Shell";
/// Generous: firmware under TCG on two cores shared with kernel builds.
const BOOT: Duration = Duration::from_secs(60);

fn uefi(arch: Arch, name: &str) -> QemuConfig {
    QemuConfig::new(arch)
        .firmware(Firmware::Uefi)
        .memory_mib(256)
        .name(name)
}

fn uefi_console_qmp_and_quit(arch: Arch) {
    let mut vm = uefi(arch, "selftest-uefi").start().unwrap();
    let line = vm.expect(BOOT_MANAGER, BOOT).unwrap();
    assert!(line.contains(BOOT_MANAGER), "{line:?}");
    // The cursor moved past the first match: the banner comes later on the console.
    vm.expect(SHELL_BANNER, BOOT).unwrap();
    let boot_manager_at = vm.elapsed_at(BOOT_MANAGER).unwrap();
    let banner_at = vm.last_match_at().unwrap();
    assert!(boot_manager_at <= banner_at && banner_at <= vm.since_start());
    eprintln!("{arch}: {BOOT_MANAGER} at {boot_manager_at:.1?}, shell at {banner_at:.1?}");

    // Typing reaches the guest: skip startup.nsh, then run a command at the shell prompt. The
    // shell echoes keystrokes one by one between cursor escapes, so only the command's output
    // holds the words in one piece; its line comes back cleaned of escapes and `\r`.
    vm.send("\x1b").unwrap();
    vm.expect("Shell>", BOOT).unwrap();
    vm.send("echo hi-from-the-harness\r").unwrap();
    let output = vm.expect("hi-from-the-harness", BOOT).unwrap();
    assert_eq!(output, "hi-from-the-harness");

    assert_eq!(vm.query_status().unwrap(), "running");
    assert!(vm.console().contains(SHELL_BANNER));
    assert!(vm.log_path().ends_with(format!("selftest-uefi-{arch}.log")));

    // The firmware ignores the power button; QEMU must still accept the press.
    vm.powerdown().unwrap();
    vm.quit().unwrap();
    let status = vm.wait_exit(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(vm.log_path()).unwrap();
    assert!(log.contains(BOOT_MANAGER), "log lacks the console");
}

#[test]
fn x86_64_uefi_console_markers_qmp_status_and_quit() {
    uefi_console_qmp_and_quit(Arch::X86_64);
}

#[test]
fn aarch64_uefi_console_markers_qmp_status_and_quit() {
    uefi_console_qmp_and_quit(Arch::Aarch64);
}

#[test]
fn aarch64_uboot_boots_from_bios() {
    let mut vm = QemuConfig::new(Arch::Aarch64)
        .firmware(Firmware::UBoot)
        .memory_mib(256)
        .name("selftest-uboot")
        .start()
        .unwrap();
    let line = vm.expect("U-Boot", BOOT).unwrap();
    assert!(line.starts_with("U-Boot"), "{line:?}");
}

#[test]
fn unseen_marker_times_out_with_the_console_tail() {
    let mut vm = uefi(Arch::X86_64, "selftest-timeout").start().unwrap();
    vm.expect(BOOT_MANAGER, BOOT).unwrap();
    let start = Instant::now();
    let err = vm
        .expect("this marker never appears", Duration::from_secs(2))
        .unwrap_err();
    assert!(start.elapsed() >= Duration::from_secs(2));
    assert!(matches!(err, HarnessError::Timeout { .. }), "{err}");
    let text = err.to_string();
    eprintln!("{text}");
    assert!(text.contains("\"this marker never appears\""), "{text}");
    assert!(text.contains(BOOT_MANAGER), "tail missing: {text}");
    assert!(text.contains("selftest-timeout-x86_64.log"), "{text}");
}

#[test]
fn qemu_exiting_before_the_marker_is_reported_with_its_stderr() {
    let mut vm = QemuConfig::new(Arch::X86_64)
        .name("selftest-early-exit")
        .extra_args(["-device", "no-such-device-model"])
        .start()
        .unwrap();
    let err = vm.expect("anything", BOOT).unwrap_err();
    eprintln!("{err}");
    let HarnessError::QemuExited { status, stderr, .. } = &err else {
        panic!("expected QemuExited, got: {err}");
    };
    assert!(status.is_some_and(|s| !s.success()), "{err}");
    assert!(stderr.contains("no-such-device-model"), "{err}");
}

#[test]
fn dropping_the_vm_kills_qemu() {
    let vm = uefi(Arch::X86_64, "selftest-drop").start().unwrap();
    let pid = Pid::from_raw(i32::try_from(vm.pid()).unwrap());
    assert_eq!(kill(pid, None), Ok(()), "QEMU is not running");
    drop(vm);
    // Drop reaps QEMU, so its pid is gone at once rather than left as a zombie.
    assert_eq!(kill(pid, None), Err(Errno::ESRCH));
}

#[test]
fn missing_qemu_binary_names_the_debian_package() {
    let err = QemuConfig::new(Arch::X86_64)
        .qemu_binary("/nonexistent/qemu-system-x86_64")
        .start()
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            HarnessError::MissingTool {
                package: "qemu-system-x86",
                ..
            }
        ),
        "{err}"
    );
}
