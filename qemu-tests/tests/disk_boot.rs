//! The disk image `builder build` writes, booted as users boot it: through the firmware (OVMF
//! on x86_64, AAVMF and U-Boot on aarch64) from the ESP's UKI, with init setting up dm-verity
//! over the payload, mounting it and the data partition, and powering off on the power button.
//! Also: first-boot growth of the data partition on an enlarged disk, persistence across boots,
//! and a tampered payload refused at boot. init's console lines are the contract
//! (init/src/console.rs).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use qemu_tests::{
    Arch, BuiltImage, DiskFormat, Firmware, QemuConfig, Vm, build_image, power_off_in_order,
};

/// Generous for firmware plus kernel under TCG on a loaded 2-core machine.
const BOOT: Duration = Duration::from_secs(300);
const STEP: Duration = Duration::from_secs(90);

fn hello(arch: Arch) -> BuiltImage {
    build_image(Path::new("images/hello.toml"), arch).unwrap_or_else(|e| panic!("{}", e.chain()))
}

fn expect(vm: &mut Vm, marker: &str, timeout: Duration) -> String {
    vm.expect(marker, timeout)
        .unwrap_or_else(|e| panic!("{}", e.chain()))
}

fn banner(arch: Arch) -> String {
    format!(
        "init: hostos-init {} ({arch}) started",
        env!("CARGO_PKG_VERSION")
    )
}

/// Expects the banner, the verified payload, the mounted data partition and `init: ready`;
/// returns the data partition's size in MiB as init reported it.
fn expect_disk_up(vm: &mut Vm, arch: Arch) -> u64 {
    expect(vm, &banner(arch), BOOT);
    let banner_at = vm.last_match_at().unwrap_or_default();
    eprintln!(
        "{arch} ({}): QEMU start to init banner {:.2} s",
        vm.label(),
        banner_at.as_secs_f64()
    );
    expect(vm, "init: payload verified (", STEP);
    let data = expect(vm, "init: data mounted at /var (", STEP);
    expect(vm, "init: ready", STEP);
    mib_in(&data)
}

/// The number before " MiB)" in a console line.
fn mib_in(line: &str) -> u64 {
    let head = line
        .rsplit_once(" MiB)")
        .map(|(h, _)| h)
        .unwrap_or_else(|| panic!("no size in {line:?}"));
    head.rsplit(['(', ' '])
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no size in {line:?}"))
}

fn boots_through(arch: Arch, firmware: Firmware, name: &str) {
    let image = hello(arch);
    let mut vm = image
        .disk_boot(firmware)
        .cpus(2)
        .name(name)
        .start()
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    let mib = expect_disk_up(&mut vm, arch);
    assert!(mib > 0, "data partition reported as {mib} MiB");
    // hello.toml's pod: its image verified (first boot) and its output on the console.
    expect(&mut vm, "init: pod hello/greeter: started pid ", STEP);
    expect(
        &mut vm,
        &format!("hello/greeter: Hello from a pod: {arch}, pid "),
        STEP,
    );
    power_off_in_order(&mut vm, STEP);
}

#[test]
fn x86_64_disk_image_boots_through_ovmf_mounts_payload_and_data_and_powers_off() {
    boots_through(Arch::X86_64, Firmware::Uefi, "disk-ovmf");
}

#[test]
fn aarch64_disk_image_boots_through_aavmf_mounts_payload_and_data_and_powers_off() {
    boots_through(Arch::Aarch64, Firmware::Uefi, "disk-aavmf");
}

#[test]
fn aarch64_disk_image_boots_through_u_boot_mounts_payload_and_data_and_powers_off() {
    boots_through(Arch::Aarch64, Firmware::UBoot, "disk-u-boot");
}

/// A private writable copy of the built disk, so tests that write never touch the shared one.
fn private_copy(image: &BuiltImage, name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(format!("{name}.img"));
    qemu_tests::disk::sparse_copy(&image.disk, &copy, None)
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    (dir, copy)
}

/// The direct `-kernel` boot of the same kernel, initramfs and command line as the UKI, on a
/// writable disk: the fast tier for tests that boot twice.
fn direct_on(image: &BuiltImage, disk: &Path, name: &str) -> QemuConfig {
    QemuConfig::new(image.arch)
        .kernel(&image.kernel)
        .initrd(&image.initramfs)
        .append(image.cmdline.clone())
        .disk(disk, DiskFormat::Raw)
        .cpus(2)
        .name(name)
}

#[test]
fn first_boot_grows_data_to_an_enlarged_disk_and_a_second_boot_keeps_its_files() {
    let arch = Arch::X86_64;
    let image = hello(arch);
    let (_dir, disk) = private_copy(&image, "grow");
    let before = fs::metadata(&disk).unwrap().len();
    let status = Command::new("qemu-img")
        .args(["resize", "-f", "raw"])
        .arg(&disk)
        .arg("+256M")
        .status()
        .unwrap_or_else(|e| panic!("qemu-img (package qemu-utils): {e}"));
    assert!(status.success(), "qemu-img resize failed");

    let mut vm = direct_on(&image, &disk, "grow-first")
        .start()
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    expect(&mut vm, &banner(arch), BOOT);
    let grown = expect(&mut vm, "init: data partition grown from ", STEP);
    let data = expect(&mut vm, "init: data mounted at /var (", STEP);
    expect(
        &mut vm,
        "init: first boot: created /var/.hostos-first-boot",
        STEP,
    );
    expect(&mut vm, "init: ready", STEP);
    let mib = mib_in(&data);
    // The partition now ends near the disk's end: at least 256 MiB more than the image's
    // whole data partition could have been.
    assert!(
        mib * (1 << 20) > 256 << 20,
        "data is {mib} MiB after growing a {before}-byte image by 256 MiB: {grown}"
    );
    power_off_in_order(&mut vm, STEP);
    drop(vm);

    let status = Command::new("sgdisk").arg("-v").arg(&disk).output();
    let out = status.unwrap_or_else(|e| panic!("sgdisk (package gdisk): {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("No problems found"),
        "sgdisk -v after growth:\n{text}"
    );

    let mut vm = direct_on(&image, &disk, "grow-second")
        .start()
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    expect(&mut vm, &banner(arch), BOOT);
    let again = expect(&mut vm, "init: data mounted at /var (", STEP);
    expect(
        &mut vm,
        "init: not the first boot: /var/.hostos-first-boot exists",
        STEP,
    );
    expect(&mut vm, "init: ready", STEP);
    assert_eq!(
        mib_in(&again),
        mib,
        "the data size changed on the second boot"
    );
    assert!(
        !vm.console().contains("init: data partition grown"),
        "grew again on the second boot:\n{}",
        vm.console()
    );
    power_off_in_order(&mut vm, STEP);
}

/// Offset and size of payload slot A, from the manifest the builder wrote beside the image.
fn payload_a(image: &BuiltImage) -> (u64, u64) {
    let manifest = image.disk.with_extension("manifest.json");
    let text = fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("reading {}: {e}", manifest.display()));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let region = json["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "payload-a")
        .unwrap_or_else(|| panic!("no payload-a region in {}", manifest.display()));
    (
        region["offset"].as_u64().unwrap(),
        region["size"].as_u64().unwrap(),
    )
}

#[test]
fn a_payload_with_one_flipped_byte_is_refused_at_boot_and_the_machine_powers_off() {
    let arch = Arch::X86_64;
    let image = hello(arch);
    let (_dir, disk) = private_copy(&image, "tampered");
    let (offset, _size) = payload_a(&image);
    // A byte inside the erofs superblock's block (block 0 holds it at 1024): covered by the
    // hash tree, and read by any mount.
    let at = offset + 1024 + 8;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x01], at).unwrap();
    drop(f);

    let mut vm = direct_on(&image, &disk, "tampered-payload")
        .start()
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    expect(&mut vm, &banner(arch), BOOT);
    let fatal = expect(&mut vm, "init: fatal: payload ", STEP);
    assert!(fatal.contains("dm-verity"), "{fatal}");
    expect(&mut vm, "init: powering off", STEP);
    let status = vm
        .wait_exit(STEP)
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    assert!(status.success(), "QEMU exited with {status}");
    assert!(
        !vm.console().contains("init: payload verified"),
        "a tampered payload was mounted:\n{}",
        vm.console()
    );
}
