//! The real syscalls behind [`StorageOps`].

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::MsFlags;

use super::dm::{self, Buffer, Cmd, DmControl};
use super::find::{self, Disk, PartitionNode, SYS_BLOCK};
use super::gpt::BlockIo;
use super::{StorageOps, grow};
use crate::console::{self, Line};

/// How long a device node may take to appear after the kernel created its device.
const NODE_WAIT: Duration = Duration::from_secs(2);
/// The read size when checking the whole payload.
const READ_CHUNK: usize = 1 << 20;

/// The guest's storage syscalls. Opens `/dev/mapper/control` on first use.
#[derive(Default)]
pub struct RealStorage {
    control: Option<dm::Control>,
}

impl BlockIo for File {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sync_all()
    }
}

impl DmControl for RealStorage {
    fn dm_ioctl(&mut self, cmd: Cmd, buf: &mut Buffer) -> Result<(), Errno> {
        let control = match &mut self.control {
            Some(c) => c,
            None => {
                let opened = dm::Control::open()
                    .map_err(|e| e.raw_os_error().map_or(Errno::ENODEV, Errno::from_raw))?;
                self.control.insert(opened)
            }
        };
        control.dm_ioctl(cmd, buf)
    }
}

/// Opens `node`, waiting up to [`NODE_WAIT`] for devtmpfs to create it.
fn open_waiting(node: &Path, write: bool) -> io::Result<File> {
    let deadline = Instant::now() + NODE_WAIT;
    loop {
        match File::options().read(true).write(write).open(node) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

impl StorageOps for RealStorage {
    type Io = File;

    fn say(&mut self, line: &Line<'_>) {
        console::emit(line);
    }

    fn sleep(&mut self, duration: Duration) {
        std::thread::sleep(duration);
    }

    fn disks(&mut self) -> io::Result<Vec<Disk>> {
        find::list_disks(Path::new(SYS_BLOCK), Path::new("/dev"))
    }

    fn partition(&mut self, disk: &Disk, number: u32) -> io::Result<PartitionNode> {
        find::partition_node(Path::new(SYS_BLOCK), Path::new("/dev"), &disk.name, number)
    }

    fn open(&mut self, node: &Path, write: bool) -> io::Result<File> {
        open_waiting(node, write)
    }

    fn read_all(&mut self, node: &Path) -> Result<u64, (u64, io::Error)> {
        let mut file = open_waiting(node, false).map_err(|e| (0, e))?;
        let mut buf = vec![0u8; READ_CHUNK];
        let mut offset = 0u64;
        loop {
            match file.read(&mut buf) {
                Ok(0) => return Ok(offset),
                Ok(n) => offset += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err((offset, e)),
            }
        }
    }

    fn create_dir(&mut self, path: &Path) -> io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
    }

    fn mount(
        &mut self,
        source: &Path,
        target: &str,
        fstype: &'static str,
        flags: MsFlags,
    ) -> Result<(), Errno> {
        nix::mount::mount(Some(source), target, Some(fstype), flags, None::<&str>)
    }

    fn resize_partition(
        &mut self,
        disk: &Disk,
        number: u32,
        start: u64,
        length: u64,
    ) -> Result<(), Errno> {
        let file = File::open(&disk.node)
            .map_err(|e| e.raw_os_error().map_or(Errno::EIO, Errno::from_raw))?;
        grow::resize_partition(&file, number, start, length)
    }

    fn resize_ext4(&mut self, target: &str, blocks: u64) -> Result<(), Errno> {
        let dir =
            File::open(target).map_err(|e| e.raw_os_error().map_or(Errno::EIO, Errno::from_raw))?;
        grow::resize_ext4(&dir, blocks)
    }

    fn exists(&mut self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn create_file(&mut self, path: &Path) -> io::Result<()> {
        let file = File::options().write(true).create_new(true).open(path)?;
        file.sync_all()
    }
}
