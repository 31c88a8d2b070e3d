//! init's disk handling under QEMU, on a disk laid out as `hostimg` describes but written here
//! by the outside tools (`sgdisk`, `mkfs.erofs`, `veritysetup`, `mke2fs`), booted directly
//! (`-kernel`) with the `hostos.*` parameters appended: the verified payload and the data
//! partition mount, a disk enlarged with `qemu-img resize` grows on its first boot and keeps
//! what that boot wrote, and a payload with one flipped byte is refused before it mounts.
//!
//! The disk image issue's own image (builder-written, booted through firmware) reuses these
//! markers; this test pins init's half on its own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use qemu_tests::{Arch, BuiltImage, DiskFormat, QemuConfig, Vm, build_image, power_off_in_order};

const BOOT: Duration = Duration::from_secs(180);
const STEP: Duration = Duration::from_secs(60);

// hostimg's partition types (the test crate does not link hostimg; these are its constants).
const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
const PAYLOAD_TYPE: &str = "9dda3431-307c-4d03-a144-1964c7701095";
const MANIFEST_TYPE: &str = "6df834d8-2df0-4d14-811a-40f6b23e83af";
const VAR_TYPE: &str = "4d21b016-b534-45c2-a9fb-5c16e091fd2d";
const PAYLOAD_GUID: &str = "3d4f3c8a-5a4e-4b0e-9d1a-2b7c8e9f0a11";
const DATA_GUID: &str = "7e1c2b3a-4d5e-4f60-8a9b-0c1d2e3f4a55";
const SALT: &str = "0102030405060708";
const DISK_MIB: u64 = 64;

fn tool(program: &str, package: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} (install the Debian package {package}): {e}")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?} failed: {text}");
    text
}

/// A built disk: its file, the `hostos.*` parameters, and where the payload's erofs starts.
struct TestDisk {
    path: PathBuf,
    params: String,
    root_hash: String,
    payload_offset: u64,
}

fn first_sector(disk: &Path, number: u32) -> u64 {
    let info = tool(
        "sgdisk",
        "gdisk",
        &[&format!("-i{number}"), &disk.display().to_string()],
    );
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {info}"))
    };
    field("First sector")
}

fn last_sector(disk: &Path, number: u32) -> u64 {
    let info = tool(
        "sgdisk",
        "gdisk",
        &[&format!("-i{number}"), &disk.display().to_string()],
    );
    info.lines()
        .find(|l| l.starts_with("Last sector"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no last sector in {info}"))
}

fn make_disk(dir: &Path) -> TestDisk {
    let root = dir.join("root/images");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("hello.txt"), "hello from the payload\n").unwrap();
    // Enough data for a two-level hash tree.
    let blob: Vec<u8> = (0..600_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(root.join("blob.bin"), blob).unwrap();

    let payload = dir.join("payload.img");
    let p = payload.display().to_string();
    tool(
        "mkfs.erofs",
        "erofs-utils",
        &[
            "--quiet",
            "-T0",
            "-U",
            "00000000-0000-4000-8000-0000000000e0",
            "--all-root",
            &p,
            &dir.join("root").display().to_string(),
        ],
    );
    let size = std::fs::metadata(&payload).unwrap().len();
    let blocks = size.div_ceil(4096);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&payload)
        .unwrap()
        .set_len(blocks * 4096)
        .unwrap();
    let out = tool(
        "veritysetup",
        "cryptsetup-bin",
        &[
            "format",
            &format!("--hash-offset={}", blocks * 4096),
            &format!("--data-blocks={blocks}"),
            &format!("--salt={SALT}"),
            "--uuid=00000000-0000-4000-8000-0000000000f0",
            &p,
            &p,
        ],
    );
    let root_hash = out
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|| panic!("no root hash in {out}"));

    let path = dir.join("disk.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(DISK_MIB << 20)
        .unwrap();
    let d = path.display().to_string();
    let mut args = vec![
        "-o".to_string(),
        "-U".into(),
        "11111111-2222-4333-8444-555555555555".into(),
    ];
    let parts = [
        (1, "+2M", ESP, "esp", "00000000-0000-4000-8000-000000000001"),
        (2, "+2M", PAYLOAD_TYPE, "payload-a", PAYLOAD_GUID),
        (
            3,
            "+2M",
            PAYLOAD_TYPE,
            "payload-b",
            "00000000-0000-4000-8000-000000000003",
        ),
        (
            4,
            "+1M",
            MANIFEST_TYPE,
            "manifest",
            "00000000-0000-4000-8000-000000000004",
        ),
        (5, "0", VAR_TYPE, "data", DATA_GUID),
    ];
    for (n, size, kind, label, guid) in parts {
        args.extend([
            format!("-n{n}:0:{size}"),
            format!("-t{n}:{kind}"),
            format!("-c{n}:{label}"),
            format!("-u{n}:{guid}"),
        ]);
    }
    args.push(d.clone());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    tool("sgdisk", "gdisk", &args);

    let payload_offset = first_sector(&path, 2) * 512;
    let image = std::fs::read(&payload).unwrap();
    write_at(&path, payload_offset, &image);
    let data_first = first_sector(&path, 5);
    let data_kib = (last_sector(&path, 5) - data_first + 1) * 512 / 4096 * 4;
    tool(
        "mke2fs",
        "e2fsprogs",
        &[
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-E",
            &format!("offset={}", data_first * 512),
            &d,
            &format!("{data_kib}k"),
        ],
    );
    TestDisk {
        path,
        params: format!(
            "hostos.payload={PAYLOAD_GUID} hostos.verity={blocks}:{root_hash}:{SALT} hostos.data={DATA_GUID}"
        ),
        root_hash,
        payload_offset,
    }
}

/// Copies partition `number` of `disk` into `to`.
fn extract(disk: &Path, number: u32, to: &Path) -> PathBuf {
    use std::os::unix::fs::FileExt;
    let first = first_sector(disk, number);
    let len = (last_sector(disk, number) - first + 1) * 512;
    let mut data = vec![0u8; len as usize];
    std::fs::File::open(disk)
        .unwrap()
        .read_exact_at(&mut data, first * 512)
        .unwrap();
    std::fs::write(to, data).unwrap();
    to.to_path_buf()
}

fn write_at(path: &Path, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(data, offset).unwrap();
}

fn built(arch: Arch) -> BuiltImage {
    build_image(Path::new("images/hello.toml"), arch).unwrap_or_else(|e| panic!("{}", e.chain()))
}

/// The builder's command line names its own disk image; this test boots a disk made by
/// outside tools, so it replaces those words with the ones for its disk.
fn without_disk_params(cmdline: &str) -> String {
    cmdline
        .split_whitespace()
        .filter(|w| !w.starts_with("hostos."))
        .collect::<Vec<_>>()
        .join(" ")
}

fn boot(image: &BuiltImage, disk: &TestDisk, name: &str) -> Vm {
    // Not `direct_boot()`: it would attach the builder's own disk, if any, as /dev/vda.
    QemuConfig::new(image.arch)
        .kernel(&image.kernel)
        .initrd(&image.initramfs)
        .append(format!(
            "{} {}",
            without_disk_params(&image.cmdline),
            disk.params
        ))
        .disk(&disk.path, DiskFormat::Raw)
        .name(name)
        .start()
        .unwrap_or_else(|e| panic!("{}", e.chain()))
}

fn expect(vm: &mut Vm, marker: &str, timeout: Duration) -> String {
    vm.expect(marker, timeout)
        .unwrap_or_else(|e| panic!("{}", e.chain()))
}

fn mounts_grows_and_keeps_data(arch: Arch) {
    let image = built(arch);
    let dir = tempfile::tempdir().unwrap();
    let disk = make_disk(dir.path());

    let mut vm = boot(&image, &disk, "disk-first-boot");
    expect(
        &mut vm,
        "init: disk /dev/vda holds the payload (/dev/vda2) and data (/dev/vda5)",
        BOOT,
    );
    expect(
        &mut vm,
        &format!(
            "init: payload verified ({}) and mounted read-only at /payload",
            &disk.root_hash[..12]
        ),
        STEP,
    );
    let mounted = expect(&mut vm, "init: data mounted at /var (", STEP);
    assert!(
        mounted.ends_with(&format!("({} MiB)", DISK_MIB - 8 - 1)),
        "{mounted}"
    );
    expect(
        &mut vm,
        "init: first boot: created /var/.hostos-first-boot",
        STEP,
    );
    expect(&mut vm, "init: ready", STEP);
    power_off_in_order(&mut vm, STEP);
    assert!(!vm.console().contains("grown"), "{}", vm.console());

    // As a cloud disk larger than the image.
    tool(
        "qemu-img",
        "qemu-utils",
        &[
            "resize",
            "-f",
            "raw",
            &disk.path.display().to_string(),
            "+100M",
        ],
    );
    let mut vm = boot(&image, &disk, "disk-grown-boot");
    expect(
        &mut vm,
        &format!(
            "init: data partition grown from {} MiB to {} MiB",
            DISK_MIB - 8 - 1,
            DISK_MIB + 100 - 8 - 1
        ),
        BOOT,
    );
    expect(
        &mut vm,
        &format!(
            "init: data mounted at /var ({} MiB)",
            DISK_MIB + 100 - 8 - 1
        ),
        STEP,
    );
    expect(
        &mut vm,
        "init: not the first boot: /var/.hostos-first-boot exists",
        STEP,
    );
    expect(&mut vm, "init: ready", STEP);
    power_off_in_order(&mut vm, STEP);
    let verdict = tool("sgdisk", "gdisk", &["-v", &disk.path.display().to_string()]);
    assert!(verdict.contains("No problems found"), "{verdict}");
    // The online-grown filesystem is clean and fills its partition.
    let data = extract(&disk.path, 5, &dir.path().join("data.img"));
    let fsck = tool("e2fsck", "e2fsprogs", &["-fn", &data.display().to_string()]);
    let blocks = std::fs::metadata(&data).unwrap().len() / 4096;
    assert!(fsck.contains(&format!("/{blocks} blocks")), "{fsck}");

    let mut vm = boot(&image, &disk, "disk-third-boot");
    expect(
        &mut vm,
        &format!(
            "init: data mounted at /var ({} MiB)",
            DISK_MIB + 100 - 8 - 1
        ),
        BOOT,
    );
    expect(&mut vm, "init: not the first boot", STEP);
    expect(&mut vm, "init: ready", STEP);
    power_off_in_order(&mut vm, STEP);
    assert!(!vm.console().contains("grown"), "{}", vm.console());
}

fn refuses_a_flipped_payload_byte(arch: Arch) {
    let image = built(arch);
    let dir = tempfile::tempdir().unwrap();
    let disk = make_disk(dir.path());
    // One byte in the file data, far from the erofs superblock.
    let at = disk.payload_offset + 3 * 4096 + 17;
    let mut byte = [0u8; 1];
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(&disk.path).unwrap();
        file.read_exact_at(&mut byte, at).unwrap();
    }
    write_at(&disk.path, at, &[byte[0] ^ 0x01]);

    let mut vm = boot(&image, &disk, "disk-corrupt-payload");
    let fatal = expect(
        &mut vm,
        "init: fatal: payload /dev/vda2: dm-verity refused block ",
        BOOT,
    );
    assert!(
        fatal.contains(&format!("refused block 3 (/dev/dm-0): the payload does not match the root hash {} on the kernel command line", disk.root_hash)),
        "{fatal}"
    );
    expect(&mut vm, "init: powering off", STEP);
    let status = vm
        .wait_exit(STEP)
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    assert!(status.success(), "QEMU exited with {status}");
    let console = vm.console();
    assert!(
        !console.contains("mounted read-only at /payload"),
        "{console}"
    );
    assert!(!console.contains("init: ready"), "{console}");
}

#[test]
fn x86_64_mounts_the_verified_payload_and_grows_the_data_partition_on_a_larger_disk() {
    mounts_grows_and_keeps_data(Arch::X86_64);
}

#[test]
fn x86_64_refuses_a_payload_with_one_flipped_byte() {
    refuses_a_flipped_payload_byte(Arch::X86_64);
}

#[test]
fn aarch64_mounts_the_verified_payload_and_grows_the_data_partition_on_a_larger_disk() {
    mounts_grows_and_keeps_data(Arch::Aarch64);
}

#[test]
fn aarch64_refuses_a_payload_with_one_flipped_byte() {
    refuses_a_flipped_payload_byte(Arch::Aarch64);
}
