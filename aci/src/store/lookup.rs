//! Finding images: by Image ID or unique prefix, by name and labels (highest version wins),
//! and the list of everything visible.

use std::fs;
use std::io;

use super::{ImageRecord, Store, StoreError};
use crate::archive::ImageId;
use crate::manifest::version_precedence;

impl Store {
    pub(super) fn read_record(&self, id: &ImageId) -> Result<Option<ImageRecord>, StoreError> {
        if !self.blob_path(id).exists() {
            return Ok(None);
        }
        let path = self.meta_path(id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::CorruptMetadata { path, source })
    }

    /// Every visible image, ordered by ID.
    pub fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let mut out = Vec::new();
        for name in self.read_dir(&self.images)? {
            let Some(stem) = name.strip_suffix(".aci") else {
                continue;
            };
            let Ok(id) = ImageId::parse_full(stem) else {
                continue;
            };
            if let Some(r) = self.read_record(&id)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Looks an image up by full ID or a unique prefix (`sha512-` optional).
    pub fn get(&self, id_or_prefix: &str) -> Result<ImageRecord, StoreError> {
        if let Ok(id) = ImageId::parse_full(id_or_prefix) {
            return self
                .read_record(&id)?
                .ok_or_else(|| StoreError::NotFound(id_or_prefix.to_string()));
        }
        let mut matches: Vec<ImageRecord> = self
            .list()?
            .into_iter()
            .filter(|r| r.id.matches_prefix(id_or_prefix))
            .collect();
        match (matches.len(), matches.pop()) {
            (_, None) => Err(StoreError::NotFound(id_or_prefix.to_string())),
            (1, Some(only)) => Ok(only),
            (count, Some(_)) => Err(StoreError::Ambiguous {
                prefix: id_or_prefix.to_string(),
                count,
            }),
        }
    }

    /// The image named `name` carrying every label in `labels` (extra labels are fine). When
    /// several match, the one with the highest `version` label wins, then the latest import.
    pub fn find(&self, name: &str, labels: &[(String, String)]) -> Result<ImageRecord, StoreError> {
        self.list()?
            .into_iter()
            .filter(|r| {
                r.name == name && labels.iter().all(|(n, v)| r.label(n) == Some(v.as_str()))
            })
            .max_by(|a, b| {
                version_precedence(
                    a.label("version").unwrap_or(""),
                    b.label("version").unwrap_or(""),
                )
                .then(a.imported_at.cmp(&b.imported_at))
                .then(a.id.cmp(&b.id))
            })
            .ok_or_else(|| StoreError::NoMatch {
                name: name.to_string(),
                labels: labels.to_vec(),
            })
    }
}
