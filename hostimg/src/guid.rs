//! GUIDs as GPT stores them, and the partition type GUIDs of the image.

use std::fmt;
use std::str::FromStr;

/// EFI System Partition.
pub const ESP: Guid = Guid::from_fields(
    0xc12a7328,
    0xf81f,
    0x11d2,
    [0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b],
);
/// Discoverable Partitions Specification: `/var`.
pub const DPS_VAR: Guid = Guid::from_fields(
    0x4d21b016,
    0xb534,
    0x45c2,
    [0xa9, 0xfb, 0x5c, 0x16, 0xe0, 0x91, 0xfd, 0x2d],
);
/// Ours: a hostos payload slot (erofs + dm-verity hash tree in one partition).
pub const PAYLOAD: Guid = Guid::from_fields(
    0x9dda3431,
    0x307c,
    0x4d03,
    [0xa1, 0x44, 0x19, 0x64, 0xc7, 0x70, 0x10, 0x95],
);
/// Ours: the hostos signed image manifest.
pub const MANIFEST: Guid = Guid::from_fields(
    0x6df834d8,
    0x2df0,
    0x4d14,
    [0x81, 0x1a, 0x40, 0xf6, 0xb2, 0x3e, 0x83, 0xaf],
);

/// A GUID in its textual form's field order. `to_gpt_bytes`/`from_gpt_bytes` convert to the
/// mixed-endian layout GPT stores on disk (first three fields little-endian).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid {
    d1: u32,
    d2: u16,
    d3: u16,
    d4: [u8; 8],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a GUID (expected 8-4-4-4-12 hex digits)")]
pub struct GuidParseError(pub String);

impl Guid {
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        Guid { d1, d2, d3, d4 }
    }

    /// The big-endian (RFC 4122) byte order, as the text reads.
    pub fn to_be_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.d1.to_be_bytes());
        b[4..6].copy_from_slice(&self.d2.to_be_bytes());
        b[6..8].copy_from_slice(&self.d3.to_be_bytes());
        b[8..].copy_from_slice(&self.d4);
        b
    }

    pub fn from_be_bytes(b: [u8; 16]) -> Guid {
        let mut d4 = [0u8; 8];
        d4.copy_from_slice(&b[8..]);
        Guid {
            d1: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            d2: u16::from_be_bytes([b[4], b[5]]),
            d3: u16::from_be_bytes([b[6], b[7]]),
            d4,
        }
    }

    /// GPT's on-disk byte order.
    pub fn to_gpt_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.d1.to_le_bytes());
        b[4..6].copy_from_slice(&self.d2.to_le_bytes());
        b[6..8].copy_from_slice(&self.d3.to_le_bytes());
        b[8..].copy_from_slice(&self.d4);
        b
    }

    pub fn from_gpt_bytes(b: [u8; 16]) -> Guid {
        let mut d4 = [0u8; 8];
        d4.copy_from_slice(&b[8..]);
        Guid {
            d1: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            d2: u16::from_le_bytes([b[4], b[5]]),
            d3: u16::from_le_bytes([b[6], b[7]]),
            d4,
        }
    }

    /// A version-4-shaped GUID (RFC 4122 variant) made from 16 bytes of a hash, so GUIDs
    /// derived from the build's inputs look like the random ones tools expect.
    pub fn from_hash(h: &[u8; 16]) -> Guid {
        let mut b = *h;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Guid::from_be_bytes(b)
    }

    pub fn is_nil(self) -> bool {
        self.to_be_bytes() == [0u8; 16]
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d4 = &self.d4;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            self.d1, self.d2, self.d3, d4[0], d4[1], d4[2], d4[3], d4[4], d4[5], d4[6], d4[7]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Guid {
    type Err = GuidParseError;
    fn from_str(s: &str) -> Result<Guid, GuidParseError> {
        let err = || GuidParseError(s.chars().take(64).collect());
        let groups: Vec<&str> = s.split('-').collect();
        let lens = [8, 4, 4, 4, 12];
        if groups.len() != 5
            || groups
                .iter()
                .zip(lens)
                .any(|(g, n)| g.len() != n || !g.bytes().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(err());
        }
        let hex: String = groups.concat();
        let mut b = [0u8; 16];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| err())?;
        }
        Ok(Guid::from_be_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_gpt_order_swaps_the_first_three_fields() {
        let g: Guid = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b".parse().unwrap();
        assert_eq!(g, ESP);
        assert_eq!(g.to_string(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        let on_disk = g.to_gpt_bytes();
        assert_eq!(&on_disk[..4], &[0x28, 0x73, 0x2a, 0xc1]);
        assert_eq!(Guid::from_gpt_bytes(on_disk), g);
    }

    #[test]
    fn malformed_text_is_refused() {
        for s in [
            "",
            "c12a7328f81f11d2ba4b00a0c93ec93b",
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93",
            "g12a7328-f81f-11d2-ba4b-00a0c93ec93b",
        ] {
            assert!(s.parse::<Guid>().is_err(), "{s}");
        }
    }

    #[test]
    fn hash_derived_guids_carry_version_4_and_the_rfc_variant() {
        let g = Guid::from_hash(&[0xff; 16]);
        let s = g.to_string();
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
    }
}
