//! One streaming pass over an ACI: decompress, hash the tar stream into the Image ID, and check
//! every entry (layout, duplicates, limits, link targets, device nodes) before handing it to a
//! sink. `read_aci` is the sink that only validates; `unpack` is the one that writes.

use std::io::{self, Read};

use super::compression::{self, Compression};
use super::image_id::{FinishError, HashingReader, ImageId};
use super::manifest_view::{self, ManifestView};
use super::path::{self, Components, NameError, Place, shown};
use super::tar_guard::{Refusal, TarGuard};
use super::tree::{PathTree, Seen, TooManyPaths};
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
        &mut PathTree::default(),
        &mut NoSink,
    )
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

/// The extended attributes our writer records and an unpack sets. Others are refused: a
/// `trusted.overlay.*` attribute would change what overlayfs shows when the tree is a layer,
/// and `security.*` ones other than file capabilities are policy, not image content.
fn xattr_allowed(name: &[u8]) -> bool {
    name.starts_with(b"user.") || name == b"security.capability"
}

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
    links: &mut PathTree,
    sink: &mut dyn Sink,
) -> Result<AciSummary, ArchiveError> {
    let limits = &opts.limits;
    let (compression, stream) = compression::decompress(r)?;
    let mut hashing = HashingReader::new(stream, limits.max_tar_size);
    let mut guard = TarGuard::new(&mut hashing, limits.max_path_size, limits.max_pax_size);
    let mut manifest_json: Option<Vec<u8>> = None;
    let mut rootfs_seen = false;
    links.begin_archive();
    let mut count: u64 = 0;
    let mut total: u64 = 0;
    let mut last_name = String::from("<start of archive>");
    // A closure so that any read error can be told apart afterwards: over the size limit, or not.
    let entries_result = (|| {
        let mut archive = tar::Archive::new(&mut guard);
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
            let name = shown(&raw);
            last_name.clone_from(&name);
            let long_link = entry
                .link_name_bytes()
                .is_some_and(|l| l.len() as u64 > limits.max_path_size);
            if raw.len() as u64 > limits.max_path_size || long_link {
                return Err(ArchiveError::NameTooLong {
                    entry: name,
                    limit: limits.max_path_size,
                });
            }
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
                        if !xattr_allowed(key) {
                            return Err(ArchiveError::XattrRefused {
                                entry: name,
                                xattr: shown(key),
                            });
                        }
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
                    if comps.len() as u64 > limits.max_path_depth {
                        return Err(ArchiveError::PathTooDeep {
                            entry: name,
                            limit: limits.max_path_depth,
                        });
                    }
                    let too_many = |TooManyPaths| ArchiveError::TooManyPaths {
                        limit: limits.max_paths,
                    };
                    let (node, through) =
                        links.intern(&comps, limits.max_paths).map_err(too_many)?;
                    if links.seen(node).is_some() {
                        return Err(ArchiveError::Duplicate { entry: name });
                    }
                    // Writing below a symlink this archive made would follow it.
                    if through {
                        return Err(ArchiveError::PathThroughSymlink { entry: name });
                    }
                    let kind = classify_type(&entry, entry_type, size, dev, &name)?;
                    let mut symlink: Option<Vec<u8>> = None;
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
                            if !links.stays_inside(node, target) {
                                return Err(ArchiveError::SymlinkEscape {
                                    entry: name,
                                    target: shown(target),
                                });
                            }
                            symlink = Some(target.clone());
                        }
                        EntryKind::Hardlink { target } => {
                            let to = links.find(target);
                            match to.and_then(|t| links.seen(t)) {
                                Some(Seen::Kept) => {}
                                Some(Seen::Dropped) => kept = false,
                                // `link(2)` on a symlink makes another symlink with the same
                                // target, which may resolve elsewhere from its new place: it
                                // is checked and remembered as the symlink it is.
                                Some(Seen::Symlink) => {
                                    let text = to.and_then(|t| links.link(t)).map(<[u8]>::to_vec);
                                    let text = text.unwrap_or_default();
                                    if !links.stays_inside(node, &text) {
                                        return Err(ArchiveError::SymlinkEscape {
                                            entry: name,
                                            target: shown(&text),
                                        });
                                    }
                                    symlink = Some(text);
                                }
                                _ => {
                                    return Err(ArchiveError::HardlinkEscape {
                                        entry: name,
                                        target: shown(path::rootfs_path(target).as_bytes()),
                                    });
                                }
                            }
                        }
                        EntryKind::Char { .. } | EntryKind::Block { .. } => {
                            if !opts.allow_devices {
                                return Err(ArchiveError::DeviceNode { entry: name });
                            }
                        }
                        EntryKind::Dir | EntryKind::Fifo => {}
                    }
                    let is_dir = kind == EntryKind::Dir;
                    links.set_seen(
                        node,
                        match (is_dir, kept, &symlink) {
                            (true, _, _) => Seen::Dir,
                            (_, false, _) => Seen::Dropped,
                            (_, true, Some(_)) => Seen::Symlink,
                            (_, true, None) => Seen::Kept,
                        },
                    );
                    if !kept {
                        continue;
                    }
                    links.written(node, is_dir);
                    links.set_link(node, symlink.as_deref());
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
    let refused = guard.refused();
    drop(guard);
    if hashing.over_limit() {
        return Err(ArchiveError::TarTooLarge {
            limit: limits.max_tar_size,
        });
    }
    if let Some(why) = refused {
        return Err(match why {
            Refusal::RecordTooLarge { kind, size, limit } => ArchiveError::MetadataTooLarge {
                kind: match kind {
                    b'L' => "GNU long name",
                    b'K' => "GNU long link",
                    b'g' => "PAX global header",
                    _ => "PAX extended header",
                },
                size,
                limit,
            },
            Refusal::PaxSize => ArchiveError::PaxSizeOverride,
            Refusal::Sparse => ArchiveError::UnsupportedEntryType {
                entry: format!("after {last_name}"),
                kind: "GNU sparse file".to_string(),
            },
            Refusal::BadHeader => ArchiveError::BadHeader,
        });
    }
    entries_result?;
    // A link that looked contained when written can be redirected by a later link it goes
    // through; check every link again now that all of them are known.
    for (at, target) in links.links() {
        if !links.stays_inside(at, target) {
            return Err(ArchiveError::SymlinkEscape {
                entry: shown(format!("rootfs{}", links.display(at)).as_bytes()),
                target: shown(target),
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
                        target: shown(&raw),
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
