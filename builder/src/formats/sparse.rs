//! Where a raw image holds data: the runs of non-zero 4 KiB blocks, found without reading the
//! holes. Every output format is written from these runs, so what it stores depends only on the
//! image's bytes and never on how the build host's filesystem happens to report holes.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

/// The granularity of the runs: a block that holds one non-zero byte is data, whole.
pub const BLOCK: u64 = 4096;
/// How much is read at a time inside a data region.
const CHUNK: usize = 1 << 20;

/// A run of data: `len` bytes at `offset`, each 4 KiB block holding a non-zero byte (the last
/// block may be short, at the end of the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub offset: u64,
    pub len: u64,
}

impl Run {
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// The data runs of the first `size` bytes of `file`, in order, adjacent runs merged.
///
/// Regions the filesystem reports as holes (SEEK_HOLE/SEEK_DATA) are skipped unread: they read
/// as zeros, so skipping them gives the same runs a full scan would. Data regions are rescanned
/// block by block, so written zeros count as holes too.
pub fn data_runs(file: &File, size: u64) -> io::Result<Vec<Run>> {
    let mut runs: Vec<Run> = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    // Scanned up to here; aligned regions may overlap by a block.
    let mut scanned = 0u64;
    for (start, end) in data_regions(file, size)? {
        // Block-aligned, so the runs do not depend on where the filesystem's extents begin.
        let mut pos = (start - start % BLOCK).max(scanned);
        let end = end.div_ceil(BLOCK).saturating_mul(BLOCK).min(size);
        scanned = scanned.max(end);
        while pos < end {
            let n = usize::try_from((end - pos).min(CHUNK as u64)).unwrap_or(CHUNK);
            let chunk = &mut buf[..n];
            file.read_exact_at(chunk, pos)?;
            for (i, block) in chunk.chunks(BLOCK as usize).enumerate() {
                if is_zero(block) {
                    continue;
                }
                let offset = pos + i as u64 * BLOCK;
                let len = block.len() as u64;
                match runs.last_mut() {
                    Some(last) if last.end() == offset => last.len += len,
                    _ => runs.push(Run { offset, len }),
                }
            }
            pos += n as u64;
        }
    }
    Ok(runs)
}

/// Whether every byte is zero. Folds with OR over fixed-size pieces so the compiler vectorises
/// it; a 1 GiB image of holes and zeros is scanned in well under a second.
pub fn is_zero(buf: &[u8]) -> bool {
    let mut pieces = buf.chunks_exact(64);
    let body = pieces
        .by_ref()
        .all(|p| p.iter().fold(0u8, |acc, &b| acc | b) == 0);
    body && pieces.remainder().iter().all(|&b| b == 0)
}

/// The regions (start, end) of the first `size` bytes the filesystem says may hold data.
fn data_regions(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut regions = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(pos)) {
            Ok(s) => s,
            // No data after pos.
            Err(rustix::io::Errno::NXIO) => break,
            // A filesystem without SEEK_DATA: all of it may be data.
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) => {
                regions.push((pos, size));
                break;
            }
            Err(e) => return Err(e.into()),
        };
        if start >= size {
            break;
        }
        let end = match rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(start)) {
            Ok(e) => e.min(size),
            Err(e) => return Err(e.into()),
        };
        regions.push((start, end));
        pos = end;
    }
    Ok(regions)
}

/// Copies the runs of `src` into `dst` at the same offsets, leaving everything else a hole,
/// then sets `dst`'s length to `size`. `dst` must be empty (freshly created).
pub fn copy_runs(src: &File, runs: &[Run], dst: &mut File, size: u64) -> io::Result<()> {
    for run in runs {
        dst.seek(SeekFrom::Start(run.offset))?;
        copy_range(src, run, dst)?;
    }
    dst.set_len(size)?;
    Ok(())
}

/// Writes the bytes of `run` from `src` to `out`.
pub fn copy_range(src: &File, run: &Run, out: &mut dyn Write) -> io::Result<()> {
    let mut reader = RangeReader {
        file: src,
        pos: run.offset,
        end: run.end(),
    };
    let copied = io::copy(&mut reader, out)?;
    if copied != run.len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the image got shorter while it was being read",
        ));
    }
    Ok(())
}

/// Writes `n` zero bytes to `out` without allocating them.
pub fn write_zeros(out: &mut dyn Write, n: u64) -> io::Result<()> {
    io::copy(&mut io::repeat(0).take(n), out)?;
    Ok(())
}

/// Reads `[pos, end)` of a file by offset, leaving the file's cursor alone.
struct RangeReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.pos;
        let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(chunks: &[(u64, &[u8])], size: u64) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        f.set_len(size).unwrap();
        for (off, data) in chunks {
            f.write_all_at(data, *off).unwrap();
        }
        (dir, f)
    }

    #[test]
    fn runs_cover_nonzero_blocks_and_merge_neighbours() {
        let size = 64 * BLOCK;
        let (_d, f) = file_with(
            &[
                (10, b"a"),
                (BLOCK + 5, b"b"),
                (10 * BLOCK, &[0u8; 8192]),
                (20 * BLOCK - 1, b"cd"),
            ],
            size,
        );
        let runs = data_runs(&f, size).unwrap();
        assert_eq!(
            runs,
            vec![
                Run {
                    offset: 0,
                    len: 2 * BLOCK
                },
                Run {
                    offset: 19 * BLOCK,
                    len: 2 * BLOCK
                },
            ]
        );
    }

    #[test]
    fn written_zeros_are_not_data() {
        let size = 8 * BLOCK;
        let (_d, f) = file_with(&[(0, &vec![0u8; size as usize])], size);
        assert!(data_runs(&f, size).unwrap().is_empty());
    }

    #[test]
    fn a_short_last_block_is_a_short_run() {
        let size = 2 * BLOCK + 512;
        let (_d, f) = file_with(&[(size - 1, b"z")], size);
        assert_eq!(
            data_runs(&f, size).unwrap(),
            vec![Run {
                offset: 2 * BLOCK,
                len: 512
            }]
        );
    }

    #[test]
    fn is_zero_sees_a_byte_in_the_remainder() {
        let mut b = vec![0u8; 100];
        assert!(is_zero(&b));
        b[99] = 1;
        assert!(!is_zero(&b));
        b[99] = 0;
        b[3] = 1;
        assert!(!is_zero(&b));
    }
}
