//! `pod::sys` on the real kernel, as root: a pod-init, an app spawned from a tiny busybox
//! rootfs over overlayfs, and what the app sees of itself. Each scenario runs in a forked
//! child of the test process, so the test process itself never changes namespaces, cgroups
//! or credentials; the child reports through a file and its exit status.

use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use init::pod::exec_plan::{
    AppRef, Caps, CgroupLimits, ExecPlan, Ids, MountStep, Role, RootPlan,
};
use init::pod::sys::cgroup::{self, RealCgroupFs};
use init::pod::sys::spawn::{self, Spawner};
use init::pod::sys::{root, seccomp};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::ForkResult;

const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &["sh", "cat", "grep", "hostname", "id", "touch"];

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test mounts, clones namespaces and switches users: run it as root \
         (CI and the project's machines do)"
    );
    assert!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} is missing: install the Debian package busybox-static"
    );
}

/// The first cgroup2 mount (`/sys/fs/cgroup` on a pure v2 host, `/sys/fs/cgroup/unified` on a
/// hybrid one).
fn cgroup2_mount() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            post.starts_with("cgroup2 ")
                .then(|| PathBuf::from(pre.split(' ').nth(4).unwrap()))
        })
        .expect("no cgroup2 filesystem is mounted (the kernel needs CONFIG_CGROUPS and cgroup2)")
}

struct Fixture {
    dir: tempfile::TempDir,
    cg_base: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.path().join("lower/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(a)).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("lower/srv")).unwrap();
        let cg_base = cgroup2_mount().join(format!("hostos-test-{}", std::process::id()));
        Fixture { dir, cg_base }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn root_plan(&self) -> RootPlan {
        RootPlan::Overlay {
            lower: self.path("lower"),
            upper: self.path("upper"),
            work: self.path("work"),
            target: self.path("root"),
        }
    }

    fn plan(&self, argv: &[&str], mounts: Vec<MountStep>) -> ExecPlan {
        ExecPlan {
            app: AppRef {
                pod: "web".into(),
                app: "app".into(),
            },
            role: Role::Main,
            root: self.root_plan(),
            mounts,
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![("PATH".into(), "/bin".into())],
            cwd: "/srv".into(),
            ids: Ids {
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 5],
            },
            caps: Caps {
                // CAP_CHOWN and CAP_NET_BIND_SERVICE.
                bounding: 0x401,
                effective: 0,
                ambient: 0,
            },
            no_new_privs: true,
            oom_score_adj: Some(100),
            seccomp: Some(seccomp::default_plan()),
            cgroup: self.cg_base.join("pods/web/app"),
            limits: CgroupLimits::default(),
        }
    }
}

fn standard_mounts() -> Vec<MountStep> {
    let nosuid = (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC) as u64;
    vec![
        MountStep::Fs {
            fstype: "proc",
            path: "/proc".into(),
            flags: nosuid,
            data: None,
        },
        MountStep::Fs {
            fstype: "sysfs",
            path: "/sys".into(),
            flags: nosuid | libc::MS_RDONLY as u64,
            data: None,
        },
        MountStep::Bind {
            source: "/dev/null".into(),
            path: "/dev/null".into(),
            read_only: false,
            recursive: false,
            file: true,
        },
    ]
}

/// What one scenario saw: the app's output, its exec status, its exit.
#[derive(Debug)]
struct Outcome {
    exec: Result<(), String>,
    output: String,
    exit: WaitStatus,
    pod_init_nspid: String,
}

/// Runs pod-init + one app inside a forked child; returns what the child wrote.
fn scenario(fx: &Fixture, plan: &ExecPlan) -> String {
    let report = fx.path("report");
    // SAFETY: the child runs only `child_scenario` and leaves with _exit.
    match unsafe { nix::unistd::fork() }.unwrap() {
        ForkResult::Child => {
            let text = match std::panic::catch_unwind(|| child_scenario(fx, plan)) {
                Ok(Ok(o)) => format!("{o:#?}"),
                Ok(Err(e)) => format!("ERROR {e}"),
                Err(_) => "ERROR panicked".to_string(),
            };
            let _ = std::fs::write(&report, text);
            // SAFETY: ends the forked child without running the harness's code.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            let st = waitpid(child, None).unwrap();
            assert_eq!(st, WaitStatus::Exited(child, 0));
            std::fs::read_to_string(&report).unwrap()
        }
    }
}

fn child_scenario(fx: &Fixture, plan: &ExecPlan) -> Result<Outcome, String> {
    let pod_dir = fx.cg_base.join("pods/web");
    for d in [&fx.cg_base, &fx.cg_base.join("pods"), &pod_dir] {
        std::fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    // The controllers are not required here (a hybrid host may offer none to cgroup2).
    let leaf = pod_dir.join("pod-init");
    std::fs::create_dir_all(&leaf).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&plan.cgroup).map_err(|e| e.to_string())?;

    root::mount_root(&plan.root).map_err(|e| e.to_string())?;
    let result = run_app(plan, &leaf);
    // Clean up whatever happened: the mounts and the groups.
    let mut fs = RealCgroupFs;
    let _ = cgroup::kill(&mut fs, &pod_dir);
    std::thread::sleep(std::time::Duration::from_millis(100));
    root::reset_root(&plan.root).map_err(|e| e.to_string())?;
    for g in [&plan.cgroup, &leaf, &pod_dir, &fx.cg_base.join("pods"), &fx.cg_base] {
        cgroup::remove(&mut fs, g).map_err(|e| e.to_string())?;
    }
    result
}

fn run_app(plan: &ExecPlan, leaf: &Path) -> Result<Outcome, String> {
    let pod = spawn::start_pod_init("web", "web", leaf).map_err(|e| e.to_string())?;
    let pod_init_nspid = std::fs::read_to_string(format!("/proc/{}/status", pod.pid))
        .map_err(|e| e.to_string())?
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .unwrap_or("")
        .to_string();
    let filter = plan
        .seccomp
        .as_ref()
        .map(seccomp::compile)
        .transpose()
        .map_err(|e| e.to_string())?;
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let spawner = Spawner::new().map_err(|e| e.to_string())?;
    let app = spawner
        .spawn(&pod, plan, filter.as_ref(), out_w.as_fd())
        .map_err(|e| e.to_string())?;
    drop(out_w);
    let exec = spawn::wait_exec_status(app.status);
    let mut output = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(out_r), &mut output)
        .map_err(|e| e.to_string())?;
    let exit = waitpid(app.pid, None).map_err(|e| e.to_string())?;
    nix::sys::signal::kill(pod.pid, nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| e.to_string())?;
    waitpid(pod.pid, None).map_err(|e| e.to_string())?;
    Ok(Outcome {
        exec,
        output,
        exit,
        pod_init_nspid,
    })
}

fn nothing_mounted_under(dir: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let d = dir.to_str().unwrap();
    assert!(
        !info.lines().any(|l| l.contains(d)),
        "left mounted:\n{}",
        info.lines().filter(|l| l.contains(d)).collect::<Vec<_>>().join("\n")
    );
}

const SCRIPT: &str = "echo pid=$$; \
    [ -e /proc/1/status ] && echo pid1=present; \
    echo ids=$(id -u):$(id -g):$(id -G); \
    echo host=$(hostname); \
    echo cwd=$PWD; \
    grep -E '^(NoNewPrivs|CapBnd|CapEff|Seccomp):' /proc/self/status; \
    grep '^0::' /proc/self/cgroup; \
    grep ' /sys ' /proc/self/mountinfo; \
    touch /sys/x 2>/dev/null || echo sys=unwritable; \
    exit 3";

#[test]
fn an_app_runs_as_its_user_in_the_pods_pid_namespace_with_its_limits() {
    require_root();
    let fx = Fixture::new();
    let plan = fx.plan(&["sh", "-c", SCRIPT], standard_mounts());
    let report = scenario(&fx, &plan);
    assert!(!report.starts_with("ERROR"), "{report}");
    assert!(report.contains("exec: Ok("), "{report}");
    assert!(report.contains("Exited("), "{report}");
    assert!(report.contains(", 3,"), "exit status 3 expected: {report}");
    // The pod-init is PID 1 of its namespace.
    assert!(report.contains(r"\t1"), "pod-init's NSpid ends in 1: {report}");
    let out = report
        .split("output: \"")
        .nth(1)
        .unwrap()
        .split("\",\n")
        .next()
        .unwrap()
        .replace(r"\n", "\n")
        .replace(r"\t", "\t");
    let line = |prefix: &str| {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} line in:\n{out}"))
            .to_string()
    };
    let pid: u32 = line("pid=")[4..].parse().unwrap();
    assert!(pid > 1, "the app is not the pod's PID 1 (its pod-init is): {out}");
    assert_eq!(line("pid1="), "pid1=present");
    assert_eq!(line("ids="), "ids=1000:1000:1000 5");
    assert_eq!(line("host="), "host=web");
    assert_eq!(line("cwd="), "cwd=/srv");
    assert_eq!(line("NoNewPrivs:"), "NoNewPrivs:\t1");
    assert_eq!(line("CapBnd:"), "CapBnd:\t0000000000000401");
    assert_eq!(line("CapEff:"), "CapEff:\t0000000000000000");
    assert_eq!(line("Seccomp:"), "Seccomp:\t2");
    assert!(line("0::").ends_with("/pods/web/app"), "{out}");
    let sys = out.lines().find(|l| l.contains(" /sys ")).unwrap();
    assert!(sys.contains(" /sys ro,"), "/sys is read-only: {sys}");
    assert_eq!(line("sys="), "sys=unwritable");
    nothing_mounted_under(fx.dir.path());
    assert!(!fx.cg_base.exists(), "{} was not removed", fx.cg_base.display());
}

#[test]
fn a_missing_command_is_reported_on_the_status_pipe_and_the_child_exits_127() {
    require_root();
    let fx = Fixture::new();
    let plan = fx.plan(&["nope"], standard_mounts());
    let report = scenario(&fx, &plan);
    assert!(
        report.contains("nope: not found in PATH /bin"),
        "{report}"
    );
    assert!(report.contains(", 127,"), "{report}");
    nothing_mounted_under(fx.dir.path());
}

#[test]
fn a_symlink_in_the_image_cannot_lead_a_mount_out_of_the_root() {
    require_root();
    let fx = Fixture::new();
    let outside = fx.path("outside");
    std::fs::create_dir(&outside).unwrap();
    // The image's /etc points at a host directory by its absolute path.
    std::os::unix::fs::symlink(&outside, fx.path("lower/etc")).unwrap();
    let mut mounts = standard_mounts();
    mounts.push(MountStep::Bind {
        source: "/dev/null".into(),
        path: "/etc/hostname".into(),
        read_only: true,
        recursive: false,
        file: true,
    });
    let plan = fx.plan(&["sh", "-c", "exit 0"], mounts);
    let report = scenario(&fx, &plan);
    assert!(report.contains("mkdir /etc: ENOENT"), "{report}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    nothing_mounted_under(fx.dir.path());
}
