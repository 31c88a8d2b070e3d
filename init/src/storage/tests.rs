//! The storage sequence against a recording double holding a real disk image (GPT by
//! `sgdisk`, ext4 by `mke2fs`) in memory.

use std::cell::RefCell;
use std::process::Command;
use std::rc::Rc;

use super::gpt::tests::{DATA_GUID, PAYLOAD_GUID, assert_sgdisk_clean, sgdisk_image};
use super::*;
use crate::fatal::chain;

const DISK_MIB: u64 = 24;
/// Partition 5 starts after 1 MiB of GPT and 2 + 2 + 2 + 1 MiB.
const DATA_START: u64 = 8 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Sleep,
    Disks,
    Open(String, bool),
    Dm(dm::Cmd, u32, Option<String>),
    ReadAll(String),
    CreateDir(String),
    Mount(String, &'static str, &'static str, MsFlags),
    ResizePartition(u32, u64, u64),
    ResizeExt4(&'static str, u64),
    Exists(String),
    CreateFile(String),
}

/// A view of the shared in-memory disk from `base`.
struct MemIo {
    disk: Rc<RefCell<Vec<u8>>>,
    base: u64,
}

impl BlockIo for MemIo {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let at = (self.base + offset) as usize;
        let disk = self.disk.borrow();
        let src = disk
            .get(at..at + buf.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let at = (self.base + offset) as usize;
        let mut disk = self.disk.borrow_mut();
        let dst = disk
            .get_mut(at..at + buf.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::WriteZero))?;
        dst.copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Recorder {
    calls: Vec<Call>,
    lines: Vec<String>,
    disk: Rc<RefCell<Vec<u8>>>,
    /// `disks()` lists nothing this many times first.
    hidden_for: u32,
    /// `read_all` of the verity device fails at this byte.
    corrupt_at: Option<u64>,
    marker: bool,
}

impl Recorder {
    fn new(image: Vec<u8>) -> Recorder {
        Recorder {
            calls: Vec::new(),
            lines: Vec::new(),
            disk: Rc::new(RefCell::new(image)),
            hidden_for: 0,
            corrupt_at: None,
            marker: false,
        }
    }

    fn without_lines_and_opens(&self) -> Vec<Call> {
        self.calls
            .iter()
            .filter(|c| !matches!(c, Call::Open(..) | Call::Disks | Call::Sleep))
            .cloned()
            .collect()
    }
}

impl DmControl for Recorder {
    fn dm_ioctl(&mut self, cmd: dm::Cmd, buf: &mut dm::Buffer) -> Result<(), Errno> {
        let table = buf.target().map(|(s, l, k, p)| format!("{s} {l} {k} {p}"));
        self.calls.push(Call::Dm(cmd, buf.flags(), table));
        Ok(())
    }
}

impl StorageOps for Recorder {
    type Io = MemIo;
    fn say(&mut self, line: &Line<'_>) {
        self.lines.push(line.to_string());
    }
    fn sleep(&mut self, _: Duration) {
        self.calls.push(Call::Sleep);
    }
    fn disks(&mut self) -> io::Result<Vec<Disk>> {
        self.calls.push(Call::Disks);
        if self.hidden_for > 0 {
            self.hidden_for -= 1;
            return Ok(Vec::new());
        }
        let size_bytes = self.disk.borrow().len() as u64;
        let disk = |name: &str, size_bytes| Disk {
            name: name.into(),
            node: format!("/dev/{name}").into(),
            size_bytes,
            block_size: 512,
        };
        // A device-mapper device and an empty disk are never read.
        Ok(vec![
            disk("dm-0", 4096),
            disk("vda", size_bytes),
            disk("vdb", 0),
        ])
    }
    fn partition(&mut self, disk: &Disk, number: u32) -> io::Result<PartitionNode> {
        Ok(PartitionNode {
            node: format!("{}{number}", disk.node.display()).into(),
            dev: format!("254:{number}"),
        })
    }
    fn open(&mut self, node: &Path, write: bool) -> io::Result<MemIo> {
        self.calls
            .push(Call::Open(node.display().to_string(), write));
        let base = match node.to_str() {
            Some("/dev/vda") => 0,
            Some("/dev/vda5") => DATA_START,
            _ => return Err(io::Error::from(io::ErrorKind::NotFound)),
        };
        Ok(MemIo {
            disk: Rc::clone(&self.disk),
            base,
        })
    }
    fn read_all(&mut self, node: &Path) -> Result<u64, (u64, io::Error)> {
        self.calls.push(Call::ReadAll(node.display().to_string()));
        match self.corrupt_at {
            Some(at) => Err((at, io::Error::from_raw_os_error(nix::libc::EIO))),
            None => Ok(40960),
        }
    }
    fn create_dir(&mut self, path: &Path) -> io::Result<()> {
        self.calls.push(Call::CreateDir(path.display().to_string()));
        Ok(())
    }
    fn mount(
        &mut self,
        source: &Path,
        target: &str,
        fstype: &'static str,
        flags: MsFlags,
    ) -> Result<(), Errno> {
        let target = [hostimg::PAYLOAD_MOUNT, hostimg::DATA_MOUNT]
            .into_iter()
            .find(|t| *t == target)
            .unwrap_or("?");
        self.calls.push(Call::Mount(
            source.display().to_string(),
            target,
            fstype,
            flags,
        ));
        Ok(())
    }
    fn resize_partition(&mut self, _: &Disk, n: u32, start: u64, len: u64) -> Result<(), Errno> {
        self.calls.push(Call::ResizePartition(n, start, len));
        Ok(())
    }
    fn resize_ext4(&mut self, target: &str, blocks: u64) -> Result<(), Errno> {
        let target = if target == hostimg::DATA_MOUNT {
            hostimg::DATA_MOUNT
        } else {
            "?"
        };
        self.calls.push(Call::ResizeExt4(target, blocks));
        Ok(())
    }
    fn exists(&mut self, path: &Path) -> io::Result<bool> {
        self.calls.push(Call::Exists(path.display().to_string()));
        Ok(self.marker)
    }
    fn create_file(&mut self, path: &Path) -> io::Result<()> {
        self.calls
            .push(Call::CreateFile(path.display().to_string()));
        Ok(())
    }
}

/// The data partition's size on the image: up to the 33 blocks (backup entries and header) at
/// the end.
const DATA_BYTES: u64 = (DISK_MIB << 20) - DATA_START - 33 * 512;
/// An ext4 that fills it.
const FULL: u64 = DATA_BYTES / 4096;

/// The GPT by sgdisk, and a real ext4 of `fs_blocks` 4 KiB blocks in the data partition.
fn image(dir: &Path, fs_blocks: u64) -> Vec<u8> {
    let path = dir.join("disk.img");
    sgdisk_image(&path, DISK_MIB);
    let out = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-b", "4096"])
        .arg("-E")
        .arg(format!("offset={DATA_START}"))
        .arg(&path)
        .arg(format!("{}k", fs_blocks * 4))
        .output()
        .expect("mke2fs runs (install the Debian package e2fsprogs)");
    assert!(out.status.success(), "{out:?}");
    std::fs::read(&path).unwrap()
}

const ROOT: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn cmdline() -> String {
    format!(
        "console=ttyS0 hostos.payload={PAYLOAD_GUID} hostos.verity=10:{ROOT}:0102 hostos.data={DATA_GUID} panic=-1"
    )
}

fn verity_table() -> String {
    format!("0 80 verity 1 254:2 254:2 4096 4096 10 11 sha256 {ROOT} 0102")
}

const RO: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV);
const RW: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);

#[test]
fn does_nothing_without_hostos_parameters() {
    let mut rec = Recorder::new(Vec::new());
    setup(&mut rec, "console=ttyS0 panic=-1 quiet").unwrap();
    assert!(rec.calls.is_empty() && rec.lines.is_empty());
}

#[test]
fn verifies_and_mounts_the_payload_then_mounts_data_on_a_disk_of_the_image_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut rec = Recorder::new(image(dir.path(), FULL));
    setup(&mut rec, &cmdline()).unwrap();
    assert_eq!(
        rec.without_lines_and_opens(),
        [
            Call::Dm(dm::Cmd::DevCreate, 0, None),
            Call::Dm(dm::Cmd::TableLoad, dm::READONLY_FLAG, Some(verity_table())),
            Call::Dm(dm::Cmd::DevSuspend, 0, None),
            Call::ReadAll("/dev/dm-0".into()),
            Call::CreateDir("/payload".into()),
            Call::Mount("/dev/dm-0".into(), "/payload", "erofs", RO),
            Call::CreateDir("/var".into()),
            Call::Mount("/dev/vda5".into(), "/var", "ext4", RW),
            Call::Exists(FIRST_BOOT_MARKER.into()),
            Call::CreateFile(FIRST_BOOT_MARKER.into()),
        ]
    );
    // Only read-only opens: nothing to grow.
    assert!(!rec.calls.iter().any(|c| matches!(c, Call::Open(_, true))));
    assert_eq!(
        rec.lines,
        [
            "init: disk /dev/vda holds the payload (/dev/vda2) and data (/dev/vda5)",
            "init: payload verified (001122334455) and mounted read-only at /payload",
            "init: data mounted at /var (15 MiB)",
            "init: first boot: created /var/.hostos-first-boot",
        ]
    );
}

#[test]
fn first_boot_on_a_larger_disk_grows_gpt_partition_and_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let mut disk = image(dir.path(), FULL);
    disk.resize(((DISK_MIB + 100) << 20) as usize, 0);
    let mut rec = Recorder::new(disk);
    rec.marker = true;
    setup(&mut rec, &cmdline()).unwrap();

    // The data partition now ends where the backup entries (32 blocks) and header begin.
    let new_len = ((DISK_MIB + 100) << 20) - DATA_START - 33 * 512;
    let calls = rec.without_lines_and_opens();
    let grow_at = calls
        .iter()
        .position(|c| *c == Call::ResizePartition(5, DATA_START, new_len))
        .expect("BLKPG after the GPT write");
    let mount_at = calls
        .iter()
        .position(|c| matches!(c, Call::Mount(_, "/var", ..)))
        .unwrap();
    assert!(grow_at < mount_at, "{calls:?}");
    assert_eq!(
        calls[mount_at + 1],
        Call::ResizeExt4("/var", new_len / 4096)
    );
    assert!(!calls.contains(&Call::CreateFile(FIRST_BOOT_MARKER.into())));
    assert!(rec.calls.contains(&Call::Open("/dev/vda".into(), true)));
    assert_eq!(
        rec.lines[2..],
        [
            "init: data partition grown from 15 MiB to 115 MiB".to_string(),
            format!(
                "init: data mounted at /var ({} MiB)",
                (new_len / 4096 * 4096) >> 20
            ),
            "init: not the first boot: /var/.hostos-first-boot exists".to_string(),
        ]
    );
    let path = dir.path().join("grown.img");
    std::fs::write(&path, rec.disk.borrow().as_slice()).unwrap();
    assert_sgdisk_clean(&path);
}

#[test]
fn an_ext4_smaller_than_its_partition_is_grown_even_without_gpt_growth() {
    // As after a power cut between the GPT rewrite and the online resize.
    let dir = tempfile::tempdir().unwrap();
    let mut rec = Recorder::new(image(dir.path(), 2048));
    setup(&mut rec, &cmdline()).unwrap();
    assert!(rec.calls.contains(&Call::ResizeExt4("/var", FULL)));
    assert!(
        !rec.calls
            .iter()
            .any(|c| matches!(c, Call::ResizePartition(..)))
    );
}

#[test]
fn a_payload_failing_verification_never_mounts_and_names_the_block() {
    let dir = tempfile::tempdir().unwrap();
    let mut rec = Recorder::new(image(dir.path(), FULL));
    rec.corrupt_at = Some(3 * 4096 + 100);
    let err = setup(&mut rec, &cmdline()).unwrap_err();
    assert_eq!(
        chain(&err),
        format!(
            "payload /dev/vda2: dm-verity refused block 3 (/dev/dm-0): the payload does not match the root hash {ROOT} on the kernel command line: Input/output error (os error 5)"
        )
    );
    assert!(!rec.calls.iter().any(|c| matches!(c, Call::Mount(..))));
}

#[test]
fn waits_for_a_late_disk_and_gives_up_naming_what_it_saw() {
    let dir = tempfile::tempdir().unwrap();
    let mut rec = Recorder::new(image(dir.path(), FULL));
    rec.hidden_for = 3;
    setup(&mut rec, &cmdline()).unwrap();
    let sleeps = rec.calls.iter().filter(|c| **c == Call::Sleep).count();
    assert_eq!(sleeps, 3);

    let mut rec = Recorder::new(vec![0u8; 1 << 20]);
    let err = setup(&mut rec, &cmdline()).unwrap_err();
    let sleeps = rec.calls.iter().filter(|c| **c == Call::Sleep).count();
    assert_eq!(
        sleeps as u128,
        DISK_WAIT.as_millis() / DISK_RESCAN.as_millis() - 1
    );
    assert_eq!(
        chain(&err),
        format!(
            "looking for the boot disk: no disk holds both the payload partition {PAYLOAD_GUID} and the data partition {DATA_GUID} (waited 9.9s; disks seen: vda: no GPT (block 1 does not start with \"EFI PART\"))"
        )
    );
}

#[test]
fn a_partition_of_the_wrong_type_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let image = image(dir.path(), FULL);
    let mut rec = Recorder::new(image);
    // The data PARTUUID given for the payload: found, but typed /var.
    let line = cmdline().replace(
        &format!("hostos.payload={PAYLOAD_GUID}"),
        &format!("hostos.payload={DATA_GUID}"),
    );
    let err = setup(&mut rec, &line).unwrap_err();
    assert_eq!(
        chain(&err),
        format!(
            "looking for the boot disk: partition {DATA_GUID} on vda has type {}, not the payload type {}",
            hostimg::Role::Data.type_guid(),
            hostimg::Role::PayloadA.type_guid()
        )
    );
}

#[test]
fn a_malformed_parameter_is_named() {
    let mut rec = Recorder::new(Vec::new());
    let line = cmdline().replace("hostos.verity=10:", "hostos.verity=ten:");
    let err = setup(&mut rec, &line).unwrap_err();
    assert!(
        chain(&err)
            .starts_with("the kernel command line names a hostos disk, but: hostos.verity=\"ten:"),
        "{}",
        chain(&err)
    );
    assert!(rec.calls.is_empty());
}
