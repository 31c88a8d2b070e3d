//! Building what tests boot by running the `builder` binary: once per test process per input
//! (memoised), and under a file lock so test binaries running in parallel never build the same
//! thing at the same time.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::{Arch, DiskFormat, Firmware, HarnessError, QemuConfig, target_dir, workspace_root};

/// What `builder build` produced for one architecture.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub arch: Arch,
    /// The `-o` directory; per-arch files are under `dir/<arch>/`.
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// The kernel command line the builder chose, trimmed.
    pub cmdline: String,
    /// The bootable disk; may not exist (yet) for every image.
    pub disk: PathBuf,
}

impl BuiltImage {
    /// Boots the kernel and initramfs directly (the fastest path), with the built disk attached
    /// as a snapshot if it exists.
    pub fn direct_boot(&self) -> QemuConfig {
        let config = QemuConfig::new(self.arch)
            .kernel(&self.kernel)
            .initrd(&self.initramfs)
            .append(self.cmdline.clone());
        if self.disk.is_file() {
            config.disk_snapshot(&self.disk, DiskFormat::Raw)
        } else {
            config
        }
    }

    /// Boots the built disk through `firmware` with user networking, as `builder run IMAGE`
    /// does; writes go to a throwaway overlay.
    pub fn disk_boot(&self, firmware: Firmware) -> QemuConfig {
        QemuConfig::new(self.arch)
            .firmware(firmware)
            .disk_snapshot(&self.disk, DiskFormat::Raw)
            .user_network()
    }
}

/// A build: the declaration, the arch and the extra `builder build` arguments.
type BuildKey = (PathBuf, Arch, Vec<String>);

pub(crate) type Memo<K, T> = Mutex<HashMap<K, Arc<OnceLock<Result<T, String>>>>>;

/// `cargo build -p builder --release` (once per process); the path of the binary.
pub fn builder_bin() -> Result<PathBuf, HarnessError> {
    static BUILT: OnceLock<Memo<(), PathBuf>> = OnceLock::new();
    once(&BUILT, (), "building the builder binary", || {
        // scripts/test.sh builds it once (as scripts/hello.sh does) and names it here, so the
        // two never rebuild each other's.
        if let Some(bin) = std::env::var_os("HOSTOS_BUILDER").map(PathBuf::from) {
            return if bin.is_file() {
                Ok(bin)
            } else {
                Err(HarnessError::CommandOutput {
                    command: "HOSTOS_BUILDER".into(),
                    problem: format!("{} does not exist", bin.display()),
                })
            };
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command
            .args(["build", "--locked", "-p", "builder", "--release"])
            .current_dir(workspace_root())
            // Cargo reports progress on stderr; keep stdout for the test's own output.
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        // Cargo locks the target directory itself, so no lock of ours is needed here.
        run(command, "cargo build -p builder --release")?;
        let bin = target_dir().join("release").join("builder");
        if bin.is_file() {
            Ok(bin)
        } else {
            Err(HarnessError::CommandOutput {
                command: "cargo build -p builder --release".into(),
                problem: format!("{} does not exist", bin.display()),
            })
        }
    })
}

/// `builder kernel --arch <arch>` (once per process per arch): the kernel image it prints as
/// the last line of stdout.
pub fn kernel(arch: Arch) -> Result<PathBuf, HarnessError> {
    static BUILT: OnceLock<Memo<Arch, PathBuf>> = OnceLock::new();
    once(&BUILT, arch, &format!("building the {arch} kernel"), || {
        let bin = builder_bin()?;
        let _lock = lock(&format!("kernel-{arch}"))?;
        let display = format!("builder kernel --arch {arch}");
        let mut command = Command::new(bin);
        command.args(["kernel", "--arch", arch.as_str()]);
        let stdout = run(command, &display)?;
        let path = last_line(&stdout).map(PathBuf::from);
        match path {
            Some(path) if path.is_file() => Ok(path),
            other => Err(HarnessError::CommandOutput {
                command: display,
                problem: format!(
                    "the last line of its stdout, {:?}, is not a file",
                    other.unwrap_or_default()
                ),
            }),
        }
    })
}

/// `builder build <host_toml> --arch <arch> -o target/qemu-tests-out/<toml stem>` (once per
/// process per toml and arch).
pub fn build_image(host_toml: &Path, arch: Arch) -> Result<BuiltImage, HarnessError> {
    build_image_with(host_toml, arch, &[])
}

/// [`build_image`] with more `builder build` arguments (e.g. `--skip-image-checks`); memoised
/// per toml, arch and arguments.
pub fn build_image_with(
    host_toml: &Path,
    arch: Arch,
    extra: &[&str],
) -> Result<BuiltImage, HarnessError> {
    static BUILT: OnceLock<Memo<BuildKey, BuiltImage>> = OnceLock::new();
    let toml = if host_toml.is_absolute() {
        host_toml.to_path_buf()
    } else {
        workspace_root().join(host_toml)
    };
    let stem = toml
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let what = format!("building {} for {arch}", toml.display());
    // The workspace's example declarations embed the demo images, which are generated.
    if toml.starts_with(workspace_root().join("images")) {
        demo_acis()?;
    }
    let extra: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
    once(&BUILT, (toml.clone(), arch, extra.clone()), &what, || {
        let bin = builder_bin()?;
        let dir = target_dir().join("qemu-tests-out").join(&stem);
        // Per output directory, not per arch: both arches write into the same -o directory.
        let _lock = lock(&format!("image-{stem}"))?;
        let mut command = Command::new(bin);
        command
            .arg("build")
            .arg(&toml)
            .args(["--arch", arch.as_str(), "--format", "raw,kernel"])
            .args(&extra)
            .arg("-o")
            .arg(&dir);
        let display = format!(
            "builder build {} --arch {arch} --format raw,kernel {} -o {}",
            toml.display(),
            extra.join(" "),
            dir.display()
        );
        let stdout = run(command, &display)?;
        // The first line of stdout is the disk image (NAME-ARCH.img).
        let disk = stdout
            .lines()
            .next()
            .map(PathBuf::from)
            .filter(|p| p.extension().is_some_and(|e| e == "img") && p.is_file())
            .ok_or_else(|| HarnessError::CommandOutput {
                command: display.clone(),
                problem: format!("its first line of stdout names no disk image: {stdout:?}"),
            })?;
        let arch_dir = dir.join(arch.as_str());
        let cmdline_path = arch_dir.join("cmdline");
        let cmdline =
            fs::read_to_string(&cmdline_path).map_err(|e| HarnessError::CommandOutput {
                command: display.clone(),
                problem: format!("{} could not be read: {e}", cmdline_path.display()),
            })?;
        Ok(BuiltImage {
            arch,
            kernel: arch_dir.join("vmlinuz"),
            initramfs: arch_dir.join("initramfs.cpio.zst"),
            cmdline: cmdline.trim().to_string(),
            disk,
            dir,
        })
    })
}

/// `scripts/demo-aci.sh` (once per process, under a lock): the signed busybox images that
/// `images/hello.toml` embeds, in `images/aci/`.
pub fn demo_acis() -> Result<(), HarnessError> {
    static MADE: OnceLock<Memo<(), ()>> = OnceLock::new();
    once(
        &MADE,
        (),
        "making the demo images (scripts/demo-aci.sh)",
        || {
            let bin = builder_bin()?;
            let _lock = lock("demo-aci")?;
            let mut command = Command::new(workspace_root().join("scripts/demo-aci.sh"));
            command.env("HOSTOS_BUILDER", &bin);
            run(command, "scripts/demo-aci.sh").map(|_| ())
        },
    )
}

/// Runs `make` at most once per `key` in this process. Concurrent callers wait for the first;
/// the first gets the real error, later ones a sentence carrying its text.
pub(crate) fn once<K: Eq + Hash, T: Clone>(
    memo: &OnceLock<Memo<K, T>>,
    key: K,
    what: &str,
    make: impl FnOnce() -> Result<T, HarnessError>,
) -> Result<T, HarnessError> {
    let cell = {
        let mut map = memo
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(key).or_default())
    };
    let mut first_error = None;
    let stored = cell.get_or_init(|| {
        make().map_err(|e| {
            let text = e.chain();
            first_error = Some(e);
            text
        })
    });
    if let Some(e) = first_error {
        return Err(e);
    }
    stored
        .clone()
        .map_err(|message| HarnessError::EarlierFailure {
            what: what.to_string(),
            message,
        })
}

/// Runs `command` from the workspace root with stderr passed through; returns its stdout.
fn run(mut command: Command, display: &str) -> Result<String, HarnessError> {
    command
        .current_dir(workspace_root())
        .stderr(Stdio::inherit());
    let program = PathBuf::from(command.get_program());
    let output = command.output().map_err(|source| HarnessError::Spawn {
        program: program.clone(),
        source,
    })?;
    if !output.status.success() {
        return Err(HarnessError::CommandFailed {
            command: display.to_string(),
            status: output.status,
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn last_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|l| !l.is_empty())
}

/// An exclusive lock on `target/qemu-tests-locks/<name>.lock`, held until the file is dropped.
fn lock(name: &str) -> Result<File, HarnessError> {
    let dir = target_dir().join("qemu-tests-locks");
    fs::create_dir_all(&dir).map_err(|source| HarnessError::Io {
        action: "create the lock directory",
        path: dir.clone(),
        source,
    })?;
    let path = dir.join(format!("{name}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| HarnessError::Io {
            action: "open the lock file",
            path: path.clone(),
            source,
        })?;
    file.lock().map_err(|source| HarnessError::Io {
        action: "lock",
        path,
        source,
    })?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn last_line_skips_trailing_blank_lines() {
        assert_eq!(last_line("progress\n/a/b\n\n"), Some("/a/b"));
        assert_eq!(last_line(""), None);
    }

    #[test]
    fn once_runs_each_key_once_and_remembers_failures() {
        static MEMO: OnceLock<Memo<u32, u32>> = OnceLock::new();
        static CALLS: AtomicU32 = AtomicU32::new(0);
        let ok = || {
            CALLS.fetch_add(1, Ordering::SeqCst);
            Ok(7)
        };
        assert_eq!(once(&MEMO, 1, "one", ok).unwrap(), 7);
        assert_eq!(once(&MEMO, 1, "one", ok).unwrap(), 7);
        assert_eq!(CALLS.load(Ordering::SeqCst), 1);

        let fail = || {
            Err(HarnessError::CommandOutput {
                command: "x".into(),
                problem: "it broke".into(),
            })
        };
        assert!(matches!(
            once(&MEMO, 2, "two", fail),
            Err(HarnessError::CommandOutput { .. })
        ));
        let again = once(&MEMO, 2, "two", ok).unwrap_err().to_string();
        assert!(again.contains("it broke"), "{again}");
    }
}
