//! The fixed VHD footer (Microsoft's VHD specification, as Azure reads it): 512 big-endian bytes
//! appended to the raw image. Written by us because `qemu-img`'s carries the wall-clock time and
//! a random unique id.

use sha2::{Digest, Sha256};

/// Size of the footer, which is also the whole of a fixed VHD's metadata.
pub const FOOTER_LEN: usize = 512;
/// 2000-01-01T00:00:00Z, the VHD timestamp's origin, in Unix seconds.
const VHD_EPOCH: i64 = 946_684_800;
/// CHS geometry at its maximum (65535 cylinders, 16 heads, 255 sectors). qemu reads a disk
/// with this geometry by its "current size" whatever program wrote it; Hyper-V and Azure always
/// do. See [`footer`] for why the spec's CHS algorithm is not used.
const MAX_GEOMETRY: (u16, u8, u8) = (65535, 16, 255);
/// Ours ("hostos builder"), in the creator application field; the spec leaves it to the writer.
const CREATOR_APP: &[u8; 4] = b"hosb";
/// "Wi2k": the spec knows only Windows and Mac hosts; qemu and Hyper-V write this one.
const CREATOR_HOST: &[u8; 4] = b"Wi2k";
const DISK_TYPE_FIXED: u32 = 2;

/// The footer of a fixed VHD whose data is `size` bytes (the caller checks it is a whole MiB).
///
/// - `timestamp`: `epoch` as seconds since 2000, saturated to the field's range (an epoch of 0,
///   "no time", becomes 0).
/// - geometry: the maximum, as `qemu-img convert -O vpc -o force_size` writes. The spec's CHS
///   algorithm rounds most sizes down (1 GiB becomes 2080·16·63 sectors, 1023.75 MiB), and a
///   reader that believes the geometry, as qemu does for a creator it does not know, then sees
///   a disk that ends before the backup GPT. The maximum geometry tells every reader to use
///   the size field, which Azure requires to be exact anyway.
/// - unique id: the first 16 bytes of SHA-256 over `name_seed`, marked as a version 4 UUID.
pub fn footer(size: u64, epoch: i64, name_seed: &[u8]) -> [u8; FOOTER_LEN] {
    let mut f = [0u8; FOOTER_LEN];
    f[0..8].copy_from_slice(b"conectix");
    // Features: bit 1 ("reserved") must always be set.
    f[8..12].copy_from_slice(&2u32.to_be_bytes());
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    // Data offset: none, a fixed disk has no dynamic header.
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
    f[24..28].copy_from_slice(&timestamp(epoch).to_be_bytes());
    f[28..32].copy_from_slice(CREATOR_APP);
    f[32..36].copy_from_slice(&creator_version().to_be_bytes());
    f[36..40].copy_from_slice(CREATOR_HOST);
    f[40..48].copy_from_slice(&size.to_be_bytes());
    f[48..56].copy_from_slice(&size.to_be_bytes());
    let (c, h, s) = MAX_GEOMETRY;
    f[56..58].copy_from_slice(&c.to_be_bytes());
    f[58] = h;
    f[59] = s;
    f[60..64].copy_from_slice(&DISK_TYPE_FIXED.to_be_bytes());
    f[68..84].copy_from_slice(&unique_id(name_seed));
    // Saved state (84) and the reserved rest stay zero.
    let sum = checksum(&f);
    f[64..68].copy_from_slice(&sum.to_be_bytes());
    f
}

/// One's complement of the byte sum of the footer, its checksum field counted as zero.
pub fn checksum(footer: &[u8; FOOTER_LEN]) -> u32 {
    let sum = footer
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |acc, (_, &b)| acc.wrapping_add(u32::from(b)));
    !sum
}

fn timestamp(epoch: i64) -> u32 {
    let since_2000 = epoch.saturating_sub(VHD_EPOCH).max(0);
    u32::try_from(since_2000).unwrap_or(u32::MAX)
}

/// The builder's version as the spec's major.minor (high and low 16 bits).
fn creator_version() -> u32 {
    let part = |s: &str| s.parse::<u16>().map(u32::from).unwrap_or(0);
    (part(env!("CARGO_PKG_VERSION_MAJOR")) << 16) | part(env!("CARGO_PKG_VERSION_MINOR"))
}

fn unique_id(name_seed: &[u8]) -> [u8; 16] {
    let digest = Sha256::digest(name_seed);
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    // Version 4 and the RFC 4122 variant, like the other GUIDs derived from the build's inputs.
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_fields_are_big_endian_at_the_spec_offsets() {
        let size = 3 << 20;
        let f = footer(size, VHD_EPOCH + 0x0102_0304, b"seed");
        assert_eq!(&f[0..8], b"conectix");
        assert_eq!(f[8..12], [0, 0, 0, 2]);
        assert_eq!(f[12..16], [0, 1, 0, 0]);
        assert_eq!(f[16..24], [0xff; 8]);
        assert_eq!(f[24..28], [1, 2, 3, 4]);
        assert_eq!(&f[36..40], b"Wi2k");
        assert_eq!(f[40..48], size.to_be_bytes());
        assert_eq!(f[48..56], size.to_be_bytes());
        assert_eq!(f[56..60], [0xff, 0xff, 16, 255]);
        assert_eq!(f[60..64], [0, 0, 0, 2]);
        assert_eq!(f[84..], [0u8; 428]);
    }

    #[test]
    fn checksum_is_the_complement_of_the_byte_sum() {
        let f = footer(1 << 20, 0, b"x");
        let sum: u32 = f[..64].iter().chain(&f[68..]).map(|&b| u32::from(b)).sum();
        assert_eq!(u32::from_be_bytes([f[64], f[65], f[66], f[67]]), !sum);
    }

    #[test]
    fn unique_id_follows_the_seed_and_only_the_seed() {
        let a = footer(1 << 20, 0, b"one");
        let b = footer(2 << 20, 5, b"one");
        let c = footer(1 << 20, 0, b"two");
        assert_eq!(a[68..84], b[68..84]);
        assert_ne!(a[68..84], c[68..84]);
        assert_eq!(a[74] >> 4, 4, "version 4");
        assert_eq!(a[76] >> 6, 0b10, "RFC variant");
    }

    #[test]
    fn timestamps_before_2000_saturate_to_zero() {
        assert_eq!(timestamp(0), 0);
        assert_eq!(timestamp(VHD_EPOCH - 1), 0);
        assert_eq!(timestamp(VHD_EPOCH + 7), 7);
        assert_eq!(timestamp(i64::MAX), u32::MAX);
    }
}
