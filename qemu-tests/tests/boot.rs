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

/// A malformed declaration is fatal: init prints the whole error chain and powers off on
/// purpose instead of running half-configured (or panicking the kernel by exiting).
///
/// The kernel unpacks concatenated initramfs archives in order, later files replacing earlier
/// ones, so appending a second archive (made by GNU cpio) replaces the rendered declaration.
/// This is also how an operator would patch an image's initramfs by hand.
#[test]
fn x86_64_malformed_declaration_is_fatal_and_powers_off_on_purpose() {
    let arch = Arch::X86_64;
    let image = build_image(Path::new("images/hello.toml"), arch)
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("root/etc/hostos")).unwrap();
    std::fs::write(
        dir.path().join("root/etc/hostos/host.toml"),
        "name = [unclosed\n",
    )
    .unwrap();
    let overlay = std::process::Command::new("sh")
        .arg("-c")
        .arg("command -v cpio >/dev/null || { echo 'cpio not found: install the Debian package cpio' >&2; exit 127; }; cd root && printf 'etc\\netc/hostos\\netc/hostos/host.toml\\n' | cpio -o -H newc --quiet")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        overlay.status.success(),
        "{}",
        String::from_utf8_lossy(&overlay.stderr)
    );
    let mut initrd = std::fs::read(&image.initramfs).unwrap();
    // An uncompressed member must start 4-byte aligned; the kernel skips zero padding.
    initrd.resize(initrd.len().next_multiple_of(4), 0);
    initrd.extend_from_slice(&overlay.stdout);
    let initrd_path = dir.path().join("initrd");
    std::fs::write(&initrd_path, initrd).unwrap();

    let mut vm = qemu_tests::QemuConfig::new(arch)
        .kernel(&image.kernel)
        .initrd(&initrd_path)
        .append(image.cmdline.clone())
        .name("malformed-declaration")
        .start()
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    vm.expect("init: hostos-init", BOOT)
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    let fatal = vm
        .expect("init: fatal: ", STEP)
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    // The chain names what failed, the file with line and column, and the parser's reason.
    assert!(fatal.contains("host declaration"), "{fatal}");
    assert!(fatal.contains("/etc/hostos/host.toml:1:9"), "{fatal}");
    assert!(fatal.contains("TOML syntax"), "{fatal}");
    vm.expect("init: powering off", STEP)
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    let status = vm
        .wait_exit(STEP)
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    assert!(status.success(), "QEMU exited with {status}");
    assert!(
        !vm.console().contains("Kernel panic"),
        "init died instead of powering off:\n{}",
        vm.console()
    );
    assert!(
        !vm.console().contains("init: ready"),
        "init went on after a fatal error"
    );
}
