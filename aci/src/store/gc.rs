//! Removing images: one by one, or every image and tree not reachable from a set of roots;
//! both under the exclusive store lock.

use std::collections::{BTreeSet, HashSet};
use std::fs;

use rustix::fs::FlockOperation;

use super::layout::{fsync_dir, remove_path};
use super::{GcReport, RenderedTree, Resolver, Store, StoreError, StoreOnly, TMP_PREFIX};
use crate::archive::ImageId;

impl Store {
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
