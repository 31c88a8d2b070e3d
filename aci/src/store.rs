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
//!   and while they publish; `Store::open` (cleanup), `remove` and `gc` hold it exclusive, so
//!   none of them mistakes a live writer's temp, or a half-done publish, for a crashed one.
//!
//! Files: `layout` (paths, temp names, cleanup), `lock`, `insert` (trusted local input,
//! publishing), `ingest` (signature-first receiving), `lookup`, `render`, `gc`.
//!
//! An image is visible only when both its `.json` and `.aci` exist; the `.json` is renamed into
//! place first and the `.aci` last, each after an fsync and each followed by a directory fsync,
//! so a crash never shows a partial image. `Store::open` removes what crashed writers left:
//! unlocked temps, a `.json` without its `.aci`, and an `.aci` without its `.json`.

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::archive::manifest_view::{self, DependencyRef, ManifestView};
use crate::archive::{ArchiveError, ImageId};

mod gc;
mod ingest;
mod insert;
mod layout;
mod lock;
mod lookup;
mod render;

pub use ingest::{Ingest, Ingested, InsertVerifiedError, InsertedVerified, Received, StoredImage};
use layout::TempGuard;
use render::{TreeWork, layer_options, tree_key};

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
