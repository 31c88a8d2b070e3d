//! The store-wide lock and locked temp files. Writers hold the lock shared while they create
//! (and `flock`) a temp and while they publish; cleanup, `remove` and `gc` hold it exclusive,
//! so they never take a live writer's temp, or a half-done publish, for a crashed one.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use rustix::fs::{FlockOperation, Mode, OFlags};

use super::layout::{TempGuard, tmp_name};
use super::{Store, StoreError};

impl Store {
    /// Takes the store-wide lock (see the module docs); it is released when the fd is dropped.
    pub(super) fn lock(&self, op: FlockOperation) -> Result<OwnedFd, StoreError> {
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
    pub(super) fn create_temp_file(
        &self,
        ext: &str,
    ) -> Result<(PathBuf, File, TempGuard), StoreError> {
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
}
