//! Inserting a trusted local ACI in one pass (read, validate and copy into a temp blob), and
//! publishing a finished temp blob: record first, then blob, each synced.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::FlockOperation;

use super::layout::{TempGuard, fsync_dir};
use super::{ImageRecord, Label, Store, StoreError};
use crate::archive::{AciSummary, ArchiveError, ReadOptions, read_aci};

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
        if let Err(e) = self.out.write_all(buf.get(..n).unwrap_or_default()) {
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
    pub(super) fn publish(
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
}
