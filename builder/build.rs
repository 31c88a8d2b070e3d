//! Builds the guest's `init` for both architectures and hands the binaries to the builder,
//! which embeds them (`src/init_bin.rs`). So a builder installed with
//! `cargo install --path builder` carries its init and needs neither this checkout nor cargo
//! when it builds images.
//!
//! init is a static binary from the workspace's `init` crate: the rustup toolchain builds it
//! for x86_64, Debian's rustc (`rustc-web` with `libstd-rust-web-dev:arm64`) for aarch64,
//! because rustup cannot fetch the aarch64 standard library on this machine kind (see
//! docs/ARCHITECTURE.md). Each compiler gets its own target directory: cargo fingerprints the
//! compiler, so sharing one would rebuild everything on each switch.
//!
//! `HOSTOS_GUEST_TARGET_DIR` moves the guest target directories (default: `guest/` in the
//! builder's own target directory).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Guest {
    arch: &'static str,
    triple: &'static str,
    /// Sub-directory of the guest target directory, one per compiler.
    compiler_dir: &'static str,
}

const GUESTS: [Guest; 2] = [
    Guest {
        arch: "x86_64",
        triple: "x86_64-unknown-linux-gnu",
        compiler_dir: "rustup",
    },
    Guest {
        arch: "aarch64",
        triple: "aarch64-unknown-linux-gnu",
        compiler_dir: "debian-rustc",
    },
];

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const AARCH64_GCC: &str = "aarch64-linux-gnu-gcc";
const AARCH64_STD: &str = "/usr/lib/rustlib/aarch64-unknown-linux-gnu/lib";
const AARCH64_LIBC: &str = "/usr/aarch64-linux-gnu/lib/libc.a";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let workspace = manifest_dir
        .parent()
        .expect("builder/ lives in the workspace")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets it"));

    // What init is built from. Cargo reruns this script when any of it changes.
    for krate in ["init", "hostdecl", "hostimg", "aci"] {
        for part in ["src", "Cargo.toml"] {
            println!(
                "cargo:rerun-if-changed={}",
                workspace.join(krate).join(part).display()
            );
        }
    }
    for file in ["Cargo.toml", "Cargo.lock", "rust-toolchain.toml"] {
        println!("cargo:rerun-if-changed={}", workspace.join(file).display());
    }
    println!("cargo:rerun-if-env-changed=HOSTOS_GUEST_TARGET_DIR");

    let guest_root = env::var_os("HOSTOS_GUEST_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| default_guest_root(&out_dir));

    for g in &GUESTS {
        let bin = build_init(g, &workspace, &guest_root.join(g.compiler_dir));
        let dest = out_dir.join(format!("init-{}", g.arch));
        std::fs::copy(&bin, &dest).unwrap_or_else(|e| {
            fail(&format!(
                "copying {} to {}: {e}",
                bin.display(),
                dest.display()
            ))
        });
    }
}

/// `OUT_DIR` is `<target>/<profile>/build/builder-<hash>/out`; the guest builds live in
/// `<target>/guest`, shared by every profile of the builder.
fn default_guest_root(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .nth(4)
        .map(|target| target.join("guest"))
        .unwrap_or_else(|| out_dir.join("guest"))
}

fn build_init(g: &Guest, workspace: &Path, target_dir: &Path) -> PathBuf {
    if g.arch == "aarch64" {
        for (path, package) in [
            (DEBIAN_RUSTC, "rustc-web"),
            (
                AARCH64_STD,
                "libstd-rust-web-dev:arm64 (after `dpkg --add-architecture arm64`)",
            ),
            (AARCH64_LIBC, "libc6-dev-arm64-cross"),
        ] {
            if !Path::new(path).exists() {
                fail(&format!(
                    "{path} is missing: install the Debian package {package} (scripts/setup.sh does)"
                ));
            }
        }
    }
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    // The nested cargo must not inherit this build's configuration (its RUSTC, flags, target,
    // profile variables): start from a clean environment with only what locates the tools.
    cmd.env_clear();
    for var in [
        "PATH",
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "CARGO_MAKEFLAGS",
        "TMPDIR",
    ] {
        if let Some(v) = env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd.current_dir(workspace)
        .args(["build", "--quiet", "--locked", "--offline", "-p", "init"])
        .args(["--profile", "guest", "--target", g.triple])
        .arg("--target-dir")
        .arg(target_dir)
        // With --target, RUSTFLAGS reach only the target crates, so proc macros and build
        // scripts stay dynamic while init is static.
        .env("RUSTFLAGS", "-C target-feature=+crt-static");
    if g.arch == "aarch64" {
        cmd.env("RUSTC", DEBIAN_RUSTC)
            .env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER", AARCH64_GCC);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| fail(&format!("running cargo to build init: {e}")));
    if !status.success() {
        fail(&format!("building init for {} failed ({status})", g.arch));
    }
    let bin = target_dir.join(g.triple).join("guest").join("init");
    if !bin.is_file() {
        fail(&format!("cargo succeeded but {} is missing", bin.display()));
    }
    bin
}

fn fail(msg: &str) -> ! {
    eprintln!("error: builder's build script: {msg}");
    std::process::exit(1);
}
