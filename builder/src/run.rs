//! `builder run`: boot built artifacts under QEMU with the serial console on this terminal.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use hostdecl::Arch;

use crate::image::Built;
use crate::tools;

pub struct RunOptions {
    pub kvm: bool,
    /// Press the guest's power button this long after init reports ready.
    pub powerdown_after: Option<Duration>,
    pub memory_mib: u32,
}

/// The QEMU command line for a direct kernel boot of `built`.
pub fn qemu_command(built: &Built, opts: &RunOptions, qmp: Option<&Path>) -> Result<Command> {
    let (tool, machine, cpu) = match built.arch {
        Arch::X86_64 => (tools::QEMU_X86_64, "q35", "max"),
        // pauth-impdef: the architected QARMA pointer-auth algorithm is very slow under TCG.
        Arch::Aarch64 => (tools::QEMU_AARCH64, "virt", "max,pauth-impdef=on"),
    };
    tools::require(&[tool], &[])?;
    let mut c = Command::new(tool.program);
    c.args(["-machine", machine, "-cpu", cpu, "-m"])
        .arg(opts.memory_mib.to_string())
        .args(["-smp", "2", "-nodefaults", "-no-reboot", "-display", "none"])
        .args(["-serial", "mon:stdio", "-device", "virtio-rng-pci"])
        .arg("-accel")
        .arg(if opts.kvm { "kvm" } else { "tcg" })
        .arg("-kernel")
        .arg(&built.kernel)
        .arg("-initrd")
        .arg(&built.initramfs)
        .arg("-append")
        .arg(&built.cmdline);
    if let Some(q) = qmp {
        c.arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", q.display()));
    }
    Ok(c)
}

/// The console line after which the power button may be pressed: init watches for it from
/// then on (a press before init opened the input device would be lost).
const READY_MARKER: &[u8] = b"init: ready";

pub fn run(built: &Built, opts: &RunOptions) -> Result<()> {
    let qmp_dir = socket_dir()?;
    let qmp = qmp_dir.path().join("qmp.sock");
    let mut cmd = qemu_command(built, opts, Some(&qmp))?;
    eprintln!(
        "run: booting {} ({}); quit with Ctrl-A X",
        built.dir.display(),
        built.arch
    );
    // The console passes through us so that we can see init's ready line.
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().context("starting QEMU")?;
    let console = child.stdout.take().context("QEMU's console pipe")?;
    let powerdown_after = opts.powerdown_after;
    let relay = std::thread::spawn(move || relay_console(console, &qmp, powerdown_after));
    let status = child.wait().context("waiting for QEMU")?;
    let _ = relay.join();
    drop(qmp_dir);
    if !status.success() {
        bail!("QEMU exited with {status}");
    }
    Ok(())
}

/// Copies the guest console to our stdout; once init reports ready and `powerdown_after` is
/// set, presses the power button that long afterwards.
fn relay_console(mut console: impl Read, qmp: &Path, powerdown_after: Option<Duration>) {
    let mut out = std::io::stdout();
    let mut buf = [0u8; 4096];
    // Enough of the previous chunk to find a marker split across two reads.
    let mut window: Vec<u8> = Vec::new();
    let mut armed = powerdown_after;
    loop {
        let n = match console.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        let _ = out.write_all(chunk);
        let _ = out.flush();
        if let Some(after) = armed {
            window.extend_from_slice(chunk);
            if window
                .windows(READY_MARKER.len())
                .any(|w| w == READY_MARKER)
            {
                armed = None;
                let qmp = qmp.to_path_buf();
                std::thread::spawn(move || {
                    std::thread::sleep(after);
                    if let Err(e) = powerdown(&qmp) {
                        log::warn!("run: could not send system_powerdown: {e:#}");
                    }
                });
            }
            let keep = window.len().saturating_sub(READY_MARKER.len());
            window.drain(..keep);
        }
    }
}

/// A fresh directory for the QMP socket, mode 0700 under a random name and removed on drop:
/// whoever can connect to the socket controls the VM, and a name others can predict in the
/// shared temp directory could be taken over before we create it.
fn socket_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("builder-run-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .context("creating a private directory for QEMU's QMP socket")
}

/// Sends `system_powerdown` over QMP: the guest sees its power button pressed.
pub fn powerdown(socket: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match UnixStream::connect(socket) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("connecting to QMP at {}", socket.display()));
            }
        }
    };
    let at = || format!("QMP socket {}", socket.display());
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .with_context(at)?;
    let mut reader = BufReader::new(stream.try_clone().with_context(at)?);
    let mut w = stream;
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .context("reading QMP greeting")?;
    for cmd in ["qmp_capabilities", "system_powerdown"] {
        writeln!(w, "{{\"execute\":\"{cmd}\"}}").with_context(at)?;
        loop {
            line.clear();
            if reader.read_line(&mut line).with_context(at)? == 0 {
                bail!("QMP closed while waiting for the reply to {cmd}");
            }
            if line.contains("\"return\"") {
                break;
            }
            if line.contains("\"error\"") {
                bail!("QMP refused {cmd}: {}", line.trim());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn qmp_socket_dir_is_private_fresh_and_removed_after() {
        // The name the socket directory used to have: squatting it must change nothing.
        let old = std::env::temp_dir().join(format!("builder-run-{}", std::process::id()));
        std::fs::create_dir_all(&old).unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o777)).unwrap();
        let a = socket_dir().unwrap();
        let b = socket_dir().unwrap();
        std::fs::remove_dir(&old).unwrap();
        assert_ne!(a.path(), old);
        assert_ne!(a.path(), b.path());
        let meta = std::fs::symlink_metadata(a.path()).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists(), "{} left behind", path.display());
    }
}
