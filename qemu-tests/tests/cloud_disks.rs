//! The disk image booted from the disk controllers clouds attach boot disks to, as QEMU emulates
//! them: NVMe (AWS Nitro, GCE, Azure v6) and virtio-scsi (GCE), on both arches, through the
//! firmware (OVMF, AAVMF). The firmware must find the ESP there, the kernel must have the
//! driver built in (kernel-config/common.config), and init must find and mount the payload and
//! data partitions on the device the kernel names (`/dev/nvme0n1p2`, `/dev/sda2`).

use std::path::Path;
use std::time::Duration;

use qemu_tests::{Arch, DiskBus, Firmware, build_image, power_off_in_order};

/// Generous for firmware plus kernel under TCG on a loaded 2-core machine.
const BOOT: Duration = Duration::from_secs(300);
const STEP: Duration = Duration::from_secs(90);

/// Boots hello.toml's image from a disk on `bus` and checks that init mounted its partitions
/// from the disk node `disk` the kernel gives that controller.
fn boots_from(arch: Arch, bus: DiskBus, disk: &str, partition_prefix: &str) {
    let image = build_image(Path::new("images/hello.toml"), arch)
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    let mut vm = image
        .disk_boot(Firmware::Uefi)
        .disk_bus(bus)
        .cpus(2)
        .name(format!("cloud-{}", bus.as_str()))
        .start()
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    let found = vm
        .expect(
            &format!("init: disk {disk} holds the payload ({partition_prefix}2) and data ({partition_prefix}5)"),
            BOOT,
        )
        .unwrap_or_else(|e| panic!("{arch} on {}: {}", bus.as_str(), e.chain()));
    eprintln!("{arch} on {}: {found}", bus.as_str());
    for marker in [
        "init: payload verified (",
        "init: data mounted at /var (",
        "init: ready",
    ] {
        vm.expect(marker, STEP)
            .unwrap_or_else(|e| panic!("{arch} on {}: {}", bus.as_str(), e.chain()));
    }
    power_off_in_order(&mut vm, STEP);
}

#[test]
fn x86_64_image_boots_through_ovmf_from_an_nvme_disk() {
    boots_from(Arch::X86_64, DiskBus::Nvme, "/dev/nvme0n1", "/dev/nvme0n1p");
}

#[test]
fn x86_64_image_boots_through_ovmf_from_a_virtio_scsi_disk() {
    boots_from(Arch::X86_64, DiskBus::VirtioScsi, "/dev/sda", "/dev/sda");
}

#[test]
fn aarch64_image_boots_through_aavmf_from_an_nvme_disk() {
    boots_from(
        Arch::Aarch64,
        DiskBus::Nvme,
        "/dev/nvme0n1",
        "/dev/nvme0n1p",
    );
}

#[test]
fn aarch64_image_boots_through_aavmf_from_a_virtio_scsi_disk() {
    boots_from(Arch::Aarch64, DiskBus::VirtioScsi, "/dev/sda", "/dev/sda");
}
