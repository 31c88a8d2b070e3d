//! ACI archives: reading (compression detection, streaming Image ID, layout validation), safe
//! unpacking into a directory, and deterministic writing.
//!
//! One pass over the bytes does everything: the compressed stream is decompressed, the
//! decompressed tar stream is hashed (the Image ID is the SHA-512 of exactly those bytes) and
//! each entry is checked against the appc layout and our safety rules before a sink sees it.

pub mod compression;
mod fs_sink;
mod image_id;
pub mod manifest_view;
pub(crate) mod path;
pub mod reader;
mod tar_guard;
mod tree;
pub mod unpack;
pub mod verified;
pub mod writer;

use std::io;

pub use compression::Compression;
pub use image_id::ImageId;
pub use reader::{AciSummary, ReadOptions, read_aci};
pub use unpack::{Layout, Owners, PathFilter, UnpackOptions, unpack};
pub use verified::{StreamVerifier, VerifiedUnpack, VerifiedUnpackError, unpack_verified};
pub use writer::{WriteOptions, write_aci};

/// Bounds on what an archive may make us read or write, so a hostile image cannot fill the disk
/// or memory before we notice. The defaults fit real container images with room to spare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest single regular file, in bytes (header size).
    pub max_entry_size: u64,
    /// Sum of all regular file sizes, in bytes.
    pub max_total_size: u64,
    /// Number of tar entries, all kinds counted.
    pub max_entries: u64,
    /// Largest `manifest`, in bytes (it is held in memory).
    pub max_manifest_size: u64,
    /// Largest uncompressed tar stream, headers and padding included: bounds what a small
    /// compressed file can make us read and hash.
    pub max_tar_size: u64,
    /// Longest entry name or link target, in bytes (Linux's `PATH_MAX`). GNU long-name and
    /// long-link records over it are refused before they are read.
    pub max_path_size: u64,
    /// Most components in an entry name: real trees stay far below; it bounds every per-entry
    /// path walk.
    pub max_path_depth: u64,
    /// Largest PAX extended header record (`x`, `g`), in bytes, refused before it is read. A
    /// Linux xattr value can be 64 KiB, so the default leaves room for several of them.
    pub max_pax_size: u64,
    /// Distinct paths remembered while reading (entries and their implicit parents, across the
    /// layers of one render). Each costs about 120 bytes, so the default keeps the reader under
    /// 64 MiB whatever the archive; trees with more paths need it raised.
    pub max_paths: u64,
}

/// Bytes allowed after the tar end marker (writers pad to a record size, 10 KiB for GNU tar).
pub const MAX_TRAILING_BYTES: u64 = 1 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entry_size: 4 << 30,
            max_total_size: 16 << 30,
            max_entries: 1_000_000,
            max_manifest_size: 1 << 20,
            max_tar_size: 20 << 30,
            max_path_size: 4096,
            max_path_depth: 256,
            max_pax_size: 1 << 20,
            max_paths: 400_000,
        }
    }
}

/// Why an archive could not be read, validated, unpacked or written. Entry variants carry the
/// entry's path as it appears in the archive so the operator can find it.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("reading the archive stream failed")]
    ReadStream(#[source] io::Error),
    #[error("the archive is compressed with {0}, which this build does not support")]
    UnsupportedCompression(&'static str),
    #[error(
        "the archive is neither a tar nor a compressed tar this reader knows (gzip, bzip2, xz, zstd)"
    )]
    UnknownFormat,
    #[error("reading tar entry {entry:?} failed")]
    ReadEntry {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("a {kind} record of {size} bytes is over the limit of {limit}")]
    MetadataTooLarge {
        kind: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("a PAX record overrides an entry's size, which this reader does not accept")]
    PaxSizeOverride,
    #[error("the archive holds a tar header with a bad checksum or size field")]
    BadHeader,
    #[error("entry {entry:?} has a name or link target over the limit of {limit} bytes")]
    NameTooLong { entry: String, limit: u64 },
    #[error("entry {entry:?} has more than {limit} path components")]
    PathTooDeep { entry: String, limit: u64 },
    #[error("the archive names more than {limit} distinct paths")]
    TooManyPaths { limit: u64 },
    #[error(
        "entry {entry:?} carries the extended attribute {xattr:?}; only `user.*` and \
         `security.capability` are accepted"
    )]
    XattrRefused { entry: String, xattr: String },
    #[error("entry {entry:?} has an absolute path")]
    AbsolutePath { entry: String },
    #[error("entry {entry:?} has a `..` component")]
    ParentComponent { entry: String },
    #[error(
        "entry {entry:?} is outside the ACI layout (only `manifest` and `rootfs/...` are allowed)"
    )]
    OutsideLayout { entry: String },
    #[error("entry {entry:?} appears twice")]
    Duplicate { entry: String },
    #[error("entry {entry:?} must be a {expected}")]
    WrongType {
        entry: String,
        expected: &'static str,
    },
    #[error("entry {entry:?} has a type this reader does not accept ({kind})")]
    UnsupportedEntryType { entry: String, kind: String },
    #[error("entry {entry:?} is a device node; device nodes are refused unless allowed explicitly")]
    DeviceNode { entry: String },
    #[error("entry {entry:?} is {size} bytes, over the limit of {limit}")]
    EntryTooLarge {
        entry: String,
        size: u64,
        limit: u64,
    },
    #[error("entry {entry:?} takes the archive's content over the limit of {limit} bytes")]
    TotalSizeExceeded { entry: String, limit: u64 },
    #[error("the uncompressed archive is larger than the limit of {limit} bytes")]
    TarTooLarge { limit: u64 },
    #[error("more than {limit} bytes follow the archive's end marker")]
    TrailingData { limit: u64 },
    #[error("the archive has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("symlink {entry:?} points to {target:?}, which resolves outside the rootfs")]
    SymlinkEscape { entry: String, target: String },
    #[error("hard link {entry:?} points to {target:?}, which is not an earlier file in the rootfs")]
    HardlinkEscape { entry: String, target: String },
    #[error("entry {entry:?} lies under a symlink; entries are never written through symlinks")]
    PathThroughSymlink { entry: String },
    #[error("entry {entry:?}: {what} {value} does not fit this system")]
    ValueOutOfRange {
        entry: String,
        what: &'static str,
        value: u64,
    },
    #[error("the archive has no `manifest` entry")]
    MissingManifest,
    #[error("the archive has no `rootfs` directory entry")]
    MissingRootfs,
    #[error("the image manifest is invalid")]
    InvalidManifest(#[source] manifest_view::ManifestViewError),
    #[error("opening the unpack target {path:?} failed")]
    OpenTarget {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the unpack target {path:?} is not empty (or has no parent to stage beside); a verified \
         unpack needs a new or empty directory"
    )]
    TargetNotEmpty { path: std::path::PathBuf },
    #[error("moving the unpacked image into {path:?} failed")]
    PlaceTarget {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("entry {entry:?} already exists in the target")]
    EntryExists { entry: String },
    #[error("creating directory for entry {entry:?} failed")]
    CreateDir {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("writing file for entry {entry:?} failed")]
    WriteFile {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("creating symlink for entry {entry:?} failed")]
    CreateSymlink {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("creating hard link for entry {entry:?} failed")]
    CreateHardlink {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("creating special file for entry {entry:?} failed")]
    CreateNode {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("removing the earlier layer's {entry:?} failed")]
    RemoveExisting {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("setting {what} of entry {entry:?} failed")]
    SetMetadata {
        entry: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("reading source {path:?} failed")]
    ReadSource {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("source {path:?} is a {kind}, which an ACI cannot hold")]
    UnsupportedSource {
        path: std::path::PathBuf,
        kind: &'static str,
    },
    #[error("writing the archive failed")]
    WriteArchive(#[source] io::Error),
}
