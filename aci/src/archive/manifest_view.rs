//! What archive reading and the store need from an image manifest: name, labels, dependencies
//! and pathWhitelist, taken from a manifest `crate::manifest` has validated (no checks of its
//! own), as plain strings so archive and store code need not know the manifest's types.

use crate::manifest::{ImageManifest, Labels};

/// The parts of a validated Image Manifest that reading, rendering and look-up use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestView {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub dependencies: Vec<DependencyRef>,
    pub path_whitelist: Vec<String>,
}

/// One `dependencies[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyRef {
    pub image_name: String,
    pub image_id: Option<String>,
    pub labels: Vec<(String, String)>,
    pub size: Option<u64>,
}

impl ManifestView {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestViewError {
    #[error("the Image Manifest does not validate")]
    Manifest(#[source] crate::manifest::ManifestError),
}

/// Validates an Image Manifest in full (`crate::manifest`, the one validator) and takes from it
/// the fields archive and store code use.
pub fn parse_image_manifest(bytes: &[u8]) -> Result<ManifestView, ManifestViewError> {
    let m = ImageManifest::from_json(bytes).map_err(ManifestViewError::Manifest)?;
    Ok(ManifestView::from(&m))
}

fn pairs(labels: &Labels) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|l| (l.name.as_str().to_string(), l.value.clone()))
        .collect()
}

impl From<&ImageManifest> for ManifestView {
    fn from(m: &ImageManifest) -> Self {
        ManifestView {
            name: m.name.as_str().to_string(),
            labels: pairs(&m.labels),
            dependencies: m
                .dependencies
                .iter()
                .map(|d| DependencyRef {
                    image_name: d.image_name.as_str().to_string(),
                    image_id: d.image_id.as_ref().map(|id| id.as_str().to_string()),
                    labels: pairs(&d.labels),
                    size: d.size,
                })
                .collect(),
            path_whitelist: m.path_whitelist.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_labels_dependencies_and_whitelist() {
        let m = parse_image_manifest(
            br#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/app",
            "labels":[{"name":"version","value":"1.0"}],
            "dependencies":[{"imageName":"example.com/base","labels":[{"name":"os","value":"linux"}]}],
            "pathWhitelist":["/bin/sh"]}"#,
        )
        .unwrap();
        assert_eq!(m.name, "example.com/app");
        assert_eq!(m.label("version"), Some("1.0"));
        assert_eq!(m.dependencies[0].image_name, "example.com/base");
        assert_eq!(m.path_whitelist, vec!["/bin/sh"]);
    }

    #[test]
    fn refuses_pod_manifests_bad_names_and_duplicate_labels() {
        assert!(
            parse_image_manifest(br#"{"acKind":"PodManifest","acVersion":"0.8.11","name":"a"}"#)
                .is_err()
        );
        assert!(
            parse_image_manifest(
                br#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"BAD"}"#
            )
            .is_err()
        );
        assert!(
            parse_image_manifest(br#"{"acKind":"ImageManifest","acVersion":"x","name":"a"}"#)
                .is_err()
        );
        assert!(
            parse_image_manifest(
                br#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"a","labels":[{"name":"os","value":"linux"},{"name":"os","value":"linux"}]}"#
            )
            .is_err()
        );
    }
}
