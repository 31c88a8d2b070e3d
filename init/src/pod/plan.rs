//! From a pod in the plan, an app of it and its image to the [`ExecPlan`]s that start it: the
//! declaration's overrides merged over the image's `app`, the user resolved in the image, the
//! environment, the mount plan and the isolators. Pure, except for reading the image's files
//! through [`RootFiles`], so every rule is unit-tested.

mod isolators;
mod mounts;
mod users;

use std::io;
use std::path::{Path, PathBuf};

use aci::manifest::{App, EventHandlerName, ImageManifest};
use hostdecl::{AppOverrides, PodPlan};

pub use isolators::{APPC_DEFAULT_CAPS, CAPABILITIES, cap_bit, default_caps_mask};
pub use users::{parse_group, parse_passwd};

use crate::pod::exec_plan::{AppRef, ExecPlan, Ids, Role, RootPlan, SeccompPlan};

/// appc's PATH for apps that do not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The executor's name in `container=` (systemd and others look at it).
pub const CONTAINER: &str = "hostos";

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("pod {who}: the image has no app and the declaration gives no exec")]
    NoExec { who: String },
    #[error("pod {who}: reading {path} in the image failed")]
    ReadImageFile {
        who: String,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("pod {who}: {field} {value:?}: {reason}")]
    User {
        who: String,
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("pod {who}: isolator {name}: {reason}")]
    Isolator {
        who: String,
        name: String,
        reason: String,
    },
    #[error("pod {who}: mount at {path}: {reason}")]
    Mount {
        who: String,
        path: String,
        reason: String,
    },
    #[error("pod {who}: the pod plan has no app of that name")]
    NoSuchApp { who: String },
}

/// Reads files inside the image's rendered tree, never following a link out of it.
pub trait RootFiles {
    /// The file's bytes, `None` if it does not exist.
    fn read(&mut self, path: &str) -> io::Result<Option<Vec<u8>>>;
    /// The file's owner and group, `None` if it does not exist.
    fn owner(&mut self, path: &str) -> io::Result<Option<(u32, u32)>>;
}

/// [`RootFiles`] over a directory, with `openat2(RESOLVE_IN_ROOT)`: absolute links and `..`
/// resolve inside the tree, as they will for the app after `pivot_root`.
pub struct TreeFiles {
    root: std::os::fd::OwnedFd,
}

impl TreeFiles {
    pub fn open(root: &Path) -> io::Result<TreeFiles> {
        let root = rustix::fs::open(
            root,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        Ok(TreeFiles { root })
    }

    fn open_in(&self, path: &str) -> io::Result<Option<std::fs::File>> {
        let rel = path.trim_start_matches('/');
        match rustix::fs::openat2(
            &self.root,
            if rel.is_empty() { "." } else { rel },
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
            rustix::fs::ResolveFlags::IN_ROOT | rustix::fs::ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => Ok(Some(std::fs::File::from(fd))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl RootFiles for TreeFiles {
    fn read(&mut self, path: &str) -> io::Result<Option<Vec<u8>>> {
        use std::io::Read;
        let Some(file) = self.open_in(path)? else {
            return Ok(None);
        };
        // /etc/passwd of any sane image is far below this; a huge one is not read whole.
        let mut bytes = Vec::new();
        file.take(1 << 20).read_to_end(&mut bytes)?;
        Ok(Some(bytes))
    }

    fn owner(&mut self, path: &str) -> io::Result<Option<(u32, u32)>> {
        use std::os::unix::fs::MetadataExt;
        Ok(self
            .open_in(path)?
            .map(|f| f.metadata())
            .transpose()?
            .map(|m| (m.uid(), m.gid())))
    }
}

/// Where on the host one app's pieces go.
#[derive(Debug, Clone)]
pub struct HostPaths {
    /// `POD_RUN_DIR/<pod>`: the pod's /etc files, and `<app>/root`.
    pub pod_run: PathBuf,
    /// `POD_STATE_DIR/<pod>`: `volumes/<name>`, `<app>/{upper,work}`.
    pub pod_state: PathBuf,
    /// The app's cgroup directory.
    pub cgroup: PathBuf,
}

impl HostPaths {
    /// The standard places for `pod`, under the cgroup tree `cgroup_pods` (`.../pods`).
    pub fn for_pod(pod: &str, app: &str, cgroup_pods: &Path) -> HostPaths {
        HostPaths {
            pod_run: Path::new(hostimg::POD_RUN_DIR).join(pod),
            pod_state: Path::new(hostimg::POD_STATE_DIR).join(pod),
            cgroup: cgroup_pods.join(pod).join(app),
        }
    }
}

/// One app's inputs.
pub struct AppInput<'a> {
    pub pod: &'a PodPlan,
    /// Index into `pod.manifest.apps` (and `pod.apps`).
    pub index: usize,
    pub image: &'a ImageManifest,
    /// The rendered tree (the overlay's lower layer).
    pub tree: &'a Path,
    pub paths: HostPaths,
}

/// What starting one app takes.
#[derive(Debug, Clone)]
pub struct AppPlanned {
    pub main: ExecPlan,
    pub pre_start: Option<ExecPlan>,
    pub post_stop: Option<ExecPlan>,
    /// `(isolator, reason)` not applied: the caller reports each.
    pub ignored: Vec<(String, String)>,
    /// Host directories to create before the first start (overlay upper/work, volume sources).
    pub dirs: Vec<PathBuf>,
    /// Whether the default seccomp filter applies (no seccomp isolator was given).
    pub default_seccomp: bool,
}

/// Merges the declaration's overrides over the image's app (lists by name: a declared entry
/// replaces the image's of the same name, others are appended).
pub fn merge(image: Option<&App>, o: &AppOverrides) -> App {
    let mut app = image.cloned().unwrap_or_default();
    if let Some(exec) = &o.exec {
        app.exec = exec.clone();
    }
    if let Some(u) = &o.user {
        app.user = u.clone();
    }
    if let Some(g) = &o.group {
        app.group = g.clone();
    }
    if let Some(s) = &o.supplementary_gids {
        app.supplementary_gids = s.clone();
    }
    if let Some(w) = &o.working_directory {
        app.working_directory = Some(w.clone());
    }
    for e in &o.environment {
        match app.environment.iter_mut().find(|x| x.name == e.name) {
            Some(x) => x.value = e.value.clone(),
            None => app.environment.push(e.clone()),
        }
    }
    for m in &o.mount_points {
        match app.mount_points.iter_mut().find(|x| x.name == m.name) {
            Some(x) => *x = m.clone(),
            None => app.mount_points.push(m.clone()),
        }
    }
    for i in &o.isolators {
        match app.isolators.iter_mut().find(|x| x.name() == i.name()) {
            Some(x) => *x = i.clone(),
            None => app.isolators.push(i.clone()),
        }
    }
    for h in &o.event_handlers {
        match app.event_handlers.iter_mut().find(|x| x.name == h.name) {
            Some(x) => *x = h.clone(),
            None => app.event_handlers.push(h.clone()),
        }
    }
    if app.user.is_empty() {
        app.user = "0".into();
    }
    if app.group.is_empty() {
        app.group = "0".into();
    }
    app
}

/// The environment (appc `ace.md`): PATH, AC_APP_NAME, container, then rkt's defaults for
/// SHELL, USER, LOGNAME and HOME, each replaced by the app's own variables of the same name.
pub fn environment(
    app_name: &str,
    app: &App,
    user: Option<&str>,
    home: Option<&str>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("AC_APP_NAME".into(), app_name.into()),
        ("container".into(), CONTAINER.into()),
        ("SHELL".into(), "/bin/sh".into()),
        ("USER".into(), user.unwrap_or("root").into()),
        ("LOGNAME".into(), user.unwrap_or("root").into()),
        ("HOME".into(), home.unwrap_or("/root").into()),
    ];
    for e in &app.environment {
        match env.iter_mut().find(|(n, _)| *n == e.name) {
            Some(slot) => slot.1 = e.value.clone(),
            None => env.push((e.name.clone(), e.value.clone())),
        }
    }
    env
}

/// Plans app `input.index` of its pod.
pub fn plan_app(input: &AppInput<'_>, files: &mut dyn RootFiles) -> Result<AppPlanned, PlanError> {
    let pod = input.pod;
    let runtime = pod
        .manifest
        .apps
        .get(input.index)
        .ok_or_else(|| PlanError::NoSuchApp {
            who: pod.name.clone(),
        })?;
    let app_name = runtime.name.as_str().to_owned();
    let who = format!("{}/{app_name}", pod.name);
    let overrides = pod
        .apps
        .iter()
        .find(|a| a.name == app_name)
        .map(|a| a.overrides.clone())
        .unwrap_or_default();
    let base = runtime.app.as_ref().or(input.image.app.as_ref());
    let app = merge(base, &overrides);
    if app.exec.is_empty() {
        return Err(PlanError::NoExec { who });
    }
    let user = users::resolve(&who, &app.user, &app.group, &app.supplementary_gids, files)?;
    let applied = isolators::apply(&who, &app.isolators, &pod.manifest.isolators)?;
    // An empty /etc/hosts in the image is a mount point left for the executor, not a choice.
    let image_has_hosts = files
        .read("/etc/hosts")
        .map_err(|source| PlanError::ReadImageFile {
            who: who.clone(),
            path: "/etc/hosts".into(),
            source,
        })?
        .is_some_and(|b| !b.is_empty())
        // Nor when a volume supplies one (appc: a volume's /etc/hosts is left alone).
        || runtime
            .mounts
            .iter()
            .any(|m| matches!(m.path.trim_end_matches('/'), "/etc" | "/etc/hosts"));

    let app_state = input.paths.pod_state.join(&app_name);
    let target = input.paths.pod_run.join(&app_name).join("root");
    let root = if runtime.read_only_root_fs {
        RootPlan::ReadOnlyBind {
            lower: input.tree.to_path_buf(),
            target: target.clone(),
        }
    } else {
        RootPlan::Overlay {
            lower: input.tree.to_path_buf(),
            upper: app_state.join("upper"),
            work: app_state.join("work"),
            target: target.clone(),
        }
    };
    let mut mount_steps = mounts::api_filesystems();
    mount_steps.extend(mounts::etc_files(&input.paths.pod_run, image_has_hosts));
    let (volume_steps, mut dirs) = mounts::volumes(
        &who,
        &pod.manifest,
        runtime,
        &app.mount_points,
        &input.paths.pod_state,
    )?;
    mount_steps.extend(volume_steps);
    if let RootPlan::Overlay { upper, work, .. } = &root {
        dirs.insert(0, work.clone());
        dirs.insert(0, upper.clone());
    }
    dirs.push(target);

    let env = environment(&app_name, &app, user.name.as_deref(), user.home.as_deref());
    let default_seccomp = applied.seccomp.is_none();
    let seccomp: Option<SeccompPlan> = applied.seccomp.clone();
    let make = |role: Role, argv: Vec<String>| ExecPlan {
        app: AppRef {
            pod: pod.name.clone(),
            app: app_name.clone(),
        },
        role,
        root: root.clone(),
        mounts: mount_steps.clone(),
        argv,
        env: env.clone(),
        cwd: app.working_directory().to_owned(),
        ids: Ids {
            uid: user.uid,
            gid: user.gid,
            groups: user.groups.clone(),
        },
        caps: isolators::caps_for(user.uid, applied.bounding),
        no_new_privs: applied.no_new_privs,
        oom_score_adj: applied.oom_score_adj,
        seccomp: seccomp.clone(),
        cgroup: input.paths.cgroup.clone(),
        limits: applied.limits.clone(),
    };
    let handler = |name: EventHandlerName, role: Role| {
        app.event_handler(name)
            .filter(|h| !h.exec.is_empty())
            .map(|h| make(role, h.exec.clone()))
    };
    Ok(AppPlanned {
        pre_start: handler(EventHandlerName::PreStart, Role::PreStart),
        post_stop: handler(EventHandlerName::PostStop, Role::PostStop),
        main: make(Role::Main, app.exec.clone()),
        ignored: applied.ignored,
        dirs,
        default_seccomp,
    })
}

/// The pod's /etc/hosts: localhost for both families and the pod's hostname.
pub fn hosts_file(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    )
}

/// The pod's /etc/hostname.
pub fn hostname_file(hostname: &str) -> String {
    format!("{hostname}\n")
}

/// The pod's /etc/resolv.conf: the host's, or empty until the network exists.
pub fn resolv_conf(host: Option<&str>) -> String {
    host.unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests;
