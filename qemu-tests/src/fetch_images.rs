//! The signed images the fetch tests serve from an [`ImageServer`]: busybox ACIs named under
//! the server's discovery prefix (`images.test/...`), signed with the pod tests' key, plus a
//! large one (busybox and 24 MiB of filler) for a download that takes long enough to cut.
//! Built by `scripts/busybox-aci.sh` once per test process, under a file lock, as
//! [`pods`](crate::pods) does.
//!
//! - `good`: `images.test/busybox`, signed with [`FetchImages::key`];
//! - `untrusted`: `images.test/untrusted`, signed with the untrusted key (trust it nowhere);
//! - `foreign`: `images.test/foreign`, signed with [`FetchImages::foreign_key`] (trust it for
//!   another prefix only, `[[trust]] prefix = "other.test/"`);
//! - `tampered`: `images.test/tampered`, signed with [`FetchImages::key`], then its gzip
//!   header's MTIME byte flipped (the archive still reads; only the signature can tell);
//! - `large`: `images.test/large`, signed with [`FetchImages::key`].
//!
//! Layout: `target/qemu-tests-out/fetch-images/run-<pid>/{good,untrusted,foreign,tampered,large}/busybox-{amd64,arm64}.aci[.minisig]`
//! (directories of processes that are gone are removed).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::builder::{Memo, once};
use crate::image_server::ImageServer;
use crate::pods::{
    KeyPair, ScriptVars, TestAci, create_dir, find, flip_gzip_mtime_byte, io_err, key_pair, lock,
    remove_runs_of_gone_processes, script, test_keys,
};
use crate::{Arch, HarnessError, builder_bin, target_dir};

/// The name of the small images: under the image server's default prefix.
pub const NAME: &str = "images.test/busybox";
/// The names of the refusal cases.
pub const UNTRUSTED_NAME: &str = "images.test/untrusted";
pub const FOREIGN_NAME: &str = "images.test/foreign";
pub const TAMPERED_NAME: &str = "images.test/tampered";
/// The name of the large image.
pub const LARGE_NAME: &str = "images.test/large";
/// Every image's `version` label.
pub const VERSION: &str = "1.0";
/// The filler in the large image's rootfs (`/var/filler`): bytes that do not compress, so the
/// ACI is about this big.
pub const LARGE_FILLER_BYTES: u64 = 24 << 20;

/// The images of one architecture.
#[derive(Clone, Debug)]
pub struct FetchArchImages {
    /// appc's `arch` label: `amd64` or `aarch64`.
    pub arch_label: &'static str,
    pub good: TestAci,
    pub untrusted: TestAci,
    pub foreign: TestAci,
    pub tampered: TestAci,
    pub large: TestAci,
}

/// Everything [`fetch_images`] made.
#[derive(Clone, Debug)]
pub struct FetchImages {
    pub dir: PathBuf,
    /// The key to trust (`[[trust]] prefix = "images.test/"`).
    pub key: KeyPair,
    /// The key `untrusted` is signed with; no test declaration should trust it.
    pub untrusted_key: KeyPair,
    /// The key `foreign` is signed with; trust it for another prefix only.
    pub foreign_key: KeyPair,
    pub amd64: FetchArchImages,
    pub arm64: FetchArchImages,
}

impl FetchImages {
    /// The images a guest of `arch` fetches.
    pub fn arch(&self, arch: Arch) -> &FetchArchImages {
        match arch {
            Arch::X86_64 => &self.amd64,
            Arch::Aarch64 => &self.arm64,
        }
    }

    /// Serves `good` as [`NAME`] and `large` as [`LARGE_NAME`] for `arch` (the usual case;
    /// failure tests add what they need with [`ImageServer::add_image`] / `add_file`).
    pub fn serve(&self, server: &ImageServer, arch: Arch) {
        let images = self.arch(arch);
        let label = images.arch_label;
        let good = &images.good;
        server.add_image(NAME, VERSION, label, &good.aci, &good.signature);
        let large = &images.large;
        server.add_image(LARGE_NAME, VERSION, label, &large.aci, &large.signature);
    }

    /// Serves the refusal cases too.
    pub fn serve_refusals(&self, server: &ImageServer, arch: Arch) {
        let images = self.arch(arch);
        let label = images.arch_label;
        for (name, aci) in [
            (UNTRUSTED_NAME, &images.untrusted),
            (FOREIGN_NAME, &images.foreign),
            (TAMPERED_NAME, &images.tampered),
        ] {
            server.add_image(name, VERSION, label, &aci.aci, &aci.signature);
        }
    }
}

/// Builds the fetch test images (once per test process).
pub fn fetch_images() -> Result<FetchImages, HarnessError> {
    static BUILT: OnceLock<Memo<(), FetchImages>> = OnceLock::new();
    once(&BUILT, (), "building the fetch test images", make)
}

fn make() -> Result<FetchImages, HarnessError> {
    let (key, untrusted_key) = test_keys()?;
    let builder = builder_bin()?;
    let root = target_dir().join("qemu-tests-out").join("fetch-images");
    create_dir(&root)?;
    let _lock = lock(&root.join("lock"))?;
    remove_runs_of_gone_processes(&root)?;
    let dir = root.join(format!("run-{}", std::process::id()));
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(io_err("remove the old images", &dir))?;
    }
    let named = |variant: Option<&str>, name: &str| ScriptVars {
        variant: variant.map(String::from),
        name: Some(name.into()),
        extra: None,
    };
    let good = script(&builder, &dir.join("good"), &key.secret, &named(None, NAME))?;
    let untrusted = script(
        &builder,
        &dir.join("untrusted"),
        &untrusted_key.secret,
        &named(Some("untrusted"), UNTRUSTED_NAME),
    )?;
    let keys = target_dir()
        .join("qemu-tests-out")
        .join("pod-images")
        .join("keys");
    let foreign_key = {
        let pods_root = keys.parent().unwrap_or(&keys).to_path_buf();
        let _keys_lock = lock(&pods_root.join("lock"))?;
        create_dir(&keys)?;
        key_pair(&builder, &keys, "foreign")?
    };
    let foreign = script(
        &builder,
        &dir.join("foreign"),
        &foreign_key.secret,
        &named(Some("foreign"), FOREIGN_NAME),
    )?;
    let tampered = script(
        &builder,
        &dir.join("tampered"),
        &key.secret,
        &named(Some("tampered"), TAMPERED_NAME),
    )?;
    let extra = dir.join("large-extra");
    write_filler(&extra.join("var").join("filler"), LARGE_FILLER_BYTES)?;
    let large = script(
        &builder,
        &dir.join("large"),
        &key.secret,
        &ScriptVars {
            extra: Some(extra.clone()),
            ..named(Some("large"), LARGE_NAME)
        },
    )?;
    fs::remove_dir_all(&extra).map_err(io_err("remove the filler", &extra))?;
    let per_arch = |arch: &str, arch_label| -> Result<FetchArchImages, HarnessError> {
        Ok(FetchArchImages {
            arch_label,
            good: find(&good, arch)?,
            untrusted: find(&untrusted, arch)?,
            foreign: find(&foreign, arch)?,
            tampered: find(&tampered, arch)?,
            large: find(&large, arch)?,
        })
    };
    for arch in ["amd64", "arm64"] {
        flip_gzip_mtime_byte(&find(&tampered, arch)?.aci)?;
    }
    Ok(FetchImages {
        amd64: per_arch("amd64", "amd64")?,
        arm64: per_arch("arm64", "aarch64")?,
        dir,
        key,
        untrusted_key,
        foreign_key,
    })
}

/// `len` pseudo-random bytes (xorshift64*, fixed seed): they do not compress, and the same
/// every build, so the large image keeps its Image ID.
fn write_filler(path: &Path, len: u64) -> Result<(), HarnessError> {
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    let file = File::create(path).map_err(io_err("create the filler", path))?;
    let mut out = BufWriter::new(file);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut written = 0u64;
    while written < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let word = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        let take = usize::try_from((len - written).min(8)).unwrap_or(8);
        out.write_all(&word[..take])
            .map_err(io_err("write the filler", path))?;
        written += take as u64;
    }
    out.flush().map_err(io_err("write the filler", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filler_is_the_asked_length_the_same_every_time_and_does_not_repeat_short() {
        let dir = std::env::temp_dir().join(format!("qemu-tests-filler-{}", std::process::id()));
        let (a, b) = (dir.join("a"), dir.join("b"));
        write_filler(&a, 100_003).unwrap();
        write_filler(&b, 100_003).unwrap();
        let bytes = fs::read(&a).unwrap();
        assert_eq!(bytes.len(), 100_003);
        assert_eq!(bytes, fs::read(&b).unwrap());
        // Not a short period (which gzip would squeeze): no 4 KiB block repeats the first.
        assert!(bytes[..4096] != bytes[4096..8192]);
        let distinct: std::collections::HashSet<u8> = bytes.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
        fs::remove_dir_all(&dir).unwrap();
    }
}
