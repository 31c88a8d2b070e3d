//! Deterministic ACI writing: entries sorted by name, one fixed mtime, numeric owners (0 unless
//! preserved) and no user or group names, so the same tree always gives the same bytes and the
//! same Image ID. The manifest is validated before anything is written.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha512};

use super::compression::{self, Compression};
use super::image_id::ImageId;
use super::{ArchiveError, manifest_view};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// gzip by default: appc 0.8.11 readers and rkt's `actool` read only gzip, bzip2 and xz, so
    /// zstd (our extension) is written only when asked for.
    pub compression: Compression,
    /// Every entry's mtime (seconds since the epoch); builds stay reproducible.
    pub mtime: u64,
    /// Record the files' uid/gid instead of 0.
    pub preserve_owners: bool,
    /// Record `user.*` and `security.capability` xattrs (file capabilities matter for apps;
    /// other namespaces describe the build host, not the image).
    pub xattrs: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            compression: Compression::Gzip,
            mtime: 0,
            preserve_owners: false,
            xattrs: true,
        }
    }
}

/// Feeds the uncompressed tar stream to SHA-512 on its way to the compressor.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha512,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct Source {
    /// Name in the archive, e.g. `rootfs/etc/passwd`.
    name: Vec<u8>,
    path: PathBuf,
    meta: Metadata,
}

/// Writes `dir/manifest` and `dir/rootfs/` as an ACI to `out` and returns its Image ID.
pub fn write_aci<W: Write>(
    dir: &Path,
    out: W,
    opts: &WriteOptions,
) -> Result<ImageId, ArchiveError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ArchiveError::ReadSource { path, source }
    };
    let manifest_path = dir.join("manifest");
    let manifest = fs::read(&manifest_path).map_err(read_err(&manifest_path))?;
    manifest_view::parse_image_manifest(&manifest).map_err(ArchiveError::InvalidManifest)?;
    let rootfs = dir.join("rootfs");
    let rootfs_meta = fs::symlink_metadata(&rootfs).map_err(read_err(&rootfs))?;
    if !rootfs_meta.is_dir() {
        return Err(ArchiveError::UnsupportedSource {
            path: rootfs,
            kind: "non-directory rootfs",
        });
    }
    let mut sources = Vec::new();
    collect(&rootfs, b"rootfs", &mut sources)?;
    sources.sort_by(|a, b| a.name.cmp(&b.name));

    let encoder = compression::compress(out, opts.compression)?;
    let mut builder = tar::Builder::new(HashingWriter {
        inner: encoder,
        hasher: Sha512::new(),
    });
    let w = ArchiveError::WriteArchive;

    let mut h = header(opts, 0o644, 0, 0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(manifest.len() as u64);
    builder
        .append_data(&mut h, "manifest", &manifest[..])
        .map_err(w)?;

    let mut h = header(
        opts,
        rootfs_meta.mode(),
        rootfs_meta.uid(),
        rootfs_meta.gid(),
    );
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    builder
        .append_data(&mut h, "rootfs/", io::empty())
        .map_err(w)?;

    // First archive name of each multiply-linked inode, so later ones become hard links.
    let mut inodes: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    for src in &sources {
        append(&mut builder, src, opts, &mut inodes)?;
    }
    let hashing = builder.into_inner().map_err(w)?;
    let id = ImageId::from_sha512(&hashing.hasher.finalize().into());
    hashing.inner.finish_box().map_err(w)?;
    Ok(id)
}

fn header(opts: &WriteOptions, mode: u32, uid: u32, gid: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_mode(mode & 0o7777);
    h.set_mtime(opts.mtime);
    let (uid, gid) = if opts.preserve_owners {
        (uid, gid)
    } else {
        (0, 0)
    };
    h.set_uid(u64::from(uid));
    h.set_gid(u64::from(gid));
    h
}

fn collect(dir: &Path, prefix: &[u8], out: &mut Vec<Source>) -> Result<(), ArchiveError> {
    let err = |source| ArchiveError::ReadSource {
        path: dir.to_path_buf(),
        source,
    };
    for ent in fs::read_dir(dir).map_err(err)? {
        let ent = ent.map_err(err)?;
        let path = ent.path();
        let meta = fs::symlink_metadata(&path).map_err(|source| ArchiveError::ReadSource {
            path: path.clone(),
            source,
        })?;
        let mut name = prefix.to_vec();
        name.push(b'/');
        name.extend_from_slice(ent.file_name().as_bytes());
        if meta.is_dir() {
            collect(&path, &name, out)?;
        }
        out.push(Source { name, path, meta });
    }
    Ok(())
}

fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    src: &Source,
    opts: &WriteOptions,
    inodes: &mut HashMap<(u64, u64), Vec<u8>>,
) -> Result<(), ArchiveError> {
    let w = ArchiveError::WriteArchive;
    let read_err = |source| ArchiveError::ReadSource {
        path: src.path.clone(),
        source,
    };
    let name = Path::new(std::ffi::OsStr::from_bytes(&src.name));
    let ft = src.meta.file_type();
    let mut h = header(opts, src.meta.mode(), src.meta.uid(), src.meta.gid());
    h.set_size(0);
    if opts.xattrs && !ft.is_symlink() {
        let xattrs = read_xattrs(&src.path).map_err(read_err)?;
        if !xattrs.is_empty() {
            append_pax(builder, &src.name, &xattrs)?;
        }
    }
    if ft.is_dir() {
        h.set_entry_type(tar::EntryType::Directory);
        let mut dir_name = src.name.clone();
        dir_name.push(b'/');
        builder
            .append_data(
                &mut h,
                Path::new(std::ffi::OsStr::from_bytes(&dir_name)),
                io::empty(),
            )
            .map_err(w)
    } else if ft.is_file() {
        let key = (src.meta.dev(), src.meta.ino());
        if src.meta.nlink() > 1 {
            if let Some(first) = inodes.get(&key) {
                h.set_entry_type(tar::EntryType::Link);
                return builder
                    .append_link(&mut h, name, Path::new(std::ffi::OsStr::from_bytes(first)))
                    .map_err(w);
            }
            inodes.insert(key, src.name.clone());
        }
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(src.meta.len());
        let file = File::open(&src.path).map_err(read_err)?;
        builder.append_data(&mut h, name, file).map_err(w)
    } else if ft.is_symlink() {
        let target = fs::read_link(&src.path).map_err(read_err)?;
        h.set_entry_type(tar::EntryType::Symlink);
        builder.append_link(&mut h, name, target).map_err(w)
    } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
        h.set_entry_type(if ft.is_char_device() {
            tar::EntryType::Char
        } else if ft.is_block_device() {
            tar::EntryType::Block
        } else {
            tar::EntryType::Fifo
        });
        let rdev = src.meta.rdev();
        h.set_device_major(rustix::fs::major(rdev)).map_err(w)?;
        h.set_device_minor(rustix::fs::minor(rdev)).map_err(w)?;
        builder.append_data(&mut h, name, io::empty()).map_err(w)
    } else {
        Err(ArchiveError::UnsupportedSource {
            path: src.path.clone(),
            kind: "socket",
        })
    }
}

/// One PAX extended header holding `SCHILY.xattr.*` records, the form GNU tar and libarchive
/// read and write.
fn append_pax<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &[u8],
    xattrs: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), ArchiveError> {
    let mut body = Vec::new();
    for (key, value) in xattrs {
        let mut rec = b"SCHILY.xattr.".to_vec();
        rec.extend_from_slice(key);
        rec.push(b'=');
        rec.extend_from_slice(value);
        rec.push(b'\n');
        // The length prefix counts its own digits and the space after it.
        let mut len = rec.len() + 2;
        while (len.to_string().len() + 1 + rec.len()) != len {
            len = len.to_string().len() + 1 + rec.len();
        }
        body.extend_from_slice(len.to_string().as_bytes());
        body.push(b' ');
        body.extend_from_slice(&rec);
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_mode(0o644);
    h.set_size(body.len() as u64);
    // Name is informational only; keep it short and deterministic.
    let base = name.rsplit(|&b| b == b'/').next().unwrap_or(name);
    let mut pax_name = b"PaxHeaders/".to_vec();
    pax_name.extend_from_slice(&base[..base.len().min(80)]);
    builder
        .append_data(
            &mut h,
            Path::new(std::ffi::OsStr::from_bytes(&pax_name)),
            &body[..],
        )
        .map_err(ArchiveError::WriteArchive)
}

const XATTR_BUF: usize = 64 * 1024;

fn read_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut list = vec![0u8; XATTR_BUF];
    let n = match rustix::fs::llistxattr(path, &mut list[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::OPNOTSUPP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for key in list[..n].split(|&b| b == 0).filter(|k| !k.is_empty()) {
        if !(key.starts_with(b"user.") || key == b"security.capability") {
            continue;
        }
        let mut value = vec![0u8; XATTR_BUF];
        let len = rustix::fs::lgetxattr(path, key, &mut value[..])?;
        value.truncate(len);
        out.push((key.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options_write_gzip_that_other_appc_tools_read() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("rootfs")).unwrap();
        fs::write(
            dir.path().join("manifest"),
            r#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/x"}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        write_aci(dir.path(), &mut out, &WriteOptions::default()).unwrap();
        assert_eq!(compression::detect(&out), Some(Compression::Gzip));
    }
}
