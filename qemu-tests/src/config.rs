//! `QemuConfig`: what to boot and how, and its translation into a QEMU command line with the
//! machine, firmware and devices this project tests on.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::error::HarnessError;
use crate::vm::Vm;
use crate::{Arch, env_flag};

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const AAVMF_CODE: &str = "/usr/share/AAVMF/AAVMF_CODE.fd";
const AAVMF_VARS: &str = "/usr/share/AAVMF/AAVMF_VARS.fd";
const UBOOT_ARM64: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";
/// Each pflash bank of the arm64 `virt` machine must be exactly this big.
const VIRT_FLASH_SIZE: u64 = 64 * 1024 * 1024;

/// How the guest is started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Firmware {
    /// QEMU loads `-kernel`/`-initrd` itself (SeaBIOS on x86_64, nothing on arm64).
    #[default]
    Direct,
    /// OVMF (x86_64) or AAVMF (aarch64) with a fresh copy of the variable store per VM.
    Uefi,
    /// U-Boot as `-bios` (aarch64 only).
    UBoot,
}

/// The format of a disk image, as QEMU's `format=` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

#[derive(Clone, Debug)]
struct Disk {
    path: PathBuf,
    format: DiskFormat,
    snapshot: bool,
}

/// A guest to boot; `start()` turns it into a running [`Vm`].
#[derive(Clone, Debug)]
pub struct QemuConfig {
    pub(crate) arch: Arch,
    pub(crate) name: Option<String>,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    append: Option<String>,
    disks: Vec<Disk>,
    firmware: Firmware,
    memory_mib: u32,
    cpus: u32,
    user_network: bool,
    extra_args: Vec<OsString>,
    qemu_binary: Option<PathBuf>,
}

impl QemuConfig {
    pub fn new(arch: Arch) -> QemuConfig {
        QemuConfig {
            arch,
            name: None,
            kernel: None,
            initrd: None,
            append: None,
            disks: Vec::new(),
            firmware: Firmware::Direct,
            memory_mib: 512,
            cpus: 1,
            user_network: false,
            extra_args: Vec::new(),
            qemu_binary: None,
        }
    }

    pub fn kernel(mut self, path: impl Into<PathBuf>) -> Self {
        self.kernel = Some(path.into());
        self
    }

    pub fn initrd(mut self, path: impl Into<PathBuf>) -> Self {
        self.initrd = Some(path.into());
        self
    }

    /// The kernel command line (only used with `kernel`).
    pub fn append(mut self, cmdline: impl Into<String>) -> Self {
        self.append = Some(cmdline.into());
        self
    }

    /// Attaches a writable virtio-blk disk; disks appear in the order they are added.
    pub fn disk(mut self, path: impl Into<PathBuf>, format: DiskFormat) -> Self {
        self.disks.push(Disk {
            path: path.into(),
            format,
            snapshot: false,
        });
        self
    }

    /// Attaches a virtio-blk disk whose writes go to a throwaway overlay, so tests running in
    /// parallel can boot the same built image.
    pub fn disk_snapshot(mut self, path: impl Into<PathBuf>, format: DiskFormat) -> Self {
        self.disks.push(Disk {
            path: path.into(),
            format,
            snapshot: true,
        });
        self
    }

    pub fn firmware(mut self, firmware: Firmware) -> Self {
        self.firmware = firmware;
        self
    }

    /// Guest RAM; 512 MiB unless set.
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Virtual CPUs; 1 unless set, because the test machine has two cores shared by everything.
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus.max(1);
        self
    }

    /// A virtio-net NIC on QEMU's user-mode network (10.0.2.0/24, DHCP, DNS at 10.0.2.3).
    pub fn user_network(mut self) -> Self {
        self.user_network = true;
        self
    }

    /// Arguments appended verbatim after the harness's own.
    pub fn extra_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Names the run: the console log is `target/qemu-tests-logs/<name>-<arch>.log`. Defaults to
    /// the test's name (libtest names each test's thread after it).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Runs this QEMU binary instead of `qemu-system-<arch>` from `PATH`.
    pub fn qemu_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.qemu_binary = Some(path.into());
        self
    }

    /// Boots the guest. The returned [`Vm`] owns the QEMU process and kills it when dropped.
    pub fn start(self) -> Result<Vm, HarnessError> {
        Vm::start(self)
    }

    /// The QEMU program and arguments, with per-VM files (firmware variables, QMP socket)
    /// placed in `run_dir`.
    pub(crate) fn command_line(
        &self,
        run_dir: &Path,
        qmp_socket: &Path,
    ) -> Result<(PathBuf, Vec<OsString>), HarnessError> {
        let program = self.qemu_program()?;
        let mut args: Vec<OsString> = Vec::new();

        let machine = match (self.arch, self.firmware) {
            (Arch::X86_64, _) => "q35",
            // ACPI makes UEFI-booted arm64 look like x86: a power button on an input device.
            (Arch::Aarch64, Firmware::Uefi) => "virt,acpi=on",
            (Arch::Aarch64, _) => "virt",
        };
        let cpu = match self.arch {
            Arch::X86_64 => "max",
            // The architected (QARMA) pointer-auth algorithm is very slow under TCG; the
            // implementation-defined one keeps PAC on at a fraction of the cost.
            Arch::Aarch64 => "max,pauth-impdef=on",
        };
        push_all(&mut args, &["-machine", machine, "-cpu", cpu]);
        let accel = if env_flag("QEMU_TESTS_KVM") && self.arch == crate::host_arch() {
            "kvm"
        } else if self.cpus > 1 {
            "tcg,thread=multi"
        } else {
            "tcg"
        };
        let memory = self.memory_mib.to_string();
        let cpus = self.cpus.to_string();
        push_all(&mut args, &["-accel", accel, "-m", &memory, "-smp", &cpus]);
        push_all(
            &mut args,
            &[
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
            ],
        );
        args.push("-qmp".into());
        args.push(option_with_path("unix:", qmp_socket, ",server=on,wait=off"));

        match (self.firmware, self.arch) {
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
                return Err(HarnessError::Unsupported {
                    what: "U-Boot firmware",
                    arch: self.arch,
                });
            }
        }

        if let Some(kernel) = &self.kernel {
            args.push("-kernel".into());
            args.push(kernel.into());
            if let Some(initrd) = &self.initrd {
                args.push("-initrd".into());
                args.push(initrd.into());
            }
            if let Some(append) = &self.append {
                args.push("-append".into());
                args.push(append.into());
            }
        }

        for (i, disk) in self.disks.iter().enumerate() {
            let mut drive = option_with_path("file=", &disk.path, "");
            drive.push(format!(
                ",format={},if=none,id=disk{i}",
                disk.format.as_str()
            ));
            if disk.snapshot {
                drive.push(",snapshot=on");
            }
            args.push("-drive".into());
            args.push(drive);
            args.push("-device".into());
            args.push(format!("virtio-blk-pci,drive=disk{i}").into());
        }

        if self.user_network {
            push_all(
                &mut args,
                &[
                    "-netdev",
                    "user,id=net0",
                    "-device",
                    "virtio-net-pci,netdev=net0",
                ],
            );
        }

        args.extend(self.extra_args.iter().cloned());
        Ok((program, args))
    }

    fn qemu_program(&self) -> Result<PathBuf, HarnessError> {
        let (binary, package) = match self.arch {
            Arch::X86_64 => ("qemu-system-x86_64", "qemu-system-x86"),
            Arch::Aarch64 => ("qemu-system-aarch64", "qemu-system-arm"),
        };
        let found = match &self.qemu_binary {
            Some(path) => path.is_file().then(|| path.clone()),
            None => find_in_path(binary),
        };
        found.ok_or_else(|| HarnessError::MissingTool {
            what: match &self.qemu_binary {
                Some(path) => format!("the QEMU binary {}", path.display()),
                None => format!("{binary} (not on PATH)"),
            },
            package,
        })
    }
}

fn push_all(args: &mut Vec<OsString>, items: &[&str]) {
    args.extend(items.iter().map(OsString::from));
}

/// `prefix` + `path` + `suffix`, with commas in the path doubled as QEMU's option parser wants.
fn option_with_path(prefix: &str, path: &Path, suffix: &str) -> OsString {
    let mut option = OsString::from(prefix);
    let escaped = path.as_os_str().to_string_lossy().replace(',', ",,");
    option.push(escaped);
    option.push(suffix);
    option
}

fn pflash(path: &Path, unit: u32, readonly: bool) -> [OsString; 2] {
    let mut drive = option_with_path("if=pflash,format=raw,file=", path, "");
    drive.push(format!(",unit={unit}"));
    if readonly {
        drive.push(",readonly=on");
    }
    ["-drive".into(), drive]
}

fn require_file(path: &str, what: &str, package: &'static str) -> Result<PathBuf, HarnessError> {
    let path = PathBuf::from(path);
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::MissingTool {
            what: format!("{what} ({})", path.display()),
            package,
        })
    }
}

fn file_len(path: &Path) -> Result<u64, HarnessError> {
    fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| HarnessError::Io {
            action: "read the size of",
            path: path.to_path_buf(),
            source,
        })
}

/// Copies `from` to `to`, zero-extending it to `pad_to` bytes when given.
fn copy_file(from: &Path, to: &Path, pad_to: Option<u64>) -> Result<(), HarnessError> {
    let io_err = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| HarnessError::Io {
            action,
            path,
            source,
        }
    };
    fs::copy(from, to).map_err(io_err("copy firmware from", from))?;
    if let Some(len) = pad_to
        && file_len(to)? < len
    {
        let file: File = OpenOptions::new()
            .write(true)
            .open(to)
            .map_err(io_err("open", to))?;
        file.set_len(len).map_err(io_err("pad", to))?;
    }
    Ok(())
}

fn find_in_path(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args_of(config: &QemuConfig) -> Result<Vec<String>, HarnessError> {
        let dir = std::env::temp_dir().join(format!(
            "qemu-tests-config-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        fs::create_dir_all(&dir).unwrap();
        let result = config
            .command_line(&dir, &dir.join("qmp.sock"))
            .map(|(_, args)| {
                args.iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect()
            });
        fs::remove_dir_all(&dir).unwrap();
        result
    }

    #[test]
    fn direct_boot_passes_kernel_initrd_cmdline_and_disks() {
        let config = QemuConfig::new(Arch::X86_64)
            .qemu_binary("/bin/true")
            .kernel("/k/vmlinuz")
            .initrd("/k/initrd")
            .append("console=ttyS0 quiet")
            .disk("/d/a,b.img", DiskFormat::Raw)
            .disk_snapshot("/d/c.qcow2", DiskFormat::Qcow2);
        let args = args_of(&config).unwrap().join(" ");
        assert!(args.contains("-machine q35 -cpu max"), "{args}");
        assert!(args.contains("-kernel /k/vmlinuz -initrd /k/initrd -append console=ttyS0 quiet"));
        assert!(args.contains(
            "-drive file=/d/a,,b.img,format=raw,if=none,id=disk0 -device virtio-blk-pci,drive=disk0"
        ));
        assert!(args.contains("file=/d/c.qcow2,format=qcow2,if=none,id=disk1,snapshot=on"));
        assert!(args.contains("-nodefaults -no-reboot -display none -monitor none -serial stdio"));
        assert!(args.contains("-m 512 -smp 1"));
    }

    #[test]
    fn uboot_is_refused_on_x86_64() {
        let config = QemuConfig::new(Arch::X86_64)
            .qemu_binary("/bin/true")
            .firmware(Firmware::UBoot);
        assert!(matches!(
            args_of(&config),
            Err(HarnessError::Unsupported { .. })
        ));
    }

    #[test]
    fn missing_qemu_names_the_debian_package() {
        let config = QemuConfig::new(Arch::Aarch64).qemu_binary("/nonexistent/qemu");
        let err = args_of(&config).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("qemu-system-arm"), "{text}");
        assert!(text.contains("bookworm-backports"), "{text}");
    }
}
