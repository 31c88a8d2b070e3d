//! Everything in an image that would otherwise be random or the current time (disk and
//! partition GUIDs, filesystem UUIDs, the FAT volume ID, the verity salt, every timestamp) is
//! derived here from the build's inputs, so the same inputs give the same bytes.
//!
//! The seed is a SHA-256 over the inputs that decide the image's contents before the
//! identities exist: the rendered declaration, the arch, the kernel, init, the stub, the
//! payload's files and the trust keys, and `SOURCE_DATE_EPOCH`. The identities then go into
//! the UKI's command line and the filesystems, which is why the seed cannot include them.

use sha2::{Digest, Sha256};

use hostimg::Guid;

/// The time every timestamp in an image gets when `SOURCE_DATE_EPOCH` is not set:
/// 1980-01-01 00:00:00 UTC, the earliest date FAT can store.
pub const DEFAULT_EPOCH: i64 = 315_532_800;

/// `SOURCE_DATE_EPOCH` if set (a non-negative integer), else [`DEFAULT_EPOCH`].
pub fn epoch_from_env() -> anyhow::Result<i64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|e| *e >= 0)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "SOURCE_DATE_EPOCH={v:?} is not a non-negative whole number of seconds"
                )
            }),
        Err(_) => Ok(DEFAULT_EPOCH),
    }
}

/// Accumulates the inputs, then derives identities from them.
pub struct Seed(Sha256);

impl Seed {
    pub fn new() -> Seed {
        let mut h = Sha256::new();
        h.update(b"hostos-image-identity/1\0");
        Seed(h)
    }

    /// Adds one named input (length-prefixed, so no two input lists hash alike).
    pub fn input(&mut self, name: &str, bytes: &[u8]) {
        for part in [name.as_bytes(), bytes] {
            self.0.update((part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
    }

    pub fn finish(self) -> Identity {
        Identity(self.0.finalize().into())
    }
}

/// The derived identities of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity([u8; 32]);

impl Identity {
    fn derive(&self, what: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(what.as_bytes());
        h.finalize().into()
    }

    /// A GUID for `what` (`"disk"`, a partition label, `"payload-fs"`, ...).
    pub fn guid(&self, what: &str) -> Guid {
        let d = self.derive(what);
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        Guid::from_hash(&b)
    }

    /// 32 bytes for `what` (the verity salt).
    pub fn bytes(&self, what: &str) -> [u8; 32] {
        self.derive(what)
    }

    /// The FAT volume ID.
    pub fn volume_id(&self) -> u32 {
        let d = self.derive("esp-volume-id");
        u32::from_le_bytes([d[0], d[1], d[2], d[3]])
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_inputs_give_the_same_identities_and_any_change_gives_others() {
        let make = |inputs: &[(&str, &[u8])]| {
            let mut s = Seed::new();
            for (n, b) in inputs {
                s.input(n, b);
            }
            s.finish()
        };
        let a = make(&[("kernel", b"k"), ("init", b"i")]);
        assert_eq!(a, make(&[("kernel", b"k"), ("init", b"i")]));
        assert_ne!(a, make(&[("kernel", b"k"), ("init", b"j")]));
        // Moving a byte between inputs changes the seed (length prefixes).
        assert_ne!(a, make(&[("kernel", b"ki"), ("init", b"")]));
        assert_ne!(a.guid("disk"), a.guid("esp"));
        assert_eq!(a.guid("disk"), a.guid("disk"));
    }
}
