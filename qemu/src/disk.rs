//! Disk copies for booting: a sparse copy of a raw image, optionally enlarged, so a VM can
//! write to (and grow into) its disk while the built image stays as it was.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::errno::Errno;
use nix::unistd::{Whence, lseek};

use crate::error::Error;

/// qcow2's magic, `QFI\xfb`: a format a byte copy cannot grow.
const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";
/// Copy granularity: runs of zeros this long inside data regions become holes too.
const CHUNK: usize = 1 << 20;

/// Copies the raw image `from` to `to` (a new file) writing only its data: holes in `from`
/// (found with `SEEK_DATA`/`SEEK_HOLE`) and all-zero chunks stay holes, so the copy is quick
/// and takes the space the image's data does. Then sets the copy's length to `size` (at least
/// the image's own), as `qemu-img resize` would. Returns the copy's length.
pub fn sparse_copy(from: &Path, to: &Path, size: Option<u64>) -> Result<u64, Error> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source: io::Error| Error::Io {
            action,
            path,
            source,
        }
    };
    let mut src = File::open(from).map_err(io("open", from))?;
    let len = src.metadata().map_err(io("read the size of", from))?.len();
    let target_len = match size {
        Some(size) if size < len => {
            return Err(Error::DiskShrink {
                path: from.to_path_buf(),
                len,
                size,
            });
        }
        Some(size) => size,
        None => len,
    };
    let mut magic = [0u8; 4];
    if src.read_exact(&mut magic).is_ok() && &magic == QCOW2_MAGIC {
        return Err(Error::NotRaw {
            path: from.to_path_buf(),
        });
    }
    let dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(io("create", to))?;
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < len {
        let Some((start, end)) =
            next_data(&src, offset, len).map_err(io("look for data in", from))?
        else {
            break;
        };
        src.seek(SeekFrom::Start(start))
            .map_err(io("seek in", from))?;
        let mut at = start;
        while at < end {
            let want = usize::try_from((end - at).min(CHUNK as u64)).unwrap_or(CHUNK);
            let chunk = &mut buf[..want];
            src.read_exact(chunk).map_err(io("read", from))?;
            if chunk.iter().any(|&b| b != 0) {
                dst.write_all_at(chunk, at).map_err(io("write", to))?;
            }
            at += want as u64;
        }
        offset = end;
    }
    dst.set_len(target_len)
        .map_err(io("set the length of", to))?;
    Ok(target_len)
}

/// The next data region at or after `offset`, as `(start, end)`, or `None` past the last
/// one. A file system without `SEEK_DATA` reports everything as data.
fn next_data(file: &File, offset: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    let to_off =
        |n: u64| i64::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let fd = file.as_raw_fd();
    let start = match lseek(fd, to_off(offset)?, Whence::SeekData) {
        Ok(start) => start,
        Err(Errno::ENXIO) => return Ok(None),
        Err(Errno::EINVAL) => return Ok(Some((offset, len))),
        Err(e) => return Err(e.into()),
    };
    let end = match lseek(fd, start, Whence::SeekHole) {
        Ok(end) => end,
        Err(Errno::ENXIO) => to_off(len)?,
        Err(e) => return Err(e.into()),
    };
    let as_u64 = |n: i64| u64::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::InvalidData));
    Ok(Some((as_u64(start)?, as_u64(end)?.min(len))))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn sparse_copy_keeps_data_leaves_holes_and_grows_to_the_size_asked() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("a-x86_64.img");
        // Data, a written run of zeros, more data, then a hole to the end.
        let mut bytes = vec![0u8; 8 * CHUNK];
        bytes[10] = 1;
        bytes[5 * CHUNK + 3] = 2;
        std::fs::write(&image, &bytes).unwrap();
        let f = OpenOptions::new().write(true).open(&image).unwrap();
        f.set_len(32 * CHUNK as u64).unwrap();
        f.write_all_at(b"end", 20 * CHUNK as u64).unwrap();
        drop(f);

        let copy = dir.path().join("copy.img");
        let len = sparse_copy(&image, &copy, Some(64 * CHUNK as u64)).unwrap();
        assert_eq!(len, 64 * CHUNK as u64);
        let copied = std::fs::read(&copy).unwrap();
        let original = std::fs::read(&image).unwrap();
        assert_eq!(copied.len(), 64 * CHUNK);
        assert_eq!(copied[..original.len()], original[..]);
        assert!(copied[original.len()..].iter().all(|&b| b == 0));
        // Three chunks of data, not 64 MiB: the zeros are holes.
        let allocated = std::fs::metadata(&copy).unwrap().blocks() * 512;
        assert!(
            allocated <= 3 * CHUNK as u64 + 65536,
            "{allocated} bytes allocated"
        );
    }

    #[test]
    fn sparse_copy_refuses_to_shrink_and_refuses_qcow2() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("a-x86_64.img");
        std::fs::write(&image, vec![1u8; 4096]).unwrap();
        let err = sparse_copy(&image, &dir.path().join("c1"), Some(1024)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::DiskShrink {
                    len: 4096,
                    size: 1024,
                    ..
                }
            ),
            "{err}"
        );
        let qcow = dir.path().join("q-x86_64.img");
        std::fs::write(&qcow, b"QFI\xfb\0\0\0\x03").unwrap();
        let err = sparse_copy(&qcow, &dir.path().join("c2"), None).unwrap_err();
        assert!(err.to_string().contains("qcow2"), "{err}");
    }
}
