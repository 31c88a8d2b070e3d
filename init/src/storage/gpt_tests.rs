//! GPT reading and growth, on images `sgdisk` writes and checks.

use std::path::Path;
use std::process::Command;

use super::*;
use hostimg::Role;

/// A disk image in memory, as `BlockIo`.
pub(crate) struct Mem(pub Vec<u8>);

impl BlockIo for Mem {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let at = offset as usize;
        let src = self
            .0
            .get(at..at + buf.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let at = offset as usize;
        let dst = self
            .0
            .get_mut(at..at + buf.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::WriteZero))?;
        dst.copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(crate) const PAYLOAD_GUID: &str = "3d4f3c8a-5a4e-4b0e-9d1a-2b7c8e9f0a11";
pub(crate) const DATA_GUID: &str = "7e1c2b3a-4d5e-4f60-8a9b-0c1d2e3f4a55";

fn run(cmd: &mut Command, package: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?} (install the Debian package {package}): {e}")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

/// Writes a GPT laid out as `hostimg` describes (sizes in MiB: ESP 2, payload slots 2 each,
/// manifest 1, data the rest) into a `mib`-MiB file with `sgdisk`.
pub(crate) fn sgdisk_image(path: &Path, mib: u64) {
    let file = std::fs::File::create(path).unwrap();
    file.set_len(mib << 20).unwrap();
    let mut cmd = Command::new("sgdisk");
    cmd.args(["-o", "-U", "11111111-2222-4333-8444-555555555555"]);
    let sizes = [("+2M"), ("+2M"), ("+2M"), ("+1M"), ("0")];
    for (role, size) in Role::ALL.into_iter().zip(sizes) {
        let n = role.number();
        cmd.arg(format!("-n{n}:0:{size}"))
            .arg(format!("-t{n}:{}", role.type_guid()))
            .arg(format!("-c{n}:{}", role.label()));
        match role {
            Role::PayloadA => cmd.arg(format!("-u{n}:{PAYLOAD_GUID}")),
            Role::Data => cmd.arg(format!("-u{n}:{DATA_GUID}")),
            _ => cmd.arg(format!("-u{n}:00000000-0000-4000-8000-00000000000{n}")),
        };
    }
    run(cmd.arg(path), "gdisk");
}

/// `sgdisk -v`'s verdict; asserts it found no problems.
pub(crate) fn assert_sgdisk_clean(path: &Path) {
    let text = run(Command::new("sgdisk").arg("-v").arg(path), "gdisk");
    assert!(
        text.contains("No problems found"),
        "sgdisk -v {}: {text}",
        path.display()
    );
}

fn guid(s: &str) -> Guid {
    s.parse().unwrap()
}

#[test]
fn crc32_is_the_ieee_check_value() {
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    assert_eq!(crc32(b""), 0);
}

#[test]
fn reads_the_partitions_sgdisk_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    sgdisk_image(&path, 16);
    let mut disk = Mem(std::fs::read(&path).unwrap());
    let gpt = Gpt::read(&mut disk, 512).unwrap();
    let entries = gpt.entries();
    assert_eq!(entries.len(), 5);
    let payload = gpt.find(guid(PAYLOAD_GUID)).unwrap();
    assert_eq!(payload.number, 2);
    assert_eq!(payload.type_guid, Role::PayloadA.type_guid());
    assert_eq!((payload.first_lba, payload.blocks()), (2048 + 4096, 4096));
    let data = gpt.find(guid(DATA_GUID)).unwrap();
    assert_eq!(data.number, 5);
    assert_eq!(data.type_guid, Role::Data.type_guid());
    assert_eq!(gpt.backup_lba(), (16 << 11) - 1);
    assert_eq!(data.last_lba, gpt.last_usable_lba());
}

#[test]
fn growth_moves_the_backup_to_the_end_and_extends_data_cleanly_for_sgdisk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    sgdisk_image(&path, 16);
    let mut disk = Mem(std::fs::read(&path).unwrap());
    // As `qemu-img resize +100M` does: zeros appended.
    disk.0.resize(116 << 20, 0);
    let mut gpt = Gpt::read(&mut disk, 512).unwrap();
    let before = gpt.find(guid(DATA_GUID)).unwrap();
    let blocks = 116 << 11;
    let grown = gpt
        .grow_last(&mut disk, blocks, guid(DATA_GUID))
        .unwrap()
        .expect("grown");
    assert_eq!(grown.number, 5);
    assert_eq!(grown.first_lba, before.first_lba);
    assert_eq!(grown.old_last_lba, before.last_lba);
    // 128 entries of 128 bytes take 32 blocks before the backup header.
    assert_eq!(grown.new_last_lba, blocks - 1 - 32 - 1);
    std::fs::write(&path, &disk.0).unwrap();
    assert_sgdisk_clean(&path);

    // What was written reads back, and a second pass has nothing to do.
    let mut again = Gpt::read(&mut disk, 512).unwrap();
    assert_eq!(again.backup_lba(), blocks - 1);
    assert_eq!(
        again.find(guid(DATA_GUID)).unwrap().last_lba,
        grown.new_last_lba
    );
    assert_eq!(again.find(guid(PAYLOAD_GUID)), gpt.find(guid(PAYLOAD_GUID)));
    assert!(
        again
            .grow_last(&mut disk, blocks, guid(DATA_GUID))
            .unwrap()
            .is_none()
    );
    // The old backup header is gone from the middle of the disk.
    let old = ((16u64 << 11) - 1) as usize * 512;
    assert_eq!(&disk.0[old..old + 8], [0u8; 8]);
}

#[test]
fn a_disk_of_the_image_size_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    sgdisk_image(&path, 16);
    let original = std::fs::read(&path).unwrap();
    let mut disk = Mem(original.clone());
    let mut gpt = Gpt::read(&mut disk, 512).unwrap();
    assert!(
        gpt.grow_last(&mut disk, 16 << 11, guid(DATA_GUID))
            .unwrap()
            .is_none()
    );
    assert!(disk.0 == original, "nothing written");
}

#[test]
fn refuses_to_grow_a_partition_that_is_not_last_or_a_disk_that_shrank() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    sgdisk_image(&path, 16);
    let mut disk = Mem(std::fs::read(&path).unwrap());
    disk.0.resize(32 << 20, 0);
    let mut gpt = Gpt::read(&mut disk, 512).unwrap();
    let err = gpt
        .grow_last(&mut disk, 32 << 11, guid(PAYLOAD_GUID))
        .unwrap_err();
    assert!(
        matches!(err, GptError::NotLast { grow: 2, other: 3 }),
        "{err}"
    );
    let err = gpt
        .grow_last(&mut disk, 8 << 11, guid(DATA_GUID))
        .unwrap_err();
    assert!(matches!(err, GptError::DiskShrank { .. }), "{err}");
    let missing = guid("00000000-0000-4000-8000-0000000000ff");
    let err = gpt.grow_last(&mut disk, 32 << 11, missing).unwrap_err();
    assert!(matches!(err, GptError::NoPartition(_)), "{err}");
}

#[test]
fn damaged_headers_and_entries_are_refused_by_crc() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    sgdisk_image(&path, 16);
    let image = std::fs::read(&path).unwrap();

    let mut no_gpt = Mem(vec![0u8; 1 << 20]);
    assert!(matches!(
        Gpt::read(&mut no_gpt, 512),
        Err(GptError::NoSignature)
    ));

    let mut header = Mem(image.clone());
    header.0[512 + H_LAST_USABLE] ^= 1;
    let err = Gpt::read(&mut header, 512).unwrap_err();
    assert!(matches!(err, GptError::HeaderCrc { .. }), "{err}");

    let mut entries = Mem(image);
    // Partition 2's unique GUID, in the entry array at block 2.
    entries.0[1024 + 128 + E_UNIQUE] ^= 1;
    let err = Gpt::read(&mut entries, 512).unwrap_err();
    assert!(matches!(err, GptError::EntriesCrc { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("the GPT partition entries' CRC32 is 0x")
    );
}
