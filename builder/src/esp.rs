//! The EFI System Partition image: a FAT32 volume holding the boot files (the UKI as
//! `EFI/BOOT/BOOT*.EFI`), written with `fatfs` and then corrected where `fatfs` 0.3.6 writes
//! invalid directories (see `fixup`), so `fsck.fat -n` passes. The output depends on the inputs
//! only: fixed volume ID, label `ESP`, every timestamp the given epoch, files written in path
//! order.

// Nothing outside this module's tests calls it until the disk-image writer lands.

mod clock;
mod fixup;
mod geometry;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};

use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions};

pub use fixup::FixupError;
use geometry::{Layout, MIN_FAT32_CLUSTERS, SECTOR};

/// The volume label, space-padded to FAT's 11 bytes.
const LABEL: [u8; 11] = *b"ESP        ";
/// Free space [`min_size`] leaves beyond the files: room for a slightly larger boot file on a
/// rebuild at the same size.
pub const SLACK: u64 = 1 << 20;
const MIB: u64 = 1 << 20;
/// The image is built in memory; an ESP holds a few boot files, and a mistyped size should be an
/// error rather than an allocation of terabytes.
pub const MAX_SIZE: u64 = 4 << 30;
/// FAT stores a file's size in 32 bits.
const MAX_FILE: u64 = u32::MAX as u64;

/// One file to put on the ESP.
#[derive(Debug, Clone, Copy)]
pub struct EspFile<'a> {
    /// `/`-separated, relative to the volume's root, e.g. `EFI/BOOT/BOOTX64.EFI`.
    pub path: &'a str,
    pub bytes: &'a [u8],
}

#[derive(Debug, thiserror::Error)]
pub enum EspError {
    #[error("ESP size {size} bytes is not a whole number of {SECTOR}-byte sectors")]
    UnalignedSize { size: u64 },
    #[error(
        "an ESP of {size} bytes has {clusters} clusters, and FAT32 needs at least \
         {MIN_FAT32_CLUSTERS}: make it at least {min} bytes"
    )]
    TooSmallForFat32 { size: u64, clusters: u64, min: u64 },
    #[error("an ESP of {size} bytes is larger than this writer's {MAX_SIZE}-byte limit")]
    TooLarge { size: u64 },
    #[error("ESP path {path:?} {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("ESP path {path:?} is given twice (FAT names ignore case: {other:?})")]
    DuplicatePath { path: String, other: String },
    #[error("{path} is {len} bytes; a FAT file holds at most {MAX_FILE}")]
    FileTooLarge { path: String, len: u64 },
    #[error(
        "{path} ({len} bytes) does not fit in the {size}-byte ESP: with the files before it \
         it needs {needed} clusters of {cluster_bytes} bytes and the volume has {clusters}; \
         an ESP of {min} bytes holds all the files"
    )]
    NoSpace {
        path: String,
        len: u64,
        size: u64,
        needed: u64,
        cluster_bytes: u32,
        clusters: u32,
        min: u64,
    },
    #[error("formatting the {size}-byte ESP")]
    Format {
        size: u64,
        #[source]
        source: io::Error,
    },
    #[error(
        "the formatted ESP is not the expected FAT32 layout ({clusters} clusters, \
         expected {expected})"
    )]
    Layout { clusters: u32, expected: u32 },
    #[error("creating directory {path} in the ESP")]
    CreateDir {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("writing {path} to the ESP")]
    WriteFile {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("closing the ESP's filesystem")]
    Unmount(#[source] io::Error),
    #[error("correcting the directory entries fatfs 0.3.6 wrote")]
    Fixup(#[from] FixupError),
    #[error("opening the ESP image as FAT")]
    Open(#[source] io::Error),
    #[error("reading {path} from the ESP")]
    ReadFile {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// The smallest ESP size (a multiple of 1 MiB) that is a valid FAT32 volume and holds `files`
/// with [`SLACK`] bytes to spare: about 33 MiB for anything up to ~30 MiB of files, because
/// FAT32 needs at least 65,525 clusters.
pub fn min_size(files: &[EspFile]) -> u64 {
    let lens: Vec<(&str, u64)> = files.iter().map(|f| (f.path, len_of(f))).collect();
    geometry::smallest_size(
        |cb| geometry::clusters_needed(lens.iter().copied(), cb),
        SLACK,
    )
    // Nothing FAT32 can describe holds the files: a size `write_esp` rejects with the reason.
    .unwrap_or(u64::from(u32::MAX) * SECTOR / MIB * MIB)
}

/// Writes an ESP image of `size` bytes holding `files`, with volume ID `volume_id` and every
/// timestamp at `epoch` (seconds since 1970, UTC; clamped to FAT's 1980..2107 and rounded down
/// to an even second). Directories are created as the paths need them. The same arguments give
/// the same bytes; the order of `files` does not matter.
pub fn write_esp(
    size: u64,
    volume_id: u32,
    epoch: i64,
    files: &[EspFile],
) -> Result<Vec<u8>, EspError> {
    write_with(size, volume_id, epoch, files, true)
}

/// [`write_esp`], with the fixup optional so a test can show what `fatfs` 0.3.6 alone writes.
fn write_with(
    size: u64,
    volume_id: u32,
    epoch: i64,
    files: &[EspFile],
    fix: bool,
) -> Result<Vec<u8>, EspError> {
    let layout = check_size(size)?;
    let files = check_files(files)?;
    check_fit(&files, size, &layout)?;
    let len = usize::try_from(size).map_err(|_| EspError::TooLarge { size })?;
    let mut img = vec![0u8; len];
    format(&mut img, &layout, volume_id)?;

    let now = clock::dos_date_time(epoch);
    {
        let _clock = clock::EpochGuard::set(now);
        let options = FsOptions::new()
            .time_provider(&clock::EPOCH_CLOCK)
            .update_accessed_date(false);
        let fs = FileSystem::new(Cursor::new(&mut img[..]), options).map_err(EspError::Open)?;
        let stats = fs.stats().map_err(EspError::Open)?;
        if fs.fat_type() != FatType::Fat32 || stats.total_clusters() != layout.clusters {
            return Err(EspError::Layout {
                clusters: stats.total_clusters(),
                expected: layout.clusters,
            });
        }
        for f in &files {
            put_file(&fs, f)?;
        }
        // Counting the free clusters now has fatfs write the exact count into FSInfo.
        fs.stats().map_err(EspError::Unmount)?;
        fs.unmount().map_err(EspError::Unmount)?;
    }
    if fix {
        let (date, time) = clock::encode(now);
        fixup::fix(&mut img, date, time)?;
    }
    Ok(img)
}

/// Reads `path` back from an ESP image: `None` if it does not exist.
pub fn read_file(esp: &[u8], path: &str) -> Result<Option<Vec<u8>>, EspError> {
    check_path(path).map_err(|reason| EspError::BadPath {
        path: path.to_string(),
        reason,
    })?;
    let options = FsOptions::new().update_accessed_date(false);
    let fs = FileSystem::new(ReadOnly(Cursor::new(esp)), options).map_err(EspError::Open)?;
    let read_err = |source| EspError::ReadFile {
        path: path.to_string(),
        source,
    };
    let mut file = match fs.root_dir().open_file(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let mut out = Vec::new();
    file.read_to_end(&mut out).map_err(read_err)?;
    Ok(Some(out))
}

fn len_of(f: &EspFile) -> u64 {
    f.bytes.len() as u64
}

fn check_size(size: u64) -> Result<Layout, EspError> {
    if !size.is_multiple_of(SECTOR) {
        return Err(EspError::UnalignedSize { size });
    }
    if size > MAX_SIZE {
        return Err(EspError::TooLarge { size });
    }
    let layout = Layout::for_size(size).ok_or(EspError::TooLarge { size })?;
    if layout.clusters < MIN_FAT32_CLUSTERS {
        return Err(EspError::TooSmallForFat32 {
            size,
            clusters: u64::from(layout.clusters),
            min: min_size(&[]),
        });
    }
    if !layout.is_fat32() {
        return Err(EspError::TooLarge { size });
    }
    Ok(layout)
}

/// Why a path cannot name a file on the ESP, if it cannot.
fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("is empty");
    }
    if path.starts_with('/') {
        return Err("must be relative to the volume's root (no leading /)");
    }
    for part in path.split('/') {
        if part.is_empty() {
            return Err("has an empty component (// or a trailing /)");
        }
        if part == "." || part == ".." {
            return Err("has a . or .. component");
        }
        if part.len() > 255 {
            return Err("has a component longer than FAT's 255 characters");
        }
        if part.ends_with('.') || part.ends_with(' ') {
            return Err("has a component ending in a dot or space, which FAT drops");
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || "$%'-_@~`!(){}. +,;=[]^#&".contains(c);
        if !part.chars().all(allowed) {
            return Err("has a character outside the ASCII letters, digits and FAT's punctuation");
        }
    }
    Ok(())
}

/// The files, validated, in the order they are written: by path, ignoring case as FAT does.
fn check_files<'a>(files: &[EspFile<'a>]) -> Result<Vec<EspFile<'a>>, EspError> {
    let mut sorted = files.to_vec();
    for f in &sorted {
        check_path(f.path).map_err(|reason| EspError::BadPath {
            path: f.path.to_string(),
            reason,
        })?;
        if len_of(f) > MAX_FILE {
            return Err(EspError::FileTooLarge {
                path: f.path.to_string(),
                len: len_of(f),
            });
        }
    }
    sorted.sort_by_cached_key(|f| f.path.to_ascii_uppercase());
    for pair in sorted.windows(2) {
        if pair[0].path.eq_ignore_ascii_case(pair[1].path) {
            return Err(EspError::DuplicatePath {
                path: pair[1].path.to_string(),
                other: pair[0].path.to_string(),
            });
        }
    }
    let dirs: BTreeSet<String> = sorted
        .iter()
        .flat_map(|f| {
            let upper = f.path.to_ascii_uppercase();
            upper
                .match_indices('/')
                .map(|(i, _)| upper[..i].to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    if let Some(f) = sorted
        .iter()
        .find(|f| dirs.contains(&f.path.to_ascii_uppercase()))
    {
        return Err(EspError::BadPath {
            path: f.path.to_string(),
            reason: "is a file and also a directory of another file",
        });
    }
    Ok(sorted)
}

/// Fails, naming the first file (in write order) that no longer fits, unless all of them do.
fn check_fit(files: &[EspFile], size: u64, layout: &Layout) -> Result<(), EspError> {
    let lens: Vec<(&str, u64)> = files.iter().map(|f| (f.path, len_of(f))).collect();
    let cb = layout.cluster_bytes;
    if geometry::clusters_needed(lens.iter().copied(), cb) <= u64::from(layout.clusters) {
        return Ok(());
    }
    for (i, f) in files.iter().enumerate() {
        let needed = geometry::clusters_needed(lens[..=i].iter().copied(), cb);
        if needed > u64::from(layout.clusters) {
            return Err(EspError::NoSpace {
                path: f.path.to_string(),
                len: len_of(f),
                size,
                needed,
                cluster_bytes: cb,
                clusters: layout.clusters,
                min: min_size(files),
            });
        }
    }
    Ok(())
}

fn format(img: &mut [u8], layout: &Layout, volume_id: u32) -> Result<(), EspError> {
    let size = img.len() as u64;
    let options = FormatVolumeOptions::new()
        .fat_type(FatType::Fat32)
        .bytes_per_sector(512)
        .bytes_per_cluster(layout.cluster_bytes)
        .total_sectors(layout.total_sectors)
        .fats(2)
        .volume_id(volume_id)
        .volume_label(LABEL);
    fatfs::format_volume(Cursor::new(img), options)
        .map_err(|source| EspError::Format { size, source })
}

fn put_file<T: fatfs::ReadWriteSeek>(fs: &FileSystem<T>, f: &EspFile) -> Result<(), EspError> {
    let mut dir = fs.root_dir();
    let (parents, name) = match f.path.rsplit_once('/') {
        Some((parents, name)) => (Some(parents), name),
        None => (None, f.path),
    };
    let mut made = String::new();
    for part in parents.into_iter().flat_map(|p| p.split('/')) {
        if !made.is_empty() {
            made.push('/');
        }
        made.push_str(part);
        // Returns the directory if an earlier file created it.
        dir = dir.create_dir(part).map_err(|source| EspError::CreateDir {
            path: made.clone(),
            source,
        })?;
    }
    let write_err = |source| EspError::WriteFile {
        path: f.path.to_string(),
        source,
    };
    let mut file = dir.create_file(name).map_err(write_err)?;
    file.write_all(f.bytes).map_err(write_err)?;
    file.flush().map_err(write_err)?;
    Ok(())
}

/// An image opened for reading: `fatfs` wants a writable device, and any write it tries is an
/// error rather than a change to the caller's bytes.
struct ReadOnly<'a>(Cursor<&'a [u8]>);

impl Read for ReadOnly<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Seek for ReadOnly<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.0.seek(pos)
    }
}

impl Write for ReadOnly<'_> {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the ESP image is opened read-only",
        ))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
