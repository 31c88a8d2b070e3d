//! Rendering an image and its dependencies into a tree (appc order, later layers win,
//! pathWhitelist applied), and the locked temp trees that renders and ingests write into.

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{FlockOperation, Mode, OFlags};
use sha2::{Digest, Sha512};

use super::layout::{TempGuard, fsync_dir, tmp_name};
use super::{MAX_DEPTH, RenderedTree, Resolver, Store, StoreError, TMP_PREFIX};
use crate::archive::unpack::{Layers, finish_layers, unpack_layer};
use crate::archive::{ArchiveError, ImageId, Owners, PathFilter, ReadOptions, UnpackOptions};

impl Store {
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
    pub(super) fn begin_tree(&self) -> Result<TreeWork, StoreError> {
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
    pub(super) fn commit_tree(
        &self,
        work: TreeWork,
        tree: RenderedTree,
    ) -> Result<RenderedTree, StoreError> {
        // A publish, like an image's: no gc or remove may run while the tree moves into place.
        let _shared = self.lock(FlockOperation::LockShared)?;
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
}

/// The name of the tree made of `layers` (in application order).
pub(super) fn tree_key<'a>(layers: impl Iterator<Item = &'a ImageId>) -> String {
    let ids: Vec<&str> = layers.map(ImageId::as_str).collect();
    format!(
        "deps-sha512-{}",
        hex::encode(Sha512::digest(ids.join(",").as_bytes()))
    )
}

/// How every layer of a tree is unpacked, whether while fetching or when rendering later.
pub(super) fn layer_options(filter: PathFilter) -> UnpackOptions {
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
pub(super) struct TreeWork {
    pub(super) guard: TempGuard,
    pub(super) dir: OwnedFd,
    pub(super) rootfs: OwnedFd,
}
