//! Compression of ACI files: detection by magic bytes (never by file name, as the reference
//! reader does), streaming decompression, and the encoders the writer offers. Each codec is a
//! cargo feature so the guest init links only those it needs.

use std::io::{self, Read, Write};

use super::ArchiveError;

/// The compressions an `.aci` may use. zstd is our extension to appc's gzip/bzip2/xz.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }
}

/// Offset and value of the POSIX tar magic in the first header block.
const USTAR_OFFSET: usize = 257;

/// Identifies the format from the first bytes of the file. `head` should hold at least 262
/// bytes when the input has them; shorter input is matched as far as it goes.
pub fn detect(head: &[u8]) -> Option<Compression> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if head.starts_with(b"BZh") {
        Some(Compression::Bzip2)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(Compression::Xz)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else if head.get(USTAR_OFFSET..USTAR_OFFSET + 5) == Some(b"ustar") {
        Some(Compression::None)
    } else {
        None
    }
}

/// Re-emits bytes already read from `inner` before the rest of it.
struct Prefixed<R> {
    head: io::Cursor<Vec<u8>>,
    inner: R,
}

impl<R: Read> Read for Prefixed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.head.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

/// Detects the compression of `r` and returns a reader of the decompressed tar stream.
pub fn decompress<'a, R: Read + 'a>(
    mut r: R,
) -> Result<(Compression, Box<dyn Read + 'a>), ArchiveError> {
    // Read up to one tar block so detection sees the ustar magic even on a slow pipe.
    let mut head = Vec::with_capacity(512);
    (&mut r)
        .take(512)
        .read_to_end(&mut head)
        .map_err(ArchiveError::ReadStream)?;
    let kind = detect(&head).ok_or(ArchiveError::UnknownFormat)?;
    let stream = Prefixed {
        head: io::Cursor::new(head),
        inner: r,
    };
    Ok((kind, open(kind, stream)?))
}

fn open<'a, R: Read + 'a>(kind: Compression, r: R) -> Result<Box<dyn Read + 'a>, ArchiveError> {
    match kind {
        Compression::None => Ok(Box::new(r)),
        #[cfg(feature = "gzip")]
        // MultiGzDecoder: `gzip` concatenations are valid gzip files and GNU tar reads them.
        Compression::Gzip => Ok(Box::new(flate2::read::MultiGzDecoder::new(r))),
        #[cfg(feature = "bzip2")]
        Compression::Bzip2 => Ok(Box::new(bzip2::read::MultiBzDecoder::new(r))),
        #[cfg(feature = "xz")]
        Compression::Xz => Ok(Box::new(liblzma::read::XzDecoder::new_multi_decoder(r))),
        #[cfg(feature = "zstd")]
        Compression::Zstd => Ok(Box::new(
            zstd::stream::read::Decoder::new(r).map_err(ArchiveError::ReadStream)?,
        )),
        #[allow(unreachable_patterns)]
        other => Err(ArchiveError::UnsupportedCompression(other.name())),
    }
}

/// A compressing writer that must be finished to flush its trailer.
pub(crate) trait FinishWrite: Write {
    fn finish_box(self: Box<Self>) -> io::Result<()>;
}

struct Plain<W>(W);

impl<W: Write> Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> FinishWrite for Plain<W> {
    fn finish_box(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(feature = "gzip")]
impl<W: Write> FinishWrite for flate2::write::GzEncoder<W> {
    fn finish_box(self: Box<Self>) -> io::Result<()> {
        (*self).finish()?.flush()
    }
}

#[cfg(feature = "zstd")]
impl<W: Write> FinishWrite for zstd::stream::write::Encoder<'static, W> {
    fn finish_box(self: Box<Self>) -> io::Result<()> {
        (*self).finish()?.flush()
    }
}

/// zstd level 19 would halve throughput for a few percent; 10 is a good trade for images that
/// are built once and fetched many times.
#[cfg(feature = "zstd")]
const ZSTD_LEVEL: i32 = 10;

/// zlib's default level, named so that a change of flate2's default cannot change our bytes
/// (and with them the hash a signature covers).
#[cfg(feature = "gzip")]
const GZIP_LEVEL: u32 = 6;

/// "Unknown" in the gzip header's OS byte: the build host is none of the reader's business.
#[cfg(feature = "gzip")]
const GZIP_OS_UNKNOWN: u8 = 255;

/// Wraps `w` in the chosen encoder. Every encoder here is deterministic: the gzip header carries
/// mtime 0 and no name or comment, at a fixed level; zstd runs single-threaded.
pub(crate) fn compress<'a, W: Write + 'a>(
    w: W,
    kind: Compression,
) -> Result<Box<dyn FinishWrite + 'a>, ArchiveError> {
    match kind {
        Compression::None => Ok(Box::new(Plain(w))),
        #[cfg(feature = "gzip")]
        Compression::Gzip => Ok(Box::new(
            flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(GZIP_OS_UNKNOWN)
                .write(w, flate2::Compression::new(GZIP_LEVEL)),
        )),
        #[cfg(feature = "zstd")]
        Compression::Zstd => Ok(Box::new(
            zstd::stream::write::Encoder::new(w, ZSTD_LEVEL).map_err(ArchiveError::WriteArchive)?,
        )),
        other => Err(ArchiveError::UnsupportedCompression(other.name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_magic() {
        assert_eq!(detect(&[0x1f, 0x8b, 8]), Some(Compression::Gzip));
        assert_eq!(detect(b"BZh91AY"), Some(Compression::Bzip2));
        assert_eq!(
            detect(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0]),
            Some(Compression::Xz)
        );
        assert_eq!(
            detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Some(Compression::Zstd)
        );
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(detect(&tar), Some(Compression::None));
        assert_eq!(detect(b"PK\x03\x04"), None);
        assert_eq!(detect(&[]), None);
    }

    #[test]
    fn round_trips_every_writable_compression() {
        let mut tar = vec![0u8; 1024];
        tar[257..262].copy_from_slice(b"ustar");
        for kind in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mut out = Vec::new();
            let mut w = compress(&mut out, kind).unwrap();
            w.write_all(&tar).unwrap();
            w.finish_box().unwrap();
            let (found, mut r) = decompress(&out[..]).unwrap();
            assert_eq!(found, kind);
            let mut back = Vec::new();
            r.read_to_end(&mut back).unwrap();
            assert_eq!(back, tar);
        }
    }

    #[test]
    fn gzip_header_names_no_file_and_no_time_so_output_is_repeatable() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let encode = || {
            let mut out = Vec::new();
            let mut w = compress(&mut out, Compression::Gzip).unwrap();
            w.write_all(&data).unwrap();
            w.finish_box().unwrap();
            out
        };
        let a = encode();
        // ID1 ID2 CM=deflate, FLG=0 (no FNAME, FCOMMENT, FEXTRA), MTIME=0, XFL=0 (level 6),
        // OS=unknown.
        assert_eq!(a[..10], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        assert_eq!(a, encode());
    }
}
