//! `Vm`: one running QEMU whose console this process reads, owned from spawn to reaping. It
//! waits for console markers, talks QMP, keeps the `SHUTDOWN` event, and on drop kills QEMU's
//! whole process group and removes its temporary files.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::config::{QemuConfig, qemu_binary_and_package};
use crate::console::{self, Console, Found, TAIL_LINES};
use crate::error::Error;
use crate::qmp::{Qmp, Shutdown};
use crate::{Arch, wait_until};

/// QEMU creates its QMP socket before the guest runs a single instruction; this is slack for
/// a loaded machine.
const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// After a marker matches, how long to wait for the rest of its line (prompts never finish).
const LINE_GRACE: Duration = Duration::from_millis(500);
/// After the console closes, how long QEMU may take to be reaped.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// A running QEMU guest. Dropping it kills QEMU (SIGKILL to its process group) and reaps it.
pub struct Vm {
    arch: Arch,
    label: String,
    log_path: PathBuf,
    child: Child,
    status: Option<ExitStatus>,
    stdin: Option<ChildStdin>,
    console: Arc<Console>,
    stderr: Arc<Console>,
    readers: Vec<JoinHandle<()>>,
    qmp_socket: PathBuf,
    qmp: Option<Qmp>,
    /// QEMU's `SHUTDOWN` event, once a QMP connection saw it.
    shutdown: Option<Shutdown>,
    started: Instant,
    cursor: usize,
    last_match: Option<Duration>,
    // Last, so it is removed after QEMU is dead (fields drop after `Drop::drop`).
    _run_dir: RunDir,
}

impl Vm {
    pub(crate) fn start(config: QemuConfig) -> Result<Vm, Error> {
        let arch = config.arch;
        let label = unique_label(&format!("{}-{}", run_name(config.name.as_deref()), arch));
        let run_dir = RunDir::create()?;
        let qmp_socket = run_dir.0.join("qmp.sock");
        let command_line = config.command_line(&run_dir.0, &qmp_socket)?;
        let program = command_line.program.clone();

        let logs = config.log_dir.clone().unwrap_or_else(|| run_dir.0.clone());
        fs::create_dir_all(&logs).map_err(|source| Error::Io {
            action: "create the log directory",
            path: logs.clone(),
            source,
        })?;
        let log_path = logs.join(format!("{label}.log"));
        let mut log = File::create(&log_path).map_err(|source| Error::Io {
            action: "create the console log",
            path: log_path.clone(),
            source,
        })?;
        // The command line heads the log so a failed run can be repeated by hand.
        let _ = writeln!(log, "# {}", command_line.shell_line());

        let mut command = command_line.command();
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so one killpg reaches QEMU and anything it forks, and a Ctrl-C
            // meant for cargo does not race our cleanup.
            .process_group(0);
        // If the test process dies without running Drop (Ctrl-C, abort, timeout kill), QEMU
        // must not live on eating the CPUs.
        die_with_parent(&mut command);
        let started = Instant::now();
        let mut child = spawn_from_keeper(command).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                Error::MissingTool {
                    what: program.display().to_string(),
                    package: qemu_binary_and_package(arch).1,
                }
            } else {
                Error::Spawn {
                    program: program.clone(),
                    source,
                }
            }
        })?;

        let echo = config.echo;
        let console = Arc::new(Console::default());
        let stderr = Arc::new(Console::default());
        let mut vm = Vm {
            arch,
            label,
            log_path,
            stdin: child.stdin.take(),
            status: None,
            console: Arc::clone(&console),
            stderr: Arc::clone(&stderr),
            readers: Vec::new(),
            qmp_socket,
            qmp: None,
            shutdown: None,
            started,
            cursor: 0,
            last_match: None,
            _run_dir: run_dir,
            child,
        };
        // From here on, an early return drops `vm`, which kills QEMU.
        let spawn_error = |source| Error::Spawn {
            program: "a console reader thread".into(),
            source,
        };
        if let Some(out) = vm.child.stdout.take() {
            let reader = console::spawn_reader(
                format!("{}-console", vm.label),
                out,
                console,
                Some(log),
                echo,
            )
            .map_err(spawn_error)?;
            vm.readers.push(reader);
        }
        if let Some(err) = vm.child.stderr.take() {
            let reader =
                console::spawn_reader(format!("{}-stderr", vm.label), err, stderr, None, echo)
                    .map_err(spawn_error)?;
            vm.readers.push(reader);
        }
        Ok(vm)
    }

    /// Waits until `marker` appears after the previous successful expect, and returns the
    /// whole line it is on (terminal escapes and `\r` removed).
    pub fn expect(&mut self, marker: &str, timeout: Duration) -> Result<String, Error> {
        self.expect_any(&[marker], timeout).map(|(_, line)| line)
    }

    /// Like [`Vm::expect`] for several markers: whichever appears first wins; returns its
    /// index in `markers` and its line.
    pub fn expect_any(
        &mut self,
        markers: &[&str],
        timeout: Duration,
    ) -> Result<(usize, String), Error> {
        let deadline = Instant::now() + timeout;
        let needles: Vec<&[u8]> = markers.iter().map(|m| m.as_bytes()).collect();
        match self.console.wait_for(&needles, self.cursor, deadline) {
            Found::At { index, start, end } => {
                self.cursor = end;
                self.last_match = self
                    .console
                    .arrival_of(end)
                    .map(|at| at.saturating_duration_since(self.started));
                let line = self
                    .console
                    .line_at(start, end, Instant::now() + LINE_GRACE);
                Ok((index, line))
            }
            Found::TimedOut => Err(Error::Timeout {
                vm: self.label.clone(),
                marker: describe_markers(markers),
                timeout,
                since_start: self.started.elapsed(),
                log: self.log_path.clone(),
                tail: self.console.tail(TAIL_LINES),
            }),
            Found::Closed => Err(self.exited_error(describe_markers(markers))),
        }
    }

    /// Everything the console printed so far, as text (terminal escapes and `\r` removed).
    pub fn console(&self) -> String {
        console::clean(&self.console.bytes())
    }

    /// Everything the console printed so far, byte for byte.
    pub fn console_bytes(&self) -> Vec<u8> {
        self.console.bytes()
    }

    /// How long after QEMU started the first occurrence of `marker` reached the console, or
    /// `None` if it has not appeared. For boot times.
    pub fn elapsed_at(&self, marker: &str) -> Option<Duration> {
        let (_, end) = self.console.find(marker.as_bytes())?;
        let at = self.console.arrival_of(end)?;
        Some(at.saturating_duration_since(self.started))
    }

    /// How long after QEMU started the marker matched by the last successful expect arrived.
    pub fn last_match_at(&self) -> Option<Duration> {
        self.last_match
    }

    /// Time since QEMU was spawned.
    pub fn since_start(&self) -> Duration {
        self.started.elapsed()
    }

    /// Types `text` on the serial console.
    pub fn send(&mut self, text: &str) -> Result<(), Error> {
        let result = match self.stdin.as_mut() {
            Some(stdin) => stdin
                .write_all(text.as_bytes())
                .and_then(|()| stdin.flush()),
            None => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
        };
        result.map_err(|source| Error::ConsoleWrite {
            vm: self.label.clone(),
            source,
        })
    }

    /// The QMP connection, made on first use.
    pub fn qmp(&mut self) -> Result<&mut Qmp, Error> {
        let qmp = match self.qmp.take() {
            Some(qmp) => qmp,
            None => match Qmp::connect(&self.qmp_socket, QMP_CONNECT_TIMEOUT) {
                Ok(qmp) => qmp,
                Err(_) if self.try_status().is_some() => {
                    return Err(self.exited_error("the QMP socket".to_string()));
                }
                Err(source) => {
                    return Err(Error::Qmp {
                        vm: self.label.clone(),
                        source,
                    });
                }
            },
        };
        Ok(self.qmp.insert(qmp))
    }

    /// Presses the power button (QMP `system_powerdown`); returns once QEMU took the request.
    pub fn powerdown(&mut self) -> Result<(), Error> {
        let label = self.label.clone();
        self.qmp()?
            .system_powerdown()
            .map_err(|source| Error::Qmp { vm: label, source })
    }

    /// Tells QEMU to exit now (QMP `quit`); follow with [`Vm::wait_exit`].
    pub fn quit(&mut self) -> Result<(), Error> {
        let label = self.label.clone();
        self.qmp()?
            .quit()
            .map_err(|source| Error::Qmp { vm: label, source })
    }

    /// QEMU's run state from QMP `query-status`, e.g. `running`.
    pub fn query_status(&mut self) -> Result<String, Error> {
        let label = self.label.clone();
        self.qmp()?
            .query_status()
            .map_err(|source| Error::Qmp { vm: label, source })
    }

    /// Waits for QEMU to exit by itself (guest power-off, `-no-reboot` reboot, `quit`).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        let deadline = Instant::now() + timeout;
        let exited = wait_until(deadline, Duration::from_millis(20), || {
            self.pump_events(Duration::from_millis(1));
            self.try_status()
        });
        match exited {
            Some(status) => Ok(status),
            None => Err(Error::ExitTimeout {
                vm: self.label.clone(),
                timeout,
                log: self.log_path.clone(),
                tail: self.console.tail(TAIL_LINES),
            }),
        }
    }

    /// How the guest stopped, from QEMU's `SHUTDOWN` event: known once QEMU exited (see
    /// [`Vm::wait_exit`]) if the QMP connection was open by then, as it is after
    /// [`Vm::powerdown`], [`Vm::query_status`] or [`Vm::qmp`]. A clean power-off is
    /// `vm.shutdown().is_some_and(Shutdown::is_guest_poweroff)`.
    pub fn shutdown(&self) -> Option<&Shutdown> {
        self.shutdown.as_ref()
    }

    /// Kills QEMU now (the test would otherwise wait for drop).
    pub fn kill(&mut self) {
        if self.status.is_some() {
            // Already reaped: its pid, and so the group id, may belong to someone else now.
            return;
        }
        if let Ok(raw) = i32::try_from(self.child.id()) {
            // ESRCH only means the group is already gone.
            let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
        }
        if let Ok(status) = self.child.wait() {
            self.status = Some(status);
        }
    }

    /// QEMU's process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// `<name>-<arch>`, as used in messages and the log file name.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The console log, `<log_dir>/<name>-<arch>.log` (see [`QemuConfig::log_dir`]).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// QEMU's stderr so far (warnings, errors about its command line).
    pub fn qemu_stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.bytes()).into_owned()
    }

    /// QEMU's exit status if it has exited; reaps it.
    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.status = Some(status);
            // QEMU is gone, so the socket is at its end: this reads what is left and stops.
            self.pump_events(Duration::from_millis(100));
            self.qmp = None;
        }
        self.status
    }

    /// Reads the QMP events that arrive within `wait` (if connected), keeping `SHUTDOWN`.
    fn pump_events(&mut self, wait: Duration) {
        let Some(qmp) = self.qmp.as_mut() else {
            return;
        };
        loop {
            match qmp.next_event(wait) {
                Ok(Some(event)) => {
                    if let Some(shutdown) = Shutdown::from_event(&event) {
                        self.shutdown = Some(shutdown);
                    }
                }
                Ok(None) => return,
                Err(_) => {
                    self.qmp = None;
                    return;
                }
            }
        }
    }

    /// The error for "QEMU is gone and `what` never came": waits briefly for the exit status
    /// and QEMU's last words on stderr, which usually say why.
    fn exited_error(&mut self, what: String) -> Error {
        let deadline = Instant::now() + EXIT_GRACE;
        let status = wait_until(deadline, Duration::from_millis(10), || self.try_status());
        let stderr = Arc::clone(&self.stderr);
        wait_until(deadline, Duration::from_millis(10), || {
            stderr.is_closed().then_some(())
        });
        Error::QemuExited {
            vm: self.label.clone(),
            marker: what,
            status,
            since_start: self.started.elapsed(),
            log: self.log_path.clone(),
            stderr: self.qemu_stderr(),
            tail: self.console.tail(TAIL_LINES),
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.qmp = None;
        self.stdin = None;
        self.kill();
        // QEMU is dead, so its pipes are closed and the readers are at EOF.
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let stderr = self.stderr.bytes();
        if !stderr.is_empty()
            && let Ok(mut log) = OpenOptions::new().append(true).open(&self.log_path)
        {
            let _ = log.write_all(b"\n# QEMU stderr:\n");
            let _ = log.write_all(&stderr);
        }
    }
}

/// Makes the process `command` spawns get SIGKILL when the thread that spawned it ends (the
/// whole process, for a spawn from `main`'s thread), so a QEMU never outlives its owner.
pub fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and makes a single prctl
    // syscall, which is async-signal-safe; it neither allocates nor takes locks.
    unsafe {
        command
            .pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from));
    }
}

/// A per-VM temporary directory (QMP socket, firmware variables), removed on drop.
struct RunDir(PathBuf);

impl RunDir {
    fn create() -> Result<RunDir, Error> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            // Short: the QMP socket path inside must fit in sun_path (108 bytes).
            let dir = std::env::temp_dir().join(format!("hostos-qemu-{}-{n}", std::process::id()));
            match fs::create_dir(&dir) {
                Ok(()) => return Ok(RunDir(dir)),
                // Left by an earlier process that had our pid; take the next name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(Error::Io {
                        action: "create the VM's temporary directory",
                        path: dir,
                        source,
                    });
                }
            }
        }
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Spawns `command` from one long-lived thread. The parent-death signal set in the child fires
/// when the *thread* that forked it exits, so forking from a test's own thread would kill
/// QEMU as soon as that thread ends even if the `Vm` lives on (say, in a static).
fn spawn_from_keeper(mut command: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static KEEPER: OnceLock<Option<mpsc::Sender<Request>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("hostos-qemu-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .ok()
            .map(|_| tx)
    });
    let Some(keeper) = keeper else {
        // No keeper thread could be started: QEMU then dies with this thread, which is
        // still better than not starting it.
        return command.spawn();
    };
    let (reply_tx, reply_rx) = mpsc::channel();
    keeper
        .send((command, reply_tx))
        .map_err(|_| io::Error::other("the QEMU spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("the QEMU spawner thread is gone"))?
}

/// The run's name: the one given, else the test's (libtest names each test's thread after the
/// test), made safe for a file name.
fn run_name(given: Option<&str>) -> String {
    let thread = thread::current();
    let raw = match (given, thread.name()) {
        (Some(name), _) => name,
        (None, Some(name)) if name != "main" => name,
        _ => "qemu",
    };
    raw.replace("::", ".")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// `label`, or `label-2`, `label-3`... if this process already used it, so a test that boots
/// twice keeps both logs.
fn unique_label(label: &str) -> String {
    static USED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut used = USED.lock().unwrap_or_else(PoisonError::into_inner);
    let used = used.get_or_insert_with(HashSet::new);
    let mut candidate = label.to_string();
    let mut n = 1;
    while !used.insert(candidate.clone()) {
        n += 1;
        candidate = format!("{label}-{n}");
    }
    candidate
}

fn describe_markers(markers: &[&str]) -> String {
    match markers {
        [one] => format!("{one:?}"),
        many => format!("any of {many:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_are_file_safe() {
        assert_eq!(run_name(Some("boot::x86 uefi")), "boot.x86-uefi");
    }

    #[test]
    fn labels_repeat_with_a_counter() {
        assert_eq!(unique_label("unit-label-x"), "unit-label-x");
        assert_eq!(unique_label("unit-label-x"), "unit-label-x-2");
    }
}
