//! One streaming pass over an ACI: decompress, hash the tar stream into the Image ID, and check
//! every entry (layout, duplicates, limits, link targets, device nodes) before handing it to a
//! sink. `read_aci` is the sink that only validates; `unpack` is the one that writes.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};

use super::compression::{self, Compression};
use super::image_id::{FinishError, HashingReader, ImageId};
use super::manifest_view::{self, ManifestView};
use super::path::{self, Components, NameError, Place, SymlinkMap};
use super::unpack::PathFilter;
use super::{ArchiveError, Limits, MAX_TRAILING_BYTES};

/// What a reader accepts. Device nodes are refused unless `allow_devices` is set, because a
/// device node in an app's rootfs hands the app that device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    pub limits: Limits,
    pub allow_devices: bool,
}

/// What one pass over a valid ACI learned.
#[derive(Debug, Clone)]
pub struct AciSummary {
    pub id: ImageId,
    pub compression: Compression,
    /// The manifest exactly as stored in the archive.
    pub manifest_json: Vec<u8>,
    pub manifest: ManifestView,
    /// Length of the uncompressed tar stream.
    pub tar_size: u64,
    /// Number of tar entries, `manifest` and `rootfs` included.
    pub entries: u64,
}

/// Reads and validates a whole ACI from `r` without writing anything.
pub fn read_aci<R: Read>(r: R, opts: &ReadOptions) -> Result<AciSummary, ArchiveError> {
    walk(
        r,
        opts,
        &PathFilter::default(),
        &mut SymlinkMap::default(),
        &mut NoSink,
    )
}

/// What an earlier rootfs entry was, for duplicate and hard link checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Hard links may not target directories.
    Dir,
    /// A non-directory that is written.
    Kept,
    /// A non-directory the pathWhitelist filters out.
    Dropped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Dir,
    File { size: u64 },
    Symlink { target: Vec<u8> },
    Hardlink { target: Components },
    Char { major: u32, minor: u32 },
    Block { major: u32, minor: u32 },
    Fifo,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EntryMeta {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// From PAX `SCHILY.xattr.*` records, as GNU tar and libarchive write them.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

pub(crate) struct Entry<'a> {
    /// The entry's name as stored, for error messages.
    pub name: &'a str,
    pub comps: &'a [Vec<u8>],
    pub kind: &'a EntryKind,
    pub meta: &'a EntryMeta,
}

/// Receives checked entries in archive order.
pub(crate) trait Sink {
    fn rootfs(&mut self, meta: &EntryMeta) -> Result<(), ArchiveError>;
    fn entry(&mut self, entry: &Entry<'_>, data: &mut dyn Read) -> Result<(), ArchiveError>;
}

struct NoSink;

impl Sink for NoSink {
    fn rootfs(&mut self, _: &EntryMeta) -> Result<(), ArchiveError> {
        Ok(())
    }
    fn entry(&mut self, _: &Entry<'_>, _: &mut dyn Read) -> Result<(), ArchiveError> {
        Ok(())
    }
}

const XATTR_PREFIX: &str = "SCHILY.xattr.";

/// The single pass. `links` carries symlinks already present in the target (earlier layers when
/// rendering) so chains through them are resolved too; it is updated with this archive's links.
///
/// `filter` (appc pathWhitelist) decides here, before any link is recorded, which
/// non-directory entries reach the sink: a filtered-out entry is still checked (a hostile image
/// is refused whatever the whitelist says) but is neither written nor remembered as a link.
/// A hard link to a filtered-out file is dropped too, since there is nothing to link to.
pub(crate) fn walk<R: Read>(
    r: R,
    opts: &ReadOptions,
    filter: &PathFilter,
    links: &mut SymlinkMap,
    sink: &mut dyn Sink,
) -> Result<AciSummary, ArchiveError> {
    let limits = &opts.limits;
    let (compression, stream) = compression::decompress(r)?;
    let mut hashing = HashingReader::new(stream, limits.max_tar_size);
    let mut manifest_json: Option<Vec<u8>> = None;
    let mut rootfs_seen = false;
    let mut seen: HashMap<Components, Seen> = HashMap::new();
    let mut own_links: HashSet<Components> = HashSet::new();
    let mut count: u64 = 0;
    let mut total: u64 = 0;
    let mut last_name = String::from("<start of archive>");
    // A closure so that any read error can be told apart afterwards: over the size limit, or not.
    let entries_result = (|| {
        let mut archive = tar::Archive::new(&mut hashing);
        let entries = archive.entries().map_err(ArchiveError::ReadStream)?;
        for item in entries {
            count += 1;
            if count > limits.max_entries {
                return Err(ArchiveError::TooManyEntries {
                    limit: limits.max_entries,
                });
            }
            let mut entry = item.map_err(|source| ArchiveError::ReadEntry {
                entry: format!("after {last_name}"),
                source,
            })?;
            let raw = entry.path_bytes().into_owned();
            let name = String::from_utf8_lossy(&raw).into_owned();
            last_name.clone_from(&name);
            let read_err = |source: io::Error| ArchiveError::ReadEntry {
                entry: name.clone(),
                source,
            };
            let place = path::classify(&raw).map_err(|e| match e {
                NameError::Absolute => ArchiveError::AbsolutePath {
                    entry: name.clone(),
                },
                NameError::Parent => ArchiveError::ParentComponent {
                    entry: name.clone(),
                },
                NameError::OutsideLayout => ArchiveError::OutsideLayout {
                    entry: name.clone(),
                },
            })?;
            let header = entry.header();
            let entry_type = header.entry_type();
            let mut meta = EntryMeta {
                mode: header.mode().map_err(read_err)?,
                uid: header.uid().map_err(read_err)?,
                gid: header.gid().map_err(read_err)?,
                mtime: header.mtime().map_err(read_err)?,
                xattrs: Vec::new(),
            };
            let size = header.size().map_err(read_err)?;
            // Only device entries carry meaningful numbers; other writers leave the fields blank.
            let dev = if matches!(entry_type, tar::EntryType::Char | tar::EntryType::Block) {
                (
                    header.device_major().map_err(read_err)?.unwrap_or(0),
                    header.device_minor().map_err(read_err)?.unwrap_or(0),
                )
            } else {
                (0, 0)
            };
            if let Some(pax) = entry.pax_extensions().map_err(read_err)? {
                for ext in pax {
                    let ext = ext.map_err(read_err)?;
                    if let Some(key) = ext.key_bytes().strip_prefix(XATTR_PREFIX.as_bytes()) {
                        meta.xattrs.push((key.to_vec(), ext.value_bytes().to_vec()));
                    }
                }
            }
            match place {
                Place::Manifest => {
                    if manifest_json.is_some() {
                        return Err(ArchiveError::Duplicate { entry: name });
                    }
                    if !entry_type.is_file() {
                        return Err(ArchiveError::WrongType {
                            entry: name,
                            expected: "regular file",
                        });
                    }
                    if size > limits.max_manifest_size {
                        return Err(ArchiveError::EntryTooLarge {
                            entry: name,
                            size,
                            limit: limits.max_manifest_size,
                        });
                    }
                    let mut buf = Vec::new();
                    (&mut entry)
                        .take(limits.max_manifest_size)
                        .read_to_end(&mut buf)
                        .map_err(read_err)?;
                    manifest_json = Some(buf);
                }
                Place::RootfsDir => {
                    if rootfs_seen {
                        return Err(ArchiveError::Duplicate { entry: name });
                    }
                    if !entry_type.is_dir() {
                        return Err(ArchiveError::WrongType {
                            entry: name,
                            expected: "directory",
                        });
                    }
                    rootfs_seen = true;
                    sink.rootfs(&meta)?;
                }
                Place::Rootfs(comps) => {
                    if seen.contains_key(&comps) {
                        return Err(ArchiveError::Duplicate { entry: name });
                    }
                    // Writing below a symlink this archive made would follow it.
                    if (1..comps.len()).any(|i| own_links.contains(&comps[..i])) {
                        return Err(ArchiveError::PathThroughSymlink { entry: name });
                    }
                    let kind = classify_type(&entry, entry_type, size, dev, &name)?;
                    let mut kept = kind == EntryKind::Dir
                        || filter.is_empty()
                        || filter.allows(&path::rootfs_path(&comps));
                    match &kind {
                        EntryKind::File { size } => {
                            if *size > limits.max_entry_size {
                                return Err(ArchiveError::EntryTooLarge {
                                    entry: name,
                                    size: *size,
                                    limit: limits.max_entry_size,
                                });
                            }
                            total = total.saturating_add(*size);
                            if total > limits.max_total_size {
                                return Err(ArchiveError::TotalSizeExceeded {
                                    entry: name,
                                    limit: limits.max_total_size,
                                });
                            }
                        }
                        EntryKind::Symlink { target } => {
                            if !links.stays_inside(&comps, target) {
                                return Err(ArchiveError::SymlinkEscape {
                                    entry: name,
                                    target: String::from_utf8_lossy(target).into_owned(),
                                });
                            }
                        }
                        EntryKind::Hardlink { target } => match seen.get(target) {
                            Some(Seen::Kept) => {}
                            Some(Seen::Dropped) => kept = false,
                            _ => {
                                return Err(ArchiveError::HardlinkEscape {
                                    entry: name,
                                    target: path::rootfs_path(target),
                                });
                            }
                        },
                        EntryKind::Char { .. } | EntryKind::Block { .. } => {
                            if !opts.allow_devices {
                                return Err(ArchiveError::DeviceNode { entry: name });
                            }
                        }
                        EntryKind::Dir | EntryKind::Fifo => {}
                    }
                    seen.insert(
                        comps.clone(),
                        match (&kind, kept) {
                            (EntryKind::Dir, _) => Seen::Dir,
                            (_, true) => Seen::Kept,
                            (_, false) => Seen::Dropped,
                        },
                    );
                    if !kept {
                        continue;
                    }
                    if let EntryKind::Symlink { target } = &kind {
                        links.insert(comps.clone(), target.clone());
                        own_links.insert(comps.clone());
                    } else {
                        links.remove(&comps);
                    }
                    sink.entry(
                        &Entry {
                            name: &name,
                            comps: &comps,
                            kind: &kind,
                            meta: &meta,
                        },
                        &mut entry,
                    )?;
                }
            }
        }
        Ok(())
    })();
    if hashing.over_limit() {
        return Err(ArchiveError::TarTooLarge {
            limit: limits.max_tar_size,
        });
    }
    entries_result?;
    // A link that looked contained when written can be redirected by a later link it goes
    // through; check every link again now that all of them are known.
    for (at, target) in links.iter() {
        if !links.stays_inside(at, target) {
            return Err(ArchiveError::SymlinkEscape {
                entry: format!("rootfs{}", path::rootfs_path(at)),
                target: String::from_utf8_lossy(target).into_owned(),
            });
        }
    }
    let manifest_json = manifest_json.ok_or(ArchiveError::MissingManifest)?;
    if !rootfs_seen {
        return Err(ArchiveError::MissingRootfs);
    }
    let over_limit = |e| match e {
        FinishError::Trailing => ArchiveError::TrailingData {
            limit: MAX_TRAILING_BYTES,
        },
        FinishError::OverLimit => ArchiveError::TarTooLarge {
            limit: limits.max_tar_size,
        },
        FinishError::Read(e) => ArchiveError::ReadStream(e),
    };
    let (id, tar_size) = hashing.finish(MAX_TRAILING_BYTES).map_err(over_limit)?;
    let manifest = manifest_view::parse_image_manifest(&manifest_json)
        .map_err(ArchiveError::InvalidManifest)?;
    Ok(AciSummary {
        id,
        compression,
        manifest_json,
        manifest,
        tar_size,
        entries: count,
    })
}

fn classify_type<R: Read>(
    entry: &tar::Entry<'_, R>,
    entry_type: tar::EntryType,
    size: u64,
    (major, minor): (u32, u32),
    name: &str,
) -> Result<EntryKind, ArchiveError> {
    use tar::EntryType as T;
    let link = || {
        entry
            .link_name_bytes()
            .map(|l| l.into_owned())
            .ok_or_else(|| ArchiveError::UnsupportedEntryType {
                entry: name.to_string(),
                kind: "link without a target".to_string(),
            })
    };
    Ok(match entry_type {
        T::Regular | T::Continuous => EntryKind::File { size },
        T::Directory => EntryKind::Dir,
        T::Symlink => EntryKind::Symlink { target: link()? },
        T::Link => {
            let raw = link()?;
            match path::hardlink_target(&raw) {
                Some(target) => EntryKind::Hardlink { target },
                None => {
                    return Err(ArchiveError::HardlinkEscape {
                        entry: name.to_string(),
                        target: String::from_utf8_lossy(&raw).into_owned(),
                    });
                }
            }
        }
        T::Char => EntryKind::Char { major, minor },
        T::Block => EntryKind::Block { major, minor },
        T::Fifo => EntryKind::Fifo,
        other => {
            return Err(ArchiveError::UnsupportedEntryType {
                entry: name.to_string(),
                kind: format!("{other:?}"),
            });
        }
    })
}
