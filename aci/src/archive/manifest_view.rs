//! What archive reading and the store need from an image manifest: name, labels, dependencies
//! and pathWhitelist. Full parsing and validation belong to `crate::manifest`; this view is the
//! seam so archive code does not depend on that module's internals.

use serde::Deserialize;

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
    #[error("the manifest is not valid JSON for an Image Manifest")]
    Json(#[source] serde_json::Error),
    #[error("acKind is {0:?}, not \"ImageManifest\"")]
    Kind(String),
    #[error("{field} {value:?} is not a valid AC Identifier")]
    Identifier { field: &'static str, value: String },
    #[error("acVersion {0:?} is not a SemVer version")]
    Version(String),
    #[error("label {0:?} appears twice or is named `name`")]
    Label(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    ac_kind: String,
    ac_version: String,
    name: String,
    #[serde(default)]
    labels: Vec<RawLabel>,
    #[serde(default)]
    dependencies: Vec<RawDependency>,
    #[serde(default)]
    path_whitelist: Vec<String>,
}

#[derive(Deserialize)]
struct RawLabel {
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDependency {
    image_name: String,
    #[serde(rename = "imageID", default)]
    image_id: Option<String>,
    #[serde(default)]
    labels: Vec<RawLabel>,
    #[serde(default)]
    size: Option<u64>,
}

/// Validates an Image Manifest in full (`crate::manifest`) and extracts the fields archive and
/// store code use. The local checks below repeat the ones those fields rely on, so this view
/// stays correct on its own.
pub fn parse_image_manifest(bytes: &[u8]) -> Result<ManifestView, ManifestViewError> {
    crate::manifest::ImageManifest::from_json(bytes).map_err(ManifestViewError::Manifest)?;
    let raw: Raw = serde_json::from_slice(bytes).map_err(ManifestViewError::Json)?;
    if raw.ac_kind != "ImageManifest" {
        return Err(ManifestViewError::Kind(raw.ac_kind));
    }
    if !is_semver(&raw.ac_version) || raw.ac_version == "0.0.0" {
        return Err(ManifestViewError::Version(raw.ac_version));
    }
    check_identifier("name", &raw.name)?;
    let labels = labels_of(raw.labels)?;
    let mut dependencies = Vec::new();
    for d in raw.dependencies {
        check_identifier("dependency imageName", &d.image_name)?;
        dependencies.push(DependencyRef {
            image_name: d.image_name,
            image_id: d.image_id,
            labels: labels_of(d.labels)?,
            size: d.size,
        });
    }
    Ok(ManifestView {
        name: raw.name,
        labels,
        dependencies,
        path_whitelist: raw.path_whitelist,
    })
}

fn labels_of(raw: Vec<RawLabel>) -> Result<Vec<(String, String)>, ManifestViewError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for l in raw {
        check_identifier("label name", &l.name)?;
        if l.name == "name" || out.iter().any(|(n, _)| *n == l.name) {
            return Err(ManifestViewError::Label(l.name));
        }
        out.push((l.name, l.value));
    }
    Ok(out)
}

/// `^[a-z0-9]+([-._~/][a-z0-9]+)*$`, the spec's regex (stricter than Go about doubled separators).
fn check_identifier(field: &'static str, value: &str) -> Result<(), ManifestViewError> {
    let sep = |b: u8| matches!(b, b'-' | b'.' | b'_' | b'~' | b'/');
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = value.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.iter().all(|&b| alnum(b) || sep(b))
        && bytes.first().is_some_and(|&b| alnum(b))
        && bytes.last().is_some_and(|&b| alnum(b))
        && !bytes.windows(2).any(|w| sep(w[0]) && sep(w[1]));
    if ok {
        Ok(())
    } else {
        Err(ManifestViewError::Identifier {
            field,
            value: value.to_string(),
        })
    }
}

fn is_semver(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
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
