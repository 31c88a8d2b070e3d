//! Importing one embedded image into the store the checked way (signature over the raw bytes
//! first, then name and pin), and the dependency resolver that does so for dependencies the
//! store does not hold yet.

use std::fs::File;
use std::io::{self, Read, Write};

use aci::archive::ImageId;
use aci::archive::manifest_view::DependencyRef;
use aci::sign::Prehasher;
use aci::store::{ImageRecord, RenderedTree, Resolver, Store, StoreError, StoreOnly};
use aci::trust::{InsecureOptions, TrustError};
use hostdecl::plan::EmbeddedImage;

use super::{ImageError, ImageReport, ImageSource, Images};

/// Read size while streaming an embedded file into the store.
const CHUNK: usize = 256 << 10;

/// What an import stored.
pub(super) struct Imported {
    pub(super) record: ImageRecord,
    /// Rendered in the same pass when the image has no dependencies and no pathWhitelist.
    pub(super) tree: Option<RenderedTree>,
    pub(super) report: ImageReport,
}

impl Images {
    /// Imports embedded image `e` (see the module docs of `images` for the order of checks).
    pub(super) fn import(&self, e: &EmbeddedImage) -> Result<Imported, ImageError> {
        let file = self.path_in_payload(&e.file);
        let sig_path = self.path_in_payload(&e.signature);
        let signature = match std::fs::read(&sig_path) {
            Ok(bytes) => Some(bytes),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(ImageError::Read {
                    file,
                    path: sig_path,
                    source,
                });
            }
        };
        let refused = |err: TrustError| ImageError::from_trust(file.clone(), sig_path.clone(), err);
        // Unsigned, unknown key, key not trusted for this name: refused before a byte is read.
        let pending = self
            .trust
            .prepare(&e.name, signature.as_deref(), InsecureOptions::default())
            .map_err(refused)?;
        // The pending check exists only for a signed image, as unsigned ones are not allowed.
        let key = pending.key_id().ok_or_else(|| ImageError::Unsigned {
            file: file.clone(),
            signature: sig_path.clone(),
        })?;
        let store_err = |source| ImageError::Store {
            what: file.display().to_string(),
            source: Box::new(source),
        };
        let mut input = File::open(&file).map_err(|source| ImageError::Read {
            file: file.clone(),
            path: file.clone(),
            source,
        })?;
        let mut ingest = self.store.begin_ingest(true).map_err(store_err)?;
        let mut prehasher = pending.wants_prehash().then(Prehasher::new);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(ImageError::Read {
                        file: file.clone(),
                        path: file.clone(),
                        source,
                    });
                }
            };
            let data = buf.get(..n).unwrap_or_default();
            if let Some(h) = &mut prehasher {
                h.update(data);
            }
            if let Err(source) = ingest.write_all(data) {
                return Err(store_err(StoreError::Write {
                    path: ingest.blob_path().to_path_buf(),
                    source,
                }));
            }
        }
        let received = ingest.finish().map_err(store_err)?;
        // The signature decides over the bytes now in the temp blob, before anything parses them.
        let accepted = match prehasher {
            Some(h) => pending.finish_prehash(&h.finish()),
            None => pending.finish_reader(received.open().map_err(store_err)?),
        }
        .map_err(refused)?;
        let source_name = file.display().to_string();
        let ingested = received
            .unpack(&accepted, &source_name)
            .map_err(|source| match source {
                StoreError::InsertInvalid { .. } => ImageError::Invalid {
                    file: file.clone(),
                    key,
                    source: Box::new(source),
                },
                other => store_err(other),
            })?;
        let summary = ingested.summary();
        let found_name = summary.manifest.name.clone();
        accepted.admit(&found_name).map_err(|err| match err {
            TrustError::NameMismatch { expected, manifest } => ImageError::NameMismatch {
                file: file.clone(),
                key,
                expected,
                found: manifest,
            },
            other => refused(other),
        })?;
        if summary.id.as_str() != e.id {
            return Err(ImageError::IdMismatch {
                file,
                key,
                found: summary.id.to_string(),
                pin: e.id.clone(),
            });
        }
        let stored = ingested.commit().map_err(store_err)?;
        let report = ImageReport {
            id: stored.record.id.clone(),
            name: stored.record.name.clone(),
            source: ImageSource::Verified { key, file },
        };
        Ok(Imported {
            record: stored.record,
            tree: stored.tree,
            report,
        })
    }
}

/// Resolves dependencies from the store, importing from the payload (checked) what it lacks.
pub(super) struct EmbeddedResolver<'a> {
    images: &'a Images,
    reports: Vec<ImageReport>,
}

impl<'a> EmbeddedResolver<'a> {
    pub(super) fn new(images: &'a Images) -> EmbeddedResolver<'a> {
        EmbeddedResolver {
            images,
            reports: Vec::new(),
        }
    }

    /// The dependencies imported while rendering, in import order.
    pub(super) fn into_reports(self) -> Vec<ImageReport> {
        self.reports
    }

    /// The embedded images that may satisfy `dep`: by `imageID` when it gives one, else every
    /// embedded image of that name (the store then picks by labels and version).
    fn candidates(&self, dep: &DependencyRef) -> Vec<&'a EmbeddedImage> {
        let images: &'a Images = self.images;
        images
            .embedded
            .iter()
            .filter(|e| match &dep.image_id {
                Some(want) => {
                    e.name == dep.image_name
                        && ImageId::new(e.id.as_str()).is_ok_and(|id| id.matches_prefix(want))
                }
                None => e.name == dep.image_name,
            })
            .collect()
    }
}

fn missing(err: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    matches!(
        err.downcast_ref::<StoreError>(),
        Some(StoreError::NotFound(_) | StoreError::NoMatch { .. })
    )
}

impl Resolver for EmbeddedResolver<'_> {
    fn resolve(
        &mut self,
        store: &Store,
        dep: &DependencyRef,
    ) -> Result<ImageId, Box<dyn std::error::Error + Send + Sync>> {
        match StoreOnly.resolve(store, dep) {
            Err(err) if missing(err.as_ref()) => {}
            found => return found,
        }
        let candidates = self.candidates(dep);
        if candidates.is_empty() {
            return Err(Box::new(match &dep.image_id {
                Some(id) => ImageError::NotAvailable { id: id.clone() },
                None => ImageError::NoEmbeddedMatch {
                    name: dep.image_name.clone(),
                    labels: dep.labels.clone(),
                },
            }));
        }
        for e in candidates {
            let already = ImageId::parse_full(&e.id)
                .ok()
                .is_some_and(|id| store.blob_path(&id).exists());
            if !already {
                let imported = self.images.import(e)?;
                self.reports.push(imported.report);
            }
        }
        StoreOnly.resolve(store, dep)
    }
}
