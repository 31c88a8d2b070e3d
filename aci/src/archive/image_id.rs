//! The Image ID (`sha512-<128 lowercase hex>`) and the hashing reader that computes it while the
//! decompressed tar stream goes by, so no second pass or temporary copy is needed.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::{Digest, Sha512};

const PREFIX: &str = "sha512-";
const HEX_LEN: usize = 128;

/// A full Image ID: the SHA-512 of an ACI's uncompressed tar stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageIdError {
    #[error("image ID {0:?} does not start with `sha512-`")]
    Algorithm(String),
    #[error("image ID {0:?} is not `sha512-` followed by 128 lowercase hex digits")]
    Digest(String),
}

impl ImageId {
    pub(crate) fn from_digest(digest: &[u8]) -> ImageId {
        ImageId(format!("{PREFIX}{}", hex::encode(digest)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The lowercase hex digest without the `sha512-` prefix.
    pub fn hex(&self) -> &str {
        &self.0[PREFIX.len()..]
    }

    /// rkt's display form: `sha512-` plus the first 32 hex digits.
    pub fn short(&self) -> &str {
        &self.0[..PREFIX.len() + 32]
    }

    /// True when `prefix` (with or without `sha512-`) starts this ID.
    pub fn matches_prefix(&self, prefix: &str) -> bool {
        let hex = prefix.strip_prefix(PREFIX).unwrap_or(prefix);
        !hex.is_empty() && self.hex().starts_with(&hex.to_ascii_lowercase())
    }
}

impl FromStr for ImageId {
    type Err = ImageIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some(hex) = s.strip_prefix(PREFIX) else {
            return Err(ImageIdError::Algorithm(s.to_string()));
        };
        if hex.len() != HEX_LEN || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ImageIdError::Digest(s.to_string()));
        }
        Ok(ImageId(s.to_string()))
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for ImageId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ImageId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

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
        Ok((ImageId::from_digest(&self.hasher.finalize()), self.len))
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

    #[test]
    fn parses_only_full_lowercase_sha512_ids() {
        let good = format!("sha512-{}", "a".repeat(128));
        assert!(good.parse::<ImageId>().is_ok());
        assert!(
            format!("sha256-{}", "a".repeat(64))
                .parse::<ImageId>()
                .is_err()
        );
        assert!(
            format!("sha512-{}", "A".repeat(128))
                .parse::<ImageId>()
                .is_err()
        );
        assert!("sha512-abc".parse::<ImageId>().is_err());
    }

    #[test]
    fn prefix_matching_accepts_with_or_without_algorithm() {
        let id: ImageId = format!("sha512-ab{}", "0".repeat(126)).parse().unwrap();
        assert!(id.matches_prefix("sha512-ab"));
        assert!(id.matches_prefix("ab0"));
        assert!(!id.matches_prefix("sha512-"));
        assert!(!id.matches_prefix("ac"));
    }
}
