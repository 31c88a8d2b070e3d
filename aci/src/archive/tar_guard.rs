//! A reader between the decompressed stream and the `tar` crate that walks the tar headers
//! itself and refuses an oversized metadata record (GNU long name `L`, long link `K`, PAX `x`
//! and `g`) before the `tar` crate, which reads such records whole into memory, sees it.
//!
//! It mirrors the `tar` crate's framing exactly (header checksum, octal or base-256 size, PAX
//! `size` override) so both agree on where every header starts; where mirroring would mean
//! parsing a PAX record twice (`size=`), the record is refused instead: only files over 8 GiB,
//! far past `Limits::max_entry_size`, need it.

use std::io::{self, Read};

const BLOCK: u64 = 512;

/// Why the guard stopped the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A metadata record of type `kind` announced `size` bytes, over `limit`.
    RecordTooLarge { kind: u8, size: u64, limit: u64 },
    /// A PAX record sets `size`, which would move the next header.
    PaxSize,
    /// GNU sparse entries carry extra header blocks this reader does not accept.
    Sparse,
    /// The header's checksum or size field does not parse (the `tar` crate refuses it too).
    BadHeader,
}

pub(crate) struct TarGuard<R> {
    inner: R,
    path_limit: u64,
    pax_limit: u64,
    /// Bytes handed out so far, and the offset where the next header starts.
    pos: u64,
    next_header: u64,
    header: [u8; BLOCK as usize],
    /// Bytes of `header` already handed out; `BLOCK` when none is pending.
    header_out: usize,
    /// The data of the last PAX `x` record, kept (bounded by `pax_limit`) to look for `size`.
    pax: Vec<u8>,
    capture: bool,
    /// After the end marker the `tar` crate reads nothing more; the rest is not parsed.
    ended: bool,
    refused: Option<Refusal>,
}

impl<R: Read> TarGuard<R> {
    /// `path_limit` bounds `L`/`K` records (their data is a name and a NUL), `pax_limit` bounds
    /// `x`/`g` records.
    pub(crate) fn new(inner: R, path_limit: u64, pax_limit: u64) -> Self {
        TarGuard {
            inner,
            path_limit,
            pax_limit,
            pos: 0,
            next_header: 0,
            header: [0; BLOCK as usize],
            header_out: BLOCK as usize,
            pax: Vec::new(),
            capture: false,
            ended: false,
            refused: None,
        }
    }

    pub(crate) fn refused(&self) -> Option<Refusal> {
        self.refused
    }

    fn refuse(&mut self, why: Refusal) -> io::Error {
        self.refused = Some(why);
        io::Error::new(io::ErrorKind::InvalidData, "tar header refused")
    }

    /// Reads the next header block and decides where the one after it starts. A short block at
    /// end of input is handed on as is (the `tar` crate reports it) and ends the parsing.
    fn load_header(&mut self) -> io::Result<()> {
        let mut filled = 0;
        while filled < self.header.len() {
            let Some(rest) = self.header.get_mut(filled..) else {
                break;
            };
            match self.inner.read(rest) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled < self.header.len() {
            // Hand on what there is and stop parsing: the tar crate ends or fails here.
            let start = BLOCK as usize - filled;
            self.header.copy_within(..filled, start);
            self.header_out = start;
            self.ended = true;
            return Ok(());
        }
        self.header_out = 0;
        if self.header.iter().all(|&b| b == 0) {
            self.ended = true;
            return Ok(());
        }
        if self.capture && contains(&self.pax, b" size=") {
            return Err(self.refuse(Refusal::PaxSize));
        }
        self.capture = false;
        self.pax.clear();
        if !checksum_ok(&self.header) {
            return Err(self.refuse(Refusal::BadHeader));
        }
        let Some(size) = size_field(&self.header) else {
            return Err(self.refuse(Refusal::BadHeader));
        };
        let kind = self.header[156];
        let limit = match kind {
            b'L' | b'K' => Some(self.path_limit.saturating_add(1)),
            b'x' | b'g' => Some(self.pax_limit),
            b'S' => return Err(self.refuse(Refusal::Sparse)),
            _ => None,
        };
        if let Some(limit) = limit
            && size > limit
        {
            return Err(self.refuse(Refusal::RecordTooLarge { kind, size, limit }));
        }
        self.capture = kind == b'x';
        let padded = size
            .checked_add(BLOCK - 1)
            .map(|s| s & !(BLOCK - 1))
            .and_then(|s| s.checked_add(self.pos + BLOCK));
        match padded {
            Some(next) => self.next_header = next,
            None => return Err(self.refuse(Refusal::BadHeader)),
        }
        Ok(())
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(why) = self.refused {
            return Err(self.refuse(why));
        }
        if !self.ended && self.header_out == self.header.len() && self.pos == self.next_header {
            self.load_header()?;
        }
        if let Some(pending) = self.header.get(self.header_out..)
            && !pending.is_empty()
        {
            let n = pending.len().min(buf.len());
            buf[..n].copy_from_slice(&pending[..n]);
            self.header_out += n;
            self.pos += n as u64;
            return Ok(n);
        }
        let want = if self.ended {
            buf.len()
        } else {
            let left = self.next_header - self.pos;
            buf.len().min(usize::try_from(left).unwrap_or(usize::MAX))
        };
        let n = self.inner.read(&mut buf[..want])?;
        if self.capture {
            // Bounded: the record's size was checked against `pax_limit` above.
            self.pax.extend_from_slice(&buf[..n]);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The `tar` crate's check: the unsigned sum of the header with the checksum field as spaces.
fn checksum_ok(h: &[u8; BLOCK as usize]) -> bool {
    let sum: u32 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    octal(&h[148..156]) == Some(u64::from(sum))
}

/// The size field as the `tar` crate reads it: base-256 when the high bit is set (only the
/// last 8 bytes count), else octal text up to the first NUL, trimmed.
fn size_field(h: &[u8; BLOCK as usize]) -> Option<u64> {
    let field = &h[124..136];
    if field[0] & 0x80 != 0 {
        Some(
            field[4..]
                .iter()
                .fold(0u64, |v, &b| (v << 8) | u64::from(b)),
        )
    } else {
        octal(field)
    }
}

fn octal(field: &[u8]) -> Option<u64> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    let text = std::str::from_utf8(&field[..end]).ok()?;
    u64::from_str_radix(text.trim(), 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u8, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_ustar();
        h.set_path("x").unwrap();
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_size(size);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    #[test]
    fn refuses_long_name_over_the_limit_before_reading_it() {
        let mut bytes = header(b'L', 1 << 40);
        bytes.extend_from_slice(&[b'a'; 512]);
        let mut g = TarGuard::new(&bytes[..], 4096, 65536);
        let mut out = Vec::new();
        assert!(g.read_to_end(&mut out).is_err());
        assert!(out.is_empty());
        assert!(matches!(
            g.refused(),
            Some(Refusal::RecordTooLarge { kind: b'L', .. })
        ));
    }

    #[test]
    fn reads_base_256_sizes_as_the_tar_crate_does() {
        let mut h = tar::Header::new_gnu();
        h.set_path("x").unwrap();
        h.set_entry_type(tar::EntryType::new(b'x'));
        // The tar crate writes sizes of 8 GiB and more in base-256.
        h.set_size(1 << 36);
        h.set_cksum();
        assert_eq!(h.as_bytes()[124] & 0x80, 0x80);
        let mut g = TarGuard::new(&h.as_bytes()[..], 4096, 65536);
        assert!(g.read_to_end(&mut Vec::new()).is_err());
        assert_eq!(
            g.refused(),
            Some(Refusal::RecordTooLarge {
                kind: b'x',
                size: 1 << 36,
                limit: 65536
            })
        );
    }

    #[test]
    fn refuses_a_header_with_a_bad_checksum() {
        let mut bytes = header(b'0', 0);
        bytes[0] ^= 1;
        let mut g = TarGuard::new(&bytes[..], 4096, 65536);
        assert!(g.read_to_end(&mut Vec::new()).is_err());
        assert_eq!(g.refused(), Some(Refusal::BadHeader));
    }

    #[test]
    fn passes_a_normal_archive_through_unchanged() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "a".repeat(300), &b"abc"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let mut out = Vec::new();
        TarGuard::new(&bytes[..], 4096, 65536)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, bytes);
    }

    #[test]
    fn refuses_a_pax_size_record() {
        let rec = b"12 size=100\n";
        let mut bytes = header(b'x', rec.len() as u64);
        let mut data = rec.to_vec();
        data.resize(512, 0);
        bytes.extend_from_slice(&data);
        bytes.extend_from_slice(&header(b'0', 0));
        let mut g = TarGuard::new(&bytes[..], 4096, 65536);
        assert!(g.read_to_end(&mut Vec::new()).is_err());
        assert_eq!(g.refused(), Some(Refusal::PaxSize));
    }
}
