//! Receiving an image into the store, signature first: the bytes of an image that is still
//! arriving go only to a locked temp blob (the caller hashes them for the signature as they
//! pass); once received and synced, the blob is parsed and unpacked into a temp tree only
//! when the caller hands over the trust store's [`Accepted`] verdict on those bytes. Nothing
//! becomes visible until the caller, having admitted the manifest's name, commits; dropping an
//! ingest at any step deletes the temp blob and tree.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::{RenderedTree, Store, StoreError, TempGuard, TreeWork, layer_options, tree_key};
use crate::archive::unpack::unpack_into;
use crate::archive::{AciSummary, PathFilter, ReadOptions, read_aci};
use crate::sign::Prehasher;
use crate::trust::{Accepted, InsecureOptions, TrustError, TrustStore, Verified};

/// Read size when parsing a received blob.
const CHUNK: usize = 256 << 10;

/// An image being received into the store. Write the ACI's bytes to it, then
/// [`Ingest::finish`].
pub struct Ingest<'s> {
    store: &'s Store,
    with_tree: bool,
    blob_tmp: PathBuf,
    blob: File,
    blob_guard: TempGuard,
    size: u64,
}

/// A fully received and synced blob that nothing has parsed yet: the caller checks its
/// signature, then [`Received::unpack`]s it with the verdict.
pub struct Received<'s> {
    store: &'s Store,
    with_tree: bool,
    blob_tmp: PathBuf,
    blob_guard: TempGuard,
    size: u64,
}

/// A verified image whose blob is synced and whose tree is unpacked, both still invisible.
/// [`Ingested::commit`] publishes them; dropping it deletes them.
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

/// Why [`Store::insert_verified`] stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum InsertVerifiedError {
    /// The signature, the key or the name was refused.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// The store failed, or the (verified) archive was refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`Store::insert_verified`] stored, and why it was trusted.
#[derive(Debug, Clone)]
pub struct InsertedVerified {
    pub record: super::ImageRecord,
    pub verified: Verified,
}

impl Store {
    /// Starts receiving an image. With `with_tree`, the verified image is also unpacked into a
    /// tree before the commit, so that the commit makes it ready to run.
    pub fn begin_ingest(&self, with_tree: bool) -> Result<Ingest<'_>, StoreError> {
        let (blob_tmp, blob, blob_guard) = self.create_temp_file(".aci")?;
        Ok(Ingest {
            store: self,
            with_tree,
            blob_tmp,
            blob,
            blob_guard,
            size: 0,
        })
    }

    /// Stores the ACI read from `r` (named `source_name` in errors: a path, a URL) only if
    /// `signature` (the `.minisig` bytes, `None` if there is none) verifies against `trust`:
    /// the bytes go to a temp blob while they are hashed, the signature is checked, and only
    /// then is the blob parsed and the manifest's name admitted under the key's scopes. With
    /// `name`, the key must be trusted for that name and the manifest must carry it.
    pub fn insert_verified<R: Read>(
        &self,
        mut r: R,
        source_name: &str,
        signature: Option<&[u8]>,
        trust: &TrustStore,
        name: Option<&str>,
        insecure: InsecureOptions,
    ) -> Result<InsertedVerified, InsertVerifiedError> {
        let pending = match name {
            Some(name) => trust.prepare(name, signature, insecure)?,
            None => trust.prepare_unnamed(source_name, signature, insecure)?,
        };
        let mut ingest = self.begin_ingest(false)?;
        let mut prehasher = pending.wants_prehash().then(Prehasher::new);
        let mut buf = vec![0u8; CHUNK];
        let read_err = |source| StoreError::Read {
            path: PathBuf::from(source_name),
            source,
        };
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(e).into()),
            };
            let data = buf.get(..n).unwrap_or_default();
            if let Some(h) = &mut prehasher {
                h.update(data);
            }
            ingest.write_all(data).map_err(|source| StoreError::Write {
                path: ingest.blob_tmp.clone(),
                source,
            })?;
        }
        let received = ingest.finish()?;
        let accepted = match prehasher {
            Some(h) => pending.finish_prehash(&h.finish())?,
            None => pending.finish_reader(received.open()?)?,
        };
        let ingested = received.unpack(&accepted, source_name)?;
        let verified = accepted.admit(&ingested.summary().manifest.name)?;
        let stored = ingested.commit()?;
        Ok(InsertedVerified {
            record: stored.record,
            verified,
        })
    }
}

impl<'s> Ingest<'s> {
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
        self.blob.set_len(0)?;
        self.blob.rewind()?;
        self.size = 0;
        Ok(())
    }

    /// Syncs the blob. Nothing has looked inside it: that waits for [`Received::unpack`].
    pub fn finish(self) -> Result<Received<'s>, StoreError> {
        self.blob.sync_all().map_err(|source| StoreError::Write {
            path: self.blob_tmp.clone(),
            source,
        })?;
        Ok(Received {
            store: self.store,
            with_tree: self.with_tree,
            blob_tmp: self.blob_tmp,
            blob_guard: self.blob_guard,
            size: self.size,
        })
    }
}

impl Write for Ingest<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.blob.write_all(data)?;
        self.size += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'s> Received<'s> {
    /// The temp blob, still unparsed and invisible.
    pub fn blob_path(&self) -> &Path {
        &self.blob_tmp
    }

    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Opens the blob for reading (to check a legacy signature over the bytes themselves).
    pub fn open(&self) -> Result<BufReader<File>, StoreError> {
        File::open(&self.blob_tmp)
            .map(|f| BufReader::with_capacity(CHUNK, f))
            .map_err(|source| StoreError::Read {
                path: self.blob_tmp.clone(),
                source,
            })
    }

    /// Parses the blob (and unpacks it into a temp tree, if asked when the ingest began), now
    /// that `_accepted` says its signature verified: the trust store's verdict is the only way
    /// to get one, so an unverified blob cannot reach the decompressor. A refused archive
    /// (bad layout, escaping link, corrupt compression) is an error naming `source_name`.
    pub fn unpack(
        self,
        _accepted: &Accepted,
        source_name: &str,
    ) -> Result<Ingested<'s>, StoreError> {
        let invalid = |source| StoreError::InsertInvalid {
            source_name: source_name.to_string(),
            source,
        };
        let blob = self.open()?;
        let (summary, tree) = if self.with_tree {
            let tree = self.store.begin_tree()?;
            let summary = unpack_into(
                blob,
                tree.rootfs.as_fd(),
                &layer_options(PathFilter::default()),
            )
            .map_err(invalid)?;
            (summary, Some(tree))
        } else {
            (
                read_aci(blob, &ReadOptions::default()).map_err(invalid)?,
                None,
            )
        };
        Ok(Ingested {
            store: self.store,
            summary,
            blob_tmp: self.blob_tmp,
            blob_guard: self.blob_guard,
            size: self.size,
            tree,
        })
    }
}

impl<'s> Ingested<'s> {
    /// What the archive pass learned: Image ID, manifest, sizes.
    pub fn summary(&self) -> &AciSummary {
        &self.summary
    }

    /// The temp blob, still invisible.
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
