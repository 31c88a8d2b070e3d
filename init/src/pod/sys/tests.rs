//! `run_child` against the recording double: the order and the flags of the child's calls.

use std::path::PathBuf;

use nix::errno::Errno;

use super::record::Recorder;
use super::*;
use crate::pod::exec_plan::{
    AppRef, Caps, CgroupLimits, Ids, Role, RootPlan, SeccompMode, SeccompPlan,
};

const RDONLY_NOSUID: u64 =
    MsFlags::MS_RDONLY.bits() | MsFlags::MS_NOSUID.bits() | MsFlags::MS_NODEV.bits();

fn plan(uid: u32) -> ExecPlan {
    ExecPlan {
        app: AppRef {
            pod: "web".into(),
            app: "nginx".into(),
        },
        role: Role::Main,
        root: RootPlan::Overlay {
            lower: "/store/x/rootfs".into(),
            upper: "/var/p/upper".into(),
            work: "/var/p/work".into(),
            target: "/run/hostos/pods/web/nginx/root".into(),
        },
        mounts: vec![
            MountStep::Fs {
                fstype: "proc",
                path: "/proc".into(),
                flags: (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC).bits(),
                data: None,
            },
            MountStep::Fs {
                fstype: "sysfs",
                path: "/sys".into(),
                flags: RDONLY_NOSUID,
                data: None,
            },
            MountStep::Bind {
                source: "/dev/null".into(),
                path: "/dev/null".into(),
                read_only: false,
                recursive: false,
                file: true,
            },
            MountStep::Bind {
                source: "/var/lib/hostos/volumes/data".into(),
                path: "/data".into(),
                read_only: true,
                recursive: true,
                file: false,
            },
            MountStep::Symlink {
                target: "/proc/self/fd".into(),
                path: "/dev/fd".into(),
            },
        ],
        argv: vec!["nginx".into(), "-g".into()],
        env: vec![("PATH".into(), "/usr/sbin:/bin".into())],
        cwd: "/srv".into(),
        ids: Ids {
            uid,
            gid: 101,
            groups: vec![101, 5],
        },
        caps: Caps {
            bounding: 0b1011,
            effective: if uid == 0 { 0b1011 } else { 0 },
            ambient: 0,
        },
        no_new_privs: true,
        oom_score_adj: Some(500),
        seccomp: None,
        cgroup: PathBuf::from("/sys/fs/cgroup/pods/web/nginx"),
        limits: CgroupLimits::default(),
    }
}

fn run(ops: &mut Recorder, plan: &ExecPlan, filter: Option<&CompiledFilter>) -> ChildError {
    let prepared = Prepared::new(plan, 5).unwrap();
    match run_child(ops, plan, &prepared, 7, filter) {
        Err(e) => e,
        Ok(never) => match never {},
    }
}

fn filter() -> CompiledFilter {
    seccomp::compile(&seccomp::default_plan()).unwrap()
}

#[test]
fn the_child_calls_run_in_the_contract_order_with_their_flags() {
    let mut ops = Recorder::new();
    let p = plan(0);
    run(&mut ops, &p, None);
    let root = "/run/hostos/pods/web/nginx/root";
    assert_eq!(
        ops.calls,
        [
            "close_range 3.. CLOEXEC".to_string(),
            "reset_signals".into(),
            "setns 7 CLONE_NEWUTS|CLONE_NEWIPC".into(),
            "setpgid 0 0".into(),
            "write /sys/fs/cgroup/pods/web/nginx/cgroup.procs 0".into(),
            "write /proc/self/oom_score_adj 500".into(),
            "unshare CLONE_NEWNS".into(),
            "mount none / - MS_REC|MS_PRIVATE -".into(),
            format!("open_root {root}"),
            "mkdir_in_root /proc".into(),
            "mount_in_root proc /proc proc MS_NOSUID|MS_NODEV|MS_NOEXEC -".into(),
            "mkdir_in_root /sys".into(),
            "mount_in_root sysfs /sys sysfs MS_RDONLY|MS_NOSUID|MS_NODEV -".into(),
            "mkdir_in_root /dev".into(),
            "create_file_in_root /dev/null".into(),
            "mount_in_root /dev/null /dev/null - MS_BIND -".into(),
            "mkdir_in_root /data".into(),
            "mount_in_root /var/lib/hostos/volumes/data /data - MS_BIND|MS_REC -".into(),
            "mount_in_root none /data - MS_RDONLY|MS_REMOUNT|MS_BIND -".into(),
            "mkdir_in_root /dev".into(),
            "symlink_in_root /proc/self/fd /dev/fd".into(),
            format!("chdir {root}"),
            "pivot_root . .".into(),
            "umount2 . MNT_DETACH".into(),
            "chdir /".into(),
            "prctl PR_CAPBSET_DROP 2".into(),
            "prctl PR_CAPBSET_DROP 4".into(),
            "prctl PR_CAPBSET_DROP 5".into(),
            "setgroups [101, 5]".into(),
            "setresgid 101".into(),
            "setresuid 0".into(),
            "capset eff=0xb prm=0xb inh=0xb".into(),
            "prctl PR_SET_NO_NEW_PRIVS 1".into(),
            "chdir /srv".into(),
            "execve /usr/sbin/nginx [\"nginx\", \"-g\"]".into(),
        ]
    );
}

#[test]
fn seccomp_is_the_last_call_before_execve() {
    let mut ops = Recorder::new();
    let f = filter();
    run(&mut ops, &plan(1000), Some(&f));
    let seccomp = ops.position("seccomp ").unwrap();
    assert_eq!(ops.position("execve "), Some(seccomp + 1));
    assert!(ops.position("prctl PR_SET_NO_NEW_PRIVS").unwrap() < seccomp);
    assert!(ops.position("chdir /srv").unwrap() < seccomp);
}

#[test]
fn a_filter_implies_no_new_privs_without_cap_sys_admin() {
    let mut p = plan(1000);
    p.no_new_privs = false;
    let mut ops = Recorder::new();
    let f = filter();
    run(&mut ops, &p, Some(&f));
    assert!(ops.position("prctl PR_SET_NO_NEW_PRIVS 1").is_some());

    // Root keeping CAP_SYS_ADMIN may install a filter without it, and was not asked for it.
    let mut p = plan(0);
    p.no_new_privs = false;
    p.caps.bounding = 1 << caps::CAP_SYS_ADMIN;
    p.caps.effective = p.caps.bounding;
    let mut ops = Recorder::new();
    run(&mut ops, &p, Some(&f));
    assert_eq!(ops.position("prctl PR_SET_NO_NEW_PRIVS"), None);
}

#[test]
fn the_user_switch_comes_after_the_mounts_and_the_pivot() {
    let mut ops = Recorder::new();
    run(&mut ops, &plan(1000), None);
    let last_mount = ops
        .calls
        .iter()
        .rposition(|c| c.starts_with("mount") || c.starts_with("symlink"))
        .unwrap();
    let pivot = ops.position("pivot_root").unwrap();
    let groups = ops.position("setgroups").unwrap();
    assert!(last_mount < pivot && pivot < groups);
    assert!(groups < ops.position("setresgid").unwrap());
    assert!(ops.position("setresgid").unwrap() < ops.position("setresuid").unwrap());
}

#[test]
fn the_bounding_set_is_dropped_before_setresuid() {
    let mut ops = Recorder::new();
    run(&mut ops, &plan(1000), None);
    let last_drop = ops
        .calls
        .iter()
        .rposition(|c| c.starts_with("prctl PR_CAPBSET_DROP"))
        .unwrap();
    assert!(last_drop < ops.position("setresuid").unwrap());
    // The non-root user keeps nothing: no keepcaps, and every set emptied after the switch.
    assert_eq!(ops.position("prctl PR_SET_KEEPCAPS"), None);
    let uid = ops.position("setresuid 1000").unwrap();
    assert_eq!(ops.calls[uid + 1], "capset eff=0x0 prm=0x0 inh=0x0");
}

#[test]
fn a_non_root_user_with_capabilities_gets_keepcaps_around_setresuid_and_ambient_after() {
    let mut p = plan(1000);
    p.caps.ambient = 0b1000;
    let mut ops = Recorder::new();
    run(&mut ops, &p, None);
    let on = ops.position("prctl PR_SET_KEEPCAPS 1").unwrap();
    let uid = ops.position("setresuid 1000").unwrap();
    let off = ops.position("prctl PR_SET_KEEPCAPS 0").unwrap();
    assert!(on < uid && uid < off);
    let capset = ops.position("capset eff=0x0 prm=0x8 inh=0x8").unwrap();
    assert!(off < capset);
    assert_eq!(ops.calls[capset + 1], "prctl PR_CAP_AMBIENT_RAISE 3");
}

#[test]
fn pivot_root_refused_on_the_initramfs_falls_back_to_move_and_chroot() {
    let mut ops = Recorder::failing("pivot_root", Errno::EINVAL);
    run(&mut ops, &plan(0), None);
    let pivot = ops.position("pivot_root").unwrap();
    assert_eq!(
        &ops.calls[pivot + 1..pivot + 4],
        ["mount . / - MS_MOVE -", "chroot .", "chdir /"]
    );
    assert_eq!(ops.position("umount2"), None);
}

#[test]
fn path_lookup_tries_each_path_entry_and_skips_missing_files() {
    let mut ops = Recorder::failing("execve /usr/sbin/", Errno::ENOENT);
    run(&mut ops, &plan(0), None);
    let tried: Vec<&String> = ops
        .calls
        .iter()
        .filter(|c| c.starts_with("execve"))
        .collect();
    assert_eq!(tried.len(), 2);
    assert!(tried[1].starts_with("execve /bin/nginx "));
}

#[test]
fn a_command_found_nowhere_names_the_path_searched() {
    let mut ops = Recorder::failing("execve ", Errno::ENOENT);
    let e = run(&mut ops, &plan(0), None);
    assert_eq!(e.to_string(), "nginx: not found in PATH /usr/sbin:/bin");
}

#[test]
fn a_denied_candidate_is_reported_when_nothing_else_runs() {
    let mut ops = Recorder {
        calls: Vec::new(),
        fail: vec![
            ("execve /usr/sbin/".into(), Errno::EACCES),
            ("execve /bin/".into(), Errno::ENOENT),
        ],
    };
    let e = run(&mut ops, &plan(0), None);
    assert_eq!(
        e.to_string(),
        "execve /usr/sbin/nginx: EACCES: Permission denied"
    );
}

#[test]
fn an_argv0_with_a_slash_is_executed_as_is() {
    let mut p = plan(0);
    p.argv[0] = "./run".into();
    let prepared = Prepared::new(&p, 40).unwrap();
    assert_eq!(prepared.candidates, [CString::new("./run").unwrap()]);
}

#[test]
fn without_path_in_the_environment_the_default_path_is_searched() {
    let mut p = plan(0);
    p.env.clear();
    let prepared = Prepared::new(&p, 40).unwrap();
    assert_eq!(prepared.path, DEFAULT_PATH);
    assert_eq!(prepared.candidates.len(), 6);
    assert_eq!(
        prepared.candidates[0].to_str().unwrap(),
        "/usr/local/sbin/nginx"
    );
}

#[test]
fn a_failing_step_stops_the_child_and_names_the_step() {
    let mut ops = Recorder::failing("mount_in_root sysfs", Errno::EPERM);
    let e = run(&mut ops, &plan(0), None);
    assert_eq!(
        e.to_string(),
        "mount sysfs on /sys: EPERM: Operation not permitted"
    );
    assert!(ops.calls.last().unwrap().starts_with("mount_in_root sysfs"));
}

#[test]
fn no_oom_score_adj_means_no_write() {
    let mut p = plan(0);
    p.oom_score_adj = None;
    let mut ops = Recorder::new();
    run(&mut ops, &p, None);
    assert_eq!(ops.position("write /proc/self/oom_score_adj"), None);
}

#[test]
fn a_nul_byte_in_argv_is_refused_before_the_fork() {
    let mut p = plan(0);
    p.argv[1] = "a\0b".into();
    assert!(matches!(
        Prepared::new(&p, 40),
        Err(PrepareError::Nul { field: "argv", .. })
    ));
}

#[test]
fn an_allow_list_plan_compiles_for_the_running_arch() {
    let p = SeccompPlan {
        mode: SeccompMode::Allow,
        syscalls: vec!["read".into(), "write".into()],
        errno: None,
    };
    assert!(!seccomp::compile(&p).unwrap().program.is_empty());
}
