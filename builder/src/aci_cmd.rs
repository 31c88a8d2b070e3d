//! `builder aci build|validate|inspect|extract`: authoring and checking App Container images
//! (a verified extract's signature handling lives with fetching, in `fetch_cmd`).

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use aci::archive::{self, Compression, Layout, ReadOptions, UnpackOptions, WriteOptions};
use aci::manifest::{self, ManifestKind};
use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};

use crate::fetch_cmd;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    /// What every appc reader takes (appc 0.8.11 tools and rkt's actool read only gzip, bzip2
    /// and xz).
    Gzip,
    /// Faster to unpack, but an extension of ours: other appc tools may not read it.
    Zstd,
    /// An uncompressed tar.
    None,
}

impl From<CompressionArg> for Compression {
    fn from(c: CompressionArg) -> Self {
        match c {
            CompressionArg::Zstd => Compression::Zstd,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::None => Compression::None,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Build a deterministic ACI from a directory holding `manifest` and `rootfs/`.
    #[command(
        after_help = "Example:\n  builder aci build ./hello -o hello.aci\n  builder aci build ./hello -o hello.aci --compression zstd   # our extension\n\nThe manifest is validated first. Entries are sorted, every mtime is --mtime (default 0) and\nowners are 0 unless --preserve-owners, so the same tree always gives the same bytes."
    )]
    Build {
        /// Directory with `manifest` (an Image Manifest) and `rootfs/`.
        dir: PathBuf,
        /// Output file.
        #[arg(short, long)]
        output: PathBuf,
        /// Compression of the archive. zstd is an extension: appc 0.8.11 readers and rkt's
        /// actool do not read it, so publish gzip for other tools.
        #[arg(long, value_enum, default_value = "gzip")]
        compression: CompressionArg,
        /// mtime of every entry, in seconds since the epoch.
        #[arg(long, default_value_t = 0)]
        mtime: u64,
        /// Record the files' uid/gid instead of 0.
        #[arg(long)]
        preserve_owners: bool,
    },
    /// Check an Image Manifest, a Pod Manifest or an ACI (detected from the content).
    #[command(
        after_help = "Example:\n  builder aci validate hello.aci\n  builder aci validate manifest.json\n  builder aci validate pod.json"
    )]
    Validate {
        /// A manifest (JSON) or an ACI (tar, gzip, bzip2, xz or zstd).
        file: PathBuf,
    },
    /// Print an ACI's manifest and Image ID.
    #[command(after_help = "Example:\n  builder aci inspect hello.aci")]
    Inspect {
        /// The ACI.
        file: PathBuf,
    },
    /// Unpack an ACI safely into a new directory (`DIR/manifest` and `DIR/rootfs/`).
    #[command(
        after_help = "Example:\n  builder aci extract hello.aci ./hello-tree --trust /etc/aci/trust\n  builder aci extract hello.aci ./rootfs --rootfs-only --key release.pub\n  builder aci extract hello.aci ./hello-tree --insecure-allow-unsigned\n\nLike `rkt image extract`. Absolute paths, `..`, links leaving the rootfs, duplicate entries\nand device nodes (unless --allow-devices) are refused; nothing is written outside DIR.\n\nThe signature (FILE.minisig) is checked against --trust or --key, and DIR appears only if it\nverifies; --insecure-allow-unsigned unpacks without any check.",
        group(clap::ArgGroup::new("verify").args(["trust", "key"]))
    )]
    Extract {
        /// The ACI.
        file: PathBuf,
        /// Target directory; must not exist or be empty.
        dir: PathBuf,
        /// Put the rootfs contents directly in DIR, without `manifest`.
        #[arg(long)]
        rootfs_only: bool,
        /// Create device nodes found in the image.
        #[arg(long)]
        allow_devices: bool,
        /// Verify the signature with this trust directory (see `builder aci trust`): the key
        /// must be trusted for the image's name.
        #[arg(long)]
        trust: Option<PathBuf>,
        /// Verify the signature with this one public key instead of a trust directory.
        #[arg(long)]
        key: Option<PathBuf>,
        /// With --trust: the image name to check trust for (default: the name in the manifest).
        #[arg(long, requires = "trust", conflicts_with = "key")]
        name: Option<String>,
        /// With --trust or --key: the signature file (default: FILE.minisig).
        #[arg(long, requires = "verify")]
        signature: Option<PathBuf>,
        /// INSECURE: unpack without checking any signature (a warning is printed).
        #[arg(long, conflicts_with = "verify")]
        insecure_allow_unsigned: bool,
    },
}

pub fn run(cmd: ArchiveCommand) -> anyhow::Result<()> {
    match cmd {
        ArchiveCommand::Build {
            dir,
            output,
            compression,
            mtime,
            preserve_owners,
        } => build(&dir, &output, compression.into(), mtime, preserve_owners),
        ArchiveCommand::Validate { file } => validate(&file),
        ArchiveCommand::Inspect { file } => inspect(&file),
        ArchiveCommand::Extract {
            file,
            dir,
            rootfs_only,
            allow_devices,
            trust,
            key,
            name,
            signature,
            insecure_allow_unsigned,
        } => {
            let authority = match (trust, key) {
                (Some(dir), _) => Some(fetch_cmd::Authority::Trust { dir, name }),
                (None, Some(key)) => Some(fetch_cmd::Authority::Key(key)),
                (None, None) if insecure_allow_unsigned => None,
                (None, None) => bail!(
                    "extracting {} into {}: no signature check was asked for; give --trust DIR \
                     or --key FILE to verify it, or --insecure-allow-unsigned to unpack it \
                     unverified",
                    file.display(),
                    dir.display()
                ),
            };
            extract(
                &file,
                &dir,
                rootfs_only,
                allow_devices,
                authority,
                signature,
            )
        }
    }
}

fn build(
    dir: &Path,
    output: &Path,
    compression: Compression,
    mtime: u64,
    preserve_owners: bool,
) -> anyhow::Result<()> {
    // Write beside the output and rename, so a failed build never leaves a truncated .aci.
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::NamedTempFile::new_in(&parent)
        .with_context(|| format!("creating a temporary file in {}", parent.display()))?;
    let opts = WriteOptions {
        compression,
        mtime,
        preserve_owners,
        xattrs: true,
    };
    if compression == Compression::Zstd {
        log::info!(
            "{}: zstd is our extension; appc 0.8.11 readers and rkt's actool cannot read it",
            output.display()
        );
    }
    let mut out = BufWriter::new(tmp.as_file());
    let id = archive::write_aci(dir, &mut out, &opts)
        .with_context(|| format!("building an ACI from {}", dir.display()))?;
    out.flush()
        .with_context(|| format!("writing {}", output.display()))?;
    drop(out);
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("writing {}", output.display()))?;
    // The writer copies what the tree holds; an image our own reader would refuse (a link
    // leaving the rootfs, a device node, ...) must not be published.
    let written =
        File::open(tmp.path()).with_context(|| format!("reading back {}", tmp.path().display()))?;
    let summary = archive::read_aci(
        BufReader::with_capacity(1 << 20, written),
        &ReadOptions::default(),
    )
    .with_context(|| {
        format!(
            "building an ACI from {}: the tree holds something an ACI may not (paths are \
                 relative to {0}); fix the tree",
            dir.display()
        )
    })?;
    log::info!(
        "{}: {} compression, {} entries, {} bytes of tar, read back and checked",
        output.display(),
        summary.compression.name(),
        summary.entries,
        summary.tar_size
    );
    // Temp files are created 0600; an image is meant to be published.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .with_context(|| format!("writing {}", output.display()))?;
    tmp.persist(output)
        .with_context(|| format!("writing {}", output.display()))?;
    println!("{}: {id}", output.display());
    Ok(())
}

fn open(file: &Path) -> anyhow::Result<BufReader<File>> {
    let f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
    Ok(BufReader::with_capacity(1 << 20, f))
}

fn looks_like_json(head: &[u8]) -> bool {
    head.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{')
}

fn validate(file: &Path) -> anyhow::Result<()> {
    let mut head = Vec::new();
    open(file)?
        .take(512)
        .read_to_end(&mut head)
        .with_context(|| format!("reading {}", file.display()))?;
    if looks_like_json(&head) {
        let json = fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let kind = manifest::detect_kind(&json)
            .with_context(|| format!("{} is not an appc manifest", file.display()))?;
        match kind {
            ManifestKind::Image => {
                let m = manifest::ImageManifest::from_json(&json)
                    .with_context(|| format!("{} is not a valid Image Manifest", file.display()))?;
                println!("{}: valid Image Manifest for {}", file.display(), m.name);
            }
            ManifestKind::Pod => match manifest::PodManifest::from_json(&json) {
                Ok(m) => println!(
                    "{}: valid Pod Manifest with {} app(s)",
                    file.display(),
                    m.apps.len()
                ),
                // A template (apps without image IDs, say) is a legitimate pod manifest too:
                // rkt resolves it before running.
                Err(runnable) => {
                    let m =
                        manifest::PodManifest::from_json_template(&json).with_context(|| {
                            format!("{} is not a valid Pod Manifest", file.display())
                        })?;
                    let reasons: Vec<String> =
                        runnable.errors().iter().map(ToString::to_string).collect();
                    println!(
                        "{}: valid Pod Manifest template with {} app(s) (not runnable: {})",
                        file.display(),
                        m.apps.len(),
                        reasons.join("; ")
                    );
                }
            },
        }
        return Ok(());
    }
    let summary = archive::read_aci(open(file)?, &ReadOptions::default())
        .with_context(|| format!("{} is not a valid ACI", file.display()))?;
    println!(
        "{}: valid ACI for {} ({})",
        file.display(),
        summary.manifest.name,
        summary.id
    );
    Ok(())
}

fn inspect(file: &Path) -> anyhow::Result<()> {
    let summary = archive::read_aci(open(file)?, &ReadOptions::default())
        .with_context(|| format!("{} is not a valid ACI", file.display()))?;
    let pretty = serde_json::from_slice::<serde_json::Value>(&summary.manifest_json)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| String::from_utf8_lossy(&summary.manifest_json).into_owned());
    println!("Image ID:    {}", summary.id);
    println!("Name:        {}", summary.manifest.name);
    println!("Compression: {}", summary.compression.name());
    println!(
        "Tar size:    {} bytes, {} entries",
        summary.tar_size, summary.entries
    );
    println!("Manifest:\n{pretty}");
    Ok(())
}

fn extract(
    file: &Path,
    dir: &Path,
    rootfs_only: bool,
    allow_devices: bool,
    authority: Option<fetch_cmd::Authority>,
    signature: Option<PathBuf>,
) -> anyhow::Result<()> {
    if let Ok(mut entries) = fs::read_dir(dir)
        && entries.next().is_some()
    {
        bail!(
            "extracting {} into {}: the target directory is not empty",
            file.display(),
            dir.display()
        );
    }
    let mut opts = UnpackOptions::extract();
    opts.read.allow_devices = allow_devices;
    opts.layout = if rootfs_only {
        Layout::RootfsOnly
    } else {
        Layout::Image
    };
    if let Some(authority) = authority {
        return fetch_cmd::extract_verified(file, dir, &opts, authority, signature);
    }
    log::warn!(
        "INSECURE: extracting {} without checking its signature",
        file.display()
    );
    let summary = archive::unpack(open(file)?, dir, &opts)
        .with_context(|| format!("extracting {} into {}", file.display(), dir.display()))?;
    println!(
        "{}: extracted {} into {}",
        file.display(),
        summary.id,
        dir.display()
    );
    Ok(())
}
