//! Writing the raw image: partition contents (sparse: runs of zero blocks are seeked over, so
//! they stay holes), the protective MBR, and both GPTs through the `gpt` crate, into a
//! temporary file beside the output that is renamed into place only when complete.

use std::collections::BTreeMap;
use std::fs::File;
#[cfg(test)]
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hostimg::{Guid, Role, SECTOR};

use super::{Content, DiskError, DiskSpec, Layout, PlacedPartition, plan};

/// Holes are made at this granularity (the usual filesystem block).
const BLOCK: usize = 4096;
/// Copy buffer.
const CHUNK: usize = 1 << 20;

pub(super) fn uuid(g: Guid) -> uuid::Uuid {
    uuid::Uuid::from_bytes(g.to_be_bytes())
}

/// A complete image in a temporary file beside its destination, not yet renamed into place:
/// the manifest partition is written last, after everything it covers is measured.
#[derive(Debug)]
pub struct StagedImage {
    file: tempfile::NamedTempFile,
    out: PathBuf,
    layout: Layout,
}

impl StagedImage {
    /// The temporary file (read it to measure the image).
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Writes `bytes` at the start of `role`'s partition and zeros the rest of it.
    pub fn write_partition(&self, role: Role, bytes: &[u8]) -> Result<(), DiskError> {
        fill_partition(
            self.file.as_file(),
            self.file.path(),
            &self.layout,
            role,
            bytes,
        )
    }

    /// Flushes the image to disk and renames it to its destination (mode 0644).
    pub fn persist(self) -> Result<PathBuf, DiskError> {
        let tmp = self.file.path().to_path_buf();
        let f = self.file.as_file();
        f.set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(DiskError::io("setting the mode of", &tmp))?;
        f.sync_all().map_err(DiskError::io("flushing", &tmp))?;
        self.file.persist(&self.out).map_err(|e| DiskError::Io {
            op: "renaming the finished image to",
            path: self.out.clone(),
            source: e.error,
        })?;
        Ok(self.out)
    }
}

#[cfg(test)]
/// Writes the whole image (with whatever `spec` gives the manifest partition) to `out`.
pub fn write(spec: &DiskSpec, layout: &Layout, out: &Path) -> Result<(), DiskError> {
    stage(spec, layout, out)?.persist().map(|_| ())
}

/// Writes everything `spec` holds into a temporary file beside `out`; see [`StagedImage`].
/// `layout` must be `plan(spec)`.
pub fn stage(spec: &DiskSpec, layout: &Layout, out: &Path) -> Result<StagedImage, DiskError> {
    if plan(spec)? != *layout {
        return Err(DiskError::NotThePlan {
            path: out.to_path_buf(),
        });
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file = tempfile::Builder::new()
        .prefix(".disk-")
        .suffix(".img.tmp")
        .tempfile_in(&parent)
        .map_err(DiskError::io("creating a temporary image in", &parent))?;
    let path = file.path().to_path_buf();
    let f = file.as_file();
    f.set_len(layout.disk_size)
        .map_err(DiskError::io("sizing", &path))?;
    for (p, placed) in spec.partitions.iter().zip(&layout.partitions) {
        let written = match &p.content {
            Content::Zeros => 0,
            Content::Bytes(b) => {
                let mut r = &b[..];
                copy_sparse(f, &path, placed, &mut r, |source| DiskError::Io {
                    op: "reading content for",
                    path: path.clone(),
                    source,
                })?
            }
            Content::File(src) => {
                let read_err = |source| DiskError::ReadContent {
                    role: p.role,
                    path: src.clone(),
                    source,
                };
                let mut r = File::open(src).map_err(read_err)?;
                copy_sparse(f, &path, placed, &mut r, read_err)?
            }
        };
        log::debug!("{}: {written} bytes of content", p.role);
    }
    write_gpt(f, &path, layout)?;
    Ok(StagedImage {
        file,
        out: out.to_path_buf(),
        layout: layout.clone(),
    })
}

#[cfg(test)]
/// Writes `bytes` at the start of `role`'s partition in the image at `image` and zeros the
/// rest of that partition.
pub fn write_partition(
    image: &Path,
    layout: &Layout,
    role: Role,
    bytes: &[u8],
) -> Result<(), DiskError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(DiskError::io("opening", image))?;
    fill_partition(&f, image, layout, role, bytes)?;
    f.sync_all().map_err(DiskError::io("flushing", image))
}

fn fill_partition(
    f: &File,
    path: &Path,
    layout: &Layout,
    role: Role,
    bytes: &[u8],
) -> Result<(), DiskError> {
    let p = layout
        .partition(role)
        .ok_or_else(|| DiskError::NoPartition {
            path: path.to_path_buf(),
            role,
        })?;
    let len = bytes.len() as u64;
    if len > p.size {
        return Err(DiskError::ContentTooLarge {
            role,
            len,
            size: p.size,
        });
    }
    f.write_all_at(bytes, p.offset)
        .map_err(DiskError::io("writing a partition of", path))?;
    // Zero what follows, touching only blocks that are not already zero (holes stay holes).
    let zeros = vec![0u8; CHUNK];
    let mut buf = vec![0u8; CHUNK];
    let mut at = p.offset + len;
    while at < p.end() {
        let n = usize::try_from((p.end() - at).min(CHUNK as u64)).unwrap_or(CHUNK);
        f.read_exact_at(&mut buf[..n], at)
            .map_err(DiskError::io("reading back", path))?;
        if buf[..n].iter().any(|&b| b != 0) {
            f.write_all_at(&zeros[..n], at)
                .map_err(DiskError::io("zeroing a partition of", path))?;
        }
        at += n as u64;
    }
    Ok(())
}

/// Copies what `r` yields to the partition, seeking over zero blocks; fails naming the role
/// if more than the partition's size comes. Returns the content's length.
fn copy_sparse(
    f: &File,
    path: &Path,
    p: &PlacedPartition,
    r: &mut impl Read,
    read_err: impl Fn(std::io::Error) -> DiskError,
) -> Result<u64, DiskError> {
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    loop {
        let n = read_full(r, &mut buf).map_err(&read_err)?;
        if n == 0 {
            return Ok(done);
        }
        let len = done + n as u64;
        if len > p.size {
            return Err(DiskError::ContentTooLarge {
                role: p.role,
                len,
                size: p.size,
            });
        }
        for (i, block) in buf[..n].chunks(BLOCK).enumerate() {
            if block.iter().any(|&b| b != 0) {
                let at = p.offset + done + (i * BLOCK) as u64;
                f.write_all_at(block, at)
                    .map_err(DiskError::io("writing a partition of", path))?;
            }
        }
        done = len;
    }
}

/// Reads until `buf` is full or the input ends.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The protective MBR (ours: the `gpt` crate does not write one) and both GPTs.
fn write_gpt(f: &File, path: &Path, layout: &Layout) -> Result<(), DiskError> {
    let gpt_err = |e: &dyn std::fmt::Display| DiskError::Gpt {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut dev = f;
    // The protective partition covers the disk after LBA 0, capped at what MBR can say.
    let protective = u32::try_from(layout.sectors() - 1).unwrap_or(u32::MAX);
    gpt::mbr::ProtectiveMBR::with_lb_size(protective)
        .overwrite_lba0(&mut dev)
        .map_err(|e| gpt_err(&e))?;
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(dev, Some(uuid(layout.disk_guid)))
        .map_err(|e| gpt_err(&e))?;
    let mut table = BTreeMap::new();
    for p in &layout.partitions {
        table.insert(
            p.role.number(),
            gpt::partition::Partition {
                part_type_guid: gpt::partition_types::Type::from(uuid(p.role.type_guid())),
                part_guid: uuid(p.guid),
                first_lba: p.first_lba(),
                last_lba: p.last_lba(),
                flags: p.attributes,
                name: p.role.label().to_string(),
            },
        );
    }
    disk.update_partitions(table).map_err(|e| gpt_err(&e))?;
    let header = disk.primary_header().map_err(|e| gpt_err(&e))?;
    // The crate derives these from the device size; the layout's regions assume them.
    if header.part_start != 2
        || header.first_usable != 2 + super::GPT_TABLE_BYTES / SECTOR
        || header.backup_lba != layout.sectors() - 1
    {
        return Err(gpt_err(&"the gpt crate placed its structures unexpectedly"));
    }
    disk.write().map_err(|e| gpt_err(&e))?;
    Ok(())
}
