//! Reading an image's GPT back into a [`Layout`], with the `gpt` crate: the primary GPT, or
//! the backup one when the primary header or table is damaged (so `verify` can still find the
//! manifest and name the damaged part).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use hostimg::{Guid, Role, SECTOR};

use super::{DiskError, GPT_ENTRIES, GPT_ENTRY_SIZE, GPT_TABLE_BYTES, Layout, PlacedPartition};

/// Sectors of one partition table of ours.
const TABLE_SECTORS: u64 = GPT_TABLE_BYTES / SECTOR;

fn guid(u: &uuid::Uuid) -> Guid {
    Guid::from_be_bytes(*u.as_bytes())
}

/// Reads the GPT of `image`: every partition must be one of the `hostimg` roles, numbered,
/// named and typed as the contract says, all present, in order.
pub fn read_layout(image: &Path) -> Result<Layout, DiskError> {
    let mut f = File::open(image).map_err(DiskError::io("opening", image))?;
    let len = f
        .metadata()
        .map_err(DiskError::io("reading the size of", image))?
        .len();
    let bad = |message: String| DiskError::BadGpt {
        path: image.to_path_buf(),
        message,
    };
    if len < 3 * SECTOR || !len.is_multiple_of(SECTOR) {
        return Err(bad(format!(
            "{len} bytes is not a whole number of sectors large enough for a GPT"
        )));
    }
    let mut errors = Vec::new();
    for (which, lba) in [("primary", 1), ("backup", len / SECTOR - 1)] {
        if let Err(e) = precheck(&f, lba) {
            errors.push(format!("{which} GPT header: {e}"));
            continue;
        }
        let opened = if which == "primary" {
            open(&mut f)
        } else {
            open(HidePrimary(&mut f))
        };
        match opened {
            Ok(layout) => {
                if !errors.is_empty() {
                    log::warn!("{}: {}; using the backup GPT", image.display(), errors[0]);
                }
                return Ok(layout);
            }
            Err(e) => errors.push(format!("{which} GPT: {e}")),
        }
    }
    Err(bad(errors.join("; ")))
}

/// Checks the fields the `gpt` crate would panic or over-allocate on (it asserts 128-byte
/// entries and allocates the whole table) before it reads the header at `lba`, and that the
/// table is the size ours is.
fn precheck(f: &File, lba: u64) -> Result<(), String> {
    let mut h = [0u8; 92];
    f.read_exact_at(&mut h, lba * SECTOR)
        .map_err(|e| format!("reading it: {e}"))?;
    if &h[..8] != b"EFI PART" {
        return Err("no \"EFI PART\" signature".into());
    }
    let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    let (entries, entry_size) = (u32_at(80), u32_at(84));
    if u64::from(entry_size) != GPT_ENTRY_SIZE {
        return Err(format!(
            "entries of {entry_size} bytes (only {GPT_ENTRY_SIZE} is supported)"
        ));
    }
    // Ours always has 128 (the layout's regions assume it); refusing others also keeps a
    // hostile header from making the reader allocate gigabytes.
    if u64::from(entries) != GPT_ENTRIES {
        return Err(format!(
            "a table of {entries} entries (hostos images have {GPT_ENTRIES})"
        ));
    }
    Ok(())
}

fn open<D: Read + Write + Seek + std::fmt::Debug>(dev: D) -> Result<Layout, String> {
    let disk = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .open_from_device(dev)
        .map_err(|e| e.to_string())?;
    let header = disk
        .primary_header()
        .or_else(|_| disk.backup_header())
        .map_err(|e| e.to_string())?;
    let sectors = header
        .current_lba
        .max(header.backup_lba)
        .checked_add(1)
        .ok_or("the header's LBAs overflow")?;
    let mut partitions = Vec::new();
    for (&number, p) in disk.partitions() {
        let role = Role::from_label(&p.name).ok_or_else(|| {
            format!(
                "partition {number} is named {:?}, which is no hostos partition",
                p.name
            )
        })?;
        if role.number() != number {
            return Err(format!(
                "partition {number} is named {role}, which must be partition {}",
                role.number()
            ));
        }
        let type_guid = guid(&p.part_type_guid.guid);
        if type_guid != role.type_guid() {
            return Err(format!(
                "partition {number} ({role}) has type {type_guid}, not {}",
                role.type_guid()
            ));
        }
        // Between the primary table and the backup table, after the previous partition.
        let usable = (TABLE_SECTORS + 2)..sectors.saturating_sub(TABLE_SECTORS + 1);
        let previous_end = partitions
            .last()
            .map_or(0, |q: &PlacedPartition| q.end() / SECTOR);
        if p.last_lba < p.first_lba
            || !usable.contains(&p.first_lba)
            || !usable.contains(&p.last_lba)
            || p.first_lba < previous_end
        {
            return Err(format!(
                "partition {number} ({role}) spans LBA {} to {}, outside the usable sectors \
                 {} to {} or over the partition before it",
                p.first_lba,
                p.last_lba,
                usable.start,
                usable.end.saturating_sub(1)
            ));
        }
        partitions.push(PlacedPartition {
            role,
            guid: guid(&p.part_guid),
            offset: p.first_lba * SECTOR,
            size: (p.last_lba - p.first_lba + 1) * SECTOR,
            attributes: p.flags,
        });
    }
    let roles: Vec<Role> = partitions.iter().map(|p| p.role).collect();
    if roles != Role::ALL {
        let missing: Vec<&str> = Role::ALL
            .iter()
            .filter(|r| !roles.contains(r))
            .map(|r| r.label())
            .collect();
        return Err(format!("no {} partition", missing.join(", ")));
    }
    Ok(Layout {
        disk_guid: guid(disk.guid()),
        disk_size: sectors * SECTOR,
        partitions,
    })
}

/// A view of the image in which the primary GPT header reads as zeros, so the `gpt` crate
/// (which always prefers a valid primary) reads the backup header and table instead.
#[derive(Debug)]
struct HidePrimary<'a>(&'a mut File);

impl Read for HidePrimary<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let at = self.0.stream_position()?;
        let n = self.0.read(buf)?;
        let (start, end) = (SECTOR, 2 * SECTOR);
        let (from, to) = (at.max(start), (at + n as u64).min(end));
        if from < to {
            let (a, b) = (
                usize::try_from(from - at).unwrap_or(0),
                usize::try_from(to - at).unwrap_or(0),
            );
            buf[a..b].fill(0);
        }
        Ok(n)
    }
}

impl Seek for HidePrimary<'_> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.0.seek(pos)
    }
}

impl Write for HidePrimary<'_> {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the image is opened read-only",
        ))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
