//! The runner against real OVMF: the UEFI shell runs a `startup.nsh` from a FAT disk (QEMU's
//! vvfat over a temporary directory) that powers off or resets, and the `SHUTDOWN` event QMP
//! reports tells the two apart, as `builder run`'s exit status does.

use std::time::Duration;

use hostos_qemu::{Arch, DiskFormat, Firmware, QemuConfig, Vm};

/// Firmware under TCG on two cores shared with kernel builds.
const BOOT: Duration = Duration::from_secs(120);

fn boot_shell_script(script: &str, name: &str) -> (Vm, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("startup.nsh"), script).unwrap();
    let mut vm = QemuConfig::new(Arch::X86_64)
        .firmware(Firmware::Uefi)
        .memory_mib(256)
        .disk_snapshot(format!("fat:16:{}", dir.path().display()), DiskFormat::Raw)
        .name(name)
        .start()
        .unwrap();
    // Any key but Esc skips the shell's five-second countdown before startup.nsh.
    vm.expect("startup.nsh", BOOT).unwrap();
    vm.send("\r").unwrap();
    // Connected before the guest acts, so the SHUTDOWN event is seen.
    assert_eq!(vm.query_status().unwrap(), "running");
    (vm, dir)
}

#[test]
fn a_guest_power_off_is_reported_as_guest_shutdown() {
    let (mut vm, _dir) = boot_shell_script("echo powering-off-now\r\nreset -s\r\n", "poweroff");
    vm.expect("powering-off-now", BOOT).unwrap();
    let status = vm.wait_exit(BOOT).unwrap();
    assert!(status.success(), "{status}");
    let shutdown = vm.shutdown().expect("no SHUTDOWN event").clone();
    assert!(shutdown.is_guest_poweroff(), "{shutdown:?}");
}

#[test]
fn a_guest_reset_is_not_a_power_off() {
    let (mut vm, _dir) = boot_shell_script("echo resetting-now\r\nreset\r\n", "reset");
    vm.expect("resetting-now", BOOT).unwrap();
    // -no-reboot: QEMU exits 0 on a reset too, which is why the event is what counts.
    let status = vm.wait_exit(BOOT).unwrap();
    assert!(status.success(), "{status}");
    let shutdown = vm.shutdown().expect("no SHUTDOWN event").clone();
    assert!(!shutdown.is_guest_poweroff(), "{shutdown:?}");
    assert_eq!(shutdown.reason, "guest-reset");
    assert!(shutdown.guest);
}
