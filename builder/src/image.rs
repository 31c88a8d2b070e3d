//! The declaration as the builder reads it, the kernel command line, and the direct-boot
//! artifacts (`--format kernel`) for `-kernel` boots: `OUT/<arch>/vmlinuz`,
//! `OUT/<arch>/initramfs.cpio.zst`, `OUT/<arch>/cmdline` (a contract with `builder run` and
//! qemu-tests). The disk image itself is `assemble`'s.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use hostdecl::{Arch, HostDecl};

/// A declaration read from disk, and the paths it names resolved against its directory and
/// checked (each still knowing its line).
pub struct Declaration {
    pub decl: HostDecl,
    pub inputs: hostdecl::Inputs,
}

/// Reads and checks `path`; `key` (`--key`) overrides the declaration's `[signing] key`.
pub fn load(path: &Path, key: Option<&Path>) -> Result<Declaration> {
    let decl = HostDecl::load(path)?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let inputs = decl.resolve_paths(&dir, key)?;
    Ok(Declaration { decl, inputs })
}

/// What one architecture's build produced.
#[derive(Debug)]
pub struct Built {
    pub arch: Arch,
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub cmdline: String,
}

/// The kernel command line: our console and panic policy, then the declaration's additions.
pub fn cmdline(decl: &HostDecl, arch: Arch) -> String {
    let mut c = format!("console={} panic=-1", arch.serial_console());
    if !decl.kernel.cmdline.is_empty() {
        c.push(' ');
        c.push_str(&decl.kernel.cmdline);
    }
    c
}

/// Writes the direct-boot artifacts (`--format kernel`): `OUT/<arch>/vmlinuz`,
/// `initramfs.cpio.zst` and `cmdline`, the same kernel, initramfs and command line the UKI
/// carries, for `-kernel` boots.
pub fn write_direct(
    arch: Arch,
    out: &Path,
    kernel: &[u8],
    initramfs: &[u8],
    cmdline: &str,
) -> Result<Built> {
    let dir = out.join(arch.as_str());
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomic(&dir.join("vmlinuz"), kernel)?;
    write_atomic(&dir.join("initramfs.cpio.zst"), initramfs)?;
    write_atomic(&dir.join("cmdline"), format!("{cmdline}\n").as_bytes())?;
    Ok(Built {
        arch,
        kernel: dir.join("vmlinuz"),
        initramfs: dir.join("initramfs.cpio.zst"),
        dir,
        cmdline: cmdline.to_string(),
    })
}

/// Writes through a temporary file and a rename, so a reader never sees half an artifact.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// Reads a build output directory back (for `builder run OUTDIR`).
pub fn open_built(dir: &Path, arch: Arch) -> Result<Built> {
    let adir = dir.join(arch.as_str());
    let kernel = adir.join("vmlinuz");
    let initramfs = adir.join("initramfs.cpio.zst");
    let cmdline = fs::read_to_string(adir.join("cmdline"))
        .with_context(|| {
            format!(
                "{} is not a build output for {arch} (no cmdline file)",
                dir.display()
            )
        })?
        .trim()
        .to_string();
    for p in [&kernel, &initramfs] {
        if !p.is_file() {
            anyhow::bail!("{} is missing from the build output", p.display());
        }
    }
    Ok(Built {
        arch,
        dir: adir,
        kernel,
        initramfs,
        cmdline,
    })
}
