//! The cgroup v2 tree, written as files (the files are the API): init in `init/`, each pod
//! in `pods/<pod>/` with its pod-init in `pods/<pod>/pod-init/` and each app in
//! `pods/<pod>/<app>/`. The file operations go through [`CgroupFs`] so the writes and their
//! order are unit-tested against a recording double.
//!
//! cgroup v2's "no internal processes" rule: a group that hands controllers to its children
//! must hold no processes itself, so init moves out of the root into `init/` before the root's
//! `cgroup.subtree_control` gets `+cpu +memory +pids`, and pods' processes live only in leaves.

use std::io;
use std::path::{Path, PathBuf};

use crate::pod::exec_plan::CgroupLimits;

/// Where cgroup2 is mounted in the guest.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The controllers every level hands down.
pub const CONTROLLERS: &str = "+cpu +memory +pids";
/// `cpu.max`'s period in µs (the quota of the plan is per this period).
pub const CPU_PERIOD_US: u64 = 100_000;

/// The file operations on cgroupfs.
pub trait CgroupFs {
    fn write(&mut self, path: &Path, value: &str) -> io::Result<()>;
    fn read(&mut self, path: &Path) -> io::Result<String>;
    /// Creates the directory; an existing one is fine.
    fn mkdir(&mut self, path: &Path) -> io::Result<()>;
    /// Removes an empty group; a missing one is fine.
    fn rmdir(&mut self, path: &Path) -> io::Result<()>;
}

/// The real cgroupfs.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealCgroupFs;

impl CgroupFs for RealCgroupFs {
    fn write(&mut self, path: &Path, value: &str) -> io::Result<()> {
        // One write(2): cgroupfs parses each write as a whole.
        std::fs::write(path, value)
    }
    fn read(&mut self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn mkdir(&mut self, path: &Path) -> io::Result<()> {
        match std::fs::create_dir(path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            r => r,
        }
    }
    fn rmdir(&mut self, path: &Path) -> io::Result<()> {
        match std::fs::remove_dir(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cgroup: {op} {path}: {source}")]
pub struct CgroupError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn at(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError { op, path, source }
}

/// The tree under one cgroup2 mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroups {
    pub root: PathBuf,
}

impl Default for Cgroups {
    fn default() -> Cgroups {
        Cgroups::new(CGROUP_ROOT)
    }
}

impl Cgroups {
    pub fn new(root: impl Into<PathBuf>) -> Cgroups {
        Cgroups { root: root.into() }
    }

    pub fn pods(&self) -> PathBuf {
        self.root.join("pods")
    }

    pub fn pod(&self, pod: &str) -> PathBuf {
        self.pods().join(pod)
    }

    /// Once at boot: init (`pid`) into `init/`, then the controllers for the children, and
    /// the `pods/` level with its own subtree_control.
    pub fn host_setup(&self, fs: &mut dyn CgroupFs, pid: u32) -> Result<(), CgroupError> {
        let own = self.root.join("init");
        fs.mkdir(&own).map_err(at("mkdir", &own))?;
        let procs = own.join("cgroup.procs");
        fs.write(&procs, &pid.to_string())
            .map_err(at("write", &procs))?;
        let sc = self.root.join("cgroup.subtree_control");
        fs.write(&sc, CONTROLLERS).map_err(at("write", &sc))?;
        let pods = self.pods();
        fs.mkdir(&pods).map_err(at("mkdir", &pods))?;
        let sc = pods.join("cgroup.subtree_control");
        fs.write(&sc, CONTROLLERS).map_err(at("write", &sc))
    }

    /// A pod's group (controllers for its apps) and its pod-init leaf; returns the leaf.
    pub fn create_pod(&self, fs: &mut dyn CgroupFs, pod: &str) -> Result<PathBuf, CgroupError> {
        let dir = self.pod(pod);
        fs.mkdir(&dir).map_err(at("mkdir", &dir))?;
        let sc = dir.join("cgroup.subtree_control");
        fs.write(&sc, CONTROLLERS).map_err(at("write", &sc))?;
        let leaf = dir.join("pod-init");
        fs.mkdir(&leaf).map_err(at("mkdir", &leaf))?;
        Ok(leaf)
    }

    /// An app's group with its limits, written before any process joins it.
    pub fn create_app(
        &self,
        fs: &mut dyn CgroupFs,
        pod: &str,
        app: &str,
        limits: &CgroupLimits,
    ) -> Result<PathBuf, CgroupError> {
        let dir = self.pod(pod).join(app);
        fs.mkdir(&dir).map_err(at("mkdir", &dir))?;
        write_limits(fs, &dir, limits)?;
        Ok(dir)
    }
}

/// The limits as cgroup files; absent limits are left at the kernel's default ("max").
pub fn write_limits(
    fs: &mut dyn CgroupFs,
    dir: &Path,
    limits: &CgroupLimits,
) -> Result<(), CgroupError> {
    let mut files = Vec::new();
    if let Some(v) = limits.memory_max {
        files.push(("memory.max", v.to_string()));
    }
    if let Some(v) = limits.memory_low {
        files.push(("memory.low", v.to_string()));
    }
    if let Some(v) = limits.cpu_max_us {
        files.push(("cpu.max", format!("{v} {CPU_PERIOD_US}")));
    }
    if let Some(v) = limits.cpu_weight {
        files.push(("cpu.weight", v.clamp(1, 10_000).to_string()));
    }
    for (name, value) in files {
        let p = dir.join(name);
        fs.write(&p, &value).map_err(at("write", &p))?;
    }
    Ok(())
}

/// The group's `oom_kill` count from `memory.events` (0 when the line is absent).
pub fn oom_kills(fs: &mut dyn CgroupFs, group: &Path) -> Result<u64, CgroupError> {
    let p = group.join("memory.events");
    let text = fs.read(&p).map_err(at("read", &p))?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0))
}

/// SIGKILL to every process in the group and its descendants (`cgroup.kill`, Linux 5.14).
pub fn kill(fs: &mut dyn CgroupFs, group: &Path) -> Result<(), CgroupError> {
    let p = group.join("cgroup.kill");
    fs.write(&p, "1").map_err(at("write", &p))
}

/// Removes an empty group (after its processes are gone and reaped).
pub fn remove(fs: &mut dyn CgroupFs, group: &Path) -> Result<(), CgroupError> {
    fs.rmdir(group).map_err(at("rmdir", group))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Rec {
        calls: Vec<String>,
        events: String,
    }

    impl CgroupFs for Rec {
        fn write(&mut self, path: &Path, value: &str) -> io::Result<()> {
            self.calls.push(format!("write {} {value}", path.display()));
            Ok(())
        }
        fn read(&mut self, path: &Path) -> io::Result<String> {
            self.calls.push(format!("read {}", path.display()));
            Ok(self.events.clone())
        }
        fn mkdir(&mut self, path: &Path) -> io::Result<()> {
            self.calls.push(format!("mkdir {}", path.display()));
            Ok(())
        }
        fn rmdir(&mut self, path: &Path) -> io::Result<()> {
            self.calls.push(format!("rmdir {}", path.display()));
            Ok(())
        }
    }

    #[test]
    fn host_setup_moves_init_out_of_the_root_before_enabling_controllers() {
        let mut fs = Rec::default();
        Cgroups::new("/cg").host_setup(&mut fs, 1).unwrap();
        assert_eq!(
            fs.calls,
            [
                "mkdir /cg/init",
                "write /cg/init/cgroup.procs 1",
                "write /cg/cgroup.subtree_control +cpu +memory +pids",
                "mkdir /cg/pods",
                "write /cg/pods/cgroup.subtree_control +cpu +memory +pids",
            ]
        );
    }

    #[test]
    fn a_pod_hands_controllers_down_and_gets_a_pod_init_leaf() {
        let mut fs = Rec::default();
        let leaf = Cgroups::new("/cg").create_pod(&mut fs, "web").unwrap();
        assert_eq!(leaf, Path::new("/cg/pods/web/pod-init"));
        assert_eq!(
            fs.calls,
            [
                "mkdir /cg/pods/web",
                "write /cg/pods/web/cgroup.subtree_control +cpu +memory +pids",
                "mkdir /cg/pods/web/pod-init",
            ]
        );
    }

    #[test]
    fn app_limits_are_written_in_the_kernel_formats() {
        let mut fs = Rec::default();
        let limits = CgroupLimits {
            memory_max: Some(64 << 20),
            memory_low: Some(16 << 20),
            cpu_max_us: Some(50_000),
            cpu_weight: Some(20_000),
        };
        let dir = Cgroups::new("/cg")
            .create_app(&mut fs, "web", "nginx", &limits)
            .unwrap();
        assert_eq!(dir, Path::new("/cg/pods/web/nginx"));
        assert_eq!(
            fs.calls,
            [
                "mkdir /cg/pods/web/nginx",
                "write /cg/pods/web/nginx/memory.max 67108864",
                "write /cg/pods/web/nginx/memory.low 16777216",
                "write /cg/pods/web/nginx/cpu.max 50000 100000",
                "write /cg/pods/web/nginx/cpu.weight 10000",
            ]
        );
    }

    #[test]
    fn no_limits_write_no_files() {
        let mut fs = Rec::default();
        write_limits(&mut fs, Path::new("/g"), &CgroupLimits::default()).unwrap();
        assert!(fs.calls.is_empty());
    }

    #[test]
    fn oom_kill_count_is_read_from_memory_events() {
        let mut fs = Rec {
            events: "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\noom_group_kill 0\n".into(),
            ..Rec::default()
        };
        assert_eq!(oom_kills(&mut fs, Path::new("/g")).unwrap(), 2);
        fs.events = "low 0\n".into();
        assert_eq!(oom_kills(&mut fs, Path::new("/g")).unwrap(), 0);
    }

    #[test]
    fn kill_writes_one_to_cgroup_kill() {
        let mut fs = Rec::default();
        kill(&mut fs, Path::new("/g")).unwrap();
        remove(&mut fs, Path::new("/g")).unwrap();
        assert_eq!(fs.calls, ["write /g/cgroup.kill 1", "rmdir /g"]);
    }
}
