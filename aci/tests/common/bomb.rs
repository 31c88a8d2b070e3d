//! A decompression bomb made by hand: a zstd frame of raw blocks (the ACI's manifest, its
//! rootfs directory and the header of one big file) followed by run-length blocks of zeros,
//! so a few hundred KB expand to gigabytes. Nothing is compressed to make it, so building one
//! costs microseconds, not the minutes compressing gigabytes would.

/// Largest zstd block (for a 128 KiB window).
const BLOCK: u64 = 128 << 10;

fn block_header(last: bool, kind: u32, size: u64) -> [u8; 3] {
    let v = u32::from(last) | (kind << 1) | ((size as u32) << 3);
    let b = v.to_le_bytes();
    [b[0], b[1], b[2]]
}

/// A zstd-compressed ACI (manifest `example.com/test`, `rootfs/`, and `rootfs/zeros` of
/// `zeros` bytes, a multiple of 512) that decompresses to `zeros` + a few KB.
pub fn zstd_zeros_aci(zeros: u64) -> Vec<u8> {
    assert_eq!(zeros % 512, 0);
    let mut tar = super::RawTar::aci();
    let mut prefix = std::mem::take(&mut tar.bytes);
    let mut h = [0u8; 512];
    let name = b"rootfs/zeros";
    h[..name.len()].copy_from_slice(name);
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    let size = format!("{zeros:011o}");
    h[124..135].copy_from_slice(size.as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    prefix.extend_from_slice(&h);

    // Magic, a descriptor with no content size, window 2^17.
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38];
    for chunk in prefix.chunks(BLOCK as usize) {
        out.extend_from_slice(&block_header(false, 0, chunk.len() as u64));
        out.extend_from_slice(chunk);
    }
    // The file's zeros, then the two zero blocks that end a tar.
    let mut left = zeros + 1024;
    while left > 0 {
        let n = left.min(BLOCK);
        left -= n;
        out.extend_from_slice(&block_header(left == 0, 1, n));
        out.push(0);
    }
    out
}

/// Decompresses the first `n` bytes of `bomb` and checks they hold a tar of the expected
/// shape, so a test relying on a bomb knows it is a real one.
pub fn assert_is_a_real_bomb(bomb: &[u8]) {
    use std::io::Read;
    let mut head = vec![0u8; 4 << 20];
    let mut d = zstd::stream::read::Decoder::new(bomb).unwrap();
    d.read_exact(&mut head).unwrap();
    let mut ar = tar::Archive::new(&head[..]);
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .take(3)
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["manifest", "rootfs/", "rootfs/zeros"]);
}
