//! The early filesystems PID1 mounts (/proc, /sys, /dev, ...) and reading the mount table.
//!
//! The syscalls go through [`MountOps`] so that the order and flags of the plan are pinned by
//! unit tests against a recording double, without root.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;

/// One mount of the early plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountSpec {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MsFlags,
    pub data: Option<&'static str>,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);
const NOSUID_NODEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);

/// The early mounts, parents before children. /dev/pts and /dev/shm live inside devtmpfs and
/// the cgroup mount point inside sysfs, so their mount points exist only after those mounts.
pub const EARLY_MOUNTS: &[MountSpec] = &[
    MountSpec {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    MountSpec {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    MountSpec {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        // Not nodev: device nodes are the point of /dev.
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
    },
    MountSpec {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        // gid 5 is "tty" in every distribution's /etc/group, which pods bring along.
        data: Some("ptmxmode=0666,gid=5,mode=620"),
    },
    MountSpec {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: Some("mode=1777"),
    },
    MountSpec {
        source: "run",
        target: "/run",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: Some("mode=0755"),
    },
    MountSpec {
        source: "tmp",
        target: "/tmp",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: Some("mode=1777"),
    },
    MountSpec {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        // Lets pods later get delegated subtrees that they cannot escape.
        data: Some("nsdelegate"),
    },
];

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot create mount point {path}")]
    CreateMountPoint {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot tell whether {path} is already a mount point")]
    CheckMountPoint {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot mount {fstype} on {target}")]
    Mount {
        fstype: &'static str,
        target: &'static str,
        #[source]
        source: Errno,
    },
}

/// The syscalls the mount plan needs; [`RealMountOps`] in the guest, a recorder in tests.
pub trait MountOps {
    /// Creates `path` (and missing parents); an existing directory is success.
    fn create_dir(&mut self, path: &Path) -> io::Result<()>;
    /// Whether something is mounted on `path` already.
    fn is_mount_point(&mut self, path: &Path) -> io::Result<bool>;
    fn mount(&mut self, spec: &MountSpec) -> Result<(), Errno>;
}

/// What happened to one mount of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Mounted,
    /// Already mounted (by the kernel, or by an init before an exec of this one).
    AlreadyMounted,
}

/// Mounts every entry of `plan` in order; stops at the first failure.
pub fn mount_all(
    ops: &mut impl MountOps,
    plan: &[MountSpec],
) -> Result<Vec<(&'static str, Outcome)>, MountError> {
    let mut outcomes = Vec::with_capacity(plan.len());
    for spec in plan {
        let target = Path::new(spec.target);
        ops.create_dir(target)
            .map_err(|source| MountError::CreateMountPoint {
                path: target.to_path_buf(),
                source,
            })?;
        let mounted = ops
            .is_mount_point(target)
            .map_err(|source| MountError::CheckMountPoint {
                path: target.to_path_buf(),
                source,
            })?;
        let outcome = if mounted {
            Outcome::AlreadyMounted
        } else {
            match ops.mount(spec) {
                Ok(()) => Outcome::Mounted,
                // Some filesystems (cgroup2, a second devpts instance) refuse a second mount
                // with EBUSY instead of stacking; the one already there serves.
                Err(Errno::EBUSY) => Outcome::AlreadyMounted,
                Err(source) => {
                    return Err(MountError::Mount {
                        fstype: spec.fstype,
                        target: spec.target,
                        source,
                    });
                }
            }
        };
        outcomes.push((spec.target, outcome));
    }
    Ok(outcomes)
}

/// The real syscalls.
pub struct RealMountOps;

impl MountOps for RealMountOps {
    fn create_dir(&mut self, path: &Path) -> io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
    }

    fn is_mount_point(&mut self, path: &Path) -> io::Result<bool> {
        // A mount point sits on a different device than its parent directory. This works
        // before /proc exists, which reading mountinfo would not.
        use std::os::unix::fs::MetadataExt;
        let parent = path.parent().unwrap_or(Path::new("/"));
        let own = std::fs::metadata(path)?;
        let above = std::fs::metadata(parent)?;
        Ok(own.dev() != above.dev())
    }

    fn mount(&mut self, spec: &MountSpec) -> Result<(), Errno> {
        nix::mount::mount(
            Some(spec.source),
            spec.target,
            Some(spec.fstype),
            spec.flags,
            spec.data,
        )
    }
}

/// Mount points listed in a `/proc/self/mountinfo` text, in mount order.
///
/// The mount point is the fifth field; the kernel escapes space, tab, newline and backslash
/// in it as three-digit octal (`\040`).
pub fn parse_mountinfo(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_octal)
        .collect()
}

fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Call {
        CreateDir(String),
        IsMountPoint(String),
        Mount {
            target: &'static str,
            fstype: &'static str,
            flags: MsFlags,
            data: Option<&'static str>,
        },
    }

    #[derive(Default)]
    pub struct Recorder {
        pub calls: Vec<Call>,
        pub already_mounted: Vec<&'static str>,
        pub busy: Vec<&'static str>,
        pub failing: Vec<&'static str>,
    }

    impl MountOps for Recorder {
        fn create_dir(&mut self, path: &Path) -> io::Result<()> {
            self.calls.push(Call::CreateDir(path.display().to_string()));
            Ok(())
        }
        fn is_mount_point(&mut self, path: &Path) -> io::Result<bool> {
            self.calls
                .push(Call::IsMountPoint(path.display().to_string()));
            Ok(self.already_mounted.iter().any(|m| Path::new(m) == path))
        }
        fn mount(&mut self, spec: &MountSpec) -> Result<(), Errno> {
            self.calls.push(Call::Mount {
                target: spec.target,
                fstype: spec.fstype,
                flags: spec.flags,
                data: spec.data,
            });
            if self.busy.contains(&spec.target) {
                Err(Errno::EBUSY)
            } else if self.failing.contains(&spec.target) {
                Err(Errno::ENODEV)
            } else {
                Ok(())
            }
        }
    }

    fn mounts(calls: &[Call]) -> Vec<(&'static str, &'static str)> {
        calls
            .iter()
            .filter_map(|c| match c {
                Call::Mount { target, fstype, .. } => Some((*target, *fstype)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn mounts_parents_before_children_in_fixed_order() {
        let mut rec = Recorder::default();
        mount_all(&mut rec, EARLY_MOUNTS).expect("plan mounts");
        assert_eq!(
            mounts(&rec.calls),
            [
                ("/proc", "proc"),
                ("/sys", "sysfs"),
                ("/dev", "devtmpfs"),
                ("/dev/pts", "devpts"),
                ("/dev/shm", "tmpfs"),
                ("/run", "tmpfs"),
                ("/tmp", "tmpfs"),
                ("/sys/fs/cgroup", "cgroup2"),
            ]
        );
    }

    #[test]
    fn creates_and_checks_mount_point_before_each_mount() {
        let mut rec = Recorder::default();
        mount_all(&mut rec, EARLY_MOUNTS).expect("plan mounts");
        for (chunk, spec) in rec.calls.chunks(3).zip(EARLY_MOUNTS) {
            assert_eq!(chunk[0], Call::CreateDir(spec.target.into()));
            assert_eq!(chunk[1], Call::IsMountPoint(spec.target.into()));
            assert!(matches!(chunk[2], Call::Mount { target, .. } if target == spec.target));
        }
    }

    #[test]
    fn uses_hardened_flags_and_options() {
        let find = |target: &str| {
            EARLY_MOUNTS
                .iter()
                .find(|s| s.target == target)
                .copied()
                .expect("in plan")
        };
        let nse = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        assert_eq!(find("/proc").flags, nse);
        assert_eq!(find("/sys").flags, nse);
        assert_eq!(find("/sys/fs/cgroup").flags, nse);
        assert_eq!(find("/sys/fs/cgroup").data, Some("nsdelegate"));
        assert!(!find("/dev").flags.contains(MsFlags::MS_NODEV));
        let pts = find("/dev/pts");
        assert_eq!(pts.flags, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC);
        assert_eq!(pts.data, Some("ptmxmode=0666,gid=5,mode=620"));
        assert_eq!(find("/dev/shm").data, Some("mode=1777"));
        assert_eq!(find("/tmp").data, Some("mode=1777"));
        assert_eq!(find("/run").data, Some("mode=0755"));
        for target in ["/dev/shm", "/run", "/tmp"] {
            assert_eq!(find(target).fstype, "tmpfs");
            assert_eq!(find(target).flags, MsFlags::MS_NOSUID | MsFlags::MS_NODEV);
        }
    }

    #[test]
    fn skips_targets_that_are_already_mounted() {
        let mut rec = Recorder {
            already_mounted: vec!["/dev", "/proc"],
            ..Recorder::default()
        };
        let outcomes = mount_all(&mut rec, EARLY_MOUNTS).expect("plan mounts");
        assert!(
            !mounts(&rec.calls)
                .iter()
                .any(|(t, _)| *t == "/dev" || *t == "/proc")
        );
        assert_eq!(outcomes[0], ("/proc", Outcome::AlreadyMounted));
        assert_eq!(outcomes[2], ("/dev", Outcome::AlreadyMounted));
        assert_eq!(outcomes[1], ("/sys", Outcome::Mounted));
    }

    #[test]
    fn tolerates_ebusy_as_already_mounted() {
        let mut rec = Recorder {
            busy: vec!["/sys/fs/cgroup"],
            ..Recorder::default()
        };
        let outcomes = mount_all(&mut rec, EARLY_MOUNTS).expect("plan mounts");
        assert_eq!(
            outcomes.last(),
            Some(&("/sys/fs/cgroup", Outcome::AlreadyMounted))
        );
    }

    #[test]
    fn stops_at_first_failure_naming_target_and_fstype() {
        let mut rec = Recorder {
            failing: vec!["/dev"],
            ..Recorder::default()
        };
        let err = mount_all(&mut rec, EARLY_MOUNTS).expect_err("devtmpfs fails");
        assert_eq!(err.to_string(), "cannot mount devtmpfs on /dev");
        assert!(!mounts(&rec.calls).iter().any(|(t, _)| *t == "/dev/pts"));
    }

    #[test]
    fn parses_mount_points_from_mountinfo() {
        let text = "\
22 1 0:20 / / rw shared:1 - rootfs rootfs rw
23 22 0:21 / /proc rw,nosuid,nodev,noexec - proc proc rw
30 22 0:5 / /dev rw,nosuid - devtmpfs devtmpfs rw,size=1k
41 22 8:1 / /mnt/my\\040disk rw - ext4 /dev/sda1 rw
";
        assert_eq!(
            parse_mountinfo(text),
            ["/", "/proc", "/dev", "/mnt/my disk"]
        );
    }

    #[test]
    fn leaves_malformed_escapes_alone() {
        assert_eq!(unescape_octal("/a\\09"), "/a\\09");
        assert_eq!(unescape_octal("/a\\1"), "/a\\1");
        assert_eq!(unescape_octal("/tab\\011x"), "/tab\tx");
    }
}
