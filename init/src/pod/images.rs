//! Getting each app's image ready: from the store on the data partition when an earlier boot
//! put it there, else from the verified payload into the store, checked first; then rendered
//! with its dependencies (appc order) into the read-only tree the app's overlay mounts.
//!
//! The check of an embedded image, in this order, before anything parses its bytes:
//! 1. its `.minisig` names a key the initramfs's trust store ([`hostimg::TRUST_PATH`]) holds
//!    for the image's name (root, or a prefix covering the name along `/` components);
//! 2. the signature verifies over the file's raw bytes while they stream into a locked temp
//!    blob of the store;
//! 3. only then is the archive decompressed and unpacked (into a temp tree), and its manifest
//!    must carry the name the builder recorded (and the key must be trusted for it);
//! 4. its Image ID must equal the pin (the ID the builder recorded, which the pod manifest's
//!    app names);
//! 5. then blob, record and tree are published, each synced, so a power cut leaves either the
//!    whole image or nothing (a later [`Images::open`] removes the leftovers).
//!
//! A refusal at any step stores nothing and is an [`ImageError`] naming the file, the key and
//! the reason. An image already in the store is trusted as the store holds it: it passed these
//! checks when it was imported. A dependency missing from the store is imported from the
//! payload the same checked way (by its `imageID`, else by name, then matched on labels).
//!
//! Console lines (see `console`): each [`ImageReport`] is printed as
//! `init: pod <pod>: <report>`, a refusal as `init: pod <pod>: refused: <error chain>`.

use std::fmt;
use std::path::{Path, PathBuf};

use aci::archive::ImageId;
use aci::manifest::ImageManifest;
use aci::sign::KeyId;
use aci::store::{ImageRecord, RenderedTree, Store, StoreError};
use aci::trust::TrustStore;
use hostdecl::plan::EmbeddedImage;

mod error;
mod import;
#[cfg(test)]
mod tests;

pub use error::{ImageError, id12};
use import::EmbeddedResolver;

/// Where the images come from and go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePaths {
    /// The image store (created if missing).
    pub store: PathBuf,
    /// The trust store (rkt layout: `root.d/`, `prefix.d/<prefix>/`).
    pub trust: PathBuf,
    /// What [`EmbeddedImage`]'s paths are relative to.
    pub payload: PathBuf,
}

impl ImagePaths {
    /// The paths of a booted host image: [`hostimg::STORE_DIR`], [`hostimg::TRUST_PATH`],
    /// [`hostimg::PAYLOAD_MOUNT`].
    pub fn boot() -> ImagePaths {
        ImagePaths {
            store: hostimg::STORE_DIR.into(),
            trust: hostimg::TRUST_PATH.into(),
            payload: hostimg::PAYLOAD_MOUNT.into(),
        }
    }
}

/// How one image got into the store for this start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// Imported from the payload now: its signature by `key` verified.
    Verified { key: KeyId, file: PathBuf },
    /// An earlier boot (or an earlier pod) imported it.
    InStore,
}

/// One image made ready, as init reports it on the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReport {
    pub id: ImageId,
    pub name: String,
    pub source: ImageSource,
}

impl fmt::Display for ImageReport {
    /// `image <id12> (<name>) verified with key <key id> from <file>` or
    /// `image <id12> (<name>) found in the store`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "image {} ({})", id12(self.id.as_str()), self.name)?;
        match &self.source {
            ImageSource::Verified { key, file } => {
                write!(f, " verified with key {key} from {}", file.display())
            }
            ImageSource::InStore => f.write_str(" found in the store"),
        }
    }
}

/// An app's image, ready to run.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    pub id: ImageId,
    pub manifest: ImageManifest,
    /// The rendered tree's rootfs (the store's; mount it read-only, never write into it).
    pub rootfs: PathBuf,
    /// Layers in application order: dependencies depth-first, the image itself last.
    pub layers: Vec<ImageId>,
    /// The image itself first, then each dependency imported from the payload while rendering.
    pub reports: Vec<ImageReport>,
}

/// The store, the trust store and the payload's embedded images.
#[derive(Debug)]
pub struct Images {
    store: Store,
    trust: TrustStore,
    payload: PathBuf,
    embedded: Vec<EmbeddedImage>,
}

impl Images {
    /// Opens the store at `paths.store`, creating it if missing. What a power cut left there
    /// (unlocked temp blobs and trees, a record without its blob) is removed by
    /// [`Store::open`]; the store lock is an `flock`, which no crash can leave held.
    pub fn open(paths: &ImagePaths, embedded: Vec<EmbeddedImage>) -> Result<Images, ImageError> {
        let store = Store::open(&paths.store).map_err(|source| ImageError::OpenStore {
            path: paths.store.clone(),
            source: Box::new(source),
        })?;
        Ok(Images {
            store,
            trust: TrustStore::new(&paths.trust),
            payload: paths.payload.clone(),
            embedded,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Makes image `id` (the pod manifest app's `image.id`) ready: found in the store, or
    /// imported from the payload, then rendered with its dependencies.
    pub fn prepare(&self, id: &ImageId) -> Result<PreparedImage, ImageError> {
        let mut resolver = EmbeddedResolver::new(self);
        let (record, tree, report) = match self.stored(id)? {
            Some(record) => {
                let report = ImageReport {
                    id: record.id.clone(),
                    name: record.name.clone(),
                    source: ImageSource::InStore,
                };
                (record, None, report)
            }
            None => {
                let embedded = self
                    .embedded_by_id(id)
                    .ok_or_else(|| ImageError::NotAvailable { id: id.to_string() })?;
                let imported = self.import(embedded)?;
                (imported.record, imported.tree, imported.report)
            }
        };
        // Before rendering: an image init cannot read the manifest of is not worth a tree.
        let manifest = ImageManifest::from_json(record.manifest.as_bytes()).map_err(|source| {
            ImageError::Manifest {
                id: record.id.to_string(),
                name: record.name.clone(),
                source: Box::new(source),
            }
        })?;
        let tree = match tree {
            Some(tree) => tree,
            None => self.render(&record, &mut resolver)?,
        };
        let mut reports = vec![report];
        reports.extend(resolver.into_reports());
        Ok(PreparedImage {
            id: record.id,
            manifest,
            rootfs: tree.path,
            layers: tree.layers,
            reports,
        })
    }

    /// The stored image `id`, if the store has it.
    fn stored(&self, id: &ImageId) -> Result<Option<ImageRecord>, ImageError> {
        match self.store.get(id.as_str()) {
            Ok(record) => Ok(Some(record)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(source) => Err(ImageError::Store {
                what: id12(id.as_str()).to_string(),
                source: Box::new(source),
            }),
        }
    }

    /// The embedded image whose recorded ID is `id` (or starts with it).
    fn embedded_by_id(&self, id: &ImageId) -> Option<&EmbeddedImage> {
        self.embedded
            .iter()
            .find(|e| e.id == id.as_str())
            .or_else(|| {
                self.embedded.iter().find(|e| {
                    ImageId::new(e.id.as_str()).is_ok_and(|e| e.matches_prefix(id.as_str()))
                })
            })
    }

    fn render(
        &self,
        record: &ImageRecord,
        resolver: &mut EmbeddedResolver<'_>,
    ) -> Result<RenderedTree, ImageError> {
        self.store
            .render(&record.id, resolver)
            .map_err(|e| match e {
                StoreError::Resolve {
                    dependency, source, ..
                } => match source.downcast::<ImageError>() {
                    Ok(refusal) => ImageError::Dependency {
                        id: record.id.to_string(),
                        name: record.name.clone(),
                        dependency,
                        source: refusal,
                    },
                    Err(source) => ImageError::Store {
                        what: id12(record.id.as_str()).to_string(),
                        source: Box::new(StoreError::Resolve {
                            image: record.id.clone(),
                            dependency,
                            source,
                        }),
                    },
                },
                other => ImageError::Store {
                    what: id12(record.id.as_str()).to_string(),
                    source: Box::new(other),
                },
            })
    }

    fn path_in_payload(&self, rel: &str) -> PathBuf {
        self.payload.join(Path::new(rel.trim_start_matches('/')))
    }
}
