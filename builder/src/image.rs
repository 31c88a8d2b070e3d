//! `builder build`: from a host declaration to boot artifacts per architecture: the kernel, an
//! initramfs holding init and the rendered declaration, and the kernel command line.
//!
//! Output layout (a contract with `builder run` and qemu-tests):
//! `OUT/<arch>/vmlinuz`, `OUT/<arch>/initramfs.cpio.zst`, `OUT/<arch>/cmdline`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use hostdecl::{Arch, HostDecl};

use crate::initramfs::{Initramfs, Kind};
use crate::{init_bin, kernel};

/// A declaration read from disk, with the directory relative paths in it refer to.
pub struct Declaration {
    pub decl: HostDecl,
    pub dir: PathBuf,
}

pub fn load(path: &Path) -> Result<Declaration> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("reading host declaration {}", path.display()))?;
    let decl = HostDecl::from_toml_str(&text, &path.display().to_string())?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(Declaration { decl, dir })
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

pub fn build(d: &Declaration, arch: Arch, out: &Path) -> Result<Built> {
    let start = Instant::now();
    let prebuilt = d.decl.kernel.prebuilt.for_arch(arch).map(|p| d.dir.join(p));
    let kernel = kernel::resolve_for_image(
        arch,
        prebuilt.as_deref(),
        d.decl.kernel.source.as_deref(),
        d.decl.kernel.sha256.as_deref(),
    )?;
    let init_bytes = init_bin::for_arch(arch).to_vec();
    let init_len = init_bytes.len();

    let mut fs_ = Initramfs::with_skeleton()?;
    fs_.add("init", Kind::File(init_bytes), 0o755)?;
    let rendered = d.decl.to_toml_string()?;
    fs_.add(
        hostdecl::RENDERED_PATH,
        Kind::File(rendered.into_bytes()),
        0o644,
    )?;
    let initramfs = fs_.to_cpio_zstd()?;

    let dir = out.join(arch.as_str());
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let cmd = cmdline(&d.decl, arch);
    let kernel_bytes = fs::read(&kernel.image)
        .with_context(|| format!("reading kernel {}", kernel.image.display()))?;
    write_atomic(&dir.join("vmlinuz"), &kernel_bytes)?;
    write_atomic(&dir.join("initramfs.cpio.zst"), &initramfs)?;
    write_atomic(&dir.join("cmdline"), format!("{cmd}\n").as_bytes())?;
    eprintln!(
        "build {} {arch}: kernel {} KiB, initramfs {} KiB (init {} KiB) in {:.1} s -> {}",
        d.decl.name,
        kernel_bytes.len() / 1024,
        initramfs.len() / 1024,
        init_len / 1024,
        start.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(Built {
        arch,
        kernel: dir.join("vmlinuz"),
        initramfs: dir.join("initramfs.cpio.zst"),
        dir,
        cmdline: cmd,
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
