use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;

use super::*;

#[test]
fn qmp_socket_dir_is_private_fresh_and_removed_after() {
    // The name the socket directory used to have: squatting it must change nothing.
    let old = std::env::temp_dir().join(format!("builder-run-{}", std::process::id()));
    std::fs::create_dir_all(&old).unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o777)).unwrap();
    let a = private_dir().unwrap();
    let b = private_dir().unwrap();
    std::fs::remove_dir(&old).unwrap();
    assert_ne!(a.path(), old);
    assert_ne!(a.path(), b.path());
    let meta = std::fs::symlink_metadata(a.path()).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
    let path = a.path().to_path_buf();
    drop(a);
    assert!(!path.exists(), "{} left behind", path.display());
}

fn shutdown(guest: bool, reason: &str) -> Shutdown {
    Shutdown {
        guest,
        reason: reason.to_string(),
    }
}

#[test]
fn only_a_guest_power_off_is_success() {
    let exit0 = ExitStatus::from_raw(0);
    assert!(outcome(exit0, Some(&shutdown(true, "guest-shutdown"))).is_ok());

    let reset = outcome(exit0, Some(&shutdown(true, "guest-reset"))).unwrap_err();
    assert!(
        reset.to_string().contains("reset instead of powering off"),
        "{reset}"
    );
    let ctrl_a_x = outcome(exit0, Some(&shutdown(false, "host-ui"))).unwrap_err();
    assert!(ctrl_a_x.to_string().contains("Ctrl-A X"), "{ctrl_a_x}");
    let silent = outcome(exit0, None).unwrap_err();
    assert!(
        silent.to_string().contains("no QMP SHUTDOWN event"),
        "{silent}"
    );

    // Killed by SIGKILL: the exit status wins even after a guest power-off.
    let killed = ExitStatus::from_raw(9);
    let err = outcome(killed, Some(&shutdown(true, "guest-shutdown"))).unwrap_err();
    assert!(err.to_string().contains("QEMU exited with"), "{err}");
}

#[test]
fn firmware_must_fit_the_arch() {
    assert_eq!(
        Firmware::Default.for_arch(Arch::Aarch64).unwrap(),
        hostos_qemu::Firmware::Uefi
    );
    assert_eq!(
        Firmware::UBoot.for_arch(Arch::Aarch64).unwrap(),
        hostos_qemu::Firmware::UBoot
    );
    assert_eq!(
        Firmware::Ovmf.for_arch(Arch::X86_64).unwrap(),
        hostos_qemu::Firmware::Uefi
    );
    for (firmware, arch) in [
        (Firmware::UBoot, Arch::X86_64),
        (Firmware::Aavmf, Arch::X86_64),
        (Firmware::Ovmf, Arch::Aarch64),
    ] {
        let err = firmware.for_arch(arch).unwrap_err().to_string();
        assert!(err.contains("does not boot"), "{err}");
    }
}
