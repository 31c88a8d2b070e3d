//! `pod::sys` on the real kernel, as root: a pod-init, an app spawned from a tiny busybox
//! rootfs over overlayfs, and what the app sees of itself. Each scenario runs in a forked
//! child of the test process, so the test process itself never changes namespaces, cgroups
//! or credentials; the child reports through a file and its exit status.

use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use init::pod::exec_plan::{AppRef, Caps, CgroupLimits, ExecPlan, Ids, MountStep, Role, RootPlan};
use init::pod::sys::cgroup::{self, RealCgroupFs};
use init::pod::sys::spawn::{self, Spawner};
use init::pod::sys::{root, seccomp};
use nix::mount::MsFlags;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::ForkResult;

const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &["sh", "cat", "grep", "hostname", "id", "touch", "wc"];

/// One scenario at a time: a fork in one test while another test's thread still holds
/// busybox open for writing (copying it into its rootfs) leaves the child a writable fd of that
/// file, and the other test's execve then fails with ETXTBSY.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn require_root() -> std::sync::MutexGuard<'static, ()> {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test mounts, clones namespaces and switches users: run it as root \
         (CI and the project's machines do)"
    );
    assert!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} is missing: install the Debian package busybox-static"
    );
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
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
        // One group per test (they run in parallel), named after the test's own temp dir.
        let tag = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let cg_base = cgroup2_mount().join(format!("hostos-test-{}{tag}", std::process::id()));
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
    let nosuid = (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC).bits();
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
            flags: nosuid | MsFlags::MS_RDONLY.bits(),
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

/// What one scenario saw: the exec status, the exit, the pod-init's NSpid line and the app's
/// output. The child writes it as `key: value` lines, then `output:` and the output verbatim.
#[derive(Debug)]
struct Outcome {
    exec: Result<(), String>,
    exit: WaitStatus,
    pod_init_nspid: String,
    output: String,
}

impl Outcome {
    fn to_report(&self) -> String {
        let exec = match &self.exec {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("error {}", e.replace('\n', " ")),
        };
        let exit = match self.exit {
            WaitStatus::Exited(_, n) => format!("status {n}"),
            WaitStatus::Signaled(_, s, _) => format!("signal {s}"),
            other => format!("other {other:?}"),
        };
        format!(
            "exec: {exec}\nexit: {exit}\nnspid: {}\noutput:\n{}",
            self.pod_init_nspid, self.output
        )
    }
}

/// The report parsed back.
#[derive(Debug)]
struct Report {
    exec: String,
    exit: String,
    nspid: String,
    output: String,
}

impl Report {
    fn parse(text: &str) -> Report {
        assert!(!text.starts_with("ERROR"), "the scenario failed: {text}");
        let (head, output) = text
            .split_once("output:\n")
            .unwrap_or_else(|| panic!("no output section in the report:\n{text}"));
        let field = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} line in the report:\n{text}"))
                .to_string()
        };
        Report {
            exec: field("exec: "),
            exit: field("exit: "),
            nspid: field("nspid: "),
            output: output.to_string(),
        }
    }

    fn line(&self, prefix: &str) -> &str {
        self.output
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} line in the app's output:\n{}", self.output))
    }
}

/// Runs pod-init + one app inside a forked child; returns what the child saw.
fn scenario(fx: &Fixture, plan: &ExecPlan) -> Report {
    let report = fx.path("report");
    // SAFETY: the child runs only `child_scenario` and leaves with _exit.
    match unsafe { nix::unistd::fork() }.unwrap() {
        ForkResult::Child => {
            let text = match std::panic::catch_unwind(|| child_scenario(fx, plan)) {
                Ok(Ok(o)) => o.to_report(),
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
            Report::parse(&std::fs::read_to_string(&report).unwrap())
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
    for g in [
        &plan.cgroup,
        &leaf,
        &pod_dir,
        &fx.cg_base.join("pods"),
        &fx.cg_base,
    ] {
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
        info.lines()
            .filter(|l| l.contains(d))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

const SCRIPT: &str = "echo pid=$$; \
    [ -e /proc/1/status ] && echo pid1=present; \
    echo ids=$(id -u):$(id -g):$(id -G); \
    echo host=$(hostname); \
    echo cwd=$PWD; \
    grep -E '^(NoNewPrivs|CapBnd|CapEff|Seccomp):' /proc/self/status; \
    grep '^0::' /proc/self/cgroup; \
    echo sysmount=$(grep ' /sys ' /proc/self/mountinfo); \
    echo mounts=$(cat /proc/self/mountinfo | wc -l); \
    touch /sys/x 2>/dev/null || echo sys=unwritable; \
    exit 3";

#[test]
fn an_app_runs_as_its_user_in_the_pods_pid_namespace_with_its_limits() {
    let _serial = require_root();
    let fx = Fixture::new();
    let plan = fx.plan(&["sh", "-c", SCRIPT], standard_mounts());
    let r = scenario(&fx, &plan);
    assert_eq!(r.exec, "ok", "{r:?}");
    assert_eq!(r.exit, "status 3", "{r:?}");
    // The pod-init is PID 1 of the pod's namespace; the app is another process in it.
    assert!(
        r.nspid.ends_with("\t1"),
        "pod-init's NSpid ends in 1: {r:?}"
    );
    let pid: u32 = r.line("pid=")[4..].parse().unwrap();
    assert!(
        pid > 1,
        "the app is not the pod's PID 1 (its pod-init is): {r:?}"
    );
    assert_eq!(r.line("pid1="), "pid1=present");
    assert_eq!(r.line("ids="), "ids=1000:1000:1000 5");
    assert_eq!(r.line("host="), "host=web");
    assert_eq!(r.line("cwd="), "cwd=/srv");
    assert_eq!(r.line("NoNewPrivs:"), "NoNewPrivs:\t1");
    assert_eq!(r.line("CapBnd:"), "CapBnd:\t0000000000000401");
    assert_eq!(r.line("CapEff:"), "CapEff:\t0000000000000000");
    assert_eq!(r.line("Seccomp:"), "Seccomp:\t2");
    assert!(r.line("0::").ends_with("/pods/web/app"), "{r:?}");
    let sys = r.line("sysmount=");
    assert!(sys.contains(" /sys ro,"), "/sys is read-only: {sys}");
    assert_eq!(r.line("sys="), "sys=unwritable");
    // The host's mounts are not visible: only what the plan mounted, on the overlay root.
    assert_eq!(r.line("mounts="), "mounts=4", "{r:?}");
    nothing_mounted_under(fx.dir.path());
    assert!(
        !fx.cg_base.exists(),
        "{} was not removed",
        fx.cg_base.display()
    );
}

#[test]
fn a_root_app_keeps_exactly_its_bounding_set_without_no_new_privs() {
    let _serial = require_root();
    let fx = Fixture::new();
    let mut plan = fx.plan(&["sh", "-c", SCRIPT], standard_mounts());
    plan.ids = Ids {
        uid: 0,
        gid: 0,
        groups: vec![],
    };
    plan.caps = Caps {
        bounding: 0x401,
        effective: 0x401,
        ambient: 0,
    };
    plan.no_new_privs = false;
    plan.seccomp = None;
    let r = scenario(&fx, &plan);
    assert_eq!(r.exec, "ok", "{r:?}");
    assert_eq!(r.line("ids="), "ids=0:0:0");
    assert_eq!(r.line("CapBnd:"), "CapBnd:\t0000000000000401");
    assert_eq!(r.line("CapEff:"), "CapEff:\t0000000000000401");
    assert_eq!(r.line("NoNewPrivs:"), "NoNewPrivs:\t0");
    assert_eq!(r.line("Seccomp:"), "Seccomp:\t0");
    nothing_mounted_under(fx.dir.path());
}

#[test]
fn a_missing_command_is_reported_on_the_status_pipe_and_the_child_exits_127() {
    let _serial = require_root();
    let fx = Fixture::new();
    let plan = fx.plan(&["nope"], standard_mounts());
    let r = scenario(&fx, &plan);
    assert_eq!(r.exec, "error nope: not found in PATH /bin", "{r:?}");
    assert_eq!(r.exit, "status 127", "{r:?}");
    nothing_mounted_under(fx.dir.path());
}

#[test]
fn a_symlink_in_the_image_cannot_lead_a_mount_out_of_the_root() {
    let _serial = require_root();
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
    let r = scenario(&fx, &plan);
    assert!(r.exec.contains("mkdir /etc: ENOENT"), "{r:?}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    nothing_mounted_under(fx.dir.path());
}

#[test]
fn a_read_only_root_is_a_bind_the_app_cannot_write() {
    let _serial = require_root();
    let fx = Fixture::new();
    // readOnlyRootFS: nothing can be created in the tree, so the mount points exist in it.
    for d in ["proc", "sys", "dev"] {
        std::fs::create_dir(fx.path("lower").join(d)).unwrap();
    }
    std::fs::write(fx.path("lower/dev/null"), b"").unwrap();
    let mut plan = fx.plan(
        &[
            "sh",
            "-c",
            "touch /srv/x 2>/dev/null || echo root=unwritable; \
             echo rootmount=$(grep -E '^([^ ]+ ){4}/ ' /proc/self/mountinfo)",
        ],
        standard_mounts(),
    );
    plan.root = RootPlan::ReadOnlyBind {
        lower: fx.path("lower"),
        target: fx.path("root"),
    };
    let r = scenario(&fx, &plan);
    assert_eq!(r.exec, "ok", "{r:?}");
    assert_eq!(r.line("root="), "root=unwritable");
    // mountinfo: id, parent, dev, root within its filesystem, mount point, options.
    assert!(r.line("rootmount=").contains(" / ro,"), "{r:?}");
    assert!(!fx.path("lower/srv/x").exists());
    nothing_mounted_under(fx.dir.path());
}
