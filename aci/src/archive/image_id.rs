//! The hashing reader that computes an image's ID (`sha512-<128 lowercase hex>`, the one
//! [`ImageId`] type of `manifest`) while the decompressed tar stream goes by, so no second pass
//! or temporary copy is needed.

use std::io::{self, Read};

use sha2::{Digest, Sha512};

pub use crate::manifest::ImageId;

/// Passes bytes through while feeding them to SHA-512 and counting them, up to `limit` bytes:
/// past it a read fails and [`HashingReader::over_limit`] says why.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha512,
    len: u64,
    limit: u64,
    over_limit: bool,
}

/// How a stream ended once the tar end marker was read.
#[derive(Debug)]
pub(crate) enum FinishError {
    Read(io::Error),
    /// More than the allowed bytes follow the end marker.
    Trailing,
    /// The whole stream is over the reader's limit.
    OverLimit,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R, limit: u64) -> Self {
        HashingReader {
            inner,
            hasher: Sha512::new(),
            len: 0,
            limit,
            over_limit: false,
        }
    }

    /// True once the stream went past the limit (a read failed because of it).
    pub(crate) fn over_limit(&self) -> bool {
        self.over_limit
    }

    /// Reads the rest of the stream (tar padding after the end marker counts too: the ID covers
    /// every byte) and returns the ID and the uncompressed length. At most `max_trailing` bytes
    /// may follow: a small compressed stream must not make us hash gigabytes of padding.
    pub(crate) fn finish(mut self, max_trailing: u64) -> Result<(ImageId, u64), FinishError> {
        let rest = io::copy(
            &mut (&mut self).take(max_trailing.saturating_add(1)),
            &mut io::sink(),
        )
        .map_err(|e| {
            if self.over_limit {
                FinishError::OverLimit
            } else {
                FinishError::Read(e)
            }
        })?;
        if rest > max_trailing {
            return Err(FinishError::Trailing);
        }
        Ok((
            ImageId::from_sha512(&self.hasher.finalize().into()),
            self.len,
        ))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One byte past the limit is enough to know it was exceeded.
        let room = self.limit.saturating_sub(self.len).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if self.len + n as u64 > self.limit {
            self.over_limit = true;
            return Err(io::Error::other("the tar stream is over its size limit"));
        }
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_reader_matches_sha512_of_all_bytes() {
        let data = vec![7u8; 10_000];
        let mut r = HashingReader::new(&data[..], u64::MAX);
        let mut first = [0u8; 100];
        r.read_exact(&mut first).unwrap();
        let (id, len) = r.finish(u64::MAX).unwrap();
        assert_eq!(len, 10_000);
        assert_eq!(id.hex(), hex::encode(Sha512::digest(&data)));
    }

    #[test]
    fn hashing_reader_stops_at_its_limit_and_caps_trailing_bytes() {
        let data = vec![7u8; 10_000];
        let mut r = HashingReader::new(&data[..], 9_999);
        assert!(io::copy(&mut r, &mut io::sink()).is_err());
        assert!(r.over_limit());
        let mut r = HashingReader::new(&data[..], 10_000);
        r.read_exact(&mut [0u8; 9_000]).unwrap();
        assert!(matches!(r.finish(999), Err(FinishError::Trailing)));
        let mut r = HashingReader::new(&data[..], 10_000);
        r.read_exact(&mut [0u8; 9_000]).unwrap();
        assert_eq!(r.finish(1_000).unwrap().1, 10_000);
    }
}
