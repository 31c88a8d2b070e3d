//! `QemuConfig`: what to boot and how, and its translation into the one QEMU command line this
//! project boots with: the machine, CPU, firmware, disks, network and serial per arch.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Arch;
use crate::error::Error;
use crate::firmware;
use crate::vm::Vm;

/// How the guest is started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Firmware {
    /// QEMU loads `-kernel`/`-initrd` itself (SeaBIOS on x86_64, nothing on arm64).
    #[default]
    Direct,
    /// OVMF (x86_64) or AAVMF (aarch64) with a fresh copy of the variable store per VM.
    Uefi,
    /// U-Boot as `-bios` (aarch64 only), the way boards boot.
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

/// The controller a disk hangs off, as the clouds attach boot disks: virtio-blk (QEMU, most
/// KVM clouds), NVMe (AWS Nitro, GCE, Azure v6) or virtio-scsi (GCE).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiskBus {
    #[default]
    VirtioBlk,
    Nvme,
    VirtioScsi,
}

impl DiskBus {
    /// The name `builder run --disk-bus` and test names use.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskBus::VirtioBlk => "virtio-blk",
            DiskBus::Nvme => "nvme",
            DiskBus::VirtioScsi => "virtio-scsi",
        }
    }

    /// All buses, for `--help` and errors.
    pub const ALL: [DiskBus; 3] = [DiskBus::VirtioBlk, DiskBus::Nvme, DiskBus::VirtioScsi];
}

impl std::str::FromStr for DiskBus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        DiskBus::ALL
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| {
                format!("unknown disk bus {s:?}: expected virtio-blk, nvme or virtio-scsi")
            })
    }
}

/// Where the guest's serial console goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Serial {
    /// QEMU's stdin/stdout carry the serial port only (`-serial stdio`, no monitor): for a
    /// program that reads the console, like the test harness.
    #[default]
    Stdio,
    /// The serial port multiplexed with QEMU's monitor on the terminal (`-serial mon:stdio`):
    /// Ctrl-A X quits, Ctrl-A C switches to the monitor. For a person at a terminal.
    Terminal,
}

/// A TCP service the guest reaches at a fixed address on the user network, served by a port on
/// the host that can differ per VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct GuestForward {
    guest_ip: Ipv4Addr,
    guest_port: u16,
    host: SocketAddr,
}

#[derive(Clone, Debug)]
struct Disk {
    path: PathBuf,
    format: DiskFormat,
    snapshot: bool,
}

/// A guest to boot; `start()` turns it into a running [`Vm`], `command_line()` into a QEMU
/// command for callers that run QEMU themselves.
#[derive(Clone, Debug)]
pub struct QemuConfig {
    pub(crate) arch: Arch,
    pub(crate) name: Option<String>,
    pub(crate) log_dir: Option<PathBuf>,
    pub(crate) echo: bool,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    append: Option<String>,
    disks: Vec<Disk>,
    disk_bus: DiskBus,
    firmware: Firmware,
    memory_mib: u32,
    cpus: u32,
    kvm: bool,
    serial: Serial,
    user_network: bool,
    guest_forwards: Vec<GuestForward>,
    extra_args: Vec<OsString>,
    qemu_binary: Option<PathBuf>,
}

/// A QEMU program and its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandLine {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl CommandLine {
    /// A `Command` ready to spawn (stdio left to the caller).
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        command
    }

    /// The command as a shell line, quoting what needs it, so a run can be repeated by hand.
    pub fn shell_line(&self) -> String {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|arg| {
                let arg = arg.to_string_lossy();
                if !arg.is_empty()
                    && arg
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_=,.:/+".contains(c))
                {
                    arg.into_owned()
                } else {
                    format!("'{}'", arg.replace('\'', r"'\''"))
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl QemuConfig {
    pub fn new(arch: Arch) -> QemuConfig {
        QemuConfig {
            arch,
            name: None,
            log_dir: None,
            echo: false,
            kernel: None,
            initrd: None,
            append: None,
            disks: Vec::new(),
            disk_bus: DiskBus::VirtioBlk,
            firmware: Firmware::Direct,
            memory_mib: 512,
            cpus: 1,
            kvm: false,
            serial: Serial::Stdio,
            user_network: false,
            guest_forwards: Vec::new(),
            extra_args: Vec::new(),
            qemu_binary: None,
        }
    }

    pub fn arch(&self) -> Arch {
        self.arch
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

    /// Attaches a writable virtio-blk disk; disks appear in the order they are added, and
    /// firmware tries them in that order.
    pub fn disk(mut self, path: impl Into<PathBuf>, format: DiskFormat) -> Self {
        self.disks.push(Disk {
            path: path.into(),
            format,
            snapshot: false,
        });
        self
    }

    /// Attaches a virtio-blk disk whose writes go to a throwaway overlay, so several VMs can
    /// boot the same image and it stays as it was.
    pub fn disk_snapshot(mut self, path: impl Into<PathBuf>, format: DiskFormat) -> Self {
        self.disks.push(Disk {
            path: path.into(),
            format,
            snapshot: true,
        });
        self
    }

    /// The controller every disk is attached to (virtio-blk unless set).
    pub fn disk_bus(mut self, bus: DiskBus) -> Self {
        self.disk_bus = bus;
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

    /// Virtual CPUs; 1 unless set.
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus.max(1);
        self
    }

    /// KVM instead of TCG (the guest arch must be the host's; TCG unless set).
    pub fn kvm(mut self, kvm: bool) -> Self {
        self.kvm = kvm;
        self
    }

    /// Where the serial console goes; [`Serial::Stdio`] unless set.
    pub fn serial(mut self, serial: Serial) -> Self {
        self.serial = serial;
        self
    }

    /// A virtio-net NIC on QEMU's user-mode network (10.0.2.0/24, DHCP, DNS at 10.0.2.3).
    pub fn user_network(mut self) -> Self {
        self.user_network = true;
        self
    }

    /// Forwards the guest's TCP connections to `guest_ip:guest_port` (an otherwise unused
    /// address of the user network, such as 10.0.2.100) to `host`, one host connection per guest
    /// connection; implies [`user_network`](Self::user_network). Several may be added.
    ///
    /// Each connection runs `busybox nc` (QEMU's `guestfwd=...-cmd:`). QEMU's other form,
    /// `guestfwd=tcp:IP:PORT-tcp:HOST:PORT`, opens one character device when QEMU starts and
    /// writes every guest connection into it (net/slirp.c), so a second connection, or a
    /// server that is not listening yet, breaks it.
    pub fn guest_forward(mut self, guest_ip: Ipv4Addr, guest_port: u16, host: SocketAddr) -> Self {
        self.user_network = true;
        self.guest_forwards.push(GuestForward {
            guest_ip,
            guest_port,
            host,
        });
        self
    }

    /// Arguments appended verbatim after the shared ones.
    pub fn extra_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Names the run: a [`Vm`]'s console log is `<log_dir>/<name>-<arch>.log`. Defaults to the
    /// current thread's name (libtest names each test's thread after the test).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Where a [`Vm`] keeps its console log; without one the log lives in the VM's temporary
    /// directory and goes with it.
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(dir.into());
        self
    }

    /// Copies a [`Vm`]'s console and QEMU's stderr to this process's stderr as they arrive.
    pub fn echo(mut self, echo: bool) -> Self {
        self.echo = echo;
        self
    }

    /// Runs this QEMU binary instead of `qemu-system-<arch>` from `PATH`.
    pub fn qemu_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.qemu_binary = Some(path.into());
        self
    }

    /// Boots the guest. The returned [`Vm`] owns the QEMU process and kills it when dropped.
    pub fn start(self) -> Result<Vm, Error> {
        Vm::start(self)
    }

    /// The QEMU command line. Per-VM files (a writable copy of the firmware variables, padded
    /// firmware) are written into `run_dir`, which must outlive QEMU; QMP listens on
    /// `qmp_socket` (at most 107 bytes long, a Unix socket path).
    pub fn command_line(&self, run_dir: &Path, qmp_socket: &Path) -> Result<CommandLine, Error> {
        let program = self.qemu_program()?;
        let mut args: Vec<OsString> = Vec::new();

        let machine = match (self.arch, self.firmware) {
            (Arch::X86_64, _) => "q35",
            // ACPI makes UEFI-booted arm64 look like x86: a power button on an input device.
            (Arch::Aarch64, Firmware::Uefi) => "virt,acpi=on",
            // U-Boot hands the kernel QEMU's device tree, whose power button is gpio-keys on
            // the PL061; with firmware loaded and ACPI on (the default), QEMU would put the
            // button on ACPI's GED instead, which a device-tree kernel never sees.
            (Arch::Aarch64, Firmware::UBoot) => "virt,acpi=off",
            // A direct boot gets the device tree with gpio-keys whatever the ACPI setting.
            (Arch::Aarch64, Firmware::Direct) => "virt",
        };
        let cpu = match self.arch {
            Arch::X86_64 => "max",
            // The architected (QARMA) pointer-auth algorithm is very slow under TCG; the
            // implementation-defined one keeps PAC on at a fraction of the cost.
            Arch::Aarch64 => "max,pauth-impdef=on",
        };
        push_all(&mut args, &["-machine", machine, "-cpu", cpu]);
        let accel = if self.kvm {
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
            &["-nodefaults", "-no-reboot", "-display", "none"],
        );
        match self.serial {
            Serial::Stdio => push_all(&mut args, &["-monitor", "none", "-serial", "stdio"]),
            Serial::Terminal => push_all(&mut args, &["-serial", "mon:stdio"]),
        }
        push_all(&mut args, &["-device", "virtio-rng-pci"]);
        args.push("-qmp".into());
        args.push(option_with_path("unix:", qmp_socket, ",server=on,wait=off"));

        args.extend(firmware::args(self.firmware, self.arch, run_dir)?);

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

        if self.disk_bus == DiskBus::VirtioScsi && !self.disks.is_empty() {
            push_all(&mut args, &["-device", "virtio-scsi-pci,id=scsi0"]);
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
            let mut device = match self.disk_bus {
                DiskBus::VirtioBlk => format!("virtio-blk-pci,drive=disk{i}"),
                // NVMe needs a serial number; the guest sees it in /sys/block/nvme*/device.
                DiskBus::Nvme => format!("nvme,drive=disk{i},serial=hostos{i}"),
                DiskBus::VirtioScsi => format!("scsi-hd,drive=disk{i},bus=scsi0.0"),
            };
            // A boot index puts the disks first in the firmware's boot order (QEMU passes it as
            // fw_cfg `bootorder`), so OVMF/AAVMF start the disk's boot file without trying
            // anything else first. Not with `-kernel`: there QEMU's own loader ROM holds boot
            // index 0 (x86_64 refuses a second one), and nothing boots from the disk anyway.
            if self.kernel.is_none() {
                device.push_str(&format!(",bootindex={i}"));
            }
            args.push(device.into());
        }

        if self.user_network {
            args.push("-netdev".into());
            args.push(self.user_netdev()?);
            // `romfile=` leaves out iPXE's option ROM: we never boot from the network, and
            // firmware would spend time loading and starting it.
            push_all(
                &mut args,
                &["-device", "virtio-net-pci,netdev=net0,romfile="],
            );
        }

        args.extend(self.extra_args.iter().cloned());
        if self.firmware == Firmware::UBoot {
            let dtb = firmware::uboot_device_tree(&program, &args, run_dir)?;
            args.push("-dtb".into());
            args.push(dtb.into());
        }
        Ok(CommandLine { program, args })
    }

    /// `user,id=net0` and a `guestfwd=` per forward.
    fn user_netdev(&self) -> Result<OsString, Error> {
        let mut netdev = OsString::from("user,id=net0");
        if self.guest_forwards.is_empty() {
            return Ok(netdev);
        }
        let busybox = find_in_path("busybox").ok_or_else(|| Error::MissingTool {
            what: "busybox (its nc relays guest-forwarded connections)".into(),
            package: "busybox-static",
        })?;
        // QEMU splits the command with g_shell_parse_argv: quote the path in case.
        let busybox = busybox.to_string_lossy().replace('\'', r"'\''");
        for fwd in &self.guest_forwards {
            let rule = format!(
                "tcp:{}:{}-cmd:'{busybox}' nc {} {}",
                fwd.guest_ip,
                fwd.guest_port,
                fwd.host.ip(),
                fwd.host.port()
            );
            netdev.push(",guestfwd=");
            netdev.push(rule.replace(',', ",,"));
        }
        Ok(netdev)
    }

    fn qemu_program(&self) -> Result<PathBuf, Error> {
        let (binary, package) = qemu_binary_and_package(self.arch);
        let found = match &self.qemu_binary {
            Some(path) => path.is_file().then(|| path.clone()),
            None => find_in_path(binary),
        };
        found.ok_or_else(|| Error::MissingTool {
            what: match &self.qemu_binary {
                Some(path) => format!("the QEMU binary {}", path.display()),
                None => format!("{binary} (not on PATH)"),
            },
            package,
        })
    }
}

/// `qemu-system-<arch>` and the Debian package that has it.
pub(crate) fn qemu_binary_and_package(arch: Arch) -> (&'static str, &'static str) {
    match arch {
        Arch::X86_64 => ("qemu-system-x86_64", "qemu-system-x86"),
        Arch::Aarch64 => ("qemu-system-aarch64", "qemu-system-arm"),
    }
}

fn push_all(args: &mut Vec<OsString>, items: &[&str]) {
    args.extend(items.iter().map(OsString::from));
}

/// `prefix` + `path` + `suffix`, with commas in the path doubled as QEMU's option parser wants.
pub(crate) fn option_with_path(prefix: &str, path: &Path, suffix: &str) -> OsString {
    let mut option = OsString::from(prefix);
    let escaped = path.as_os_str().to_string_lossy().replace(',', ",,");
    option.push(escaped);
    option.push(suffix);
    option
}

fn find_in_path(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests;
