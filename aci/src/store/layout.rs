//! Where the store keeps things: its directories, blob and record paths, temp names, and the
//! cleanup `Store::open` does of what crashed writers left behind.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{FlockOperation, Mode, OFlags};

use super::{ImageId, Store, StoreError, TMP_PREFIX};

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

pub(super) fn tmp_name(ext: &str) -> String {
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

pub(super) fn fsync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// Removes a temp file or directory on drop unless kept (error paths clean up after themselves).
pub(super) struct TempGuard(pub(super) PathBuf);

impl TempGuard {
    pub(super) fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        let _ = remove_path(&self.0);
    }
}

pub(super) fn remove_path(path: &Path) -> Result<(), StoreError> {
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

    pub(super) fn read_dir(&self, dir: &Path) -> Result<Vec<String>, StoreError> {
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

    pub(super) fn meta_path(&self, id: &ImageId) -> PathBuf {
        self.images.join(format!("{id}.json"))
    }

    /// Opens the stored ACI bytes (for signature checks or re-reading).
    pub fn open_blob(&self, id: &ImageId) -> Result<File, StoreError> {
        let path = self.blob_path(id);
        File::open(&path).map_err(|source| StoreError::Read { path, source })
    }
}
