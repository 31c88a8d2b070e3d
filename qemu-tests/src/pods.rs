//! The signed test images the pod tests embed: Debian's busybox-static as ACIs for both arches,
//! built by `scripts/busybox-aci.sh` once per test process (under a file lock, as images are),
//! with a test key generated here, plus the refusal cases: an image signed by a second key no
//! declaration trusts, and a tampered image (one byte flipped after signing).
//!
//! ```no_run
//! # fn main() -> Result<(), qemu_tests::HarnessError> {
//! let images = qemu_tests::pods::pod_images()?;
//! let amd64 = images.arch(qemu_tests::Arch::X86_64);
//! // host.toml: [[trust]] key = images.key.public; an embedded image amd64.good.aci, ...
//! # let _ = amd64;
//! # Ok(())
//! # }
//! ```
//!
//! Each refusal case is its own variant of the image (`/etc/hostos-variant` holds `untrusted`
//! or `tampered`), so it has its own Image ID: a pod using it cannot be satisfied by the good
//! image already in the store. The tampered file differs from what was signed in the gzip
//! header's MTIME byte: the archive still reads, with the same Image ID, so only the signature
//! can tell.
//!
//! Layout: `target/qemu-tests-out/pod-images/keys/{test,untrusted}.{pub,key}` (generated once,
//! kept), `.../run-<pid>/busybox[-untrusted|-tampered]-{amd64,arm64}.aci[.minisig]` (this
//! process's images; directories of processes that are gone are removed).

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::builder::{Memo, once};
use crate::{Arch, HarnessError, builder_bin, target_dir, workspace_root};

/// A minisign key pair made by `builder key generate` (unencrypted).
#[derive(Clone, Debug)]
pub struct KeyPair {
    pub public: PathBuf,
    pub secret: PathBuf,
}

/// One signed ACI.
#[derive(Clone, Debug)]
pub struct TestAci {
    pub aci: PathBuf,
    /// `<aci>.minisig`.
    pub signature: PathBuf,
    /// The Image ID `builder aci build` printed (`sha512-` + 128 hex digits).
    pub id: String,
}

/// The images of one architecture.
#[derive(Clone, Debug)]
pub struct ArchImages {
    /// Signed with [`PodImages::key`].
    pub good: TestAci,
    /// Variant `untrusted`, signed with [`PodImages::untrusted_key`].
    pub untrusted: TestAci,
    /// Variant `tampered`, signed with [`PodImages::key`], then one byte flipped.
    pub tampered: TestAci,
}

/// Everything [`pod_images`] made.
#[derive(Clone, Debug)]
pub struct PodImages {
    /// This process's directory of images.
    pub dir: PathBuf,
    /// The key to trust (`[[trust]]`) in test declarations.
    pub key: KeyPair,
    /// A key no test declaration trusts.
    pub untrusted_key: KeyPair,
    pub amd64: ArchImages,
    pub arm64: ArchImages,
}

impl PodImages {
    /// The images a guest of `arch` runs.
    pub fn arch(&self, arch: Arch) -> &ArchImages {
        match arch {
            Arch::X86_64 => &self.amd64,
            Arch::Aarch64 => &self.arm64,
        }
    }
}

/// The image name every test ACI carries.
pub const IMAGE_NAME: &str = "example.com/busybox";

/// Builds the pod test images (once per test process).
pub fn pod_images() -> Result<PodImages, HarnessError> {
    static BUILT: OnceLock<Memo<(), PodImages>> = OnceLock::new();
    once(&BUILT, (), "building the pod test images", make)
}

fn make() -> Result<PodImages, HarnessError> {
    let builder = builder_bin()?;
    let root = target_dir().join("qemu-tests-out").join("pod-images");
    create_dir(&root)?;
    let _lock = lock(&root.join("lock"))?;
    remove_runs_of_gone_processes(&root)?;
    let (key, untrusted_key) = keys_in(&builder, &root)?;

    let dir = root.join(format!("run-{}", std::process::id()));
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(io_err("remove the old images", &dir))?;
    }
    let good = script(&builder, &dir, &key.secret, &ScriptVars::default())?;
    let untrusted = script(
        &builder,
        &dir.join("untrusted"),
        &untrusted_key.secret,
        &ScriptVars::variant("untrusted"),
    )?;
    let tampered = script(
        &builder,
        &dir.join("tampered"),
        &key.secret,
        &ScriptVars::variant("tampered"),
    )?;
    let mut per_arch = Vec::new();
    for arch in ["amd64", "arm64"] {
        let pick = |built: &[TestAci]| find(built, arch);
        let untrusted = rename(
            pick(&untrusted)?,
            &dir,
            &format!("busybox-untrusted-{arch}.aci"),
        )?;
        let tampered = rename(
            pick(&tampered)?,
            &dir,
            &format!("busybox-tampered-{arch}.aci"),
        )?;
        flip_gzip_mtime_byte(&tampered.aci)?;
        per_arch.push(ArchImages {
            good: pick(&good)?,
            untrusted,
            tampered,
        });
    }
    for sub in ["untrusted", "tampered"] {
        let d = dir.join(sub);
        fs::remove_dir_all(&d).map_err(io_err("remove the staging directory", &d))?;
    }
    let [amd64, arm64]: [ArchImages; 2] =
        per_arch
            .try_into()
            .map_err(|_| HarnessError::CommandOutput {
                command: "scripts/busybox-aci.sh".into(),
                problem: "it did not build both arches".into(),
            })?;
    Ok(PodImages {
        dir,
        key,
        untrusted_key,
        amd64,
        arm64,
    })
}

/// The test key and the untrusted key (the same pairs [`pod_images`] signs with), generated
/// once and kept.
pub fn test_keys() -> Result<(KeyPair, KeyPair), HarnessError> {
    let builder = builder_bin()?;
    let root = target_dir().join("qemu-tests-out").join("pod-images");
    create_dir(&root)?;
    let _lock = lock(&root.join("lock"))?;
    keys_in(&builder, &root)
}

/// `root/keys/{test,untrusted}.*`; the caller holds `root`'s lock.
fn keys_in(builder: &Path, root: &Path) -> Result<(KeyPair, KeyPair), HarnessError> {
    let keys = root.join("keys");
    create_dir(&keys)?;
    Ok((
        key_pair(builder, &keys, "test")?,
        key_pair(builder, &keys, "untrusted")?,
    ))
}

/// `keys/<name>.{pub,key}`, generated unless both exist.
pub(crate) fn key_pair(builder: &Path, keys: &Path, name: &str) -> Result<KeyPair, HarnessError> {
    let pair = KeyPair {
        public: keys.join(format!("{name}.pub")),
        secret: keys.join(format!("{name}.key")),
    };
    if pair.public.is_file() && pair.secret.is_file() {
        return Ok(pair);
    }
    // Half a pair (an interrupted generate): start over, `key generate` never overwrites.
    for p in [&pair.public, &pair.secret] {
        if p.exists() {
            fs::remove_file(p).map_err(io_err("remove half a key pair", p))?;
        }
    }
    let mut command = Command::new(builder);
    command
        .args(["-q", "key", "generate", "-o"])
        .arg(keys.join(name));
    run(
        command,
        &format!("builder key generate -o {}", keys.join(name).display()),
    )?;
    Ok(pair)
}

/// What `scripts/busybox-aci.sh` is told through its environment.
#[derive(Clone, Debug, Default)]
pub(crate) struct ScriptVars {
    /// `BUSYBOX_ACI_VARIANT`: written to `/etc/hostos-variant`.
    pub variant: Option<String>,
    /// `BUSYBOX_ACI_NAME`: the image name (`example.com/busybox` unless set).
    pub name: Option<String>,
    /// `BUSYBOX_ACI_EXTRA`: a directory copied into the rootfs.
    pub extra: Option<PathBuf>,
}

impl ScriptVars {
    fn variant(variant: &str) -> ScriptVars {
        ScriptVars {
            variant: Some(variant.into()),
            ..ScriptVars::default()
        }
    }
}

/// Runs `scripts/busybox-aci.sh OUT KEY`; the images it printed (`FILE: ID` lines).
pub(crate) fn script(
    builder: &Path,
    out: &Path,
    key: &Path,
    vars: &ScriptVars,
) -> Result<Vec<TestAci>, HarnessError> {
    let script = workspace_root().join("scripts").join("busybox-aci.sh");
    let mut command = Command::new("bash");
    command
        .arg(&script)
        .arg(out)
        .arg(key)
        .env("HOSTOS_BUILDER", builder);
    let mut shown = String::new();
    let values = [
        (
            "BUSYBOX_ACI_VARIANT",
            vars.variant.clone().map(PathBuf::from),
        ),
        ("BUSYBOX_ACI_NAME", vars.name.clone().map(PathBuf::from)),
        ("BUSYBOX_ACI_EXTRA", vars.extra.clone()),
    ];
    for (name, value) in values {
        match value {
            Some(v) => {
                shown.push_str(&format!("{name}={} ", v.display()));
                command.env(name, v)
            }
            None => command.env_remove(name),
        };
    }
    let display = format!(
        "{shown}{} {} {}",
        script.display(),
        out.display(),
        key.display()
    );
    let stdout = run(command, &display)?;
    let mut built = Vec::new();
    for line in stdout.lines() {
        let Some((file, id)) = line.rsplit_once(": ") else {
            continue;
        };
        let aci = PathBuf::from(file);
        let signature = PathBuf::from(format!("{file}.minisig"));
        if !(id.starts_with("sha512-") && aci.is_file() && signature.is_file()) {
            return Err(HarnessError::CommandOutput {
                command: display,
                problem: format!("its line {line:?} names no signed ACI"),
            });
        }
        built.push(TestAci {
            aci,
            signature,
            id: id.to_string(),
        });
    }
    Ok(built)
}

pub(crate) fn find(built: &[TestAci], arch: &str) -> Result<TestAci, HarnessError> {
    let name = format!("busybox-{arch}.aci");
    built
        .iter()
        .find(|a| a.aci.file_name().is_some_and(|n| n == name.as_str()))
        .cloned()
        .ok_or_else(|| HarnessError::CommandOutput {
            command: "scripts/busybox-aci.sh".into(),
            problem: format!("it printed no {name}"),
        })
}

/// Moves an image and its signature to `dir/name` (distinct file names, so one declaration can
/// embed all of them).
pub(crate) fn rename(aci: TestAci, dir: &Path, name: &str) -> Result<TestAci, HarnessError> {
    let moved = TestAci {
        aci: dir.join(name),
        signature: dir.join(format!("{name}.minisig")),
        id: aci.id,
    };
    fs::rename(&aci.aci, &moved.aci).map_err(io_err("move the image", &aci.aci))?;
    fs::rename(&aci.signature, &moved.signature)
        .map_err(io_err("move the signature", &aci.signature))?;
    Ok(moved)
}

/// Flips the lowest bit of the gzip header's MTIME (byte 4): the signature no longer matches,
/// while the archive still decompresses to the same tar (same Image ID).
pub(crate) fn flip_gzip_mtime_byte(path: &Path) -> Result<(), HarnessError> {
    let mut bytes = fs::read(path).map_err(io_err("read the image to tamper with", path))?;
    if bytes.get(..3) != Some(&[0x1f, 0x8b, 0x08][..]) || bytes.len() < 10 {
        return Err(HarnessError::CommandOutput {
            command: "scripts/busybox-aci.sh".into(),
            problem: format!("{} is not a gzip (deflate) file", path.display()),
        });
    }
    bytes[4] ^= 0x01;
    fs::write(path, bytes).map_err(io_err("write the tampered image", path))
}

/// Removes `run-<pid>` directories whose process is gone.
pub(crate) fn remove_runs_of_gone_processes(root: &Path) -> Result<(), HarnessError> {
    let entries = fs::read_dir(root).map_err(io_err("list", root))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("run-")) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let path = entry.path();
            fs::remove_dir_all(&path).map_err(io_err("remove old images", &path))?;
        }
    }
    Ok(())
}

fn run(mut command: Command, display: &str) -> Result<String, HarnessError> {
    command
        .current_dir(workspace_root())
        .stderr(Stdio::inherit());
    let program = PathBuf::from(command.get_program());
    let output = command
        .output()
        .map_err(|source| HarnessError::Spawn { program, source })?;
    if !output.status.success() {
        return Err(HarnessError::CommandFailed {
            command: display.to_string(),
            status: output.status,
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

pub(crate) fn create_dir(path: &Path) -> Result<(), HarnessError> {
    fs::create_dir_all(path).map_err(io_err("create", path))
}

/// An exclusive lock on `path`, held until the file is dropped: test binaries running at the
/// same time build one after the other.
pub(crate) fn lock(path: &Path) -> Result<File, HarnessError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err("open the lock file", path))?;
    file.lock().map_err(io_err("lock", path))?;
    Ok(file)
}

pub(crate) fn io_err(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> HarnessError {
    let path = path.to_path_buf();
    move |source| HarnessError::Io {
        action,
        path,
        source,
    }
}
