//! GPT: reading the primary header and partition entry array, and, on a disk that became
//! larger than its image, moving the backup GPT to the new end and extending the last
//! partition to the new last usable block.
//!
//! Hand-written (about 300 lines with its CRC32) rather than the `gpt` crate (+46 KiB in init):
//! init needs only the two operations above.

use std::io;

use hostimg::Guid;

/// "EFI PART".
const SIGNATURE: &[u8; 8] = b"EFI PART";
/// The header fields this code reads and writes end here (UEFI 2.x: 92 bytes).
const MIN_HEADER_SIZE: usize = 92;
/// The entry fields this code reads and writes end here (UEFI: at least 128 bytes).
const MIN_ENTRY_SIZE: usize = 128;
/// No GPT of ours is larger; a header asking for more is not trusted.
const MAX_ENTRY_BYTES: usize = 1 << 20;

/// Byte-addressed access to a block device or, in tests, to a disk image in memory.
pub trait BlockIo {
    /// Fills `buf` from `offset`; a short read is an error.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Makes what was written durable (fsync).
    fn flush(&mut self) -> io::Result<()>;
}

#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("cannot read {what}")]
    Read {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {what}")]
    Write {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("no GPT (block 1 does not start with \"EFI PART\")")]
    NoSignature,
    #[error("the GPT header is malformed: {0}")]
    Malformed(String),
    #[error("the GPT header's CRC32 is {stored:#010x}, but its contents give {computed:#010x}")]
    HeaderCrc { stored: u32, computed: u32 },
    #[error(
        "the GPT partition entries' CRC32 is {stored:#010x}, but their contents give {computed:#010x}"
    )]
    EntriesCrc { stored: u32, computed: u32 },
    #[error(
        "the disk has {disk_blocks} blocks, fewer than its GPT says (backup header at block {backup})"
    )]
    DiskShrank { disk_blocks: u64, backup: u64 },
    #[error("no partition {0} in the GPT")]
    NoPartition(Guid),
    #[error(
        "partition {other} ends after partition {grow}, so {grow} cannot grow to the disk's end"
    )]
    NotLast { grow: u32, other: u32 },
}

/// One used entry of the partition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// 1-based, as the kernel numbers partitions.
    pub number: u32,
    pub type_guid: Guid,
    pub unique_guid: Guid,
    pub first_lba: u64,
    pub last_lba: u64,
}

impl Entry {
    pub fn blocks(&self) -> u64 {
        self.last_lba
            .saturating_sub(self.first_lba)
            .saturating_add(1)
    }
}

/// What [`Gpt::grow_last`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grown {
    pub number: u32,
    pub first_lba: u64,
    pub old_last_lba: u64,
    pub new_last_lba: u64,
}

/// A disk's GPT as read from its primary header.
#[derive(Debug, Clone)]
pub struct Gpt {
    /// Logical block size in bytes.
    block: u64,
    /// The primary header, `header_size` bytes.
    header: Vec<u8>,
    /// The whole entry array, `entries * entry_size` bytes.
    entries: Vec<u8>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn guid_at(b: &[u8], at: usize) -> Guid {
    let mut x = [0u8; 16];
    x.copy_from_slice(&b[at..at + 16]);
    Guid::from_gpt_bytes(x)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

// Header field offsets (UEFI 2.10 §5.3.2).
const H_SIZE: usize = 12;
const H_CRC: usize = 16;
const H_MY_LBA: usize = 24;
const H_ALTERNATE_LBA: usize = 32;
const H_LAST_USABLE: usize = 48;
const H_ENTRIES_LBA: usize = 72;
const H_ENTRY_COUNT: usize = 80;
const H_ENTRY_SIZE: usize = 84;
const H_ENTRIES_CRC: usize = 88;
// Entry field offsets.
const E_UNIQUE: usize = 16;
const E_FIRST: usize = 32;
const E_LAST: usize = 40;

impl Gpt {
    /// Reads and checks the primary GPT of a disk with `block`-byte logical blocks.
    pub fn read(io: &mut impl BlockIo, block: u64) -> Result<Gpt, GptError> {
        let block_len = usize::try_from(block)
            .ok()
            .filter(|b| *b >= 512 && b.is_power_of_two())
            .ok_or_else(|| GptError::Malformed(format!("logical block size {block}")))?;
        let mut first = vec![0u8; block_len];
        io.read_at(block, &mut first)
            .map_err(|source| GptError::Read {
                what: "the GPT header (block 1)",
                source,
            })?;
        if &first[..8] != SIGNATURE {
            return Err(GptError::NoSignature);
        }
        let size = u32_at(&first, H_SIZE) as usize;
        if !(MIN_HEADER_SIZE..=block_len).contains(&size) {
            return Err(GptError::Malformed(format!("header size {size}")));
        }
        let header = first[..size].to_vec();
        let stored = u32_at(&header, H_CRC);
        let computed = header_crc(&header);
        if stored != computed {
            return Err(GptError::HeaderCrc { stored, computed });
        }
        if u64_at(&header, H_MY_LBA) != 1 {
            return Err(GptError::Malformed(format!(
                "the primary header says it is at block {}",
                u64_at(&header, H_MY_LBA)
            )));
        }
        let count = u32_at(&header, H_ENTRY_COUNT) as usize;
        let entry_size = u32_at(&header, H_ENTRY_SIZE) as usize;
        let total = count.saturating_mul(entry_size);
        if entry_size < MIN_ENTRY_SIZE || !entry_size.is_multiple_of(8) || total > MAX_ENTRY_BYTES {
            return Err(GptError::Malformed(format!(
                "{count} entries of {entry_size} bytes"
            )));
        }
        let mut entries = vec![0u8; total];
        let at = u64_at(&header, H_ENTRIES_LBA).saturating_mul(block);
        io.read_at(at, &mut entries)
            .map_err(|source| GptError::Read {
                what: "the GPT partition entries",
                source,
            })?;
        let stored = u32_at(&header, H_ENTRIES_CRC);
        let computed = crc32(&entries);
        if stored != computed {
            return Err(GptError::EntriesCrc { stored, computed });
        }
        Ok(Gpt {
            block,
            header,
            entries,
        })
    }

    pub fn block_size(&self) -> u64 {
        self.block
    }

    /// The backup header's block, as the primary header records it.
    pub fn backup_lba(&self) -> u64 {
        u64_at(&self.header, H_ALTERNATE_LBA)
    }

    pub fn last_usable_lba(&self) -> u64 {
        u64_at(&self.header, H_LAST_USABLE)
    }

    fn entry_size(&self) -> usize {
        u32_at(&self.header, H_ENTRY_SIZE) as usize
    }

    /// The used entries (type GUID not nil), in table order.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries
            .chunks_exact(self.entry_size())
            .zip(1u32..)
            .map(|(e, number)| Entry {
                number,
                type_guid: guid_at(e, 0),
                unique_guid: guid_at(e, E_UNIQUE),
                first_lba: u64_at(e, E_FIRST),
                last_lba: u64_at(e, E_LAST),
            })
            .filter(|e| !e.type_guid.is_nil())
            .collect()
    }

    /// The entry whose unique GUID (PARTUUID) is `guid`.
    pub fn find(&self, guid: Guid) -> Option<Entry> {
        self.entries().into_iter().find(|e| e.unique_guid == guid)
    }

    /// Blocks the entry array takes on disk.
    fn entry_blocks(&self) -> u64 {
        (self.entries.len() as u64).div_ceil(self.block)
    }

    /// On a disk of `disk_blocks` blocks whose GPT ends earlier, moves the backup GPT to the
    /// disk's last blocks and extends partition `guid`, which must be the last one, to the new
    /// last usable block; writes backup first, then primary, then the protective MBR, and
    /// flushes. Returns `None` when the GPT already ends at the disk's end.
    pub fn grow_last(
        &mut self,
        io: &mut impl BlockIo,
        disk_blocks: u64,
        guid: Guid,
    ) -> Result<Option<Grown>, GptError> {
        let old_backup = self.backup_lba();
        let new_backup = disk_blocks.saturating_sub(1);
        if new_backup < old_backup {
            return Err(GptError::DiskShrank {
                disk_blocks,
                backup: old_backup,
            });
        }
        if new_backup == old_backup {
            return Ok(None);
        }
        let grow = self.find(guid).ok_or(GptError::NoPartition(guid))?;
        if let Some(other) = self
            .entries()
            .into_iter()
            .find(|e| e.number != grow.number && e.last_lba >= grow.last_lba)
        {
            return Err(GptError::NotLast {
                grow: grow.number,
                other: other.number,
            });
        }
        let backup_entries = new_backup - self.entry_blocks();
        let last_usable = backup_entries - 1;
        if last_usable <= grow.last_lba {
            return Ok(None);
        }

        let entry_size = self.entry_size();
        let at = (grow.number as usize - 1) * entry_size + E_LAST;
        put_u64(&mut self.entries, at, last_usable);
        let entries_crc = crc32(&self.entries);
        put_u64(&mut self.header, H_ALTERNATE_LBA, new_backup);
        put_u64(&mut self.header, H_LAST_USABLE, last_usable);
        put_u32(&mut self.header, H_ENTRIES_CRC, entries_crc);
        let crc = header_crc(&self.header);
        put_u32(&mut self.header, H_CRC, crc);

        let mut backup = self.header.clone();
        put_u64(&mut backup, H_MY_LBA, new_backup);
        put_u64(&mut backup, H_ALTERNATE_LBA, 1);
        put_u64(&mut backup, H_ENTRIES_LBA, backup_entries);
        let crc = header_crc(&backup);
        put_u32(&mut backup, H_CRC, crc);

        let block = self.block;
        let primary_entries = u64_at(&self.header, H_ENTRIES_LBA) * block;
        write(
            io,
            backup_entries * block,
            &self.entries,
            "the backup GPT entries",
        )?;
        write(
            io,
            new_backup * block,
            &pad(&backup, block),
            "the backup GPT header",
        )?;
        write(
            io,
            primary_entries,
            &self.entries,
            "the primary GPT entries",
        )?;
        write(
            io,
            block,
            &pad(&self.header, block),
            "the primary GPT header",
        )?;
        // The old backup header now lies inside the grown partition: clear it, so no tool
        // mistakes it for a GPT.
        let zeros = vec![0u8; self.header.len()];
        write(io, old_backup * block, &zeros, "the old backup GPT header")?;
        grow_protective_mbr(io, disk_blocks)?;
        io.flush().map_err(|source| GptError::Write {
            what: "the GPT (flush)",
            source,
        })?;
        Ok(Some(Grown {
            number: grow.number,
            first_lba: grow.first_lba,
            old_last_lba: grow.last_lba,
            new_last_lba: last_usable,
        }))
    }
}

fn write(io: &mut impl BlockIo, at: u64, data: &[u8], what: &'static str) -> Result<(), GptError> {
    io.write_at(at, data)
        .map_err(|source| GptError::Write { what, source })
}

/// A header padded with zeros to a whole block.
fn pad(header: &[u8], block: u64) -> Vec<u8> {
    let mut b = header.to_vec();
    b.resize(block as usize, 0);
    b
}

/// Makes the protective MBR's 0xEE partition cover the grown disk (as far as 32 bits reach).
/// A disk without one (a hybrid or no MBR) is left alone.
fn grow_protective_mbr(io: &mut impl BlockIo, disk_blocks: u64) -> Result<(), GptError> {
    let mut mbr = [0u8; 512];
    io.read_at(0, &mut mbr).map_err(|source| GptError::Read {
        what: "the protective MBR",
        source,
    })?;
    // First partition record at 446: type at +4, first LBA at +8, size at +12.
    let record = 446;
    if mbr[510..512] != [0x55, 0xaa] || mbr[record + 4] != 0xee || u32_at(&mbr, record + 8) != 1 {
        return Ok(());
    }
    let size = u32::try_from(disk_blocks - 1).unwrap_or(u32::MAX);
    put_u32(&mut mbr, record + 12, size);
    // The CHS end address of a partition past what CHS can express is all ones.
    mbr[record + 5..record + 8].copy_from_slice(&[0xff, 0xff, 0xff]);
    io.write_at(0, &mbr).map_err(|source| GptError::Write {
        what: "the protective MBR",
        source,
    })
}

fn header_crc(header: &[u8]) -> u32 {
    let mut h = header.to_vec();
    put_u32(&mut h, H_CRC, 0);
    crc32(&h)
}

/// CRC-32 (IEEE 802.3, reflected, as GPT uses), bit by bit: a 16 KiB entry array takes
/// well under a millisecond, and no table costs binary size.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xedb8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
#[path = "gpt_tests.rs"]
pub(crate) mod tests;
