//! Growing the data partition for the kernel and its ext4 online: `BLKPG_RESIZE_PARTITION` on
//! the whole disk after the GPT was rewritten, then `EXT4_IOC_RESIZE_FS` on the mounted
//! filesystem, the same two steps `resize2fs` on a mounted filesystem and systemd-growfs take.

use std::os::fd::AsRawFd;

use nix::errno::Errno;

/// `BLKPG`: `_IO(0x12, 105)`.
const BLKPG: u8 = 105;
/// `BLKPG_RESIZE_PARTITION`.
const BLKPG_RESIZE_PARTITION: i32 = 3;

/// `struct blkpg_partition` (`linux/blkpg.h`): byte offsets and lengths.
#[repr(C)]
pub struct BlkpgPartition {
    pub start: i64,
    pub length: i64,
    pub pno: i32,
    pub devname: [u8; 64],
    pub volname: [u8; 64],
}

/// `struct blkpg_ioctl_arg`.
#[repr(C)]
pub struct BlkpgArg {
    pub op: i32,
    pub flags: i32,
    pub datalen: i32,
    pub data: *mut BlkpgPartition,
}

/// Builds the BLKPG argument telling the kernel partition `pno` now spans `length` bytes
/// from byte `start` (which must be where it already starts).
pub fn resize_partition_arg(pno: u32, start: u64, length: u64) -> Option<BlkpgPartition> {
    Some(BlkpgPartition {
        start: i64::try_from(start).ok()?,
        length: i64::try_from(length).ok()?,
        pno: i32::try_from(pno).ok()?,
        devname: [0; 64],
        volname: [0; 64],
    })
}

/// `ioctl(disk, BLKPG, {BLKPG_RESIZE_PARTITION, ...})`.
pub fn resize_partition(
    disk: &impl AsRawFd,
    pno: u32,
    start: u64,
    length: u64,
) -> Result<(), Errno> {
    let mut part = resize_partition_arg(pno, start, length).ok_or(Errno::EOVERFLOW)?;
    let mut arg = BlkpgArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as i32,
        data: &mut part,
    };
    let request = nix::request_code_none!(0x12, BLKPG);
    // SAFETY: `arg` and the partition it points to are live, correctly laid out (`repr(C)`
    // mirrors linux/blkpg.h) for the whole call; the kernel only reads them.
    let rc = unsafe {
        nix::libc::ioctl(
            disk.as_raw_fd(),
            request as nix::sys::ioctl::ioctl_num_type,
            &mut arg,
        )
    };
    Errno::result(rc).map(drop)
}

/// `EXT4_IOC_RESIZE_FS`: `_IOW('f', 16, __u64)`, the new block count.
pub fn ext4_resize_request() -> u64 {
    nix::request_code_write!(b'f', 16, std::mem::size_of::<u64>()) as u64
}

/// `ioctl(fd on the mounted fs, EXT4_IOC_RESIZE_FS, &blocks)`.
pub fn resize_ext4(mounted: &impl AsRawFd, blocks: u64) -> Result<(), Errno> {
    let request = nix::request_code_write!(b'f', 16, std::mem::size_of::<u64>());
    // SAFETY: the argument is a live u64 the kernel reads; the fd is open for the call.
    let rc = unsafe {
        nix::libc::ioctl(
            mounted.as_raw_fd(),
            request as nix::sys::ioctl::ioctl_num_type,
            &blocks,
        )
    };
    Errno::result(rc).map(drop)
}

/// Where the ext4 superblock starts, and how much of it is read.
pub const EXT4_SUPERBLOCK_OFFSET: u64 = 1024;
pub const EXT4_SUPERBLOCK_LEN: usize = 1024;

/// The size of an ext4 filesystem, from its superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ext4Size {
    pub block_size: u64,
    pub blocks: u64,
}

impl Ext4Size {
    pub fn bytes(&self) -> u64 {
        self.block_size.saturating_mul(self.blocks)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Ext4Error {
    #[error("no ext4 superblock (magic {0:#06x}, expected 0xef53)")]
    Magic(u16),
    #[error("the ext4 superblock gives block size 1024 << {0}")]
    BlockSize(u32),
}

/// Reads the block size and block count from the 1024 superblock bytes.
pub fn parse_ext4_superblock(sb: &[u8; EXT4_SUPERBLOCK_LEN]) -> Result<Ext4Size, Ext4Error> {
    let u32_at = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
    let magic = u16::from_le_bytes([sb[0x38], sb[0x39]]);
    if magic != 0xef53 {
        return Err(Ext4Error::Magic(magic));
    }
    let log = u32_at(0x18);
    if log > 6 {
        return Err(Ext4Error::BlockSize(log));
    }
    // INCOMPAT_64BIT: the block count's upper half is at 0x150.
    let high = if u32_at(0x60) & 0x80 != 0 {
        u64::from(u32_at(0x150))
    } else {
        0
    };
    Ok(Ext4Size {
        block_size: 1024 << log,
        blocks: (high << 32) | u64::from(u32_at(0x4)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkpg_structs_match_the_kernels_layout() {
        assert_eq!(std::mem::size_of::<BlkpgPartition>(), 152);
        assert_eq!(std::mem::offset_of!(BlkpgPartition, pno), 16);
        assert_eq!(std::mem::offset_of!(BlkpgArg, data), 16);
        let p = resize_partition_arg(5, 1 << 20, 3 << 20).unwrap();
        assert_eq!((p.pno, p.start, p.length), (5, 1 << 20, 3 << 20));
        assert!(resize_partition_arg(5, u64::MAX, 1).is_none());
        assert_eq!(nix::request_code_none!(0x12, BLKPG), 0x1269);
    }

    #[test]
    fn ext4_resize_request_is_iow_f_16_u64() {
        assert_eq!(ext4_resize_request(), 0x4008_6610);
    }

    #[test]
    fn superblock_gives_size_with_and_without_64bit() {
        let mut sb = [0u8; EXT4_SUPERBLOCK_LEN];
        sb[0x38..0x3a].copy_from_slice(&0xef53u16.to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes());
        sb[0x4..0x8].copy_from_slice(&16384u32.to_le_bytes());
        sb[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        let size = parse_ext4_superblock(&sb).unwrap();
        assert_eq!(
            size,
            Ext4Size {
                block_size: 4096,
                blocks: 16384
            }
        );
        assert_eq!(size.bytes(), 64 << 20);
        sb[0x60] = 0x80;
        assert_eq!(
            parse_ext4_superblock(&sb).unwrap().blocks,
            (1 << 32) + 16384
        );
        sb[0x38] = 0;
        assert_eq!(parse_ext4_superblock(&sb), Err(Ext4Error::Magic(0xef00)));
    }
}
