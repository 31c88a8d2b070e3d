//! The kernel source: finding the tarball (Debian's linux-source by default, a path, or a URL
//! with a pinned sha256), hashing it (memoized by size and mtime so a cache hit stays fast),
//! and unpacking it once into the cache. Downloads go through `aci`'s HTTP client, so they
//! have its timeouts, size limit and retries.

use std::fs;
use std::io::{self, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aci::discovery::{HttpClient, HttpOptions, Sink};
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
            download(url, pin, cache, &Limits::default())?
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

/// Bounds on one kernel source download.
struct Limits {
    connect: Duration,
    /// The whole request, every attempt; each socket read waits at most the time left.
    total: Duration,
    /// Debian's linux-source is ~150 MiB; a URL that serves more than this is not a kernel.
    max_size: u64,
    /// Extra attempts after a transient failure.
    retries: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect: Duration::from_secs(30),
            total: Duration::from_secs(30 * 60),
            max_size: 512 << 20,
            retries: 2,
        }
    }
}

/// The partial download and its running hash; a retry starts both again.
struct Hashing {
    file: fs::File,
    hasher: Sha256,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Sink for Hashing {
    fn reset(&mut self) -> io::Result<()> {
        self.hasher = Sha256::new();
        self.file.set_len(0)?;
        self.file.rewind()
    }
}

fn download(url: &str, pin: &str, cache: &Path, limits: &Limits) -> Result<PathBuf> {
    let dir = cache.join("downloads");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dest = dir.join(pin.to_ascii_lowercase());
    if dest.exists() {
        return Ok(dest);
    }
    eprintln!("kernel: downloading {url}");
    let client = HttpClient::new(HttpOptions {
        // The pinned sha256 is checked below, so plain HTTP is as safe as HTTPS here; an
        // https:// URL still may not redirect to http://.
        allow_http: url.starts_with("http://"),
        connect_timeout: limits.connect,
        timeout: limits.total,
        retries: limits.retries,
        ..HttpOptions::default()
    })?;
    let tmp = dir.join(format!(".{}.partial", std::process::id()));
    let file = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut out = Hashing {
        file,
        hasher: Sha256::new(),
    };
    // The HTTP error names the URL, the limit or the timeout; the context says what for.
    if let Err(e) = client.get(url, limits.max_size, &mut out) {
        let _ = fs::remove_file(&tmp);
        return Err(e).context("downloading the kernel source");
    }
    out.file
        .sync_all()
        .with_context(|| format!("writing {}", tmp.display()))?;
    let got = hex::encode(out.hasher.finalize());
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
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
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

    /// Serves one connection on loopback: `head`, then `body` in `chunk`-byte pieces with
    /// `every` between them, until the client hangs up.
    fn serve_once(
        head: String,
        body: Vec<u8>,
        chunk: usize,
        every: std::time::Duration,
    ) -> (String, std::thread::JoinHandle<()>) {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/linux.tar.xz", listener.local_addr().unwrap());
        let thread = std::thread::spawn(move || {
            let (mut tcp, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(k) => req.extend_from_slice(&buf[..k]),
                }
            }
            if tcp.write_all(head.as_bytes()).is_err() {
                return;
            }
            for piece in body.chunks(chunk) {
                std::thread::sleep(every);
                if tcp.write_all(piece).is_err() {
                    return;
                }
            }
        });
        (url, thread)
    }

    fn small_limits() -> Limits {
        Limits {
            connect: Duration::from_secs(2),
            total: Duration::from_secs(1),
            max_size: 1 << 20,
            retries: 0,
        }
    }

    #[test]
    fn download_checks_the_pin_and_keeps_the_tarball() {
        let body = b"kernel".to_vec();
        let pin = hex::encode(Sha256::digest(&body));
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
        let (url, thread) = serve_once(head, body, 1024, Duration::ZERO);
        let dir = tempfile::tempdir().unwrap();
        let got = download(&url, &pin, dir.path(), &small_limits()).unwrap();
        assert_eq!(fs::read(got).unwrap(), b"kernel");
        thread.join().unwrap();
    }

    #[test]
    fn download_over_the_size_limit_is_refused_naming_url_and_limit() {
        // No Content-Length: the limit must hold while the body streams, not only up front.
        let head = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_string();
        let (url, thread) = serve_once(head, vec![0u8; 3 << 20], 64 << 10, Duration::ZERO);
        let dir = tempfile::tempdir().unwrap();
        let err = download(&url, &"0".repeat(64), dir.path(), &small_limits()).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains(&url), "{text}");
        assert!(text.contains(&(1u64 << 20).to_string()), "{text}");
        let left = fs::read_dir(dir.path().join("downloads")).unwrap().count();
        assert_eq!(left, 0, "a partial download was left behind");
        thread.join().unwrap();
    }

    #[test]
    fn download_that_trickles_is_cut_off_at_the_timeout() {
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_string();
        let (url, thread) = serve_once(head, vec![b'x'; 100], 1, Duration::from_millis(200));
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let err = download(&url, &"0".repeat(64), dir.path(), &small_limits()).unwrap_err();
        let took = started.elapsed();
        assert!(format!("{err:#}").contains("timeout"), "{err:#}");
        // 100 bytes at 200 ms would take 20 s; the limit is 1 s.
        assert!(took < Duration::from_millis(2500), "held for {took:?}");
        thread.join().unwrap();
    }

    #[test]
    fn url_without_pin_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(Some("https://example.com/l.tar.xz"), None, dir.path()).unwrap_err();
        assert!(err.to_string().contains("sha256"), "{err}");
    }
}
