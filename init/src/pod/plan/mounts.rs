//! The filesystem an app sees, as [`MountStep`]s in order: the API filesystems, a minimal
//! /dev, the pod's /etc files, then the volumes.

use std::path::{Path, PathBuf};

use aci::manifest::{MountPoint, PodManifest, RuntimeApp, VolumeKind};
use nix::mount::MsFlags;

use super::PlanError;
use crate::pod::exec_plan::MountStep;

/// The host's device nodes every app gets (OS-SPEC: null zero full random urandom tty console).
const DEVICES: [&str; 7] = [
    "null", "zero", "full", "random", "urandom", "tty", "console",
];

fn bits(flags: MsFlags) -> u64 {
    flags.bits()
}

fn fs(fstype: &'static str, path: &str, flags: MsFlags, data: Option<&str>) -> MountStep {
    MountStep::Fs {
        fstype,
        path: path.to_owned(),
        flags: bits(flags),
        data: data.map(str::to_owned),
    }
}

/// /proc, read-only /sys, /dev with the device nodes, devpts, shm, and the standard links.
pub fn api_filesystems() -> Vec<MountStep> {
    let nse = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut steps = vec![
        fs("proc", "/proc", nse, None),
        fs("sysfs", "/sys", nse | MsFlags::MS_RDONLY, None),
        fs(
            "tmpfs",
            "/dev",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("mode=755,size=64k"),
        ),
    ];
    for dev in DEVICES {
        steps.push(MountStep::Bind {
            source: PathBuf::from("/dev").join(dev),
            path: format!("/dev/{dev}"),
            read_only: false,
            recursive: false,
            file: true,
        });
    }
    // A private devpts instance: the pod's ptys are not the host's. gid 5 is `tty` in Debian
    // and most images; an image without that group still gets working ptys.
    steps.push(fs(
        "devpts",
        "/dev/pts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=620,gid=5"),
    ));
    steps.push(MountStep::Symlink {
        target: "pts/ptmx".into(),
        path: "/dev/ptmx".into(),
    });
    steps.push(fs(
        "tmpfs",
        "/dev/shm",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    ));
    for (target, link) in [
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ] {
        steps.push(MountStep::Symlink {
            target: target.into(),
            path: link.into(),
        });
    }
    steps
}

/// The pod's /etc/hostname, /etc/resolv.conf and (unless the image has its own) /etc/hosts,
/// bound read-only from the files init wrote in `pod_run/etc/`.
pub fn etc_files(pod_run: &Path, image_has_hosts: bool) -> Vec<MountStep> {
    let mut names = vec!["hostname", "resolv.conf"];
    if !image_has_hosts {
        names.insert(0, "hosts");
    }
    names
        .into_iter()
        .map(|name| MountStep::Bind {
            source: pod_run.join("etc").join(name),
            path: format!("/etc/{name}"),
            read_only: true,
            recursive: false,
            file: true,
        })
        .collect()
}

/// Each of the app's mount points filled by its pod's volume. Returns the steps and the host
/// directories that must exist (volume sources).
pub fn volumes(
    who: &str,
    pod: &PodManifest,
    app: &RuntimeApp,
    mount_points: &[MountPoint],
    pod_state: &Path,
) -> Result<(Vec<MountStep>, Vec<PathBuf>), PlanError> {
    let mut steps = Vec::new();
    let mut dirs = Vec::new();
    let mut targets: Vec<String> = Vec::new();
    for mp in mount_points {
        let mount = app
            .mounts
            .iter()
            .find(|m| m.volume.as_str() == mp.name.as_str() || m.path == mp.path);
        let Some(mount) = mount else {
            return Err(PlanError::Mount {
                who: who.to_owned(),
                path: mp.path.clone(),
                reason: format!(
                    "mount point {} has no volume mounted on it",
                    mp.name.as_str()
                ),
            });
        };
        let volume = mount
            .app_volume
            .as_ref()
            .or_else(|| pod.volume(mount.volume.as_str()))
            .ok_or_else(|| PlanError::Mount {
                who: who.to_owned(),
                path: mp.path.clone(),
                reason: format!("the pod has no volume {}", mount.volume.as_str()),
            })?;
        let path = normalize(&mount.path);
        if let Some(other) = targets
            .iter()
            .find(|t| inside(t, &path) || inside(&path, t))
        {
            return Err(PlanError::Mount {
                who: who.to_owned(),
                path: path.clone(),
                reason: format!("overlaps the volume mounted at {other}"),
            });
        }
        targets.push(path.clone());
        let source = match volume.kind {
            VolumeKind::Host => PathBuf::from(volume.source.clone().unwrap_or_default()),
            VolumeKind::Empty => pod_state.join("volumes").join(volume.name.as_str()),
        };
        dirs.push(source.clone());
        steps.push(MountStep::Bind {
            source,
            path,
            read_only: mp.read_only || volume.read_only(),
            recursive: volume.recursive(),
            file: false,
        });
    }
    Ok((steps, dirs))
}

fn normalize(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.to_owned()
    }
}

/// Whether `b` is `a` or below it.
fn inside(a: &str, b: &str) -> bool {
    b == a || b.strip_prefix(a).is_some_and(|rest| rest.starts_with('/')) || a == "/"
}
