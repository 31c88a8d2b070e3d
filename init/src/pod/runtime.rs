//! The executor at boot: reads the pods plan, makes each app's image ready, plans its
//! processes and creates its sandbox (cgroups, pod-init, /etc files, directories), then starts
//! processes for the supervisor ([`Launcher`]). A pod whose image is refused, or that cannot
//! be planned, is reported and left out; the others go on.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aci::manifest::ImageId;
use aci::manifest::VolumeKind;
use hostdecl::{PodPlan, PodsPlan};
use nix::fcntl::OFlag;

use crate::console::{self, Line, PodEvent};
use crate::fatal;
use crate::pod::exec_plan::{ExecPlan, Role};
use crate::pod::images::{ImagePaths, Images};
use crate::pod::plan::{self, AppInput, AppPlanned, HostPaths, TreeFiles};
use crate::pod::sys::CompiledFilter;
use crate::pod::sys::cgroup::{self, Cgroups, RealCgroupFs};
use crate::pod::sys::root;
use crate::pod::sys::seccomp;
use crate::pod::sys::spawn::{PodInit, Spawner, start_pod_init};
use crate::supervise::{AppSpec, Ended, Launched, Launcher};

struct PodRt {
    name: String,
    init: Option<PodInit>,
}

struct AppRt {
    pod: usize,
    planned: AppPlanned,
    filter: Option<CompiledFilter>,
    oom_seen: u64,
}

/// One app between planning and the sandbox: "pod/app", the app's name, its plan and its
/// compiled seccomp filter.
type PlannedApp = (String, String, AppPlanned, Option<CompiledFilter>);

/// The pods that passed preparation, and what starting their apps takes.
pub struct Runtime {
    spawner: Spawner,
    cgroups: Cgroups,
    images: Images,
    pods: Vec<PodRt>,
    apps: Vec<AppRt>,
}

/// An app of a pod whose image init must fetch before the pod can start.
#[derive(Debug, Clone)]
pub struct MissingImage {
    /// The app's index in the pod manifest.
    pub index: usize,
    pub app: String,
    pub fetch: hostdecl::FetchSpec,
}

/// Reads the plan; `None` when the image has no pods (or no plan file at all).
pub fn load_plan(path: &Path) -> Result<Option<PodsPlan>, String> {
    match fs::read(path) {
        Ok(bytes) => PodsPlan::from_json(&bytes)
            .map(|p| (!p.pods.is_empty()).then_some(p))
            .map_err(|e| format!("the pods plan {} is malformed: {e}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read the pods plan {}: {e}", path.display())),
    }
}

fn say(who: &str, event: PodEvent<'_>) {
    console::emit(&Line::Pod { who, event });
}

impl Runtime {
    /// The executor's host side: the spawner, the host cgroups and the image store.
    pub fn new(plan: &PodsPlan) -> Result<Runtime, String> {
        let spawner = Spawner::new().map_err(|e| fatal::chain(&e))?;
        let cgroups = Cgroups::default();
        cgroups
            .host_setup(&mut RealCgroupFs, std::process::id())
            .map_err(|e| fatal::chain(&e))?;
        let images =
            Images::open(&ImagePaths::boot(), plan.images.clone()).map_err(|e| fatal::chain(&e))?;
        Ok(Runtime {
            spawner,
            cgroups,
            images,
            pods: Vec::new(),
            apps: Vec::new(),
        })
    }

    /// The store the images live in (the fetcher writes into it).
    pub fn store(&self) -> &aci::store::Store {
        self.images.store()
    }

    /// The apps of `pod` whose image must be fetched first: a fetch spec, and neither its
    /// pinned ID nor (unpinned) an image of that name and labels in the store. With the
    /// others, `found` gets the ID the store has for each fetched-spec app already there.
    pub fn missing_images(
        &self,
        pod: &PodPlan,
        found: &mut BTreeMap<usize, ImageId>,
    ) -> Vec<MissingImage> {
        let mut missing = Vec::new();
        for (index, app) in pod.manifest.apps.iter().enumerate() {
            let Some(fetch) = pod.apps.get(index).and_then(|a| a.fetch.clone()) else {
                continue;
            };
            let store = self.images.store();
            let have = match &app.image.id {
                Some(id) => store.get(id.as_str()).ok().map(|r| r.id),
                None => {
                    let labels: Vec<(String, String)> = fetch
                        .labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    store.find(&fetch.name, &labels).ok().map(|r| r.id)
                }
            };
            match have {
                Some(id) => {
                    found.insert(index, id);
                }
                None => missing.push(MissingImage {
                    index,
                    app: app.name.as_str().to_owned(),
                    fetch,
                }),
            }
        }
        missing
    }

    /// Prepares one pod: `ids` gives the image of each app the plan names by fetch spec only
    /// (its key is the app's index); returns the supervisor's apps, which come after every
    /// app prepared before, in order.
    pub fn prepare_pod(
        &mut self,
        pod: &PodPlan,
        ids: &BTreeMap<usize, ImageId>,
    ) -> Result<Vec<AppSpec>, String> {
        let planned = self.plan_pod(pod, ids)?;
        self.make_sandbox(pod, planned)
    }

    /// Each app's plan and compiled seccomp filter, from its image: the checks that can refuse
    /// a pod, made before anything is created for it.
    fn plan_pod(
        &self,
        pod: &PodPlan,
        ids: &BTreeMap<usize, ImageId>,
    ) -> Result<Vec<PlannedApp>, String> {
        let mut planned = Vec::new();
        for (index, app) in pod.manifest.apps.iter().enumerate() {
            let Some(id) = ids.get(&index).or(app.image.id.as_ref()) else {
                return Err(format!("app {} names no image ID", app.name.as_str()));
            };
            let image = self.images.prepare(id).map_err(|e| fatal::chain(&e))?;
            for report in &image.reports {
                say(&pod.name, PodEvent::Image(&report.to_string()));
            }
            let mut files = TreeFiles::open(&image.rootfs)
                .map_err(|e| format!("opening {}: {e}", image.rootfs.display()))?;
            let input = AppInput {
                pod,
                index,
                image: &image.manifest,
                tree: &image.rootfs,
                paths: HostPaths::for_pod(&pod.name, app.name.as_str(), &self.cgroups.pods()),
            };
            let mut p = plan::plan_app(&input, &mut files).map_err(|e| fatal::chain(&e))?;
            let who = format!("{}/{}", pod.name, app.name.as_str());
            if p.default_seccomp {
                for e in [&mut p.main]
                    .into_iter()
                    .chain(p.pre_start.as_mut())
                    .chain(p.post_stop.as_mut())
                {
                    e.seccomp = Some(seccomp::default_plan());
                }
            }
            let filter = match &p.main.seccomp {
                Some(s) => {
                    let f =
                        seccomp::compile(s).map_err(|e| format!("{who}: {}", fatal::chain(&e)))?;
                    Some(f)
                }
                None => None,
            };
            for (name, why) in &p.ignored {
                say(&who, PodEvent::IsolatorIgnored { name, why });
            }
            planned.push((who, app.name.as_str().to_owned(), p, filter));
        }
        Ok(planned)
    }

    /// The pod's run and state directories, cgroups and pod-init, and the apps' runtime records.
    fn make_sandbox(
        &mut self,
        pod: &PodPlan,
        planned: Vec<PlannedApp>,
    ) -> Result<Vec<AppSpec>, String> {
        // Everything checks out: make the sandbox.
        let run = Path::new(hostimg::POD_RUN_DIR).join(&pod.name);
        let state = Path::new(hostimg::POD_STATE_DIR).join(&pod.name);
        write_etc(&run, &pod.name).map_err(|e| format!("writing {}/etc: {e}", run.display()))?;
        fresh_empty_volumes(pod, &state)?;
        let leaf = self
            .cgroups
            .create_pod(&mut RealCgroupFs, &pod.name)
            .map_err(|e| fatal::chain(&e))?;
        let pod_index = self.pods.len();
        let mut specs = Vec::new();
        for (who, app, p, filter) in planned {
            for dir in &p.dirs {
                fs::create_dir_all(dir)
                    .map_err(|e| format!("{who}: creating {}: {e}", dir.display()))?;
            }
            self.cgroups
                .create_app(&mut RealCgroupFs, &pod.name, &app, &p.main.limits)
                .map_err(|e| fatal::chain(&e))?;
            specs.push(AppSpec {
                who,
                restart: pod
                    .apps
                    .iter()
                    .find(|a| a.name == app)
                    .map(|a| a.restart)
                    .unwrap_or_default(),
                log_dir: Path::new(hostimg::POD_LOG_DIR).join(&pod.name),
                app,
            });
            self.apps.push(AppRt {
                pod: pod_index,
                planned: p,
                filter,
                oom_seen: 0,
            });
        }
        let init = start_pod_init(&pod.name, &pod.name, &leaf).map_err(|e| fatal::chain(&e))?;
        self.pods.push(PodRt {
            name: pod.name.clone(),
            init: Some(init),
        });
        Ok(specs)
    }

    /// The host's DNS servers changed (a lease came, went or changed): every prepared pod's
    /// /etc/resolv.conf becomes the host's again. Written in place, because apps see the file
    /// through a bind mount of it, which a rename would leave on the old file.
    pub fn refresh_resolv_conf(&self) {
        let host = fs::read_to_string(hostimg::RESOLV_CONF_PATH).ok();
        let text = plan::resolv_conf(host.as_deref());
        for pod in &self.pods {
            let path = Path::new(hostimg::POD_RUN_DIR)
                .join(&pod.name)
                .join("etc/resolv.conf");
            if let Err(e) = fs::write(&path, &text) {
                console::warn(&format!("updating {}: {e}", path.display()));
            }
        }
    }

    fn plan_for(&self, app: usize, role: Role) -> Option<&ExecPlan> {
        let a = self.apps.get(app)?;
        match role {
            Role::Main => Some(&a.planned.main),
            Role::PreStart => a.planned.pre_start.as_ref(),
            Role::PostStop => a.planned.post_stop.as_ref(),
        }
    }
}

impl Launcher for Runtime {
    fn launch(&mut self, app: usize, role: Role) -> Result<Launched, String> {
        let a = self.apps.get(app).ok_or("no such app")?;
        let pod = self.pods.get(a.pod).ok_or("no such pod")?;
        let init = pod.init.as_ref().ok_or("the pod is stopped")?;
        let plan = self.plan_for(app, role).ok_or("no such process")?;
        // A run starts from a fresh copy of the image (appc): pre-start, or main without one.
        let new_run =
            role == Role::PreStart || (role == Role::Main && a.planned.pre_start.is_none());
        if new_run {
            root::reset_root(&plan.root).map_err(|e| fatal::chain(&e))?;
        }
        if new_run || role == Role::PostStop {
            root::mount_root(&plan.root).map_err(|e| fatal::chain(&e))?;
        }
        let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| format!("creating the output pipe: {e}"))?;
        // The child's end must block: a full pipe should slow the app, not fail its writes.
        nix::fcntl::fcntl(
            out_w.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()),
        )
        .map_err(|e| format!("making the output pipe blocking: {e}"))?;
        if role == Role::Main {
            let seen = cgroup::oom_kills(&mut RealCgroupFs, &plan.cgroup).unwrap_or(0);
            if let Some(a) = self.apps.get_mut(app) {
                a.oom_seen = seen;
            }
        }
        let a = self.apps.get(app).ok_or("no such app")?;
        let plan = self.plan_for(app, role).ok_or("no such process")?;
        let prepared = Instant::now();
        let spawned = self
            .spawner
            .spawn(init, plan, a.filter.as_ref(), out_w.as_fd())
            .map_err(|e| fatal::chain(&e))?;
        drop(out_w);
        Ok(Launched {
            pid: spawned.pid.as_raw(),
            status: spawned.status,
            output: out_r,
            prepared,
        })
    }

    fn has(&self, app: usize, role: Role) -> bool {
        self.plan_for(app, role).is_some()
    }

    fn ended(&mut self, app: usize) -> Ended {
        let Some(a) = self.apps.get(app) else {
            return Ended::default();
        };
        let group = a.planned.main.cgroup.clone();
        let limit = a.planned.main.limits.memory_max;
        let before = a.oom_seen;
        let now = cgroup::oom_kills(&mut RealCgroupFs, &group).unwrap_or(before);
        // What the app left behind in its group goes with it.
        let _ = cgroup::kill(&mut RealCgroupFs, &group);
        Ended {
            oom_killed: now > before,
            memory_limit: limit,
        }
    }

    fn stop_all(&mut self) {
        for pod in &mut self.pods {
            if let Some(init) = pod.init.take() {
                // Killing the pod's PID 1 kills every process left in its namespace.
                let _ = nix::sys::signal::kill(init.pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        for a in &self.apps {
            if let Err(e) = root::unmount_root(&a.planned.main.root) {
                console::warn(&fatal::chain(&e));
            }
        }
    }
}

/// The pod's /etc/hosts, /etc/hostname and /etc/resolv.conf under `run/etc`.
fn write_etc(run: &Path, hostname: &str) -> io::Result<()> {
    let etc = run.join("etc");
    fs::create_dir_all(&etc)?;
    let host_resolv = fs::read_to_string(hostimg::RESOLV_CONF_PATH).ok();
    fs::write(etc.join("hosts"), plan::hosts_file(hostname))?;
    fs::write(etc.join("hostname"), plan::hostname_file(hostname))?;
    fs::write(
        etc.join("resolv.conf"),
        plan::resolv_conf(host_resolv.as_deref()),
    )?;
    Ok(())
}

/// `empty` volumes start empty at each pod start, with their mode and owner.
fn fresh_empty_volumes(pod: &PodPlan, state: &Path) -> Result<(), String> {
    for v in &pod.manifest.volumes {
        if v.kind != VolumeKind::Empty {
            continue;
        }
        let dir: PathBuf = state.join("volumes").join(v.name.as_str());
        root::wipe_dir(&dir).map_err(|e| fatal::chain(&e))?;
        fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        fs::set_permissions(
            &dir,
            fs::Permissions::from_mode(v.mode_bits().unwrap_or(0o755)),
        )
        .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
        nix::unistd::chown(
            &dir,
            Some(nix::unistd::Uid::from_raw(v.uid())),
            Some(nix::unistd::Gid::from_raw(v.gid())),
        )
        .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    Ok(())
}
