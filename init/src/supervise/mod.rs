//! Supervision: every app's processes (pre-start, main, post-stop) as children of init, their
//! output, exits, restart policies with backoff, and the orderly stop at shutdown. Driven by
//! init's one poll loop (`pid1`): the loop polls [`Supervisor::fds`], hands readable ones to
//! [`Supervisor::on_ready`], child exits (reaped on SIGCHLD) to [`Supervisor::on_exit`], and
//! wakes at [`Supervisor::next_deadline`] for [`Supervisor::on_timer`]. No threads, no sleeps.
//!
//! Exits are taken from init's SIGCHLD reaping (`reap`), not from pidfds: one `waitpid(-1)`
//! loop collects every child, and the statuses of supervised pids come here. That way an
//! orphan reparented to init and an app are reaped the same way and no status is lost.
//!
//! How the processes are made (plans, namespaces, mounts) is the [`Launcher`]'s business.

pub mod logs;

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hostdecl::RestartPolicy;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;

use crate::console::{self, Line, PodEvent};
use crate::pod::exec_plan::Role;
use logs::{LOG_CAP, LineSplitter, LogFile};

/// The first restart waits this long; each further one twice as long, up to [`BACKOFF_CAP`].
pub const BACKOFF_START: Duration = Duration::from_millis(100);
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A run this long resets the backoff: the app had recovered.
pub const STABLE_RUN: Duration = Duration::from_secs(10);

/// A process a [`Launcher`] started.
#[derive(Debug)]
pub struct Launched {
    pub pid: i32,
    /// Read end of the exec-status pipe: EOF once `execve` succeeded, else the child's error.
    pub status: OwnedFd,
    /// Read end of the pipe that is the process's stdout and stderr (non-blocking).
    pub output: OwnedFd,
    /// When the process was ready to fork: image verified and rendered, root mounted.
    pub prepared: Instant,
}

/// What became of an app's run, from its cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ended {
    pub oom_killed: bool,
    pub memory_limit: Option<u64>,
}

/// Starts apps' processes.
pub trait Launcher {
    /// Starts `role` of app `app` (an index into the supervisor's apps).
    fn launch(&mut self, app: usize, role: Role) -> Result<Launched, String>;
    /// Whether the app has that event handler.
    fn has(&self, app: usize, role: Role) -> bool;
    /// The main process ended: what the cgroup says, after killing what it left behind.
    fn ended(&mut self, app: usize) -> Ended;
    /// The host stops: end every pod sandbox and unmount the apps' roots.
    fn stop_all(&mut self);
}

/// One app as the supervisor knows it.
#[derive(Debug, Clone)]
pub struct AppSpec {
    /// `<pod>/<app>`.
    pub who: String,
    pub restart: RestartPolicy,
    /// `POD_LOG_DIR/<pod>`.
    pub log_dir: PathBuf,
    pub app: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    Status(usize),
    Output(usize),
}

#[derive(Debug)]
struct Proc {
    pid: i32,
    role: Role,
    status: Option<OwnedFd>,
    output: Option<OwnedFd>,
    failed_to_start: bool,
    prepared: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Backoff(Instant),
    Done,
}

#[derive(Debug)]
struct Slot {
    spec: AppSpec,
    phase: Phase,
    proc: Option<Proc>,
    splitter: LineSplitter,
    log: LogFile,
    restarts: u32,
    delay: Duration,
    run_started: Instant,
    /// Whether the current run failed (set when main or pre-start ends).
    failed: bool,
    main_started_once: bool,
}

impl Slot {
    fn new(spec: AppSpec, now: Instant) -> Slot {
        Slot {
            log: LogFile::new(&spec.log_dir, &spec.app, LOG_CAP),
            spec,
            phase: Phase::Done,
            proc: None,
            splitter: LineSplitter::default(),
            restarts: 0,
            delay: BACKOFF_START,
            run_started: now,
            failed: false,
            main_started_once: false,
        }
    }
}

pub struct Supervisor {
    slots: Vec<Slot>,
    init_started: Instant,
    all_started_said: bool,
    stopping: bool,
}

impl Supervisor {
    pub fn new(apps: Vec<AppSpec>, init_started: Instant) -> Supervisor {
        let now = Instant::now();
        Supervisor {
            slots: apps.into_iter().map(|spec| Slot::new(spec, now)).collect(),
            init_started,
            all_started_said: false,
            stopping: false,
        }
    }

    /// Adds the apps of a pod prepared later (its images fetched at boot) and starts their
    /// first runs. Their indexes follow the apps already here, as the launcher's do; "all
    /// started" is said again once these are up too.
    pub fn add_and_start(&mut self, apps: Vec<AppSpec>, l: &mut dyn Launcher) {
        if self.stopping || apps.is_empty() {
            return;
        }
        let now = Instant::now();
        let first = self.slots.len();
        self.slots
            .extend(apps.into_iter().map(|spec| Slot::new(spec, now)));
        self.all_started_said = false;
        for i in first..self.slots.len() {
            self.start_run(i, l);
        }
        self.say_all_started();
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Starts every app's first run.
    pub fn start_all(&mut self, l: &mut dyn Launcher) {
        for i in 0..self.slots.len() {
            self.start_run(i, l);
        }
        self.say_all_started();
    }

    fn say(&self, i: usize, event: PodEvent<'_>) {
        if let Some(s) = self.slots.get(i) {
            console::emit(&Line::Pod {
                who: &s.spec.who,
                event,
            });
        }
    }

    fn start_run(&mut self, i: usize, l: &mut dyn Launcher) {
        let role = if l.has(i, Role::PreStart) {
            Role::PreStart
        } else {
            Role::Main
        };
        if let Some(s) = self.slots.get_mut(i) {
            s.run_started = Instant::now();
            s.failed = false;
        }
        self.launch(i, role, l);
    }

    fn launch(&mut self, i: usize, role: Role, l: &mut dyn Launcher) {
        match l.launch(i, role) {
            Ok(p) => {
                if let Some(s) = self.slots.get_mut(i) {
                    s.phase = Phase::Running;
                    s.proc = Some(Proc {
                        pid: p.pid,
                        role,
                        status: Some(p.status),
                        output: Some(p.output),
                        failed_to_start: false,
                        prepared: p.prepared,
                    });
                }
            }
            Err(e) => {
                self.say(i, PodEvent::FailedToStart(&e));
                self.run_over(i, true, l);
            }
        }
    }

    /// The descriptors to poll, with what each is.
    pub fn fds(&self) -> Vec<(BorrowedFd<'_>, Token)> {
        let mut out = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            if let Some(p) = &s.proc {
                if let Some(fd) = &p.status {
                    out.push((fd.as_fd(), Token::Status(i)));
                }
                if let Some(fd) = &p.output {
                    out.push((fd.as_fd(), Token::Output(i)));
                }
            }
        }
        out
    }

    /// A polled descriptor is readable (or hung up).
    pub fn on_ready(&mut self, token: Token) {
        match token {
            Token::Status(i) => self.read_status(i),
            Token::Output(i) => self.read_output(i),
        }
    }

    fn read_status(&mut self, i: usize) {
        let Some(p) = self.slots.get_mut(i).and_then(|s| s.proc.as_mut()) else {
            return;
        };
        let Some(fd) = p.status.take() else {
            return;
        };
        let mut text = Vec::new();
        let _ = std::fs::File::from(fd).take(4096).read_to_end(&mut text);
        let (pid, role, prepared_at) = (p.pid, p.role, p.prepared);
        if text.is_empty() {
            if role == Role::Main {
                let now = Instant::now();
                let prepared = now.duration_since(prepared_at).as_micros() / 100;
                if let Some(s) = self.slots.get_mut(i) {
                    s.main_started_once = true;
                }
                self.say(
                    i,
                    PodEvent::Started {
                        pid,
                        init_ms: now.duration_since(self.init_started).as_millis(),
                        prepared_tenths: prepared,
                    },
                );
                self.say_all_started();
            }
        } else {
            p.failed_to_start = true;
            let message = String::from_utf8_lossy(&text).trim().to_string();
            self.say(i, PodEvent::FailedToStart(&message));
        }
    }

    fn read_output(&mut self, i: usize) {
        let Some(s) = self.slots.get_mut(i) else {
            return;
        };
        let Some(p) = s.proc.as_mut() else {
            return;
        };
        let Some(fd) = p.output.as_ref() else {
            return;
        };
        let mut buf = [0u8; 8192];
        let mut eof = false;
        loop {
            match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    for line in s.splitter.feed(buf.get(..n).unwrap_or_default()) {
                        emit_line(&s.spec.who, &mut s.log, &line);
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        if eof {
            p.output = None;
            if let Some(rest) = s.splitter.finish() {
                emit_line(&s.spec.who, &mut s.log, &rest);
            }
        }
    }

    /// A reaped child; returns whether it was one of the supervised processes.
    pub fn on_exit(&mut self, status: WaitStatus, l: &mut dyn Launcher) -> bool {
        let Some(pid) = status.pid().map(|p| p.as_raw()) else {
            return false;
        };
        let Some(i) = self
            .slots
            .iter()
            .position(|s| s.proc.as_ref().is_some_and(|p| p.pid == pid))
        else {
            return false;
        };
        // What it printed and whether it reached exec, before the exit itself.
        self.read_status(i);
        self.read_output(i);
        let Some(proc) = self.slots.get_mut(i).and_then(|s| s.proc.take()) else {
            return true;
        };
        if let Some(s) = self.slots.get_mut(i)
            && let Some(rest) = s.splitter.finish()
        {
            emit_line(&s.spec.who, &mut s.log, &rest);
        }
        let ok = matches!(status, WaitStatus::Exited(_, 0)) && !proc.failed_to_start;
        match proc.role {
            Role::PreStart if ok => self.launch(i, Role::Main, l),
            Role::PreStart => {
                self.say(
                    i,
                    PodEvent::FailedToStart(&describe("the pre-start handler", status)),
                );
                self.run_over(i, true, l);
            }
            Role::Main => {
                match status {
                    WaitStatus::Exited(_, code) => self.say(i, PodEvent::Exited(code)),
                    WaitStatus::Signaled(_, sig, _) => self.say(i, PodEvent::Killed(sig.as_str())),
                    _ => {}
                }
                let ended = l.ended(i);
                if ended.oom_killed {
                    self.say(
                        i,
                        PodEvent::OomKilled {
                            limit: ended.memory_limit,
                        },
                    );
                }
                if let Some(s) = self.slots.get_mut(i) {
                    s.failed = !ok;
                }
                if !proc.failed_to_start {
                    self.say_all_started_after_end(i);
                }
                if l.has(i, Role::PostStop) {
                    self.launch(i, Role::PostStop, l);
                } else {
                    let failed = !ok;
                    self.run_over(i, failed, l);
                }
            }
            Role::PostStop => {
                let failed = self.slots.get(i).is_some_and(|s| s.failed);
                self.run_over(i, failed, l);
            }
        }
        true
    }

    fn say_all_started_after_end(&mut self, i: usize) {
        if let Some(s) = self.slots.get_mut(i) {
            s.main_started_once = true;
        }
        self.say_all_started();
    }

    /// A run ended (main and post-stop done, or the start failed): restart or stop.
    fn run_over(&mut self, i: usize, failed: bool, _l: &mut dyn Launcher) {
        let stopping = self.stopping;
        let Some(s) = self.slots.get_mut(i) else {
            return;
        };
        s.proc = None;
        let again = !stopping
            && match s.spec.restart {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => failed,
                RestartPolicy::Never => false,
            };
        if !again {
            s.phase = Phase::Done;
            self.say(i, PodEvent::Stopped);
            return;
        }
        if s.run_started.elapsed() >= STABLE_RUN {
            s.delay = BACKOFF_START;
        }
        let delay = s.delay;
        s.delay = (s.delay * 2).min(BACKOFF_CAP);
        s.restarts += 1;
        s.phase = Phase::Backoff(Instant::now() + delay);
        let restart = s.restarts;
        self.say(
            i,
            PodEvent::Restarting {
                ms: delay.as_millis(),
                restart,
            },
        );
    }

    /// The nearest restart time, if any app waits for one.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| match s.phase {
                Phase::Backoff(at) => Some(at),
                _ => None,
            })
            .min()
    }

    /// Starts the runs whose backoff is over.
    pub fn on_timer(&mut self, now: Instant, l: &mut dyn Launcher) {
        for i in 0..self.slots.len() {
            if matches!(self.slots.get(i).map(|s| s.phase), Some(Phase::Backoff(at)) if at <= now) {
                self.start_run(i, l);
            }
        }
    }

    fn say_all_started(&mut self) {
        if self.all_started_said || self.slots.is_empty() {
            return;
        }
        if self.slots.iter().all(|s| s.main_started_once) {
            self.all_started_said = true;
            let running = self
                .slots
                .iter()
                .filter(|s| s.proc.as_ref().is_some_and(|p| p.role == Role::Main))
                .count();
            console::emit(&Line::Pod {
                who: "all",
                event: PodEvent::AllStarted {
                    running,
                    rss_kib: resident_kib().unwrap_or(0),
                },
            });
        }
    }

    /// Shutdown, first step: no more restarts; `signal` to every running process group.
    pub fn stop(&mut self, signal: Signal) {
        self.stopping = true;
        for i in 0..self.slots.len() {
            let Some(s) = self.slots.get_mut(i) else {
                continue;
            };
            match (&s.proc, s.phase) {
                (Some(p), _) => {
                    // Each app process leads its own process group (setpgid in the child).
                    let group = nix::unistd::Pid::from_raw(-p.pid);
                    let _ = nix::sys::signal::kill(group, signal);
                    let _ = nix::sys::signal::kill(group, Signal::SIGCONT);
                }
                (None, Phase::Backoff(_)) => {
                    s.phase = Phase::Done;
                    self.say(i, PodEvent::Stopped);
                }
                _ => {}
            }
        }
    }

    /// How often app `i` was restarted.
    pub fn restarts(&self, i: usize) -> u32 {
        self.slots.get(i).map_or(0, |s| s.restarts)
    }

    /// Whether app `i` will not run again.
    pub fn done(&self, i: usize) -> bool {
        self.slots
            .get(i)
            .is_some_and(|s| s.phase == Phase::Done && s.proc.is_none())
    }

    /// The pids of the running processes.
    pub fn pids(&self) -> Vec<i32> {
        self.slots
            .iter()
            .filter_map(|s| s.proc.as_ref().map(|p| p.pid))
            .collect()
    }

    /// Whether no supervised process is left.
    pub fn idle(&self) -> bool {
        self.slots.iter().all(|s| s.proc.is_none())
    }

    /// Shutdown, last step: the sandboxes go, the log files close (before /var unmounts).
    pub fn finish(&mut self, l: &mut dyn Launcher) {
        l.stop_all();
        for s in &mut self.slots {
            s.log.close();
        }
    }
}

fn emit_line(who: &str, log: &mut LogFile, line: &[u8]) {
    logs::console_line(who, line);
    if let Err(e) = log.append(line) {
        console::warn(&format!("{}: {e}", log.path().display()));
        // One warning, not one per line: stop logging to a file that fails.
        log.close();
    }
}

fn describe(what: &str, status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("{what} exited with status {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("{what} was killed by {}", sig.as_str()),
        other => format!("{what} ended: {other:?}"),
    }
}

/// init's VmRSS from /proc/self/status, in KiB.
pub fn resident_kib() -> io::Result<u64> {
    status_kib("VmRSS:")
}

/// init's peak resident memory so far (`VmHWM`), in KiB: what a fetch's buffers cost at most.
pub fn peak_resident_kib() -> io::Result<u64> {
    status_kib("VmHWM:")
}

fn status_kib(field: &str) -> io::Result<u64> {
    let text = std::fs::read_to_string("/proc/self/status")?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0))
}

#[cfg(test)]
mod tests;
