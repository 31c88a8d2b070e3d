//! The kernel source: finding the tarball (Debian's linux-source by default, a path, or a URL
//! with a pinned sha256), hashing it (memoized by size and mtime so a cache hit stays fast),
//! and unpacking it once into the cache.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::tools;

/// A verified source tarball.
#[derive(Debug, Clone)]
pub struct Source {
    pub tarball: PathBuf,
    pub sha256: String,
}

/// Resolves `spec` (None = Debian's linux-source) to a local tarball with a known hash.
pub fn resolve(spec: Option<&str>, pinned: Option<&str>, cache: &Path) -> Result<Source> {
    let tarball = match spec {
        None => {
            tools::require(&[], &[tools::LINUX_SOURCE])?;
            PathBuf::from(tools::LINUX_SOURCE.path)
        }
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
            let Some(pin) = pinned else {
                bail!("kernel source {url} is a URL: pass its sha256 (--sha256 or kernel.sha256)");
            };
            download(url, pin, cache)?
        }
        Some(path) => PathBuf::from(path),
    };
    let sha256 = hash_memoized(&tarball, cache)?;
    if let Some(pin) = pinned
        && !sha256.eq_ignore_ascii_case(pin)
    {
        bail!(
            "kernel source {} has sha256 {sha256}, but {pin} was pinned",
            tarball.display()
        );
    }
    Ok(Source { tarball, sha256 })
}

fn download(url: &str, pin: &str, cache: &Path) -> Result<PathBuf> {
    let dir = cache.join("downloads");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dest = dir.join(pin.to_ascii_lowercase());
    if dest.exists() {
        return Ok(dest);
    }
    eprintln!("kernel: downloading {url}");
    let resp = ureq::get(url)
        .call()
        .with_context(|| format!("downloading kernel source {url}"))?;
    let tmp = dir.join(format!(".{}.partial", std::process::id()));
    let mut out = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut reader = resp.into_reader();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("downloading {url}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    out.sync_all()?;
    let got = hex::encode(hasher.finalize());
    if !got.eq_ignore_ascii_case(pin) {
        let _ = fs::remove_file(&tmp);
        bail!("kernel source {url} has sha256 {got}, but {pin} was pinned");
    }
    fs::rename(&tmp, &dest).with_context(|| format!("renaming into {}", dest.display()))?;
    Ok(dest)
}

/// SHA-256 of a file, remembered in the cache under (path, size, mtime) so that the common
/// case, Debian's 130 MB tarball unchanged, costs a stat instead of a full read.
pub fn hash_memoized(path: &Path, cache: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(path).with_context(|| format!("kernel source {}", path.display()))?;
    let abs = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let stamp_key = hex::encode(Sha256::digest(abs.as_os_str().as_encoded_bytes()));
    let stamp_dir = cache.join("source-hashes");
    let stamp = stamp_dir.join(stamp_key);
    let id = format!("{} {} {}", meta.size(), meta.mtime(), meta.mtime_nsec());
    if let Ok(text) = fs::read_to_string(&stamp)
        && let Some((stamp_id, hash)) = text.trim().rsplit_once(' ')
        && stamp_id == id
    {
        return Ok(hash.to_string());
    }
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    let hash = hex::encode(hasher.finalize());
    fs::create_dir_all(&stamp_dir).ok();
    let _ = fs::write(&stamp, format!("{id} {hash}\n"));
    Ok(hash)
}

/// Unpacks the tarball into `cache/src/<sha256>/` once, and returns the kernel tree inside.
pub fn unpack(src: &Source, cache: &Path) -> Result<PathBuf> {
    let root = cache.join("src");
    let dest = root.join(&src.sha256);
    if let Some(tree) = find_tree(&dest) {
        return Ok(tree);
    }
    tools::require(&[tools::TAR, tools::XZ], &[])?;
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let tmp = root.join(format!(".unpack-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    eprintln!("kernel: unpacking {}", src.tarball.display());
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&src.tarball)
        .arg("-C")
        .arg(&tmp)
        .status()
        .context("running tar")?;
    if !status.success() {
        let _ = fs::remove_dir_all(&tmp);
        bail!("unpacking {} failed ({status})", src.tarball.display());
    }
    if find_tree(&tmp).is_none() {
        let _ = fs::remove_dir_all(&tmp);
        bail!(
            "{} does not contain a kernel source tree (no Makefile and Kconfig)",
            src.tarball.display()
        );
    }
    // Another builder may have finished the same unpack meanwhile; either copy is fine.
    if fs::rename(&tmp, &dest).is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    find_tree(&dest).context("unpacked kernel tree vanished")
}

/// The directory holding `Makefile` and `Kconfig`: the root itself or its single subdirectory.
fn find_tree(dir: &Path) -> Option<PathBuf> {
    let is_tree = |d: &Path| d.join("Makefile").is_file() && d.join("Kconfig").is_file();
    if is_tree(dir) {
        return Some(dir.to_path_buf());
    }
    let entries = fs::read_dir(dir).ok()?;
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.is_dir() && is_tree(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memoized_hash_matches_and_notices_changes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.tar");
        fs::write(&f, b"abc").unwrap();
        let cache = dir.path().join("cache");
        let h1 = hash_memoized(&f, &cache).unwrap();
        assert_eq!(
            h1,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hash_memoized(&f, &cache).unwrap(), h1);
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&f, b"abcd").unwrap();
        assert_ne!(hash_memoized(&f, &cache).unwrap(), h1);
    }

    #[test]
    fn pinned_hash_mismatch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.tar");
        fs::write(&f, b"abc").unwrap();
        let err = resolve(Some(f.to_str().unwrap()), Some(&"0".repeat(64)), dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("was pinned"), "{err}");
    }

    #[test]
    fn url_without_pin_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(Some("https://example.com/l.tar.xz"), None, dir.path()).unwrap_err();
        assert!(err.to_string().contains("sha256"), "{err}");
    }
}
