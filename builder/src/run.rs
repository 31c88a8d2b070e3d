//! `builder run`: boots a build under QEMU with the serial console on this terminal, through
//! `hostos-qemu`, the command line and QMP client the tests use too. Two ways in: the direct
//! `-kernel` artifacts, or a disk image booted through its arch's firmware.

mod disk;

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use hostdecl::Arch;
use hostos_qemu::{DiskFormat, QemuConfig, Qmp, Serial, Shutdown};

use crate::image::Built;
use crate::tools;

pub use disk::{arch_of_image, parse_size};

/// The firmware a disk image boots through (also `--firmware`'s values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Firmware {
    /// OVMF on x86_64, AAVMF on aarch64.
    #[default]
    Default,
    /// OVMF (x86_64).
    Ovmf,
    /// AAVMF, EDK II for arm64 (aarch64).
    Aavmf,
    /// U-Boot's UEFI (`u-boot-qemu`'s `qemu_arm64`), the way ARM boards boot (aarch64).
    #[value(name = "u-boot")]
    UBoot,
}

impl Firmware {
    /// The firmware for `arch`, or an error naming the pair that does not exist.
    fn for_arch(self, arch: Arch) -> Result<hostos_qemu::Firmware> {
        match (self, arch) {
            (Firmware::Default, _)
            | (Firmware::Ovmf, Arch::X86_64)
            | (Firmware::Aavmf, Arch::Aarch64) => Ok(hostos_qemu::Firmware::Uefi),
            (Firmware::UBoot, Arch::Aarch64) => Ok(hostos_qemu::Firmware::UBoot),
            (firmware, arch) => bail!(
                "{firmware} firmware does not boot {arch} images (OVMF is x86_64's; AAVMF and \
                 U-Boot are aarch64's)"
            ),
        }
    }

    fn name_for(self, arch: Arch) -> &'static str {
        match (self, arch) {
            (Firmware::Default, Arch::X86_64) | (Firmware::Ovmf, _) => "OVMF",
            (Firmware::Default, Arch::Aarch64) | (Firmware::Aavmf, _) => "AAVMF",
            (Firmware::UBoot, _) => "U-Boot",
        }
    }
}

impl fmt::Display for Firmware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Firmware::Default => "the default",
            Firmware::Ovmf => "OVMF",
            Firmware::Aavmf => "AAVMF",
            Firmware::UBoot => "U-Boot",
        })
    }
}

pub struct RunOptions {
    pub kvm: bool,
    /// Press the guest's power button this long after init reports ready.
    pub powerdown_after: Option<Duration>,
    pub memory_mib: u32,
    /// Disk boots only.
    pub firmware: Firmware,
    /// Disk boots only: the size in bytes of the copy the guest boots (at least the image's),
    /// so first-boot growth has room.
    pub disk_size: Option<u64>,
    /// Disk boots only: the disk's controller.
    pub disk_bus: hostos_qemu::DiskBus,
    /// Guest vCPUs.
    pub cpus: u32,
}

/// Two vCPUs by default: init and the pods it starts get a second core, and multi-threaded
/// TCG uses it. `--cpus 1` saves starting the second CPU in emulation (`benches/boot.py`
/// times both).
pub const DEFAULT_CPUS: u32 = 2;
/// The console line after which the power button may be pressed: init watches for it from
/// then on (a press before init opened the input device would be lost).
const READY_MARKER: &[u8] = b"init: ready";
/// QEMU creates its QMP socket before the guest runs; slack for a loaded machine.
const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Boots the direct-kernel artifacts in `built` (`-kernel`, `-initrd`, `-append`).
pub fn run_direct(built: &Built, opts: &RunOptions) -> Result<()> {
    if opts.firmware != Firmware::Default || opts.disk_size.is_some() {
        bail!(
            "--firmware and --disk-size apply to disk images; {} is a direct-kernel build",
            built.dir.display()
        );
    }
    let mut config = base_config(built.arch, opts)
        .kernel(&built.kernel)
        .initrd(&built.initramfs)
        .append(built.cmdline.clone());
    // The command line names the disk image built beside the direct-boot files; init needs it.
    if hostimg::BootParams::present_in(&built.cmdline) {
        let image = image_beside(built)?;
        config = config.disk_snapshot(&image, DiskFormat::Raw);
    }
    let dir = private_dir()?;
    eprintln!(
        "run: booting {} ({}, direct kernel); quit with Ctrl-A X",
        built.dir.display(),
        built.arch
    );
    boot(&config, dir.path(), opts.powerdown_after)
}

/// The `NAME-ARCH.img` in the output directory above `built.dir` (`OUT/ARCH/`).
fn image_beside(built: &Built) -> Result<std::path::PathBuf> {
    let out = built.dir.parent().unwrap_or(Path::new("."));
    let suffix = format!("-{}.img", built.arch);
    let mut found: Vec<_> = std::fs::read_dir(out)
        .with_context(|| format!("listing {}", out.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(&suffix))
        })
        .collect();
    found.sort();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "{}: the kernel command line names a disk image, but {} holds no *{suffix} (build with --format raw,kernel)",
            built.dir.display(),
            out.display()
        ),
        _ => bail!(
            "{} holds more than one *{suffix}; boot one with `builder run IMAGE`",
            out.display()
        ),
    }
}

/// Boots the raw disk image `image` for `arch` through its firmware. The guest gets a sparse
/// copy in a private temporary directory (enlarged to `disk_size`), removed afterwards, so
/// `image` stays as it was built and every run is a first boot.
pub fn run_disk(image: &Path, arch: Arch, opts: &RunOptions) -> Result<()> {
    let firmware = opts.firmware.for_arch(arch)?;
    let dir = private_dir()?;
    let copy = dir.path().join("disk.img");
    let size = hostos_qemu::disk::sparse_copy(image, &copy, opts.disk_size)
        .context("making the copy of the disk image the guest boots")?;
    let config = base_config(arch, opts)
        .firmware(firmware)
        .disk(&copy, DiskFormat::Raw)
        .disk_bus(opts.disk_bus)
        .user_network();
    eprintln!(
        "run: booting {} ({arch}, {}, a {} MiB copy on {}); quit with Ctrl-A X",
        image.display(),
        opts.firmware.name_for(arch),
        size >> 20,
        opts.disk_bus.as_str()
    );
    boot(&config, dir.path(), opts.powerdown_after)
}

fn base_config(arch: Arch, opts: &RunOptions) -> QemuConfig {
    QemuConfig::new(arch)
        .memory_mib(opts.memory_mib)
        .cpus(opts.cpus)
        .kvm(opts.kvm)
        .serial(Serial::Terminal)
}

/// Runs QEMU with `config` (its files in `dir`), relays the console, presses the power button
/// when asked, and says how the guest ended: only a guest power-off is success.
fn boot(config: &QemuConfig, dir: &Path, powerdown_after: Option<Duration>) -> Result<()> {
    let tool = match config.arch() {
        Arch::X86_64 => tools::QEMU_X86_64,
        Arch::Aarch64 => tools::QEMU_AARCH64,
    };
    tools::require(&[tool], &[])?;
    let qmp_socket = dir.join("qmp.sock");
    let line = config.command_line(dir, &qmp_socket)?;
    log::info!("run: {}", line.shell_line());
    let mut command = line.command();
    // stdin stays the terminal (QEMU puts it in raw mode for Ctrl-A X); the console passes
    // through us so that we can see init's ready line.
    command.stdout(Stdio::piped());
    // Killed with us: a QEMU left behind would hold the terminal and eat the CPUs.
    hostos_qemu::die_with_parent(&mut command);
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", line.program.display()))?;
    let console = child.stdout.take().context("QEMU's console pipe")?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let relay = thread::spawn(move || relay_console(console, powerdown_after.map(|_| ready_tx)));
    let files = dir.to_path_buf();
    let monitor = thread::spawn(move || monitor(&qmp_socket, &files, ready_rx, powerdown_after));
    let status = child.wait().context("waiting for QEMU")?;
    let _ = relay.join();
    let shutdown = match monitor.join() {
        Ok(Ok(shutdown)) => shutdown,
        Ok(Err(e)) => {
            log::warn!("run: QMP: {e:#}");
            None
        }
        Err(_) => None,
    };
    outcome(status, shutdown.as_ref())
}

/// Success only for a guest that powered itself off; otherwise an error saying what happened.
fn outcome(status: ExitStatus, shutdown: Option<&Shutdown>) -> Result<()> {
    match shutdown {
        _ if !status.success() => match shutdown {
            Some(s) => bail!("QEMU exited with {status} after {}", s.describe()),
            None => bail!("QEMU exited with {status}"),
        },
        Some(s) if s.is_guest_poweroff() => {
            eprintln!("run: the guest powered off");
            Ok(())
        }
        Some(s) => bail!("{}, not a clean power-off", s.describe()),
        None => bail!(
            "QEMU exited without reporting how the guest stopped (no QMP SHUTDOWN event), so it \
             did not power off cleanly"
        ),
    }
}

/// Holds the QMP connection for the whole run: presses the power button `powerdown_after`
/// init's ready line (announced on `ready`), and returns QEMU's `SHUTDOWN` event, if any,
/// once QEMU closes the socket.
///
/// Once QMP answers, QEMU has opened everything in `files` (disk copy, firmware variables,
/// device tree) and we are connected to the socket, so the directory is removed right away:
/// a builder killed by a signal then leaves no disk copy behind in the temp directory.
fn monitor(
    socket: &Path,
    files: &Path,
    ready: mpsc::Receiver<Instant>,
    powerdown_after: Option<Duration>,
) -> Result<Option<Shutdown>> {
    let mut qmp = Qmp::connect(socket, QMP_CONNECT_TIMEOUT)?;
    if let Err(e) = std::fs::remove_dir_all(files) {
        log::warn!("run: could not remove {}: {e}", files.display());
    }
    let mut press_at: Option<Instant> = None;
    let mut pressed = false;
    let mut shutdown = None;
    loop {
        if let (None, Some(after), Ok(at)) = (press_at, powerdown_after, ready.try_recv()) {
            press_at = at.checked_add(after);
        }
        if !pressed
            && let Some(at) = press_at
            && Instant::now() >= at
        {
            pressed = true;
            if let Err(e) = qmp.system_powerdown() {
                log::warn!("run: could not press the power button: {e:#}");
            }
        }
        match qmp.next_event(Duration::from_millis(100)) {
            Ok(Some(event)) => {
                if let Some(s) = Shutdown::from_event(&event) {
                    shutdown = Some(s);
                }
            }
            Ok(None) => {}
            Err(hostos_qemu::QmpError::Closed { .. }) => return Ok(shutdown),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Copies the guest console to our stdout; sends the time init reported ready on `ready`.
fn relay_console(mut console: impl Read, ready: Option<mpsc::Sender<Instant>>) {
    let mut out = std::io::stdout();
    let mut buf = [0u8; 4096];
    // Enough of the previous chunk to find a marker split across two reads.
    let mut window: Vec<u8> = Vec::new();
    let mut ready = ready;
    loop {
        let n = match console.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        let _ = out.write_all(chunk);
        let _ = out.flush();
        if ready.is_some() {
            window.extend_from_slice(chunk);
            if window
                .windows(READY_MARKER.len())
                .any(|w| w == READY_MARKER)
                && let Some(tx) = ready.take()
            {
                let _ = tx.send(Instant::now());
            }
            let keep = window.len().saturating_sub(READY_MARKER.len());
            window.drain(..keep);
        }
    }
}

/// A fresh directory for the QMP socket, the firmware variables and the disk copy: mode 0700
/// under a random name and removed on drop, because whoever can connect to the socket
/// controls the VM, and a name others can predict in the shared temp directory could be taken
/// over before we create it.
fn private_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("builder-run-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .context("creating a private directory for QEMU's files")
}

#[cfg(test)]
mod tests;
