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
    /// Build the image(s) a host declaration describes.
    #[command(after_help = "Example:\n  builder build images/hello.toml --arch x86_64 -o out/")]
    Build {
        /// The host declaration (TOML).
        host: PathBuf,
        /// Build only this architecture (default: every arch the declaration names).
        #[arg(long)]
        arch: Option<ArchArg>,
        /// Output directory.
        #[arg(short, long, default_value = "out")]
        out: PathBuf,
    },
    /// Build (if needed) and boot an image under QEMU with the serial console on this terminal.
    #[command(
        after_help = "Example:\n  builder run images/hello.toml --arch aarch64\n\nQuit QEMU with Ctrl-A X; `system_powerdown` on the monitor powers the guest off in order."
    )]
    Run {
        /// A host declaration (built first) or an output directory from `builder build`.
        target: PathBuf,
        /// Architecture to boot (default: this machine's).
        #[arg(long)]
        arch: Option<ArchArg>,
        /// Output directory used when building.
        #[arg(short, long, default_value = "out")]
        out: PathBuf,
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
        /// Directory of config fragments (default: the repository's kernel-config/).
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
