//! The output formats of a disk image, each written from the raw image the builder has already
//! assembled: raw (sparse), qcow2 (by `qemu-img`), fixed VHD for Azure, GCE's `disk.raw`
//! tarball and `.img.zst` for flashing boards. Every output is deterministic (same raw image,
//! epoch and seed, same bytes) and appears only complete, by rename.
//!
//! The raw image's size is the caller's: formats never pad it, because padding moves the end of
//! the disk away from the backup GPT. A format whose platform wants the size rounded (Azure: a
//! whole MiB; GCE: a whole GiB) refuses a raw image that is not, naming the rule; lay the disk
//! out at that size instead (see [`Format::size_multiple`]).

// Until `builder build` writes its outputs through this module (the integration step).

mod gce;
mod sparse;
mod vhd;

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::Instant;

use crate::tools::{self, QEMU_IMG};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// zstd level for `.img.zst`, zstd's own default. On a 100 MiB image holding 8 MiB of
/// incompressible data (a compressed kernel, an erofs of compressed ACIs) and 8 MiB of
/// compressible data (release build, 2 shared cores): level 3 takes 0.10 s, 9 takes 0.4-0.7 s,
/// 19 takes 6-10 s, and 19's file is 0.55% smaller than 3's. The rebuild target is 3 s, so 3, single-threaded
/// (the test `formats::tests::timing` measures it).
const ZSTD_LEVEL: i32 = 3;

/// One output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    /// `NAME-ARCH.img`, the raw disk, written sparse.
    Raw,
    /// `NAME-ARCH.qcow2`, for QEMU and OpenStack.
    Qcow2,
    /// `NAME-ARCH.vhd`, a fixed VHD as Azure takes it.
    Vhd,
    /// `NAME-ARCH.tar.gz`, GCE's `disk.raw` in an old-GNU sparse tar, gzip-compressed.
    Gce,
    /// `NAME-ARCH.img.zst`, the raw disk compressed with zstd, for writing to a board's card.
    Zst,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::Raw,
        Format::Qcow2,
        Format::Vhd,
        Format::Gce,
        Format::Zst,
    ];

    /// The name used in `host.toml` and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vhd => "vhd",
            Format::Gce => "gce",
            Format::Zst => "zst",
        }
    }

    /// What the file name ends with, after `NAME-ARCH`.
    pub fn suffix(self) -> &'static str {
        match self {
            Format::Raw => ".img",
            Format::Qcow2 => ".qcow2",
            Format::Vhd => ".vhd",
            Format::Gce => ".tar.gz",
            Format::Zst => ".img.zst",
        }
    }

    /// The raw image's size must be a multiple of this for the format's platform to take it:
    /// Azure wants a whole MiB, GCE a whole GiB; the others need whole sectors.
    pub fn size_multiple(self) -> u64 {
        match self {
            Format::Vhd => MIB,
            Format::Gce => GIB,
            Format::Raw | Format::Qcow2 | Format::Zst => 512,
        }
    }

    fn rule(self) -> &'static str {
        match self {
            Format::Vhd => "Azure takes only fixed VHDs of a whole number of MiB",
            Format::Gce => "GCE imports only disks of a whole number of GiB",
            Format::Raw | Format::Qcow2 | Format::Zst => "a disk is a whole number of sectors",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format name that is not one of ours.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown output format {0:?} (expected one of raw, qcow2, vhd, gce, zst)")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| UnknownFormat(s.to_string()))
    }
}

/// The file name of `name`'s image for `arch` in format `f`, e.g. `hello-x86_64.img.zst`.
pub fn output_name(name: &str, arch: hostdecl::Arch, f: Format) -> String {
    format!("{name}-{arch}{}", f.suffix())
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("reading the raw image {path}")]
    ReadRaw {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is {size} bytes, not a multiple of {multiple}: {rule}; give the disk that size in \
         the declaration (formats never pad an image, that would leave the backup GPT short of \
         the end)"
    )]
    Size {
        path: PathBuf,
        size: u64,
        multiple: u64,
        rule: &'static str,
    },
    #[error("creating a temporary file in {dir}")]
    CreateTemp {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Missing(#[from] tools::MissingAll),
    #[error("running qemu-img {what}")]
    SpawnQemuImg {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("qemu-img failed to write {path} ({status}): {stderr}")]
    QemuImg {
        path: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Writes `out` in format `f` from the raw image `raw`, through a temporary file beside `out`
/// renamed into place (so `out` may be `raw` itself, for [`Format::Raw`]). `epoch`
/// (SOURCE_DATE_EPOCH or the build's derived time) is the only time that goes into an output;
/// `name_seed` derives the VHD's unique id.
pub fn write(
    raw: &Path,
    f: Format,
    out: &Path,
    epoch: i64,
    name_seed: &[u8],
) -> Result<(), FormatError> {
    let started = Instant::now();
    let read_err = |source| FormatError::ReadRaw {
        path: raw.to_path_buf(),
        source,
    };
    let src = File::open(raw).map_err(read_err)?;
    let size = src.metadata().map_err(read_err)?.len();
    if size % f.size_multiple() != 0 {
        return Err(FormatError::Size {
            path: raw.to_path_buf(),
            size,
            multiple: f.size_multiple(),
            rule: f.rule(),
        });
    }
    match f {
        Format::Qcow2 => qcow2(raw, out)?,
        Format::Raw | Format::Vhd | Format::Gce | Format::Zst => {
            let runs = sparse::data_runs(&src, size).map_err(read_err)?;
            let mut tmp = temp_beside(out)?;
            from_runs(&src, size, &runs, f, tmp.as_file_mut(), epoch, name_seed).map_err(
                |source| FormatError::Write {
                    path: out.to_path_buf(),
                    source,
                },
            )?;
            publish(tmp, out)?;
        }
    }
    log::info!(
        "{}: {f} written in {:.2} s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Writes format `f` of the `size`-byte image `src`, whose data runs are `runs`, into the empty
/// file `out`.
fn from_runs(
    src: &File,
    size: u64,
    runs: &[sparse::Run],
    f: Format,
    out: &mut File,
    epoch: i64,
    name_seed: &[u8],
) -> io::Result<()> {
    match f {
        Format::Raw => sparse::copy_runs(src, runs, out, size),
        Format::Vhd => {
            sparse::copy_runs(src, runs, out, size)?;
            out.write_all_at(&vhd::footer(size, epoch, name_seed), size)
        }
        Format::Gce => {
            // A tar header's mtime is unsigned; an epoch before 1970 is not a build time.
            let mtime = u64::try_from(epoch).unwrap_or(0);
            let buffered = BufWriter::with_capacity(MIB as usize, out);
            gce::write(src, size, runs, mtime, buffered)
        }
        Format::Zst => zst(src, size, runs, out),
        Format::Qcow2 => Err(io::Error::other("qcow2 is written by qemu-img")),
    }
}

#[cfg(test)]
/// Copies `src` to `dst` keeping its holes, and making holes of its zero 4 KiB blocks; `dst`
/// appears by rename.
pub fn copy_sparse(src: &Path, dst: &Path) -> Result<(), FormatError> {
    let read_err = |source| FormatError::ReadRaw {
        path: src.to_path_buf(),
        source,
    };
    let file = File::open(src).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    let runs = sparse::data_runs(&file, size).map_err(read_err)?;
    let mut tmp = temp_beside(dst)?;
    sparse::copy_runs(&file, &runs, tmp.as_file_mut(), size).map_err(|source| {
        FormatError::Write {
            path: dst.to_path_buf(),
            source,
        }
    })?;
    publish(tmp, dst)
}

/// The `qemu-img` version line, for the manifest: qcow2 bytes depend on it.
pub fn qemu_img_version() -> Result<String, FormatError> {
    tools::require(&[QEMU_IMG], &[])?;
    let out = Command::new(QEMU_IMG.program)
        .arg("--version")
        .output()
        .map_err(|source| FormatError::SpawnQemuImg {
            what: "--version".to_string(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or_default().trim().to_string())
}

fn qcow2(raw: &Path, out: &Path) -> Result<(), FormatError> {
    tools::require(&[QEMU_IMG], &[])?;
    let tmp = temp_beside(out)?;
    // The defaults of qemu-img 10 spelt out, so a later default does not change the bytes
    // silently; uncompressed, because the holes are what make the raw image big.
    let output = Command::new(QEMU_IMG.program)
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2", "-o"])
        .arg("compat=1.1,cluster_size=65536,lazy_refcounts=off,refcount_bits=16")
        .arg(raw)
        .arg(tmp.path())
        .output()
        .map_err(|source| FormatError::SpawnQemuImg {
            what: format!("to write {}", out.display()),
            source,
        })?;
    if !output.status.success() {
        return Err(FormatError::QemuImg {
            path: out.to_path_buf(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    publish(tmp, out)
}

/// The raw image through zstd: zeros for the holes, the runs' bytes for the rest. The frame
/// records the content size and a checksum, as the `zstd` tool's do.
fn zst(src: &File, size: u64, runs: &[sparse::Run], out: &mut File) -> io::Result<()> {
    let mut enc = zstd::Encoder::new(BufWriter::with_capacity(MIB as usize, out), ZSTD_LEVEL)?;
    enc.include_checksum(true)?;
    enc.set_pledged_src_size(Some(size))?;
    let mut pos = 0;
    for run in runs {
        sparse::write_zeros(&mut enc, run.offset - pos)?;
        sparse::copy_range(src, run, &mut enc)?;
        pos = run.end();
    }
    sparse::write_zeros(&mut enc, size - pos)?;
    enc.finish()?.flush()
}

fn temp_beside(out: &Path) -> Result<tempfile::NamedTempFile, FormatError> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .map(|n| format!(".{}.", n.to_string_lossy()));
    tempfile::Builder::new()
        .prefix(name.as_deref().unwrap_or(".image."))
        .tempfile_in(&dir)
        .map_err(|source| FormatError::CreateTemp { dir, source })
}

/// Syncs the temporary file, makes it world-readable (temp files are 0600, an image is meant to
/// be published) and renames it to `out`.
fn publish(tmp: tempfile::NamedTempFile, out: &Path) -> Result<(), FormatError> {
    use std::os::unix::fs::PermissionsExt;
    let write_err = |source| FormatError::Write {
        path: out.to_path_buf(),
        source,
    };
    // qemu-img replaced the file at the path, so sync what the path names now.
    File::open(tmp.path())
        .and_then(|f| f.sync_all())
        .map_err(write_err)?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
        .map_err(write_err)?;
    tmp.persist(out).map_err(|e| write_err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests;
