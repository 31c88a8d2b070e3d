//! The boot parameters the builder writes into the UKI's command line and init reads from
//! `/proc/cmdline`. Because the command line is a section of the (signed) UKI, these pin the
//! payload: its partition, its size, and the dm-verity root hash over every one of its blocks.
//!
//! ```text
//! hostos.payload=<PARTUUID of slot A> hostos.verity=<data blocks>:<root hash hex>:<salt hex>
//! hostos.data=<PARTUUID of the data partition>
//! ```
//!
//! The payload partition holds `data blocks` 4 KiB blocks of erofs, then a dm-verity
//! superblock (version 1, sha256, as `veritysetup format` writes), then the hash tree: the
//! hash device is the same partition, its tree starting at block `data blocks + 1`.

use std::fmt;

use crate::guid::Guid;

/// Command-line keys.
pub const KEY_PAYLOAD: &str = "hostos.payload";
pub const KEY_VERITY: &str = "hostos.verity";
pub const KEY_DATA: &str = "hostos.data";

/// dm-verity parameters of payload slot A (sha256, 4 KiB data and hash blocks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityParams {
    /// Number of 4 KiB data blocks (the erofs image, padded).
    pub data_blocks: u64,
    /// sha256 root hash, 32 bytes.
    pub root_hash: [u8; 32],
    /// Salt, prepended to every block before hashing (veritysetup format 1); up to 256 bytes.
    pub salt: Vec<u8>,
}

impl VerityParams {
    /// The first block of the hash tree on the hash device (after the superblock).
    pub fn hash_start_block(&self) -> u64 {
        self.data_blocks + 1
    }

    /// The device-mapper table line for a `verity` target over `dev` (e.g. `"254:2"`), with
    /// data and hash on the same device.
    pub fn dm_table(&self, dev: &str) -> String {
        format!(
            "0 {} verity 1 {dev} {dev} 4096 4096 {} {} sha256 {} {}",
            self.data_blocks * 8,
            self.data_blocks,
            self.hash_start_block(),
            hex(&self.root_hash),
            if self.salt.is_empty() {
                "-".to_string()
            } else {
                hex(&self.salt)
            },
        )
    }
}

/// What the command line tells init about the disk it booted from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootParams {
    pub payload: Guid,
    pub verity: VerityParams,
    pub data: Guid,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BootParamsError {
    #[error(
        "the kernel command line has no {0}= (this kernel was not booted from a hostos disk image)"
    )]
    Missing(&'static str),
    #[error("the kernel command line has {0}= more than once")]
    Repeated(&'static str),
    #[error("{key}={value:?} on the kernel command line: {reason}")]
    Bad {
        key: &'static str,
        value: String,
        reason: String,
    },
}

impl BootParams {
    /// The `key=value` words to put on the command line, space-separated.
    pub fn to_cmdline(&self) -> String {
        format!(
            "{KEY_PAYLOAD}={} {KEY_VERITY}={}:{}:{} {KEY_DATA}={}",
            self.payload,
            self.verity.data_blocks,
            hex(&self.verity.root_hash),
            hex(&self.verity.salt),
            self.data
        )
    }

    /// Whether the command line asks for a disk image at all (any of our keys present).
    pub fn present_in(cmdline: &str) -> bool {
        words(cmdline).any(|(k, _)| k == KEY_PAYLOAD || k == KEY_VERITY || k == KEY_DATA)
    }

    /// Reads the parameters from a kernel command line (`/proc/cmdline`).
    pub fn parse(cmdline: &str) -> Result<BootParams, BootParamsError> {
        let payload = one(cmdline, KEY_PAYLOAD)?;
        let verity = one(cmdline, KEY_VERITY)?;
        let data = one(cmdline, KEY_DATA)?;
        let bad = |key, value: &str, reason: &str| BootParamsError::Bad {
            key,
            value: value.chars().take(200).collect(),
            reason: reason.to_string(),
        };
        let guid = |key, v: &str| v.parse::<Guid>().map_err(|e| bad(key, v, &e.to_string()));
        let mut parts = verity.split(':');
        let (Some(blocks), Some(root), Some(salt), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad(
                KEY_VERITY,
                verity,
                "expected <data blocks>:<root hash>:<salt>",
            ));
        };
        let data_blocks = blocks
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0 && *n < u64::MAX / 8 - 1)
            .ok_or_else(|| {
                bad(
                    KEY_VERITY,
                    verity,
                    "the data block count is not a positive number",
                )
            })?;
        let root = unhex(root)
            .filter(|r| r.len() == 32)
            .ok_or_else(|| bad(KEY_VERITY, verity, "the root hash is not 64 hex digits"))?;
        let salt = unhex(salt)
            .filter(|s| s.len() <= 256)
            .ok_or_else(|| bad(KEY_VERITY, verity, "the salt is not at most 512 hex digits"))?;
        let mut root_hash = [0u8; 32];
        root_hash.copy_from_slice(&root);
        Ok(BootParams {
            payload: guid(KEY_PAYLOAD, payload)?,
            verity: VerityParams {
                data_blocks,
                root_hash,
                salt,
            },
            data: guid(KEY_DATA, data)?,
        })
    }
}

impl fmt::Display for BootParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_cmdline())
    }
}

fn words(cmdline: &str) -> impl Iterator<Item = (&str, &str)> {
    cmdline
        .split_ascii_whitespace()
        .map(|w| w.split_once('=').unwrap_or((w, "")))
}

fn one<'a>(cmdline: &'a str, key: &'static str) -> Result<&'a str, BootParamsError> {
    let mut found = words(cmdline).filter(|(k, _)| *k == key).map(|(_, v)| v);
    let v = found.next().ok_or(BootParamsError::Missing(key))?;
    if found.next().is_some() {
        return Err(BootParamsError::Repeated(key));
    }
    Ok(v)
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Hex to bytes; `None` unless every digit is hex and the count is even.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|d| u8::from_str_radix(d, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BootParams {
        BootParams {
            payload: "11111111-2222-4333-8444-555555555555".parse().unwrap(),
            verity: VerityParams {
                data_blocks: 10,
                root_hash: [0xab; 32],
                salt: vec![1, 2, 3],
            },
            data: "66666666-7777-4888-9999-000000000000".parse().unwrap(),
        }
    }

    #[test]
    fn command_line_round_trips_among_other_words() {
        let p = sample();
        let line = format!("console=ttyS0 panic=-1 {} quiet", p.to_cmdline());
        assert!(BootParams::present_in(&line));
        assert_eq!(BootParams::parse(&line).unwrap(), p);
    }

    #[test]
    fn dm_table_puts_the_tree_after_the_superblock() {
        assert_eq!(
            sample().verity.dm_table("254:2"),
            format!(
                "0 80 verity 1 254:2 254:2 4096 4096 10 11 sha256 {} 010203",
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn missing_repeated_and_malformed_values_are_named() {
        assert!(!BootParams::present_in("console=ttyS0"));
        assert_eq!(
            BootParams::parse("console=ttyS0"),
            Err(BootParamsError::Missing(KEY_PAYLOAD))
        );
        let p = sample().to_cmdline();
        let twice = format!("{p} {KEY_DATA}=66666666-7777-4888-9999-000000000000");
        assert_eq!(
            BootParams::parse(&twice),
            Err(BootParamsError::Repeated(KEY_DATA))
        );
        for bad in [
            p.replace(":010203", ""),
            p.replace("10:", "0:"),
            p.replace(&"ab".repeat(32), "abc"),
            p.replace("11111111-", "1111111x-"),
        ] {
            let e = BootParams::parse(&bad).unwrap_err();
            assert!(matches!(e, BootParamsError::Bad { .. }), "{bad}: {e}");
        }
    }
}
