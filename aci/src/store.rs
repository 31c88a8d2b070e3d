//! The on-disk image store: content-addressed ACI blobs with metadata, crash-safe insertion,
//! look-up by ID or name and labels, rendering of an image and its dependencies into a tree that
//! pods use read-only, and garbage collection.
//!
//! Layout under ROOT:
//! - `images/sha512-<hex>.aci`: the ACI bytes exactly as received (signatures cover them);
//! - `images/sha512-<hex>.json`: [`ImageRecord`] (name, labels, manifest);
//! - `trees/deps-sha512-<hex>/rootfs/`: a rendered tree, and `tree.json` naming its layers;
//! - `.tmp-*` in either directory: work in progress, locked with `flock` by its writer;
//! - `lock`: the store-wide lock. Writers hold it shared while they create (and lock) a temp
//!   and while they publish; `Store::open` holds it exclusive while it cleans up, so it never
//!   mistakes a live writer's temp, or a half-done publish, for a crashed one.
//!
//! An image is visible only when both its `.json` and `.aci` exist; the `.json` is renamed into
//! place first and the `.aci` last, each after an fsync and each followed by a directory fsync,
//! so a crash never shows a partial image. `Store::open` removes what crashed writers left:
//! unlocked temps, a `.json` without its `.aci`, and an `.aci` without its `.json`.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{FlockOperation, Mode, OFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

use crate::archive::manifest_view::{self, DependencyRef, ManifestView};
use crate::archive::unpack::{Layers, finish_layers, unpack_layer};
use crate::archive::{
    AciSummary, ArchiveError, ImageId, Owners, PathFilter, ReadOptions, UnpackOptions, read_aci,
};
use crate::manifest::version_precedence;

mod ingest;
pub use ingest::{Ingest, Ingested, InsertVerifiedError, InsertedVerified, Received, StoredImage};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("creating store directory {path:?} failed")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("locking the store at {path:?} failed")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("listing {path:?} failed")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the image being inserted from {source_name} is not a valid ACI")]
    InsertInvalid {
        /// The file or download the bytes came from.
        source_name: String,
        #[source]
        source: ArchiveError,
    },
    #[error("writing {path:?} failed")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading {path:?} failed")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("store metadata {path:?} is corrupt")]
    CorruptMetadata {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("removing {path:?} failed")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no image in the store matches ID {0:?}")]
    NotFound(String),
    #[error("ID prefix {prefix:?} matches {count} images; give more digits")]
    Ambiguous { prefix: String, count: usize },
    #[error("no image in the store is named {name:?} with labels {labels:?}")]
    NoMatch {
        name: String,
        labels: Vec<(String, String)>,
    },
    #[error("the stored manifest of {image} is invalid")]
    StoredManifest {
        image: ImageId,
        #[source]
        source: manifest_view::ManifestViewError,
    },
    #[error("resolving dependency {dependency:?} of {image} failed")]
    Resolve {
        image: ImageId,
        dependency: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "dependency {dependency:?} of {image} resolved to {found}, which does not match its imageID, name or labels"
    )]
    DependencyMismatch {
        image: ImageId,
        dependency: String,
        found: ImageId,
    },
    #[error("the dependencies of {0} nest deeper than {MAX_DEPTH} levels (a cycle?)")]
    DependencyTooDeep(ImageId),
    #[error("rendering layer {layer} of {image} failed")]
    Render {
        image: ImageId,
        layer: ImageId,
        #[source]
        source: ArchiveError,
    },
}

const MAX_DEPTH: usize = 32;
const TMP_PREFIX: &str = ".tmp-";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    pub name: String,
    pub value: String,
}

/// What the store knows about one image, kept beside its blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    pub id: ImageId,
    pub name: String,
    pub labels: Vec<Label>,
    /// Compression of the stored blob (`none`, `gzip`, ...).
    pub compression: String,
    /// Size of the stored blob in bytes.
    pub size: u64,
    /// Size of the uncompressed tar stream.
    pub tar_size: u64,
    /// Seconds since the epoch.
    pub imported_at: u64,
    /// The manifest as stored in the ACI.
    pub manifest: String,
}

impl ImageRecord {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.as_str())
    }

    pub fn manifest_view(&self) -> Result<ManifestView, StoreError> {
        manifest_view::parse_image_manifest(self.manifest.as_bytes()).map_err(|source| {
            StoreError::StoredManifest {
                image: self.id.clone(),
                source,
            }
        })
    }
}

/// A rendered tree: `path` is the rootfs pods mount (read-only, through overlayfs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderedTree {
    pub key: String,
    pub image: ImageId,
    /// Layers in application order: dependencies depth-first, the image itself last.
    pub layers: Vec<ImageId>,
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub removed_images: Vec<ImageId>,
    pub removed_trees: Vec<String>,
}

/// Finds the image that satisfies a dependency. The store's own look-up is [`StoreOnly`]; a
/// fetcher implements this to download missing dependencies into the store first.
pub trait Resolver {
    fn resolve(
        &mut self,
        store: &Store,
        dependency: &DependencyRef,
    ) -> Result<ImageId, Box<dyn std::error::Error + Send + Sync>>;
}

/// Resolves dependencies only from images already in the store: by `imageID` when given, else
/// by name and labels.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreOnly;

impl Resolver for StoreOnly {
    fn resolve(
        &mut self,
        store: &Store,
        dep: &DependencyRef,
    ) -> Result<ImageId, Box<dyn std::error::Error + Send + Sync>> {
        let record = match &dep.image_id {
            Some(id) => store.get(id)?,
            None => store.find(&dep.image_name, &dep.labels)?,
        };
        Ok(record.id)
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    images: PathBuf,
    trees: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn tmp_name(ext: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{TMP_PREFIX}{}-{}-{nanos}{ext}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn fsync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// Copies everything read into the blob file as well.
struct Tee<'a, R> {
    inner: R,
    out: &'a mut BufWriter<File>,
    count: u64,
    error: Option<io::Error>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(e) = self.out.write_all(&buf[..n]) {
            // Keep the write error apart so it is not reported as a bad archive.
            let kind = e.kind();
            self.error = Some(e);
            return Err(io::Error::new(kind, "writing the store blob failed"));
        }
        self.count += n as u64;
        Ok(n)
    }
}

impl Store {
    /// Opens (creating if needed) the store at `root` and removes work that crashed writers
    /// left behind: unlocked temp files and trees, and metadata without a blob.
    pub fn open(root: impl AsRef<Path>) -> Result<Store, StoreError> {
        let root = root.as_ref().to_path_buf();
        let store = Store {
            images: root.join("images"),
            trees: root.join("trees"),
            root,
        };
        for dir in [&store.root, &store.images, &store.trees] {
            fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        }
        store.clean_stale()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn read_dir(&self, dir: &Path) -> Result<Vec<String>, StoreError> {
        let err = |source| StoreError::ReadDir {
            path: dir.to_path_buf(),
            source,
        };
        let mut names = Vec::new();
        for ent in fs::read_dir(dir).map_err(err)? {
            names.push(ent.map_err(err)?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// Takes the store-wide lock (see the module docs); it is released when the fd is dropped.
    fn lock(&self, op: FlockOperation) -> Result<OwnedFd, StoreError> {
        let path = self.root.join("lock");
        let err = |source: rustix::io::Errno| StoreError::Lock {
            path: path.clone(),
            source: source.into(),
        };
        let fd = rustix::fs::open(
            &path,
            OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(err)?;
        rustix::fs::flock(&fd, op).map_err(err)?;
        Ok(fd)
    }

    /// A new temp file in `images/`, flocked before any cleaner can see it unlocked.
    fn create_temp_file(&self, ext: &str) -> Result<(PathBuf, File, TempGuard), StoreError> {
        let _shared = self.lock(FlockOperation::LockShared)?;
        let tmp = self.images.join(tmp_name(ext));
        let werr = |source| StoreError::Write {
            path: tmp.clone(),
            source,
        };
        let file = File::create_new(&tmp).map_err(werr)?;
        let guard = TempGuard(tmp.clone());
        rustix::fs::flock(&file, FlockOperation::LockExclusive).map_err(|e| werr(e.into()))?;
        Ok((tmp, file, guard))
    }

    fn clean_stale(&self) -> Result<(), StoreError> {
        let _exclusive = self.lock(FlockOperation::LockExclusive)?;
        for dir in [&self.images, &self.trees] {
            for name in self.read_dir(dir)? {
                if !name.starts_with(TMP_PREFIX) {
                    continue;
                }
                let path = dir.join(&name);
                // A live writer holds an exclusive flock on its temp file or directory.
                let Ok(fd) = rustix::fs::open(
                    &path,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) else {
                    continue;
                };
                if rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_err() {
                    continue;
                }
                remove_path(&path)?;
            }
        }
        // Half of a published pair: a crash between the two renames, or between `remove`'s two
        // unlinks. An `.aci` without its record would otherwise block that image for good.
        let names: HashSet<String> = self.read_dir(&self.images)?.into_iter().collect();
        for name in &names {
            if name.starts_with(TMP_PREFIX) {
                continue;
            }
            let orphan = match (name.strip_suffix(".json"), name.strip_suffix(".aci")) {
                (Some(stem), _) => !names.contains(&format!("{stem}.aci")),
                (_, Some(stem)) => !names.contains(&format!("{stem}.json")),
                _ => false,
            };
            if orphan {
                remove_path(&self.images.join(name))?;
            }
        }
        Ok(())
    }

    pub fn blob_path(&self, id: &ImageId) -> PathBuf {
        self.images.join(format!("{id}.aci"))
    }

    fn meta_path(&self, id: &ImageId) -> PathBuf {
        self.images.join(format!("{id}.json"))
    }

    /// Opens the stored ACI bytes (for signature checks or re-reading).
    pub fn open_blob(&self, id: &ImageId) -> Result<File, StoreError> {
        let path = self.blob_path(id);
        File::open(&path).map_err(|source| StoreError::Read { path, source })
    }

    /// Reads, validates and stores an ACI from `r` in one pass; returns its record. Inserting an
    /// image that is already stored returns the existing record.
    pub fn insert<R: Read>(&self, r: R) -> Result<ImageRecord, StoreError> {
        self.insert_with(r, &ReadOptions::default())
    }

    pub fn insert_with<R: Read>(
        &self,
        r: R,
        opts: &ReadOptions,
    ) -> Result<ImageRecord, StoreError> {
        self.insert_named(r, opts, "the input stream")
    }

    /// `source_name` names where the bytes come from in errors (a file path, a URL).
    pub fn insert_named<R: Read>(
        &self,
        r: R,
        opts: &ReadOptions,
        source_name: &str,
    ) -> Result<ImageRecord, StoreError> {
        let invalid = |source| StoreError::InsertInvalid {
            source_name: source_name.to_string(),
            source,
        };
        let werr = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Write { path, source }
        };
        let (tmp, file, guard) = self.create_temp_file(".aci")?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut tee = Tee {
            inner: r,
            out: &mut out,
            count: 0,
            error: None,
        };
        let summary = read_aci(&mut tee, opts);
        if let Some(e) = tee.error.take() {
            return Err(werr(&tmp)(e));
        }
        let summary = summary.map_err(invalid)?;
        // The decompressor may stop before the end of the input (trailing bytes); the blob must
        // hold the whole file, since signatures cover every byte.
        io::copy(&mut tee, &mut io::sink()).map_err(|source| match tee.error.take() {
            Some(e) => werr(&tmp)(e),
            None => invalid(ArchiveError::ReadStream(source)),
        })?;
        let size = tee.count;
        let file = out.into_inner().map_err(|e| werr(&tmp)(e.into_error()))?;
        file.sync_all().map_err(werr(&tmp))?;

        self.publish(&tmp, guard, &summary, size)
    }

    /// Makes a fully written and fsynced temp blob visible: metadata first, then the blob,
    /// each rename followed by a directory fsync. An image already stored keeps its existing
    /// record; a stored blob whose record is missing gets it written again.
    fn publish(
        &self,
        tmp: &Path,
        guard: TempGuard,
        summary: &AciSummary,
        size: u64,
    ) -> Result<ImageRecord, StoreError> {
        let werr = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Write { path, source }
        };
        // No cleaner may run between the two renames and take the record for an orphan.
        let _shared = self.lock(FlockOperation::LockShared)?;
        let id = summary.id.clone();
        let blob = self.blob_path(&id);
        let blob_stored = blob.exists();
        if blob_stored && let Some(record) = self.read_record(&id)? {
            drop(guard);
            return Ok(record);
        }
        // serde_json accepted these bytes, so they are UTF-8.
        let manifest = String::from_utf8_lossy(&summary.manifest_json).into_owned();
        let record = ImageRecord {
            id: id.clone(),
            name: summary.manifest.name.clone(),
            labels: summary
                .manifest
                .labels
                .iter()
                .map(|(name, value)| Label {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            compression: summary.compression.name().to_string(),
            size,
            tar_size: summary.tar_size,
            imported_at: now_secs(),
            manifest,
        };
        let (meta_tmp, mut meta_file, meta_guard) = self.create_temp_file(".json")?;
        let json = serde_json::to_vec_pretty(&record).map_err(|e| werr(&meta_tmp)(e.into()))?;
        meta_file.write_all(&json).map_err(werr(&meta_tmp))?;
        meta_file.sync_all().map_err(werr(&meta_tmp))?;
        let meta = self.meta_path(&id);
        fs::rename(&meta_tmp, &meta).map_err(werr(&meta))?;
        meta_guard.keep();
        // The record must be durable before the blob can be: a crash may otherwise keep the
        // second rename and lose the first.
        fsync_dir(&self.images)?;
        if blob_stored {
            drop(guard);
        } else {
            fs::rename(tmp, &blob).map_err(werr(&blob))?;
            guard.keep();
            fsync_dir(&self.images)?;
        }
        Ok(record)
    }

    /// Inserts the ACI file at `path`.
    pub fn insert_file(&self, path: &Path) -> Result<ImageRecord, StoreError> {
        let file = File::open(path).map_err(|source| StoreError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.insert_named(file, &ReadOptions::default(), &path.display().to_string())
    }

    fn read_record(&self, id: &ImageId) -> Result<Option<ImageRecord>, StoreError> {
        if !self.blob_path(id).exists() {
            return Ok(None);
        }
        let path = self.meta_path(id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::CorruptMetadata { path, source })
    }

    /// Every visible image, ordered by ID.
    pub fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let mut out = Vec::new();
        for name in self.read_dir(&self.images)? {
            let Some(stem) = name.strip_suffix(".aci") else {
                continue;
            };
            let Ok(id) = stem.parse::<ImageId>() else {
                continue;
            };
            if let Some(r) = self.read_record(&id)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Looks an image up by full ID or a unique prefix (`sha512-` optional).
    pub fn get(&self, id_or_prefix: &str) -> Result<ImageRecord, StoreError> {
        if let Ok(id) = id_or_prefix.parse::<ImageId>() {
            return self
                .read_record(&id)?
                .ok_or_else(|| StoreError::NotFound(id_or_prefix.to_string()));
        }
        let mut matches: Vec<ImageRecord> = self
            .list()?
            .into_iter()
            .filter(|r| r.id.matches_prefix(id_or_prefix))
            .collect();
        match matches.len() {
            0 => Err(StoreError::NotFound(id_or_prefix.to_string())),
            1 => Ok(matches.remove(0)),
            count => Err(StoreError::Ambiguous {
                prefix: id_or_prefix.to_string(),
                count,
            }),
        }
    }

    /// The image named `name` carrying every label in `labels` (extra labels are fine). When
    /// several match, the one with the highest `version` label wins, then the latest import.
    pub fn find(&self, name: &str, labels: &[(String, String)]) -> Result<ImageRecord, StoreError> {
        self.list()?
            .into_iter()
            .filter(|r| {
                r.name == name && labels.iter().all(|(n, v)| r.label(n) == Some(v.as_str()))
            })
            .max_by(|a, b| {
                version_precedence(
                    a.label("version").unwrap_or(""),
                    b.label("version").unwrap_or(""),
                )
                .then(a.imported_at.cmp(&b.imported_at))
                .then(a.id.cmp(&b.id))
            })
            .ok_or_else(|| StoreError::NoMatch {
                name: name.to_string(),
                labels: labels.to_vec(),
            })
    }

    /// Removes one image (its blob first, so it disappears at once).
    ///
    /// Takes the store lock exclusively, as the cleanup in [`Store::open`] does: writers hold
    /// it shared while they create temp files and across the two renames that publish an
    /// image or a tree, so a removal never lands between a writer's record and its blob.
    pub fn remove(&self, id: &ImageId) -> Result<(), StoreError> {
        let _exclusive = self.lock(FlockOperation::LockExclusive)?;
        self.remove_locked(id)
    }

    /// [`Store::remove`] for a caller that already holds the exclusive lock (a second flock
    /// on another descriptor of the same file would wait for ourselves).
    fn remove_locked(&self, id: &ImageId) -> Result<(), StoreError> {
        remove_path(&self.blob_path(id))?;
        remove_path(&self.meta_path(id))?;
        fsync_dir(&self.images)
    }

    /// The layers of `id` in appc order with the pathWhitelist filter that applies to each.
    fn flatten(
        &self,
        id: &ImageId,
        resolver: &mut dyn Resolver,
        filter: &PathFilter,
        depth: usize,
        out: &mut Vec<(ImageId, PathFilter)>,
    ) -> Result<(), StoreError> {
        if depth > MAX_DEPTH {
            return Err(StoreError::DependencyTooDeep(id.clone()));
        }
        let record = self.get(id.as_str())?;
        let manifest = record.manifest_view()?;
        let filter = filter.clone().with_whitelist(&manifest.path_whitelist);
        for dep in &manifest.dependencies {
            let dep_id = resolver
                .resolve(self, dep)
                .map_err(|source| StoreError::Resolve {
                    image: id.clone(),
                    dependency: dep.image_name.clone(),
                    source,
                })?;
            let found = self.get(dep_id.as_str())?;
            let id_ok = dep
                .image_id
                .as_deref()
                .is_none_or(|want| found.id.matches_prefix(want));
            let labels_ok = dep
                .labels
                .iter()
                .all(|(n, v)| found.label(n) == Some(v.as_str()));
            if !id_ok || !labels_ok || found.name != dep.image_name {
                return Err(StoreError::DependencyMismatch {
                    image: id.clone(),
                    dependency: dep.image_name.clone(),
                    found: found.id,
                });
            }
            self.flatten(&found.id, resolver, &filter, depth + 1, out)?;
        }
        out.push((id.clone(), filter));
        Ok(())
    }

    /// Renders `id` with its dependencies into a tree (or returns the existing one). Layers are
    /// applied depth-first in listed order with the image last; later layers replace earlier
    /// files, a symlink in the way is replaced rather than followed, directories merge, and each
    /// parent's pathWhitelist filters its dependencies' non-directory entries too.
    pub fn render(
        &self,
        id: &ImageId,
        resolver: &mut dyn Resolver,
    ) -> Result<RenderedTree, StoreError> {
        let mut layers = Vec::new();
        self.flatten(id, resolver, &PathFilter::default(), 0, &mut layers)?;
        let key = tree_key(layers.iter().map(|(l, _)| l));
        let final_dir = self.trees.join(&key);
        let tree = RenderedTree {
            key: key.clone(),
            image: id.clone(),
            layers: layers.iter().map(|(l, _)| l.clone()).collect(),
            path: final_dir.join("rootfs"),
        };
        if final_dir.join("tree.json").exists() {
            return Ok(tree);
        }
        let work = self.begin_tree()?;
        let mut state = Layers::default();
        for (layer, filter) in &layers {
            let blob = self.open_blob(layer)?;
            let opts = layer_options(filter.clone());
            let summary = unpack_layer(
                io::BufReader::with_capacity(1 << 20, blob),
                work.rootfs.as_fd(),
                &opts,
                &mut state,
            )
            .map_err(|source| StoreError::Render {
                image: id.clone(),
                layer: layer.clone(),
                source,
            })?;
            // The blob was checked on insert; a changed file on disk must not be rendered.
            if summary.id != *layer {
                return Err(StoreError::Render {
                    image: id.clone(),
                    layer: layer.clone(),
                    source: ArchiveError::ReadStream(io::Error::other(format!(
                        "stored blob now hashes to {}",
                        summary.id
                    ))),
                });
            }
        }
        // Directory modes last, once: a read-only directory of a lower layer must not stop a
        // later layer (without root) from writing into it.
        if let Some((top, _)) = layers.last() {
            finish_layers(
                work.rootfs.as_fd(),
                &layer_options(PathFilter::default()),
                state,
            )
            .map_err(|source| StoreError::Render {
                image: id.clone(),
                layer: top.clone(),
                source,
            })?;
        }
        self.commit_tree(work, tree)
    }

    /// A new locked temp directory for a tree, with its empty `rootfs/` open.
    fn begin_tree(&self) -> Result<TreeWork, StoreError> {
        let shared = self.lock(FlockOperation::LockShared)?;
        let tmp = self.trees.join(tmp_name(""));
        let werr = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Write { path, source }
        };
        fs::create_dir(&tmp).map_err(werr(&tmp))?;
        let guard = TempGuard(tmp.clone());
        let dir: OwnedFd = rustix::fs::open(
            &tmp,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| werr(&tmp)(e.into()))?;
        rustix::fs::flock(&dir, FlockOperation::LockExclusive).map_err(|e| werr(&tmp)(e.into()))?;
        drop(shared);
        rustix::fs::mkdirat(&dir, "rootfs", Mode::from_raw_mode(0o755))
            .map_err(|e| werr(&tmp)(e.into()))?;
        let rootfs = rustix::fs::openat(
            &dir,
            "rootfs",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| werr(&tmp)(e.into()))?;
        Ok(TreeWork { guard, dir, rootfs })
    }

    /// Writes `tree.json`, syncs the tree and renames it into place. If the same tree appeared
    /// meanwhile, ours is dropped: theirs has the same content.
    fn commit_tree(&self, work: TreeWork, tree: RenderedTree) -> Result<RenderedTree, StoreError> {
        let tmp = work.guard.0.clone();
        let werr = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Write { path, source }
        };
        let final_dir = self.trees.join(&tree.key);
        let json = serde_json::to_vec_pretty(&tree).map_err(|e| werr(&tmp)(e.into()))?;
        fs::write(tmp.join("tree.json"), json).map_err(werr(&tmp))?;
        rustix::fs::syncfs(&work.dir).map_err(|e| werr(&tmp)(e.into()))?;
        match fs::rename(&tmp, &final_dir) {
            Ok(()) => work.guard.keep(),
            Err(_) if final_dir.join("tree.json").exists() => {}
            Err(source) => {
                return Err(StoreError::Write {
                    path: final_dir,
                    source,
                });
            }
        }
        fsync_dir(&self.trees)?;
        Ok(tree)
    }

    /// Every rendered tree.
    pub fn trees(&self) -> Result<Vec<RenderedTree>, StoreError> {
        let mut out = Vec::new();
        for name in self.read_dir(&self.trees)? {
            if name.starts_with(TMP_PREFIX) {
                continue;
            }
            let path = self.trees.join(&name).join("tree.json");
            let Ok(bytes) = fs::read(&path) else {
                continue;
            };
            let mut tree: RenderedTree =
                serde_json::from_slice(&bytes).map_err(|source| StoreError::CorruptMetadata {
                    path: path.clone(),
                    source,
                })?;
            tree.path = self.trees.join(&name).join("rootfs");
            out.push(tree);
        }
        Ok(out)
    }

    /// Removes images not reachable from `roots` through dependencies found in the store, and
    /// trees that are not a rendering of a root.
    ///
    /// Runs under the exclusive store lock (see [`Store::remove`]), so no image or tree is
    /// published while it decides what to delete.
    pub fn gc(&self, roots: &[ImageId]) -> Result<GcReport, StoreError> {
        let _exclusive = self.lock(FlockOperation::LockExclusive)?;
        let mut keep: BTreeSet<ImageId> = BTreeSet::new();
        let mut todo: Vec<ImageId> = roots.to_vec();
        while let Some(id) = todo.pop() {
            let Ok(record) = self.get(id.as_str()) else {
                continue;
            };
            if !keep.insert(record.id.clone()) {
                continue;
            }
            if let Ok(m) = record.manifest_view() {
                for dep in &m.dependencies {
                    if let Ok(dep_id) = StoreOnly.resolve(self, dep) {
                        todo.push(dep_id);
                    }
                }
            }
        }
        let roots: HashSet<&ImageId> = roots.iter().collect();
        let mut report = GcReport::default();
        for name in self.read_dir(&self.trees)? {
            if name.starts_with(TMP_PREFIX) {
                continue;
            }
            let path = self.trees.join(&name);
            let tree: Option<RenderedTree> = fs::read(path.join("tree.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let wanted = tree.is_some_and(|t| {
                roots.contains(&t.image) && t.layers.iter().all(|l| keep.contains(l))
            });
            if !wanted {
                remove_path(&path)?;
                report.removed_trees.push(name);
            }
        }
        for record in self.list()? {
            if !keep.contains(&record.id) {
                self.remove_locked(&record.id)?;
                report.removed_images.push(record.id);
            }
        }
        Ok(report)
    }
}

/// The name of the tree made of `layers` (in application order).
fn tree_key<'a>(layers: impl Iterator<Item = &'a ImageId>) -> String {
    let ids: Vec<&str> = layers.map(ImageId::as_str).collect();
    format!(
        "deps-sha512-{}",
        hex::encode(Sha512::digest(ids.join(",").as_bytes()))
    )
}

/// How every layer of a tree is unpacked, whether while fetching or when rendering later.
fn layer_options(filter: PathFilter) -> UnpackOptions {
    UnpackOptions {
        read: ReadOptions::default(),
        owners: Owners::Auto,
        xattrs: true,
        overwrite: true,
        filter,
        ..UnpackOptions::default()
    }
}

/// A tree being written: its locked temp directory (removed on drop) and open `rootfs/`.
struct TreeWork {
    guard: TempGuard,
    dir: OwnedFd,
    rootfs: OwnedFd,
}

/// Removes a temp file or directory on drop unless kept (error paths clean up after themselves).
struct TempGuard(PathBuf);

impl TempGuard {
    fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        let _ = remove_path(&self.0);
    }
}

fn remove_path(path: &Path) -> Result<(), StoreError> {
    let res = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    res.map_err(|source| StoreError::Remove {
        path: path.to_path_buf(),
        source,
    })
}
