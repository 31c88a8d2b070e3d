//! What several of the builder's integration tests share.

use std::process::Command;

/// The builder binary under test.
pub fn builder() -> Command {
    Command::new(env!("CARGO_BIN_EXE_builder"))
}

/// An outside tool; a missing one fails the test naming the Debian package to install.
pub fn tool(cmd: &str, package: &str) -> Command {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{cmd}` not found: install the Debian package {package}"
    );
    Command::new(cmd)
}

/// A stand-in x86_64 kernel, shaped like a real bzImage with the EFI stub: a PE32+ image for
/// x86-64 (what the UKI's systemd-stub starts) that also carries the boot-protocol header
/// ("HdrS" at 0x202, 0x55AA at 0x1FE) the builder's kernel check looks for. No code in it.
pub fn fake_bzimage() -> Vec<u8> {
    let size_of_headers = 0x400usize;
    let mut k = vec![0u8; size_of_headers + 0x200];
    k[..2].copy_from_slice(b"MZ");
    k[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
    k[0x40..0x44].copy_from_slice(b"PE\0\0");
    let coff = 0x44;
    k[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes()); // machine: x86-64
    k[coff + 2..coff + 4].copy_from_slice(&1u16.to_le_bytes()); // one section
    k[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes()); // optional header size
    k[coff + 18..coff + 20].copy_from_slice(&0x206u16.to_le_bytes());
    let opt = coff + 20;
    k[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes()); // PE32+
    k[opt + 32..opt + 36].copy_from_slice(&0x1000u32.to_le_bytes()); // SectionAlignment
    k[opt + 36..opt + 40].copy_from_slice(&0x200u32.to_le_bytes()); // FileAlignment
    k[opt + 56..opt + 60].copy_from_slice(&0x2000u32.to_le_bytes()); // SizeOfImage
    k[opt + 60..opt + 64].copy_from_slice(&(size_of_headers as u32).to_le_bytes());
    k[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes()); // data directories
    let table = opt + 240;
    let mut section = [0u8; 40];
    section[..8].copy_from_slice(b".text\0\0\0");
    section[8..12].copy_from_slice(&0x200u32.to_le_bytes());
    section[12..16].copy_from_slice(&0x1000u32.to_le_bytes());
    section[16..20].copy_from_slice(&0x200u32.to_le_bytes());
    section[20..24].copy_from_slice(&(size_of_headers as u32).to_le_bytes());
    section[36..40].copy_from_slice(&0x6000_0020u32.to_le_bytes());
    k[table..table + 40].copy_from_slice(&section);
    k[0x1fe] = 0x55;
    k[0x1ff] = 0xaa;
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k
}
