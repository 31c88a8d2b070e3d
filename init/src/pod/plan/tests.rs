use std::collections::BTreeMap;

use super::*;
use crate::pod::exec_plan::{MountStep, SeccompMode};

/// A tree as a map of path → (bytes, owner).
#[derive(Default)]
struct Files(BTreeMap<String, (Vec<u8>, (u32, u32))>);

impl Files {
    fn with(mut self, path: &str, text: &str) -> Files {
        self.0
            .insert(path.into(), (text.as_bytes().to_vec(), (0, 0)));
        self
    }
    fn owned(mut self, path: &str, uid: u32, gid: u32) -> Files {
        self.0.insert(path.into(), (Vec::new(), (uid, gid)));
        self
    }
}

impl RootFiles for Files {
    fn read(&mut self, path: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(self.0.get(path).map(|(b, _)| b.clone()))
    }
    fn owner(&mut self, path: &str) -> io::Result<Option<(u32, u32)>> {
        Ok(self.0.get(path).map(|(_, o)| *o))
    }
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\nstaff:x:50:app\napp:x:1000:\n";

fn files() -> Files {
    Files::default()
        .with("/etc/passwd", PASSWD)
        .with("/etc/group", GROUP)
}

const ID: &str = "sha512-00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";

fn image(app: &str) -> ImageManifest {
    let json = format!(
        r#"{{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/x","app":{app}}}"#
    );
    ImageManifest::from_json(json.as_bytes()).expect("image manifest")
}

fn pod(manifest_extra: &str, app_extra: &str, overrides: &str) -> PodPlan {
    let json = format!(
        r#"{{"name":"web","manifest":{{"acKind":"PodManifest","acVersion":"0.8.11",
        "apps":[{{"name":"main","image":{{"id":"{ID}"}}{app_extra}}}]{manifest_extra}}},
        "apps":[{{"name":"main","overrides":{overrides}}}]}}"#
    );
    serde_json::from_str(&json).expect("pod plan")
}

fn plan_with(p: &PodPlan, img: &ImageManifest, f: &mut Files) -> Result<AppPlanned, PlanError> {
    let input = AppInput {
        pod: p,
        index: 0,
        image: img,
        tree: Path::new("/var/lib/hostos/store/trees/t/rootfs"),
        paths: HostPaths::for_pod("web", "main", Path::new("/sys/fs/cgroup/pods")),
    };
    plan_app(&input, f)
}

const APP: &str = r#"{"exec":["/bin/sh"],"user":"0","group":"0"}"#;

#[test]
fn declared_overrides_replace_the_images_fields_and_merge_lists_by_name() {
    let img = image(
        r#"{"exec":["/bin/sh"],"user":"0","group":"0","environment":[{"name":"A","value":"image"},{"name":"B","value":"image"}]}"#,
    );
    let p = pod(
        "",
        "",
        r#"{"exec":["/bin/echo","hi"],"environment":[{"name":"B","value":"decl"},{"name":"C","value":"decl"}]}"#,
    );
    let planned = plan_with(&p, &img, &mut files()).expect("plan");
    assert_eq!(planned.main.argv, ["/bin/echo", "hi"]);
    let env: BTreeMap<_, _> = planned.main.env.iter().cloned().collect();
    assert_eq!(env["A"], "image");
    assert_eq!(env["B"], "decl");
    assert_eq!(env["C"], "decl");
    assert_eq!(env["AC_APP_NAME"], "main");
    assert_eq!(env["container"], CONTAINER);
    assert_eq!(env["PATH"], DEFAULT_PATH);
    // appc's variables come first, in order.
    assert_eq!(planned.main.env[0].0, "PATH");
}

#[test]
fn no_exec_anywhere_is_an_error_naming_the_app() {
    let img = image(r#"{"user":"0","group":"0"}"#);
    let e = plan_with(&pod("", "", "{}"), &img, &mut files()).expect_err("no exec");
    assert_eq!(
        e.to_string(),
        "pod web/main: the image has no app and the declaration gives no exec"
    );
}

#[test]
fn user_and_group_resolve_by_name_with_supplementary_groups() {
    let p = pod(
        "",
        "",
        r#"{"user":"app","group":"app","supplementaryGids":[7]}"#,
    );
    let planned = plan_with(&p, &image(APP), &mut files()).expect("plan");
    assert_eq!(planned.main.ids.uid, 1000);
    assert_eq!(planned.main.ids.gid, 1000);
    assert_eq!(planned.main.ids.groups, [50, 7]);
    let env: BTreeMap<_, _> = planned.main.env.iter().cloned().collect();
    assert_eq!(env["HOME"], "/home/app");
    assert_eq!(env["USER"], "app");
    // Not root: no effective capabilities, the bounding set stays.
    assert_eq!(planned.main.caps.effective, 0);
    assert_eq!(planned.main.caps.bounding, default_caps_mask());
}

#[test]
fn user_resolves_by_number_and_by_a_files_owner() {
    let p = pod("", "", r#"{"user":"4242","group":"/data/owned"}"#);
    let mut f = files().owned("/data/owned", 9, 77);
    let planned = plan_with(&p, &image(APP), &mut f).expect("plan");
    assert_eq!((planned.main.ids.uid, planned.main.ids.gid), (4242, 77));
}

#[test]
fn unknown_user_is_an_error_naming_field_and_value() {
    let p = pod("", "", r#"{"user":"www"}"#);
    let e = plan_with(&p, &image(APP), &mut files()).expect_err("unknown");
    assert_eq!(
        e.to_string(),
        "pod web/main: user \"www\": not in /etc/passwd of the image, not a number, and not an absolute path in the image"
    );
}

#[test]
fn root_gets_the_bounding_set_as_effective_caps() {
    let planned = plan_with(&pod("", "", "{}"), &image(APP), &mut files()).expect("plan");
    assert_eq!(planned.main.caps.effective, planned.main.caps.bounding);
    assert_eq!(planned.main.caps.bounding.count_ones(), 14);
}

#[test]
fn capability_retain_and_remove_sets() {
    let retain = pod(
        "",
        "",
        r#"{"isolators":[{"name":"os/linux/capabilities-retain-set","value":{"set":["CAP_NET_BIND_SERVICE","CAP_KILL"]}}]}"#,
    );
    let planned = plan_with(&retain, &image(APP), &mut files()).expect("plan");
    assert_eq!(planned.main.caps.bounding, (1 << 10) | (1 << 5));
    let remove = pod(
        "",
        "",
        r#"{"isolators":[{"name":"os/linux/capabilities-remove-set","value":{"set":["CAP_KILL"]}}]}"#,
    );
    let planned = plan_with(&remove, &image(APP), &mut files()).expect("plan");
    assert_eq!(planned.main.caps.bounding, default_caps_mask() & !(1 << 5));
    let bad = pod(
        "",
        "",
        r#"{"isolators":[{"name":"os/linux/capabilities-retain-set","value":{"set":["CAP_FLY"]}}]}"#,
    );
    let e = plan_with(&bad, &image(APP), &mut files()).expect_err("bad cap");
    assert!(
        e.to_string()
            .contains("\"CAP_FLY\" is not a Linux 6.1 capability"),
        "{e}"
    );
}

#[test]
fn every_linux_capability_has_its_number() {
    assert_eq!(cap_bit("CAP_CHOWN"), Some(1));
    assert_eq!(cap_bit("sys_admin"), Some(1 << 21));
    assert_eq!(cap_bit("CAP_CHECKPOINT_RESTORE"), Some(1 << 40));
    assert_eq!(cap_bit("CAP_NOPE"), None);
    assert!(APPC_DEFAULT_CAPS.iter().all(|c| cap_bit(c).is_some()));
}

#[test]
fn no_new_privileges_oom_score_and_cgroup_limits() {
    let p = pod(
        "",
        "",
        r#"{"isolators":[
            {"name":"os/linux/no-new-privileges","value":true},
            {"name":"os/linux/oom-score-adj","value":100},
            {"name":"resource/memory","value":{"limit":"64Mi","request":"32Mi"}},
            {"name":"resource/cpu","value":{"limit":"500m"}},
            {"name":"os/linux/cpu-shares","value":1024}]}"#,
    );
    let planned = plan_with(&p, &image(APP), &mut files()).expect("plan");
    let m = &planned.main;
    assert!(m.no_new_privs);
    assert_eq!(m.oom_score_adj, Some(100));
    assert_eq!(m.limits.memory_max, Some(64 << 20));
    assert_eq!(m.limits.memory_low, Some(32 << 20));
    assert_eq!(m.limits.cpu_max_us, Some(50_000));
    // cpu-shares comes after resource/cpu here, so its weight wins over the request's.
    assert_eq!(m.limits.cpu_weight, Some(1 + (1022 * 9999) / 262_142));
}

#[test]
fn pod_memory_limit_bounds_the_apps() {
    let p = pod(
        r#","isolators":[{"name":"resource/memory","value":{"limit":"16Mi"}}]"#,
        "",
        r#"{"isolators":[{"name":"resource/memory","value":{"limit":"64Mi"}}]}"#,
    );
    let planned = plan_with(&p, &image(APP), &mut files()).expect("plan");
    assert_eq!(planned.main.limits.memory_max, Some(16 << 20));
}

#[test]
fn seccomp_sets_and_the_default() {
    let none = plan_with(&pod("", "", "{}"), &image(APP), &mut files()).expect("plan");
    assert!(none.default_seccomp);
    assert_eq!(none.main.seccomp, None);
    let retain = pod(
        "",
        "",
        r#"{"isolators":[{"name":"os/linux/seccomp-retain-set","value":{"set":["read","write"],"errno":"ENOSYS"}}]}"#,
    );
    let planned = plan_with(&retain, &image(APP), &mut files()).expect("plan");
    let s = planned.main.seccomp.expect("seccomp");
    assert_eq!(s.mode, SeccompMode::Allow);
    assert_eq!(s.syscalls, ["read", "write"]);
    assert_eq!(s.errno, Some(38));
    assert!(!planned.default_seccomp);
    let remove = pod(
        "",
        "",
        r#"{"isolators":[{"name":"os/linux/seccomp-remove-set","value":{"set":["mount"]}}]}"#,
    );
    let s = plan_with(&remove, &image(APP), &mut files())
        .expect("plan")
        .main
        .seccomp
        .expect("seccomp");
    assert_eq!((s.mode, s.errno), (SeccompMode::Deny, None));
    let all = pod(
        "",
        "",
        r#"{"isolators":[{"name":"os/linux/seccomp-retain-set","value":{"set":["@appc.io/all"]}}]}"#,
    );
    let s = plan_with(&all, &image(APP), &mut files())
        .expect("plan")
        .main
        .seccomp
        .expect("seccomp");
    assert_eq!(s.mode, SeccompMode::Deny);
    assert!(s.syscalls.is_empty());
}

#[test]
fn unimplemented_isolators_are_reported_not_dropped() {
    let p = pod(
        "",
        "",
        r#"{"isolators":[
            {"name":"os/linux/selinux-context","value":{"user":"u","role":"r","type":"t","level":"s0"}},
            {"name":"example.com/frobnicate","value":{}}]}"#,
    );
    let planned = plan_with(&p, &image(APP), &mut files()).expect("plan");
    let names: Vec<&str> = planned.ignored.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["os/linux/selinux-context", "example.com/frobnicate"]
    );
}

#[test]
fn mount_plan_has_the_api_filesystems_devices_etc_files_then_volumes() {
    let p = pod(
        r#","volumes":[{"name":"data","kind":"host","source":"/var/lib/hostos/volumes/data"},{"name":"tmp","kind":"empty","readOnly":true}]"#,
        r#","mounts":[{"volume":"data","path":"/data"},{"volume":"tmp","path":"/scratch"}]"#,
        r#"{"mountPoints":[{"name":"data","path":"/data"},{"name":"tmp","path":"/scratch"}]}"#,
    );
    let planned = plan_with(&p, &image(APP), &mut files()).expect("plan");
    let paths: Vec<String> = planned
        .main
        .mounts
        .iter()
        .map(|m| match m {
            MountStep::Fs { path, .. }
            | MountStep::Bind { path, .. }
            | MountStep::Symlink { path, .. }
            | MountStep::Dir { path } => path.clone(),
        })
        .collect();
    assert_eq!(&paths[..3], ["/proc", "/sys", "/dev"]);
    for dev in [
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
        "/dev/console",
        "/dev/pts",
        "/dev/ptmx",
        "/dev/shm",
    ] {
        assert!(paths.contains(&dev.to_string()), "{dev} in {paths:?}");
    }
    assert!(paths.contains(&"/etc/hosts".to_string()));
    assert_eq!(&paths[paths.len() - 2..], ["/data", "/scratch"]);
    let sys_ro = planned.main.mounts.iter().any(|m| matches!(m, MountStep::Fs { path, flags, .. } if path == "/sys" && flags & nix::mount::MsFlags::MS_RDONLY.bits() != 0));
    assert!(sys_ro, "/sys is read-only");
    let Some(MountStep::Bind {
        source, read_only, ..
    }) = planned.main.mounts.last()
    else {
        panic!("last is the empty volume");
    };
    assert_eq!(source, Path::new("/var/lib/hostos/pods/web/volumes/tmp"));
    assert!(*read_only);
    assert!(
        planned
            .dirs
            .contains(&PathBuf::from("/var/lib/hostos/volumes/data"))
    );
    assert!(
        planned
            .dirs
            .contains(&PathBuf::from("/var/lib/hostos/pods/web/main/upper"))
    );
    assert!(
        matches!(&planned.main.root, RootPlan::Overlay { target, .. } if target == Path::new("/run/hostos/pods/web/main/root"))
    );
}

#[test]
fn an_image_with_its_own_hosts_file_keeps_it() {
    let mut f = files().with("/etc/hosts", "10.0.0.1 db\n");
    let planned = plan_with(&pod("", "", "{}"), &image(APP), &mut f).expect("plan");
    assert!(
        !planned
            .main
            .mounts
            .iter()
            .any(|m| matches!(m, MountStep::Bind { path, .. } if path == "/etc/hosts"))
    );
}

#[test]
fn a_mount_point_without_a_volume_and_overlapping_volumes_are_errors() {
    let p = pod(
        "",
        "",
        r#"{"mountPoints":[{"name":"data","path":"/data"}]}"#,
    );
    let e = plan_with(&p, &image(APP), &mut files()).expect_err("unfilled");
    assert!(
        e.to_string().contains("mount point data has no volume"),
        "{e}"
    );
    let p = pod(
        r#","volumes":[{"name":"a","kind":"empty"},{"name":"b","kind":"empty"}]"#,
        r#","mounts":[{"volume":"a","path":"/data"},{"volume":"b","path":"/data/sub"}]"#,
        r#"{"mountPoints":[{"name":"a","path":"/data"},{"name":"b","path":"/data/sub"}]}"#,
    );
    let e = plan_with(&p, &image(APP), &mut files()).expect_err("overlap");
    assert!(
        e.to_string()
            .contains("overlaps the volume mounted at /data"),
        "{e}"
    );
}

#[test]
fn read_only_root_is_a_read_only_bind_and_handlers_share_the_plan() {
    let p = pod(
        "",
        r#","readOnlyRootFS":true"#,
        r#"{"eventHandlers":[{"name":"post-stop","exec":["/bin/echo","bye"]}]}"#,
    );
    let planned = plan_with(&p, &image(APP), &mut files()).expect("plan");
    assert!(matches!(planned.main.root, RootPlan::ReadOnlyBind { .. }));
    let post = planned.post_stop.expect("post-stop");
    assert_eq!(post.argv, ["/bin/echo", "bye"]);
    assert_eq!(post.role, Role::PostStop);
    assert_eq!(post.mounts, planned.main.mounts);
    assert!(planned.pre_start.is_none());
}

#[test]
fn pod_files_have_localhost_and_the_hostname() {
    let hosts = hosts_file("web");
    assert!(hosts.contains("127.0.0.1\tlocalhost"));
    assert!(hosts.contains("127.0.1.1\tweb"));
    assert_eq!(hostname_file("web"), "web\n");
    assert_eq!(resolv_conf(None), "");
}

#[test]
fn passwd_and_group_parsing_skips_malformed_lines() {
    let p = parse_passwd("root:x:0:0::/root:/bin/sh\nbroken\nx:x:notanumber:1\n");
    assert_eq!(p.len(), 1);
    let g = parse_group("staff:x:50:a,b\n:::\n");
    assert_eq!(g[0].members, ["a", "b"]);
}

#[test]
fn cpu_request_defaults_to_the_limit() {
    let p = pod(
        "",
        "",
        r#"{"isolators":[{"name":"resource/cpu","value":{"limit":"500m"}}]}"#,
    );
    let planned = plan_with(&p, &image(APP), &mut files()).expect("plan");
    assert_eq!(planned.main.limits.cpu_weight, Some(50));
}

#[test]
fn a_volume_at_etc_hosts_keeps_the_pods_file_out() {
    let p = pod(
        r#","volumes":[{"name":"hosts","kind":"empty"}]"#,
        r#","mounts":[{"volume":"hosts","path":"/etc/hosts"}]"#,
        r#"{"mountPoints":[{"name":"hosts","path":"/etc/hosts"}]}"#,
    );
    let planned = plan_with(&p, &image(APP), &mut files()).expect("plan");
    let binds: Vec<&MountStep> = planned
        .main
        .mounts
        .iter()
        .filter(|m| matches!(m, MountStep::Bind { path, .. } if path == "/etc/hosts"))
        .collect();
    assert_eq!(
        binds.len(),
        1,
        "only the volume is mounted at /etc/hosts: {binds:?}"
    );
}
