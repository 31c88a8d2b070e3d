//! The recording double of [`ChildOps`]: every call becomes one readable line, and a call can
//! be made to fail, so tests pin the order, the flags and the error paths without root.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::{ChildOps, CompiledFilter, Source};

#[derive(Debug, Default)]
pub struct Recorder {
    pub calls: Vec<String>,
    /// A call whose line starts with the prefix fails with the errno (the first match).
    pub fail: Vec<(String, Errno)>,
}

fn src(s: Source<'_>) -> String {
    match s {
        Source::None => "none".into(),
        Source::Name(n) => n.into(),
        Source::Host(p) => p.display().to_string(),
    }
}

fn flags(f: MsFlags) -> String {
    let names: Vec<&str> = f.iter_names().map(|(n, _)| n).collect();
    names.join("|")
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    pub fn failing(prefix: &str, errno: Errno) -> Recorder {
        Recorder {
            calls: Vec::new(),
            fail: vec![(prefix.to_string(), errno)],
        }
    }

    fn call(&mut self, line: String) -> Result<(), Errno> {
        let r = match self.fail.iter().find(|(p, _)| line.starts_with(p.as_str())) {
            Some((_, e)) => Err(*e),
            None => Ok(()),
        };
        self.calls.push(line);
        r
    }

    /// The index of the first call starting with `prefix`.
    pub fn position(&self, prefix: &str) -> Option<usize> {
        self.calls.iter().position(|c| c.starts_with(prefix))
    }
}

impl ChildOps for Recorder {
    fn close_fds_on_exec(&mut self) -> Result<(), Errno> {
        self.call("close_range 3.. CLOEXEC".into())
    }
    fn reset_signals(&mut self) -> Result<(), Errno> {
        self.call("reset_signals".into())
    }
    fn setns(&mut self, fd: RawFd, nstype: CloneFlags) -> Result<(), Errno> {
        let names: Vec<&str> = nstype.iter_names().map(|(n, _)| n).collect();
        self.call(format!("setns {fd} {}", names.join("|")))
    }
    fn setpgid(&mut self) -> Result<(), Errno> {
        self.call("setpgid 0 0".into())
    }
    fn join_cgroup(&mut self, cgroup: &Path) -> Result<(), Errno> {
        self.call(format!("write {}/cgroup.procs 0", cgroup.display()))
    }
    fn write_oom_score_adj(&mut self, value: i32) -> Result<(), Errno> {
        self.call(format!("write /proc/self/oom_score_adj {value}"))
    }
    fn unshare(&mut self, f: CloneFlags) -> Result<(), Errno> {
        let names: Vec<&str> = f.iter_names().map(|(n, _)| n).collect();
        self.call(format!("unshare {}", names.join("|")))
    }
    fn mount(
        &mut self,
        source: Source<'_>,
        target: &Path,
        fstype: Option<&str>,
        f: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno> {
        self.call(format!(
            "mount {} {} {} {} {}",
            src(source),
            target.display(),
            fstype.unwrap_or("-"),
            flags(f),
            data.unwrap_or("-")
        ))
    }
    fn open_root(&mut self, root: &Path) -> Result<(), Errno> {
        self.call(format!("open_root {}", root.display()))
    }
    fn mkdir_in_root(&mut self, path: &str) -> Result<(), Errno> {
        self.call(format!("mkdir_in_root {path}"))
    }
    fn create_file_in_root(&mut self, path: &str) -> Result<(), Errno> {
        self.call(format!("create_file_in_root {path}"))
    }
    fn symlink_in_root(&mut self, target: &str, path: &str) -> Result<(), Errno> {
        self.call(format!("symlink_in_root {target} {path}"))
    }
    fn mount_in_root(
        &mut self,
        source: Source<'_>,
        path: &str,
        fstype: Option<&str>,
        f: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno> {
        self.call(format!(
            "mount_in_root {} {path} {} {} {}",
            src(source),
            fstype.unwrap_or("-"),
            flags(f),
            data.unwrap_or("-")
        ))
    }
    fn chdir(&mut self, path: &Path) -> Result<(), Errno> {
        self.call(format!("chdir {}", path.display()))
    }
    fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> Result<(), Errno> {
        self.call(format!(
            "pivot_root {} {}",
            new_root.display(),
            put_old.display()
        ))
    }
    fn umount2(&mut self, target: &Path, f: MntFlags) -> Result<(), Errno> {
        let names: Vec<&str> = f.iter_names().map(|(n, _)| n).collect();
        self.call(format!("umount2 {} {}", target.display(), names.join("|")))
    }
    fn chroot(&mut self, path: &Path) -> Result<(), Errno> {
        self.call(format!("chroot {}", path.display()))
    }
    fn capbset_drop(&mut self, cap: u32) -> Result<(), Errno> {
        self.call(format!("prctl PR_CAPBSET_DROP {cap}"))
    }
    fn set_keepcaps(&mut self, on: bool) -> Result<(), Errno> {
        self.call(format!("prctl PR_SET_KEEPCAPS {}", u8::from(on)))
    }
    fn setgroups(&mut self, groups: &[u32]) -> Result<(), Errno> {
        self.call(format!("setgroups {groups:?}"))
    }
    fn setresgid(&mut self, gid: u32) -> Result<(), Errno> {
        self.call(format!("setresgid {gid}"))
    }
    fn setresuid(&mut self, uid: u32) -> Result<(), Errno> {
        self.call(format!("setresuid {uid}"))
    }
    fn capset(&mut self, e: u64, p: u64, i: u64) -> Result<(), Errno> {
        self.call(format!("capset eff={e:#x} prm={p:#x} inh={i:#x}"))
    }
    fn ambient_raise(&mut self, cap: u32) -> Result<(), Errno> {
        self.call(format!("prctl PR_CAP_AMBIENT_RAISE {cap}"))
    }
    fn set_no_new_privs(&mut self) -> Result<(), Errno> {
        self.call("prctl PR_SET_NO_NEW_PRIVS 1".into())
    }
    fn install_seccomp(&mut self, filter: &CompiledFilter) -> Result<(), Errno> {
        self.call(format!("seccomp {} instructions", filter.program.len()))
    }
    fn execve(&mut self, path: &CString, argv: &[CString], _env: &[CString]) -> Errno {
        let r = self.call(format!("execve {} {argv:?}", path.to_string_lossy()));
        // The double never "succeeds": a test sees the whole sequence and an ENOENT-free end.
        r.err().unwrap_or(Errno::ENOEXEC)
    }
}
