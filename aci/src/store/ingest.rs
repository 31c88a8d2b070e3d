//! One-pass ingest of an image that is still arriving: every byte written goes to a temp blob
//! in the store and, through a pipe, to a worker thread that decompresses, hashes (Image ID)
//! and safely unpacks it into a temp tree. Nothing becomes visible until the caller, having
//! checked the signature and the manifest, commits; dropping an unfinished or uncommitted
//! ingest deletes the temp blob and tree.

use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::{RenderedTree, Store, StoreError, TempGuard, TreeWork, layer_options, tree_key};
use crate::archive::pipe::{self, PipeWriter};
use crate::archive::unpack::unpack_into;
use crate::archive::{AciSummary, ArchiveError, PathFilter, ReadOptions, read_aci};

type Worker = PipeWriter<Result<AciSummary, ArchiveError>>;

/// An image being received into the store. Write the ACI's bytes to it, then
/// [`Ingest::finish`].
pub struct Ingest<'s> {
    store: &'s Store,
    with_tree: bool,
    blob_tmp: PathBuf,
    blob: File,
    blob_guard: Option<TempGuard>,
    size: u64,
    tree: Option<TreeWork>,
    worker: Option<Worker>,
}

impl Drop for Ingest<'_> {
    fn drop(&mut self) {
        // Join the worker before its temp tree is removed under it.
        if let Some(w) = self.worker.take() {
            let _ = w.abort();
        }
    }
}

/// A fully received image whose blob is synced and whose tree is unpacked, both still
/// invisible. [`Ingested::commit`] publishes them; dropping it deletes them.
pub struct Ingested<'s> {
    store: &'s Store,
    summary: AciSummary,
    blob_tmp: PathBuf,
    blob_guard: TempGuard,
    size: u64,
    tree: Option<TreeWork>,
}

/// What a commit made visible.
#[derive(Debug, Clone)]
pub struct StoredImage {
    pub record: super::ImageRecord,
    /// The image's rendered tree, when it could be made in the same pass: an image with
    /// dependencies or a pathWhitelist is rendered later by [`Store::render`].
    pub tree: Option<RenderedTree>,
}

impl Store {
    /// Starts receiving an image. With `with_tree`, the image is also unpacked into a tree as
    /// it arrives, so that a commit makes it ready to run without reading the blob again.
    pub fn begin_ingest(&self, with_tree: bool) -> Result<Ingest<'_>, StoreError> {
        let (blob_tmp, blob, blob_guard) = self.create_temp_file(".aci")?;
        let mut ingest = Ingest {
            store: self,
            with_tree,
            blob_tmp,
            blob,
            blob_guard: Some(blob_guard),
            size: 0,
            tree: None,
            worker: None,
        };
        ingest.start()?;
        Ok(ingest)
    }
}

impl<'s> Ingest<'s> {
    /// Starts the worker, and the temp tree it unpacks into.
    fn start(&mut self) -> Result<(), StoreError> {
        let spawn_err = |source| StoreError::Write {
            path: self.blob_tmp.clone(),
            source,
        };
        let worker = if self.with_tree {
            let tree = self.store.begin_tree()?;
            let root = tree.rootfs.try_clone().map_err(spawn_err)?;
            self.tree = Some(tree);
            spawn_unpack(root).map_err(spawn_err)?
        } else {
            pipe::spawn("aci-read", |r| {
                let res = read_aci(&mut *r, &ReadOptions::default());
                r.drain();
                res
            })
            .map_err(spawn_err)?
        };
        self.worker = Some(worker);
        Ok(())
    }

    /// The temp blob (for reading it back, e.g. to check a legacy signature).
    pub fn blob_path(&self) -> &Path {
        &self.blob_tmp
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Forgets everything written so far (a download restarting after a dropped connection).
    pub fn reset(&mut self) -> io::Result<()> {
        if let Some(w) = self.worker.take() {
            let _ = w.abort();
        }
        // Dropping the work removes the temp tree; a fresh one replaces it.
        self.tree = None;
        self.blob.set_len(0)?;
        self.blob.rewind()?;
        self.size = 0;
        self.start().map_err(io::Error::other)
    }

    /// Waits for the worker and syncs the blob. The result is the archive's verdict: a refused
    /// archive (bad layout, escaping link, corrupt compression) is an error here.
    pub fn finish(mut self) -> Result<Ingested<'s>, StoreError> {
        let worker = self.worker.take().ok_or_else(|| StoreError::Write {
            path: self.blob_tmp.clone(),
            source: io::Error::other("the unpacking thread is gone"),
        })?;
        let summary = worker
            .finish()
            .map_err(|source| StoreError::Write {
                path: self.blob_tmp.clone(),
                source,
            })?
            .map_err(|source| StoreError::InsertInvalid {
                // The fetcher reports the URL itself (FetchError::Archive).
                source_name: "a download".to_string(),
                source,
            })?;
        self.blob.sync_all().map_err(|source| StoreError::Write {
            path: self.blob_tmp.clone(),
            source,
        })?;
        let blob_guard = self.blob_guard.take().ok_or_else(|| StoreError::Write {
            path: self.blob_tmp.clone(),
            source: io::Error::other("the temp blob is gone"),
        })?;
        Ok(Ingested {
            store: self.store,
            summary,
            blob_tmp: self.blob_tmp.clone(),
            blob_guard,
            size: self.size,
            tree: self.tree.take(),
        })
    }
}

fn spawn_unpack(root: OwnedFd) -> io::Result<Worker> {
    pipe::spawn("aci-unpack", move |r| {
        let opts = layer_options(PathFilter::default());
        let res = unpack_into(&mut *r, root.as_fd(), &opts);
        // Drained even after a refusal, so the download completes and its signature can be
        // checked (and reported) first; nothing more is unpacked.
        r.drain();
        res
    })
}

impl Write for Ingest<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.blob.write_all(data)?;
        match &mut self.worker {
            Some(w) => w.write_all(data)?,
            None => return Err(io::Error::other("the unpacking thread is gone")),
        }
        self.size += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'s> Ingested<'s> {
    /// What the archive pass learned: Image ID, manifest, sizes.
    pub fn summary(&self) -> &AciSummary {
        &self.summary
    }

    /// The temp blob, still invisible: read it to check a legacy signature before committing.
    pub fn blob_path(&self) -> &Path {
        &self.blob_tmp
    }

    /// Publishes the blob (metadata, then blob, each synced) and, when it was unpacked and the
    /// image needs no other layers, its tree. An image or tree already in the store is kept and
    /// ours discarded.
    pub fn commit(self) -> Result<StoredImage, StoreError> {
        let record =
            self.store
                .publish(&self.blob_tmp, self.blob_guard, &self.summary, self.size)?;
        let manifest = &self.summary.manifest;
        let tree = match self.tree {
            Some(work)
                if manifest.dependencies.is_empty() && manifest.path_whitelist.is_empty() =>
            {
                let key = tree_key(std::iter::once(&record.id));
                let tree = RenderedTree {
                    path: self.store.trees.join(&key).join("rootfs"),
                    key,
                    image: record.id.clone(),
                    layers: vec![record.id.clone()],
                };
                if tree
                    .path
                    .parent()
                    .is_some_and(|d| d.join("tree.json").exists())
                {
                    Some(tree)
                } else {
                    Some(self.store.commit_tree(work, tree)?)
                }
            }
            // Dropping the work removes the temp tree.
            _ => None,
        };
        Ok(StoredImage { record, tree })
    }
}
