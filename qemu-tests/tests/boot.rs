//! Boot tests: our kernel (built from kernel-config/) and our init, on both architectures,
//! booted directly under QEMU; init's console markers are the contract (init/src/console.rs).

use std::path::Path;
use std::time::Duration;

use qemu_tests::{Arch, build_image};

/// Generous for TCG on a loaded 2-core machine; a healthy boot takes a few seconds.
const BOOT: Duration = Duration::from_secs(180);
const STEP: Duration = Duration::from_secs(60);

fn boot_and_power_off(arch: Arch) {
    let image = build_image(Path::new("images/hello.toml"), arch)
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    let mut vm = image
        .direct_boot()
        .cpus(2)
        .name("hello-powerdown")
        .start()
        .unwrap_or_else(|e| panic!("{}", e.chain()));

    let banner = vm
        .expect(
            &format!(
                "init: hostos-init {} ({arch}) started",
                env!("CARGO_PKG_VERSION")
            ),
            BOOT,
        )
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    assert!(banner.contains(" s after kernel start"), "{banner}");
    let banner_at = vm.last_match_at().unwrap_or_default();
    vm.expect("init: hostname set to hello", STEP)
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    vm.expect("init: watching /dev/input/event", STEP)
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    vm.expect("init: ready", STEP)
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    eprintln!(
        "{arch}: QEMU start to init banner {:.2} s: {banner}",
        banner_at.as_secs_f64()
    );

    vm.powerdown().unwrap_or_else(|e| panic!("{}", e.chain()));
    for marker in [
        "init: shutdown requested by power button",
        "init: sending SIGTERM to all processes",
        "init: syncing filesystems",
        "init: unmounting filesystems",
        "init: powering off",
    ] {
        vm.expect(marker, STEP)
            .unwrap_or_else(|e| panic!("{}", e.chain()));
    }
    let status = vm
        .wait_exit(STEP)
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    assert!(status.success(), "QEMU exited with {status}");
    let console = vm.console();
    assert!(
        !console.contains("Kernel panic"),
        "kernel panicked:\n{console}"
    );
    assert!(
        !console.contains("init: fatal"),
        "init reported a fatal error:\n{console}"
    );
}

#[test]
fn x86_64_boots_our_kernel_into_init_and_powers_off_on_the_power_button() {
    boot_and_power_off(Arch::X86_64);
}

#[test]
fn aarch64_boots_our_kernel_into_init_and_powers_off_on_the_power_button() {
    boot_and_power_off(Arch::Aarch64);
}
