//! Building the guest's `init` for an architecture: a static binary from the workspace's `init`
//! crate, with the rustup toolchain on x86_64 and Debian's rustc for aarch64 (rustup cannot
//! fetch the aarch64 standard library on this machine kind; see docs/ARCHITECTURE.md).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use hostdecl::Arch;

use crate::tools;

/// Where the workspace is and where cargo should put things.
pub struct InitBuild<'a> {
    pub repo: &'a Path,
    pub arch: Arch,
}

impl InitBuild<'_> {
    fn triple(&self) -> &'static str {
        match self.arch {
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
            Arch::Aarch64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// Separate target directories per compiler: cargo fingerprints the compiler, so sharing
    /// one directory between rustup's and Debian's rustc rebuilds everything on each switch.
    fn target_dir(&self) -> PathBuf {
        let base = std::env::var_os("HOSTOS_GUEST_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.repo.join("target").join("guest"));
        match self.arch {
            Arch::X86_64 => base.join("rustup"),
            Arch::Aarch64 => base.join("debian-rustc"),
        }
    }

    pub fn build(&self) -> Result<PathBuf> {
        let mut needed = vec![tools::CARGO];
        let mut files = vec![];
        if self.arch == Arch::Aarch64 {
            needed.extend([tools::DEBIAN_RUSTC, tools::AARCH64_GCC]);
            files.extend([tools::AARCH64_RUST_STD, tools::AARCH64_LIBC]);
        }
        tools::require(&needed, &files)?;

        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.current_dir(self.repo)
            .args([
                "build",
                "--quiet",
                "-p",
                "init",
                "--profile",
                "guest",
                "--target",
            ])
            .arg(self.triple())
            .arg("--target-dir")
            .arg(self.target_dir())
            // With --target, RUSTFLAGS reach only the target crates, so proc macros and build
            // scripts stay dynamic while init is static.
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_RUSTFLAGS");
        if self.arch == Arch::Aarch64 {
            cmd.env("RUSTC", tools::DEBIAN_RUSTC.program).env(
                "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
                tools::AARCH64_GCC.program,
            );
        } else {
            cmd.env_remove("RUSTC");
        }
        let status = cmd.status().context("running cargo to build init")?;
        if !status.success() {
            bail!("building init for {} failed ({status})", self.arch);
        }
        let bin = self
            .target_dir()
            .join(self.triple())
            .join("guest")
            .join("init");
        if !bin.is_file() {
            bail!("cargo succeeded but {} is missing", bin.display());
        }
        Ok(bin)
    }
}
