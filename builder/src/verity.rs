//! The dm-verity hash tree of a payload partition, computed here over `sha2` so that no tool
//! is needed to build an image: format 1 (salt prepended to every hashed block), sha256, 4 KiB
//! data and hash blocks, byte for byte what `veritysetup format` 2.6 writes, superblock
//! included. `veritysetup` remains the test oracle.
//!
//! The tree: level 0 holds the digest of every data block, packed 128 to a 4 KiB hash block and
//! zero-padded; each further level holds the digests of the level below, until a level fits in
//! one block. The root hash is the digest of that top block. On disk the levels are stored top
//! first, leaves last, after the superblock. With a single data block there are no levels: the
//! root hash is that block's digest, and the hash area is the superblock alone.

// Until the disk image (image.rs) uses it.

use hostimg::{Guid, VERITY_BLOCK, VerityParams};
use sha2::{Digest, Sha256};

const BLOCK: usize = VERITY_BLOCK as usize;
const DIGEST: usize = 32;
/// Digests per hash block (4096 / 32, already a power of two as the format requires).
const FANOUT: usize = BLOCK / DIGEST;
/// The largest salt the superblock can carry.
pub const MAX_SALT: usize = 256;

/// A computed tree: the parameters that go on the command line, and the bytes to write right
/// after the data blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityTree {
    pub params: VerityParams,
    /// The superblock block (4096 bytes) followed by the tree levels: exactly what
    /// `veritysetup format --hash-offset=<data length>` writes after the data.
    pub hash_area: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerityError {
    #[error("dm-verity data of {0} bytes: it must be a non-zero multiple of {BLOCK} bytes")]
    DataLength(usize),
    #[error("dm-verity salt of {0} bytes: the superblock holds at most {MAX_SALT}")]
    SaltTooLong(usize),
}

/// Computes the hash tree over `data` (a whole number of 4 KiB blocks) with `salt`, and the
/// superblock carrying `uuid` (veritysetup's `--uuid`; the kernel never reads it).
pub fn build(data: &[u8], salt: &[u8], uuid: Guid) -> Result<VerityTree, VerityError> {
    if data.is_empty() || !data.len().is_multiple_of(BLOCK) {
        return Err(VerityError::DataLength(data.len()));
    }
    if salt.len() > MAX_SALT {
        return Err(VerityError::SaltTooLong(salt.len()));
    }
    // Every digest starts from the salt: hash it once and clone the state.
    let mut salted = Sha256::new();
    salted.update(salt);
    let digest =
        |block: &[u8]| -> [u8; DIGEST] { salted.clone().chain_update(block).finalize().into() };

    // levels[0] = leaves; each level is a whole number of zero-padded hash blocks.
    let mut levels: Vec<Vec<u8>> = Vec::new();
    let mut below: &[u8] = data;
    while below.len() > BLOCK {
        let mut level = Vec::with_capacity(below.len() / FANOUT + BLOCK);
        for block in below.chunks_exact(BLOCK) {
            level.extend_from_slice(&digest(block));
        }
        level.resize(level.len().div_ceil(BLOCK) * BLOCK, 0);
        levels.push(level);
        below = levels.last().map_or(&[][..], Vec::as_slice);
    }
    // `below` is now one block: the top level, or the only data block.
    let root_hash = digest(below);

    let data_blocks = (data.len() / BLOCK) as u64;
    let tree_len: usize = levels.iter().map(Vec::len).sum();
    let mut hash_area = Vec::with_capacity(BLOCK + tree_len);
    hash_area.extend_from_slice(&superblock(data_blocks, salt, uuid));
    hash_area.resize(BLOCK, 0);
    for level in levels.iter().rev() {
        hash_area.extend_from_slice(level);
    }
    Ok(VerityTree {
        params: VerityParams {
            data_blocks,
            root_hash,
            salt: salt.to_vec(),
        },
        hash_area,
    })
}

/// The 512-byte on-disk superblock (cryptsetup's `struct verity_sb`), little-endian.
fn superblock(data_blocks: u64, salt: &[u8], uuid: Guid) -> [u8; 512] {
    let mut sb = [0u8; 512];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        sb[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(b"verity\0\0");
    put(&1u32.to_le_bytes()); // superblock version
    put(&1u32.to_le_bytes()); // hash type: 1 = salt first (0 is Chrome OS's)
    put(&uuid.to_be_bytes());
    let mut algorithm = [0u8; 32];
    algorithm[..6].copy_from_slice(b"sha256");
    put(&algorithm);
    put(&(BLOCK as u32).to_le_bytes()); // data block size
    put(&(BLOCK as u32).to_le_bytes()); // hash block size
    put(&data_blocks.to_le_bytes());
    // The salt length fits: build() refused anything over MAX_SALT (256).
    put(&(salt.len() as u16).to_le_bytes());
    put(&[0u8; 6]);
    put(salt); // then zeros to 512: the rest of salt[256] and the padding
    sb
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    use crate::tools;

    const UUID: &str = "11111111-2222-4333-8444-555555555555";

    fn uuid() -> Guid {
        UUID.parse().unwrap()
    }

    /// Deterministic, non-repeating data: every block differs.
    fn data(blocks: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(blocks * BLOCK);
        let mut x: u32 = 0x9e37_79b9;
        while out.len() < blocks * BLOCK {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            out.extend_from_slice(&x.to_le_bytes());
        }
        out
    }

    fn veritysetup(args: &[&str], file: &Path) -> std::process::Output {
        tools::require(&[tools::VERITYSETUP], &[]).unwrap();
        Command::new(tools::VERITYSETUP.program)
            .args(args)
            .arg(file)
            .arg(file)
            .output()
            .unwrap()
    }

    /// Runs `veritysetup format` on the same bytes in one file, data then hash area, and
    /// returns (root hash, the bytes it wrote after the data).
    fn reference(data: &[u8], salt: &[u8]) -> ([u8; 32], Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("part");
        std::fs::write(&file, data).unwrap();
        let blocks = data.len() / BLOCK;
        let salt_hex = if salt.is_empty() {
            "-".to_string()
        } else {
            hostimg::boot_params::hex(salt)
        };
        let out = veritysetup(
            &[
                "format",
                &format!("--salt={salt_hex}"),
                &format!("--uuid={UUID}"),
                &format!("--data-blocks={blocks}"),
                &format!("--hash-offset={}", data.len()),
            ],
            &file,
        );
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let root = text
            .lines()
            .find_map(|l| l.strip_prefix("Root hash:"))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no root hash in {text}"));
        let root = hostimg::boot_params::unhex(root).unwrap();
        let written = std::fs::read(&file).unwrap();
        (root.try_into().unwrap(), written[data.len()..].to_vec())
    }

    fn assert_matches_veritysetup(blocks: usize, salt: &[u8]) {
        let d = data(blocks);
        let ours = build(&d, salt, uuid()).unwrap();
        let (root, area) = reference(&d, salt);
        assert_eq!(
            hostimg::boot_params::hex(&ours.params.root_hash),
            hostimg::boot_params::hex(&root),
            "root hash, {blocks} blocks"
        );
        assert_eq!(
            ours.hash_area.len(),
            area.len(),
            "hash area, {blocks} blocks"
        );
        assert!(ours.hash_area == area, "hash area bytes, {blocks} blocks");
        assert_eq!(ours.params.data_blocks, blocks as u64);
    }

    #[test]
    fn one_block_has_no_levels_and_matches_veritysetup() {
        assert_matches_veritysetup(1, b"salt");
        assert_eq!(build(&data(1), b"", uuid()).unwrap().hash_area.len(), BLOCK);
    }

    #[test]
    fn a_full_leaf_block_and_one_past_it_match_veritysetup() {
        // 128 digests fill one hash block (one level); 129 need a second level.
        assert_matches_veritysetup(128, &[0xa5; 32]);
        assert_matches_veritysetup(129, &[0xa5; 32]);
        assert_eq!(
            build(&data(128), b"", uuid()).unwrap().hash_area.len(),
            2 * BLOCK
        );
        assert_eq!(
            build(&data(129), b"", uuid()).unwrap().hash_area.len(),
            (1 + 1 + 2) * BLOCK
        );
    }

    #[test]
    fn three_levels_an_empty_salt_and_the_longest_salt_match_veritysetup() {
        // 128 * 128 + 1 blocks: 129 leaf blocks, 2 middle blocks, 1 top block.
        assert_matches_veritysetup(128 * 128 + 1, &[7; MAX_SALT]);
        assert_matches_veritysetup(3, b"");
        assert_eq!(
            build(&data(128 * 128 + 1), b"", uuid())
                .unwrap()
                .hash_area
                .len(),
            (1 + 1 + 2 + 129) * BLOCK
        );
    }

    /// The partition layout init uses (data, superblock, tree from block data_blocks + 1) is
    /// one veritysetup accepts with our root hash, and one flipped data byte is caught.
    #[test]
    fn veritysetup_verifies_our_tree_and_catches_a_flipped_byte() {
        let d = data(300);
        let tree = build(&d, b"pinned salt", uuid()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("part");
        let mut part = d.clone();
        part.extend_from_slice(&tree.hash_area);
        std::fs::write(&file, &part).unwrap();
        let root = hostimg::boot_params::hex(&tree.params.root_hash);
        let args = [
            "verify".to_string(),
            format!("--hash-offset={}", d.len()),
            format!("--data-blocks={}", tree.params.data_blocks),
        ];
        let run = |file: &Path| {
            tools::require(&[tools::VERITYSETUP], &[]).unwrap();
            Command::new(tools::VERITYSETUP.program)
                .args(&args)
                .arg(file)
                .arg(file)
                .arg(&root)
                .output()
                .unwrap()
        };
        let ok = run(&file);
        assert!(ok.status.success(), "{ok:?}");

        part[200 * BLOCK + 17] ^= 1;
        std::fs::write(&file, &part).unwrap();
        let bad = run(&file);
        assert!(!bad.status.success(), "a flipped byte verified: {bad:?}");
        assert_eq!(
            tree.params.hash_start_block() * VERITY_BLOCK,
            d.len() as u64 + VERITY_BLOCK
        );
    }

    #[test]
    fn the_same_input_gives_the_same_tree_and_salt_and_uuid_matter() {
        let d = data(200);
        let a = build(&d, b"s", uuid()).unwrap();
        assert_eq!(a, build(&d, b"s", uuid()).unwrap());
        let other_salt = build(&d, b"t", uuid()).unwrap();
        assert_ne!(a.params.root_hash, other_salt.params.root_hash);
        let other_uuid = build(
            &d,
            b"s",
            "11111111-2222-4333-8444-555555555556".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(a.params.root_hash, other_uuid.params.root_hash);
        assert_ne!(a.hash_area[..BLOCK], other_uuid.hash_area[..BLOCK]);
        assert_eq!(a.hash_area[BLOCK..], other_uuid.hash_area[BLOCK..]);
    }

    #[test]
    fn partial_blocks_empty_data_and_long_salts_are_refused() {
        assert_eq!(
            build(&[0; 100], b"", uuid()),
            Err(VerityError::DataLength(100))
        );
        assert_eq!(build(&[], b"", uuid()), Err(VerityError::DataLength(0)));
        assert_eq!(
            build(&data(1), &[0; MAX_SALT + 1], uuid()),
            Err(VerityError::SaltTooLong(MAX_SALT + 1))
        );
    }
}
