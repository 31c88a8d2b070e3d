//! The command lines, argument by argument, per arch and firmware.

use std::fs;

use super::*;

/// A run directory for one test, removed after.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let dir =
            std::env::temp_dir().join(format!("hostos-qemu-unit-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn argv(config: &QemuConfig, dir: &Dir) -> Result<Vec<String>, Error> {
    config
        .command_line(&dir.0, &dir.0.join("qmp.sock"))
        .map(|line| {
            line.args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        })
}

/// `expected` with `{dir}` replaced by the run directory.
fn expected(dir: &Dir, words: &[&str]) -> Vec<String> {
    let d = dir.0.display().to_string();
    words.iter().map(|w| w.replace("{dir}", &d)).collect()
}

const COMMON_TCG_1CPU: &[&str] = &["-accel", "tcg", "-m", "512", "-smp", "1"];

#[test]
fn x86_64_ovmf_disk_boot_has_pflash_vars_copy_no_boot_wait_bootindex_and_no_nic_rom() {
    let dir = Dir::new("x86-ovmf");
    let config = QemuConfig::new(Arch::X86_64)
        .qemu_binary("/bin/true")
        .firmware(Firmware::Uefi)
        .disk("/d/hello-x86_64.img", DiskFormat::Raw)
        .user_network()
        .serial(Serial::Terminal);
    let mut want = expected(&dir, &["-machine", "q35", "-cpu", "max"]);
    want.extend(expected(&dir, COMMON_TCG_1CPU));
    want.extend(expected(
        &dir,
        &[
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
            "-serial",
            "mon:stdio",
            "-device",
            "virtio-rng-pci",
            "-qmp",
            "unix:{dir}/qmp.sock,server=on,wait=off",
            "-drive",
            "if=pflash,format=raw,file=/usr/share/OVMF/OVMF_CODE.fd,unit=0,readonly=on",
            "-drive",
            "if=pflash,format=raw,file={dir}/OVMF_VARS.fd,unit=1",
            "-boot",
            "menu=on,splash-time=0",
            "-drive",
            "file=/d/hello-x86_64.img,format=raw,if=none,id=disk0",
            "-device",
            "virtio-blk-pci,drive=disk0,bootindex=0",
            "-netdev",
            "user,id=net0",
            "-device",
            "virtio-net-pci,netdev=net0,romfile=",
        ],
    ));
    assert_eq!(argv(&config, &dir).unwrap(), want);
    // The variable store is a private, writable copy of the template.
    let vars = dir.0.join("OVMF_VARS.fd");
    assert_eq!(
        fs::read(&vars).unwrap(),
        fs::read(firmware::OVMF_VARS).unwrap()
    );
    assert!(!fs::metadata(&vars).unwrap().permissions().readonly());
}

#[test]
fn aarch64_aavmf_uses_acpi_impdef_pauth_64_mib_flash_banks_and_no_boot_wait() {
    let dir = Dir::new("arm-aavmf");
    let config = QemuConfig::new(Arch::Aarch64)
        .qemu_binary("/bin/true")
        .firmware(Firmware::Uefi)
        .disk_snapshot("/d/hello-aarch64.img", DiskFormat::Raw)
        .cpus(2);
    let args = argv(&config, &dir).unwrap();
    let code = if fs::metadata(firmware::AAVMF_CODE).unwrap().len() == 64 << 20 {
        firmware::AAVMF_CODE.to_string()
    } else {
        format!("{}/AAVMF_CODE.fd", dir.0.display())
    };
    let mut want = expected(
        &dir,
        &[
            "-machine",
            "virt,acpi=on",
            "-cpu",
            "max,pauth-impdef=on",
            "-accel",
            "tcg,thread=multi",
            "-m",
            "512",
            "-smp",
            "2",
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-device",
            "virtio-rng-pci",
            "-qmp",
            "unix:{dir}/qmp.sock,server=on,wait=off",
            "-drive",
        ],
    );
    want.push(format!(
        "if=pflash,format=raw,file={code},unit=0,readonly=on"
    ));
    want.extend(expected(
        &dir,
        &[
            "-drive",
            "if=pflash,format=raw,file={dir}/AAVMF_VARS.fd,unit=1",
            "-boot",
            "menu=on,splash-time=0",
            "-drive",
            "file=/d/hello-aarch64.img,format=raw,if=none,id=disk0,snapshot=on",
            "-device",
            "virtio-blk-pci,drive=disk0,bootindex=0",
        ],
    ));
    assert_eq!(args, want);
    assert_eq!(
        fs::metadata(dir.0.join("AAVMF_VARS.fd")).unwrap().len(),
        64 << 20
    );
}

#[test]
fn aarch64_uboot_is_bios_on_virt_with_acpi_off_and_a_device_tree_that_skips_bootdelay() {
    let dir = Dir::new("arm-uboot");
    // The real QEMU: the device tree comes from `-machine dumpdtb=` on this command line.
    let config = QemuConfig::new(Arch::Aarch64)
        .firmware(Firmware::UBoot)
        .disk("/dev/null", DiskFormat::Raw)
        .user_network();
    let args = argv(&config, &dir).unwrap();
    assert_eq!(
        args[..6],
        [
            "-machine",
            "virt,acpi=off",
            "-cpu",
            "max,pauth-impdef=on",
            "-accel",
            "tcg"
        ]
    );
    let bios = args.iter().position(|a| a == "-bios").unwrap();
    assert_eq!(args[bios + 1], firmware::UBOOT_ARM64);
    assert!(!args.iter().any(|a| a.contains("pflash")), "{args:?}");
    assert!(!args.iter().any(|a| a == "-boot"), "{args:?}");
    let dtb_arg = args.iter().position(|a| a == "-dtb").unwrap();
    assert_eq!(dtb_arg, args.len() - 2, "{args:?}");
    let dtb = fs::read(&args[dtb_arg + 1]).unwrap();
    assert_eq!(dtb[..4], [0xd0, 0x0d, 0xfe, 0xed]);
    let has = |needle: &[u8]| dtb.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"config\0") && has(b"bootdelay\0"));
    // QEMU's own tree for the virt machine, with the power button the kernel watches.
    assert!(
        has(b"gpio-keys") && has(b"arm,pl011"),
        "not the virt machine's tree"
    );
    // The dump left the QMP socket alone.
    assert!(!dir.0.join("qmp.sock").exists());
}

#[test]
fn direct_boot_passes_kernel_initrd_cmdline_and_escapes_commas_in_paths() {
    let dir = Dir::new("direct");
    let config = QemuConfig::new(Arch::X86_64)
        .qemu_binary("/bin/true")
        .kernel("/k/vmlinuz")
        .initrd("/k/initrd")
        .append("console=ttyS0 quiet")
        .disk("/d/a,b.img", DiskFormat::Raw)
        .disk_snapshot("/d/c.qcow2", DiskFormat::Qcow2)
        .kvm(true)
        .extra_args(["-S"]);
    let args = argv(&config, &dir).unwrap();
    assert_eq!(args[4..6], ["-accel", "kvm"]);
    let qmp = args.iter().position(|a| a == "-qmp").unwrap();
    assert_eq!(
        args[qmp + 2..],
        [
            "-kernel",
            "/k/vmlinuz",
            "-initrd",
            "/k/initrd",
            "-append",
            "console=ttyS0 quiet",
            "-drive",
            "file=/d/a,,b.img,format=raw,if=none,id=disk0",
            "-device",
            "virtio-blk-pci,drive=disk0",
            "-drive",
            "file=/d/c.qcow2,format=qcow2,if=none,id=disk1,snapshot=on",
            "-device",
            "virtio-blk-pci,drive=disk1",
            "-S",
        ]
    );
    // Direct boots write no firmware files.
    assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 0);
}

#[test]
fn uboot_is_refused_on_x86_64() {
    let dir = Dir::new("x86-uboot");
    let config = QemuConfig::new(Arch::X86_64)
        .qemu_binary("/bin/true")
        .firmware(Firmware::UBoot);
    assert!(matches!(
        argv(&config, &dir),
        Err(Error::Unsupported { .. })
    ));
}

#[test]
fn missing_qemu_names_the_debian_package() {
    let dir = Dir::new("missing");
    let config = QemuConfig::new(Arch::Aarch64).qemu_binary("/nonexistent/qemu");
    let text = argv(&config, &dir).unwrap_err().to_string();
    assert!(text.contains("qemu-system-arm"), "{text}");
    assert!(text.contains("bookworm-backports"), "{text}");
}

#[test]
fn shell_line_quotes_what_the_shell_would_split() {
    let line = CommandLine {
        program: "/usr/bin/qemu-system-x86_64".into(),
        args: vec![
            "-append".into(),
            "console=ttyS0 quiet".into(),
            "romfile=".into(),
            "".into(),
        ],
    };
    assert_eq!(
        line.shell_line(),
        "/usr/bin/qemu-system-x86_64 -append 'console=ttyS0 quiet' romfile= ''"
    );
}

/// The disk arguments only: from the first `-drive file=` on, up to the network.
fn disk_args(config: &QemuConfig, dir: &Dir) -> Vec<String> {
    let all = argv(config, dir).unwrap();
    let start = all
        .windows(2)
        .position(|w| {
            (w[0] == "-drive" && w[1].starts_with("file="))
                || (w[0] == "-device" && w[1].starts_with("virtio-scsi-pci"))
        })
        .unwrap();
    all[start..].to_vec()
}

#[test]
fn nvme_and_virtio_scsi_disks_keep_the_boot_index_and_scsi_gets_one_controller() {
    let dir = Dir::new("buses");
    let base = QemuConfig::new(Arch::Aarch64)
        .qemu_binary("/bin/true")
        .firmware(Firmware::Uefi)
        .disk("/d/a.img", DiskFormat::Raw)
        .disk_snapshot("/d/b.qcow2", DiskFormat::Qcow2);
    let nvme = disk_args(&base.clone().disk_bus(DiskBus::Nvme), &dir);
    assert_eq!(
        nvme,
        [
            "-drive",
            "file=/d/a.img,format=raw,if=none,id=disk0",
            "-device",
            "nvme,drive=disk0,serial=hostos0,bootindex=0",
            "-drive",
            "file=/d/b.qcow2,format=qcow2,if=none,id=disk1,snapshot=on",
            "-device",
            "nvme,drive=disk1,serial=hostos1,bootindex=1",
        ]
    );
    let scsi = disk_args(&base.clone().disk_bus(DiskBus::VirtioScsi), &dir);
    assert_eq!(
        scsi,
        [
            "-device",
            "virtio-scsi-pci,id=scsi0",
            "-drive",
            "file=/d/a.img,format=raw,if=none,id=disk0",
            "-device",
            "scsi-hd,drive=disk0,bus=scsi0.0,bootindex=0",
            "-drive",
            "file=/d/b.qcow2,format=qcow2,if=none,id=disk1,snapshot=on",
            "-device",
            "scsi-hd,drive=disk1,bus=scsi0.0,bootindex=1",
        ]
    );
}

#[test]
fn disk_bus_names_parse_and_an_unknown_one_lists_the_choices() {
    for bus in DiskBus::ALL {
        assert_eq!(bus.as_str().parse::<DiskBus>().unwrap(), bus);
    }
    let err = "ide".parse::<DiskBus>().unwrap_err();
    assert!(err.contains("\"ide\"") && err.contains("nvme"), "{err}");
}

#[test]
fn guest_forwards_relay_each_connection_through_busybox_nc_and_imply_the_user_network() {
    let dir = Dir::new("guestfwd");
    let config = QemuConfig::new(Arch::X86_64)
        .qemu_binary("/bin/true")
        .guest_forward(
            Ipv4Addr::new(10, 0, 2, 100),
            443,
            "127.0.0.1:40123".parse().unwrap(),
        )
        .guest_forward(
            Ipv4Addr::new(10, 0, 2, 101),
            80,
            "127.0.0.1:40124".parse().unwrap(),
        );
    let args = argv(&config, &dir).unwrap();
    let busybox = find_in_path("busybox").expect("busybox on PATH (busybox-static)");
    let b = busybox.display();
    assert_eq!(
        args[args.len() - 4..],
        [
            "-netdev".to_string(),
            format!(
                "user,id=net0,guestfwd=tcp:10.0.2.100:443-cmd:'{b}' nc 127.0.0.1 40123,\
                 guestfwd=tcp:10.0.2.101:80-cmd:'{b}' nc 127.0.0.1 40124"
            ),
            "-device".to_string(),
            "virtio-net-pci,netdev=net0,romfile=".to_string(),
        ]
    );
}
