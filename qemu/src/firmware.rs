//! Firmware files per arch and the QEMU options that load them: OVMF and AAVMF as two pflash
//! banks (read-only code, a per-VM writable copy of the variable store), U-Boot as `-bios`.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Arch;
use crate::config::{Firmware, option_with_path};
use crate::error::Error;
use crate::fdt;

/// OVMF from Debian's `ovmf` package, the 2 MiB build without Secure Boot: under TCG it reached
/// the boot file sooner than the 4 MiB build in trials by hand (`benches/boot.py` times the
/// result), and our disks have one boot entry, so its smaller variable store is enough.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";
/// AAVMF from `qemu-efi-aarch64`.
pub const AAVMF_CODE: &str = "/usr/share/AAVMF/AAVMF_CODE.fd";
pub const AAVMF_VARS: &str = "/usr/share/AAVMF/AAVMF_VARS.fd";
/// U-Boot built for QEMU's arm64 `virt` machine, from `u-boot-qemu`.
pub const UBOOT_ARM64: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";
/// Each pflash bank of the arm64 `virt` machine must be exactly this big.
const VIRT_FLASH_SIZE: u64 = 64 * 1024 * 1024;

/// The options that load `firmware` for `arch`, writing per-VM copies into `run_dir`.
pub(crate) fn args(firmware: Firmware, arch: Arch, run_dir: &Path) -> Result<Vec<OsString>, Error> {
    let mut args = Vec::new();
    match (firmware, arch) {
        (Firmware::Direct, _) => {}
        (Firmware::Uefi, Arch::X86_64) => {
            let code = require_file(OVMF_CODE, "OVMF firmware", "ovmf")?;
            let vars_template = require_file(OVMF_VARS, "OVMF variable store", "ovmf")?;
            let vars = run_dir.join("OVMF_VARS.fd");
            copy_file(&vars_template, &vars, None)?;
            args.extend(pflash(&code, 0, true));
            args.extend(pflash(&vars, 1, false));
        }
        (Firmware::Uefi, Arch::Aarch64) => {
            let code = require_file(AAVMF_CODE, "AAVMF firmware", "qemu-efi-aarch64")?;
            let vars_template =
                require_file(AAVMF_VARS, "AAVMF variable store", "qemu-efi-aarch64")?;
            let code = if file_len(&code)? == VIRT_FLASH_SIZE {
                code
            } else {
                let padded = run_dir.join("AAVMF_CODE.fd");
                copy_file(&code, &padded, Some(VIRT_FLASH_SIZE))?;
                padded
            };
            let vars = run_dir.join("AAVMF_VARS.fd");
            copy_file(&vars_template, &vars, Some(VIRT_FLASH_SIZE))?;
            args.extend(pflash(&code, 0, true));
            args.extend(pflash(&vars, 1, false));
        }
        (Firmware::UBoot, Arch::Aarch64) => {
            let uboot = require_file(UBOOT_ARM64, "U-Boot for QEMU arm64", "u-boot-qemu")?;
            args.push("-bios".into());
            args.push(uboot.into());
        }
        (Firmware::UBoot, Arch::X86_64) => {
            return Err(Error::Unsupported {
                what: "U-Boot firmware",
                arch,
            });
        }
    }
    if firmware == Firmware::Uefi {
        // EDK II waits PcdPlatformBootTimeOut seconds before the first boot option unless
        // QEMU's fw_cfg `etc/boot-menu-wait` says otherwise, and QEMU only writes that file for
        // a boot menu: this one has a zero wait. AAVMF's wait is several seconds (seen in trials
        // by hand; `benches/boot.py` times the result); OVMF's is 0 already.
        args.extend(["-boot".into(), "menu=on,splash-time=0".into()]);
    }
    Ok(args)
}

/// The device tree for a U-Boot boot: the one QEMU makes for this very command line (same
/// memory, CPUs and devices; `-machine dumpdtb=` writes it and exits before the guest runs),
/// plus `/config/bootdelay = <0>`, which U-Boot prefers over its environment. That skips
/// Debian's `bootdelay=2` countdown, two of the five seconds U-Boot takes to start the boot
/// file under TCG. Written into `run_dir`; returns its path.
pub(crate) fn uboot_device_tree(
    program: &Path,
    args: &[OsString],
    run_dir: &Path,
) -> Result<PathBuf, Error> {
    let dumped = run_dir.join("virt-qemu.dtb");
    let patched = run_dir.join("virt-uboot.dtb");
    let mut dump_args: Vec<OsString> = Vec::with_capacity(args.len() + 2);
    let mut skip_next = false;
    for arg in args {
        // The dump must not take over the real run's QMP socket.
        if std::mem::take(&mut skip_next) {
            continue;
        }
        if arg == "-qmp" {
            skip_next = true;
            continue;
        }
        dump_args.push(arg.clone());
    }
    dump_args.push("-machine".into());
    dump_args.push(option_with_path("dumpdtb=", &dumped, ""));
    let command = || {
        std::iter::once(program.display().to_string())
            .chain(dump_args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let output = Command::new(program)
        .args(&dump_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| Error::Spawn {
            program: program.to_path_buf(),
            source,
        })?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() || !dumped.is_file() {
        return Err(Error::DeviceTreeDump {
            command: command(),
            status: output.status.to_string(),
            stderr,
        });
    }
    let dtb = fs::read(&dumped).map_err(|source| Error::Io {
        action: "read the device tree QEMU wrote to",
        path: dumped.clone(),
        source,
    })?;
    let with_config =
        fdt::with_config(&dtb, &[("bootdelay", 0)]).map_err(|source| Error::DeviceTree {
            path: dumped.clone(),
            source,
        })?;
    fs::write(&patched, with_config).map_err(|source| Error::Io {
        action: "write the device tree for U-Boot to",
        path: patched.clone(),
        source,
    })?;
    Ok(patched)
}

fn pflash(path: &Path, unit: u32, readonly: bool) -> [OsString; 2] {
    let mut drive = option_with_path("if=pflash,format=raw,file=", path, "");
    drive.push(format!(",unit={unit}"));
    if readonly {
        drive.push(",readonly=on");
    }
    ["-drive".into(), drive]
}

fn require_file(path: &str, what: &str, package: &'static str) -> Result<PathBuf, Error> {
    let path = PathBuf::from(path);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingTool {
            what: format!("{what} ({})", path.display()),
            package,
        })
    }
}

fn file_len(path: &Path) -> Result<u64, Error> {
    fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| Error::Io {
            action: "read the size of",
            path: path.to_path_buf(),
            source,
        })
}

/// Copies `from` to `to` (writable whatever the source's mode), zero-extending it to `pad_to`
/// bytes when given.
fn copy_file(from: &Path, to: &Path, pad_to: Option<u64>) -> Result<(), Error> {
    let io_err = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    };
    let bytes = fs::read(from).map_err(io_err("read firmware from", from))?;
    fs::write(to, bytes).map_err(io_err("write a copy of the firmware to", to))?;
    if let Some(len) = pad_to
        && file_len(to)? < len
    {
        let file = OpenOptions::new()
            .write(true)
            .open(to)
            .map_err(io_err("open", to))?;
        file.set_len(len).map_err(io_err("pad", to))?;
    }
    Ok(())
}
