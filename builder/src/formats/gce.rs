//! Google Compute Engine's image file: a gzip-compressed tar in the old-GNU format holding one
//! file, `disk.raw`, stored as an old-GNU sparse entry (type `S`) so the holes cost nothing.
//!
//! The sparse map is the image's data runs (non-zero 4 KiB blocks), not what the build host's
//! filesystem reports, and every header field that could carry the host's state (times,
//! owners, names) is fixed, so the same image gives the same bytes on any machine.

use std::fs::File;
use std::io::{self, Write};

use tar::{EntryType, GnuExtSparseHeader, GnuSparseHeader, Header};

use super::sparse::{self, Run};

/// The name GCE requires for the disk inside the tarball.
pub const ENTRY_NAME: &str = "disk.raw";
const TAR_BLOCK: u64 = 512;
/// gzip level: GNU gzip's default; the data compressed is only the image's runs.
const GZIP_LEVEL: u32 = 6;

/// Writes the tarball of the `size`-byte image `src`, whose data runs are `runs`, to `out`.
/// `mtime` goes into the tar entry; the gzip header carries no time and no name.
pub fn write(src: &File, size: u64, runs: &[Run], mtime: u64, out: impl Write) -> io::Result<()> {
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(out, flate2::Compression::new(GZIP_LEVEL));
    write_tar(src, size, runs, mtime, &mut gz)?;
    gz.finish()?.flush()
}

/// The uncompressed tar stream: header, extension headers, the runs' bytes, padding, and the
/// two zero blocks that end an archive.
pub fn write_tar(
    src: &File,
    size: u64,
    runs: &[Run],
    mtime: u64,
    out: &mut dyn Write,
) -> io::Result<()> {
    let map = sparse_map(size, runs);
    let stored: u64 = runs.iter().map(|r| r.len).sum();

    let mut header = Header::new_gnu();
    header.set_path(ENTRY_NAME)?;
    header.set_entry_type(EntryType::GNUSparse);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_size(stored);
    let gnu = header
        .as_gnu_mut()
        .ok_or_else(|| io::Error::other("a new GNU tar header is not a GNU header"))?;
    gnu.set_real_size(size);
    let (first, rest) = map.split_at(map.len().min(gnu.sparse.len()));
    fill(&mut gnu.sparse, first);
    gnu.set_is_extended(!rest.is_empty());
    header.set_cksum();
    out.write_all(header.as_bytes())?;

    let mut ext_chunks = rest
        .chunks(GnuExtSparseHeader::new().sparse.len())
        .peekable();
    while let Some(chunk) = ext_chunks.next() {
        let mut ext = GnuExtSparseHeader::new();
        fill(&mut ext.sparse, chunk);
        ext.set_is_extended(ext_chunks.peek().is_some());
        out.write_all(ext.as_bytes())?;
    }

    for run in runs {
        sparse::copy_range(src, run, out)?;
    }
    sparse::write_zeros(out, stored.next_multiple_of(TAR_BLOCK) - stored)?;
    sparse::write_zeros(out, 2 * TAR_BLOCK)?;
    Ok(())
}

/// The entries of the sparse map: the runs, then, when the file ends in a hole, an empty run at
/// its end so readers (GNU tar) know the real size from the map as well as from the header.
fn sparse_map(size: u64, runs: &[Run]) -> Vec<Run> {
    let mut map = runs.to_vec();
    if map.last().is_none_or(|r| r.end() < size) {
        map.push(Run {
            offset: size,
            len: 0,
        });
    }
    map
}

fn fill(slots: &mut [GnuSparseHeader], runs: &[Run]) {
    for (slot, run) in slots.iter_mut().zip(runs) {
        slot.set_offset(run.offset);
        slot.set_length(run.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_ending_in_a_hole_gets_an_empty_last_entry() {
        let runs = [Run {
            offset: 0,
            len: 4096,
        }];
        let map = sparse_map(1 << 20, &runs);
        assert_eq!(
            map.last(),
            Some(&Run {
                offset: 1 << 20,
                len: 0
            })
        );
        let full = [Run {
            offset: 0,
            len: 1 << 20,
        }];
        assert_eq!(sparse_map(1 << 20, &full), full.to_vec());
        assert_eq!(sparse_map(1 << 20, &[]).len(), 1);
    }
}
