//! The command line: every subcommand, its arguments and its `--help` example.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::{aci_cmd, fetch_cmd, sign_cmd};

#[derive(Debug, Parser)]
#[command(
    name = "builder",
    version,
    about = "Build minimal, immutable, signed, bootable container-host images",
    after_help = "Example:\n  builder build images/hello.toml -o out/\n  builder run images/hello.toml --arch aarch64"
)]
pub struct Cli {
    /// Say more: -v info, -vv debug (warnings are always shown unless -q).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print errors only, no warnings.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArchArg {
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "aarch64")]
    Aarch64,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the signed disk image(s) a host declaration describes.
    #[command(
        after_help = "Example:\n  builder build images/hello.toml --arch x86_64 -o out/\n  builder build host.toml --key release.key --format raw,qcow2,vhd\n\n\
        Writes OUT/NAME-ARCH.img (raw, sparse), NAME-ARCH.manifest.json and its .minisig, and\n\
        whatever --format (or the declaration's `formats`) asks for: qcow2, vhd (fixed, Azure),\n\
        gce (NAME-ARCH.tar.gz holding disk.raw), zst (NAME-ARCH.img.zst), kernel\n\
        (OUT/ARCH/{vmlinuz,initramfs.cpio.zst,cmdline} for direct -kernel boots).\n\
        SOURCE_DATE_EPOCH sets every timestamp; the same inputs give the same bytes."
    )]
    Build {
        /// The host declaration (TOML).
        host: PathBuf,
        /// Build only this architecture (default: every arch the declaration names).
        #[arg(long)]
        arch: Option<ArchArg>,
        /// Output directory.
        #[arg(short, long, default_value = "out")]
        out: PathBuf,
        /// Signing key (minisign secret key), instead of the declaration's `[signing] key`.
        #[arg(long, value_name = "SECRET_KEY")]
        key: Option<PathBuf>,
        /// Output formats, instead of the declaration's `formats` (raw is always written).
        #[arg(long, value_delimiter = ',', value_name = "FORMAT", value_parser = str::parse::<hostdecl::Format>)]
        format: Vec<hostdecl::Format>,
        /// Embed the [[image]]s without checking their signatures against the [[trust]] keys
        /// (a warning per image). For testing init's own refusals: an untrusted or tampered
        /// image then reaches init, which refuses it at boot. Never for images you ship.
        #[arg(long)]
        skip_image_checks: bool,
    },
    /// Build (if needed) and boot an image under QEMU with the serial console on this terminal.
    #[command(
        after_help = "Example:\n  builder run images/hello.toml --arch aarch64\n  builder run out/hello-aarch64.img --firmware u-boot\n  builder run out/hello-x86_64.img --disk-size 4G\n  builder run out/hello-x86_64.img --disk-bus nvme\n\n\
        A declaration is built first (into -o) and its disk image booted through the firmware:\n\
        OVMF on x86_64, AAVMF (or U-Boot) on aarch64. The image itself is never written: the\n\
        guest boots a copy. Quit QEMU with Ctrl-A X; the exit status is 0 only when the guest\n\
        powered itself off."
    )]
    Run {
        /// A host declaration (built first), a disk image (`NAME-ARCH.img`), or an output
        /// directory of `builder build --format kernel` (booted directly).
        target: PathBuf,
        /// Architecture to boot (default: the image's, else this machine's).
        #[arg(long)]
        arch: Option<ArchArg>,
        /// Output directory used when building.
        #[arg(short, long, default_value = "out")]
        out: PathBuf,
        /// Firmware: OVMF (x86_64), AAVMF or U-Boot (aarch64); default: OVMF / AAVMF.
        #[arg(long, value_enum, default_value_t = crate::run::Firmware::Default)]
        firmware: crate::run::Firmware,
        /// Enlarge the booted copy of the disk to this size (e.g. 4G, 512M), to see the data
        /// partition grow on first boot.
        #[arg(long, value_name = "SIZE", value_parser = crate::run::parse_size)]
        disk_size: Option<u64>,
        /// The controller the disk hangs off, as clouds attach boot disks: virtio-blk (QEMU,
        /// most KVM clouds), nvme (AWS Nitro, GCE, Azure v6) or virtio-scsi (GCE).
        #[arg(long, value_name = "BUS", default_value = "virtio-blk")]
        disk_bus: hostos_qemu::DiskBus,
        /// Use KVM instead of TCG software emulation (x86_64 host and guest only).
        #[arg(long)]
        kvm: bool,
        /// Press the guest's power button this many seconds after init reports ready (an
        /// orderly shutdown); handy for scripts and demos.
        #[arg(long, value_name = "SECS")]
        powerdown_after: Option<u64>,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 512)]
        memory: u32,
        /// Guest vCPUs (under TCG, 1 skips starting a second CPU in emulation).
        #[arg(long, default_value_t = crate::run::DEFAULT_CPUS)]
        cpus: u32,
    },
    /// Check a disk image against its signed manifest: signature, GPT, every partition.
    #[command(
        after_help = "Example:\n  builder verify out/hello-x86_64.img --key release.pub\n\n\
        Exits non-zero naming the first part that differs from what the manifest signed.\n\
        The data partition's contents are not covered (the running system writes them)."
    )]
    Verify {
        /// The raw disk image (`NAME-ARCH.img`).
        image: PathBuf,
        /// The public key the image must be signed with (minisign format).
        #[arg(long, value_name = "PUBLIC_KEY")]
        key: PathBuf,
    },
    /// Show what a disk image holds: partitions, signed manifest, command line, embedded
    /// images and trust keys.
    #[command(
        after_help = "Example:\n  builder inspect out/hello-x86_64.img\n  builder inspect out/hello-x86_64.img --json | jq .partitions"
    )]
    Inspect {
        /// The raw disk image (`NAME-ARCH.img`).
        image: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Build the kernel from kernel-config/ fragments, or reuse the cached build.
    #[command(
        after_help = "Example:\n  builder kernel --arch aarch64\n  builder kernel --arch x86_64 --source linux-6.1.tar.xz --sha256 <hex>"
    )]
    Kernel {
        #[arg(long)]
        arch: ArchArg,
        /// Kernel source tarball: a path, or an http(s) URL (then --sha256 is required).
        /// Default: Debian's /usr/src/linux-source-6.1.tar.xz.
        #[arg(long)]
        source: Option<String>,
        /// Expected sha256 of the source tarball.
        #[arg(long)]
        sha256: Option<String>,
        /// Directory of config fragments (default: the kernel-config/ built into the builder).
        #[arg(long)]
        fragments: Option<PathBuf>,
        /// Extra fragment files merged after the default ones.
        #[arg(long = "fragment")]
        extra: Vec<PathBuf>,
        /// Parallel make jobs (default: number of CPUs).
        #[arg(short, long)]
        jobs: Option<usize>,
    },
    /// Ed25519 signing keys (minisign format).
    Key {
        #[command(subcommand)]
        command: sign_cmd::KeyCommand,
    },
    /// App Container images: build, sign, verify, validate, inspect, extract, discover.
    Aci {
        #[command(subcommand)]
        command: AciCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AciCommand {
    #[command(flatten)]
    Archive(aci_cmd::ArchiveCommand),
    #[command(flatten)]
    Sign(sign_cmd::SignCommand),
    #[command(flatten)]
    Fetch(fetch_cmd::FetchCommand),
}

impl From<ArchArg> for hostdecl::Arch {
    fn from(a: ArchArg) -> hostdecl::Arch {
        match a {
            ArchArg::X86_64 => hostdecl::Arch::X86_64,
            ArchArg::Aarch64 => hostdecl::Arch::Aarch64,
        }
    }
}
