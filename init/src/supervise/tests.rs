//! The supervisor driven with real processes (`/bin/sh -c ...`) through a test launcher and a
//! small driver standing in for pid1's loop: output, exits, restarts with backoff, stop.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::fcntl::OFlag;
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use super::*;

struct ShLauncher {
    scripts: Vec<String>,
    post_stop: Vec<Option<String>>,
    launches: Vec<(usize, Role)>,
}

impl Launcher for ShLauncher {
    fn launch(&mut self, app: usize, role: Role) -> Result<Launched, String> {
        self.launches.push((app, role));
        let script = match role {
            Role::PostStop => self.post_stop[app].clone().ok_or("none")?,
            _ => self.scripts[app].clone(),
        };
        let (out_r, out_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(|e| e.to_string())?;
        let (status_r, status_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
        let err = out_w.try_clone().map_err(|e| e.to_string())?;
        let (stdout, stderr) = (Stdio::from(out_w), Stdio::from(err));
        let child = Command::new("/bin/sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|e| e.to_string())?;
        drop(status_w);
        Ok(Launched {
            pid: i32::try_from(child.id()).map_err(|e| e.to_string())?,
            status: status_r,
            output: out_r,
            prepared: Instant::now(),
        })
    }
    fn has(&self, app: usize, role: Role) -> bool {
        match role {
            Role::Main => true,
            Role::PreStart => false,
            Role::PostStop => self.post_stop[app].is_some(),
        }
    }
    fn ended(&mut self, _app: usize) -> Ended {
        Ended::default()
    }
    fn stop_all(&mut self) {}
}

/// pid1's loop in small: read what is readable, reap our own children, fire timers.
fn drive(sup: &mut Supervisor, l: &mut ShLauncher, until: impl Fn(&Supervisor) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !until(sup) {
        assert!(Instant::now() < deadline, "timed out");
        let tokens: Vec<Token> = sup.fds().into_iter().map(|(_, t)| t).collect();
        for t in tokens {
            sup.on_ready(t);
        }
        for pid in sup.pids() {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => {}
                Ok(status) => {
                    assert!(sup.on_exit(status, l));
                }
            }
        }
        sup.on_timer(Instant::now(), l);
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn spec(dir: &std::path::Path, app: &str, restart: RestartPolicy) -> AppSpec {
    AppSpec {
        who: format!("test/{app}"),
        restart,
        log_dir: dir.to_path_buf(),
        app: app.into(),
    }
}

#[test]
fn on_failure_restarts_with_growing_backoff_and_never_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut l = ShLauncher {
        scripts: vec!["echo crash; exit 3".into(), "exit 4".into()],
        post_stop: vec![None, None],
        launches: Vec::new(),
    };
    let mut sup = Supervisor::new(
        vec![
            spec(dir.path(), "crashy", RestartPolicy::OnFailure),
            spec(dir.path(), "once", RestartPolicy::Never),
        ],
        Instant::now(),
    );
    let begin = Instant::now();
    sup.start_all(&mut l);
    drive(&mut sup, &mut l, |s| s.restarts(0) >= 3 && s.done(1));
    // Three restarts waited 100 + 200 ms at least before the third was scheduled.
    assert!(
        begin.elapsed() >= Duration::from_millis(300),
        "{:?}",
        begin.elapsed()
    );
    assert_eq!(sup.restarts(1), 0);
    let once_runs = l.launches.iter().filter(|(a, _)| *a == 1).count();
    assert_eq!(once_runs, 1, "a `never` app ran once");
    let log = std::fs::read_to_string(dir.path().join("crashy.log")).expect("log");
    assert!(log.lines().filter(|l| *l == "crash").count() >= 3, "{log}");
    sup.stop(Signal::SIGTERM);
    drive(&mut sup, &mut l, Supervisor::idle);
}

#[test]
fn a_clean_exit_is_not_restarted_on_failure_but_is_always() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut l = ShLauncher {
        scripts: vec!["true".into(), "true".into()],
        post_stop: vec![None, None],
        launches: Vec::new(),
    };
    let mut sup = Supervisor::new(
        vec![
            spec(dir.path(), "job", RestartPolicy::OnFailure),
            spec(dir.path(), "service", RestartPolicy::Always),
        ],
        Instant::now(),
    );
    sup.start_all(&mut l);
    drive(&mut sup, &mut l, |s| s.done(0) && s.restarts(1) >= 1);
    assert_eq!(sup.restarts(0), 0);
    sup.stop(Signal::SIGTERM);
    drive(&mut sup, &mut l, Supervisor::idle);
}

#[test]
fn stop_sends_sigterm_to_the_group_then_runs_post_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut l = ShLauncher {
        scripts: vec!["trap 'echo got-term; exit 0' TERM; while true; do sleep 0.05; done".into()],
        post_stop: vec![Some("echo post-stop".into())],
        launches: Vec::new(),
    };
    let mut sup = Supervisor::new(
        vec![spec(dir.path(), "svc", RestartPolicy::Always)],
        Instant::now(),
    );
    sup.start_all(&mut l);
    // Let the shell install its trap.
    let soon = Instant::now() + Duration::from_millis(300);
    drive(&mut sup, &mut l, |_| Instant::now() >= soon);
    sup.stop(Signal::SIGTERM);
    drive(&mut sup, &mut l, |s| s.idle() && s.done(0));
    assert_eq!(l.launches, [(0, Role::Main), (0, Role::PostStop)]);
    let log = std::fs::read_to_string(dir.path().join("svc.log")).expect("log");
    // dash also reports its `sleep` child ("Terminated"): the group got the signal.
    assert!(log.ends_with("got-term\npost-stop\n"), "{log}");
    assert_eq!(sup.restarts(0), 0, "no restart while stopping");
}

#[test]
fn apps_added_later_get_the_next_indexes_and_start_while_the_first_run_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut l = ShLauncher {
        scripts: vec!["sleep 30".into(), "echo late".into()],
        post_stop: vec![None, None],
        launches: Vec::new(),
    };
    let mut sup = Supervisor::new(
        vec![spec(dir.path(), "early", RestartPolicy::Never)],
        Instant::now(),
    );
    sup.start_all(&mut l);
    // A pod whose image arrived later (fetched at boot).
    sup.add_and_start(vec![spec(dir.path(), "late", RestartPolicy::Never)], &mut l);
    assert_eq!(l.launches, [(0, Role::Main), (1, Role::Main)]);
    drive(&mut sup, &mut l, |s| s.done(1));
    assert!(!sup.done(0), "the first app is still running");
    let log = std::fs::read_to_string(dir.path().join("late.log")).expect("log");
    assert_eq!(log, "late\n");
    sup.stop(Signal::SIGTERM);
    drive(&mut sup, &mut l, Supervisor::idle);
    // Stopping: nothing is added any more.
    sup.add_and_start(
        vec![spec(dir.path(), "never", RestartPolicy::Never)],
        &mut l,
    );
    assert_eq!(l.launches.len(), 2);
}
