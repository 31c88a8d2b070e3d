//! appc 0.8.11 Image and Pod Manifests: decoding, validation against every rule of the spec
//! (and of the Go reference where it is stricter), and writing back in appc's JSON form.
//!
//! Decisions a reader needs:
//! - **Decode, then validate.** [`ImageManifest::from_json`] and [`PodManifest::from_json`] first
//!   decode with serde; a JSON syntax error, a wrong type, a missing required field or a
//!   malformed name/version/ID (their types check their grammar) stops there with
//!   [`ManifestError::Decode`]. Then `validate` checks every cross-field rule and returns *all*
//!   broken rules at once in [`ManifestError::Invalid`]. Every error names its JSON path, e.g.
//!   `app.ports[1].count: must be at least 1`.
//! - **Unknown JSON fields are accepted and ignored**, as Go's `encoding/json` does, so manifests
//!   written by newer tools still load. They are not kept: writing a manifest back drops them.
//!   JSON `null` for a list or map means "absent", because Go writes `"volumes": null`.
//! - **Unknown isolators are accepted** and kept verbatim ([`Isolator::Other`]): the spec lets an
//!   executor ignore them (it must say so). The Go library rejects them at app level; we do not.
//! - **Pod templates.** [`PodManifest::from_json`] checks a runnable ("reified") pod: every app
//!   image has an `id`, every mount names a declared volume. [`PodManifest::from_json_template`]
//!   (or [`PodMode::Template`]) lets images be named by `name`/`labels` only and volumes be bound
//!   later, which is how the spec's `pod_template.json` is meant.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod annotations;
mod app;
mod checks;
mod image;
mod isolator;
mod labels;
mod named_list;
mod pod;
mod types;
mod version_order;

use std::fmt;

use serde::Deserialize;
use serde::de::DeserializeOwned;

pub use annotations::{Annotation, Annotations};
pub use app::{App, EnvironmentVariable, EventHandler, EventHandlerName, MountPoint, Port};
pub use image::{Dependency, ImageManifest};
pub use isolator::{
    ApparmorProfile, CapabilitySet, Isolator, Quantity, Resource, SeccompSet, SelinuxContext,
};
pub use labels::{Label, Labels, VALID_OS_ARCH};
pub use pod::{
    ExposedPort, Mount, PodManifest, PodMode, RuntimeApp, RuntimeImage, Volume, VolumeKind,
};
pub(crate) use types::is_ac_identifier;
pub use types::{
    APPC_VERSION, AcIdentifier, AcName, AcVersion, ImageId, ImageManifestKind, InvalidValue,
    PodManifestKind,
};
pub use version_order::version_precedence;

/// One broken rule: the JSON path of the offending field and why it is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{reason}", .path, if .path.is_empty() { "" } else { ": " })]
pub struct FieldError {
    /// E.g. `app.ports[1].count`; empty for the document as a whole.
    pub path: String,
    pub reason: String,
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON, or not the manifest's shape: a wrong type, a missing required field, or a name,
    /// version or ID that breaks its grammar. Decoding stops at the first of these.
    #[error("cannot decode manifest: {0}")]
    Decode(FieldError),
    /// Decoded, but breaks the spec's rules; holds every broken rule, at least one.
    #[error("invalid manifest: {}", ErrorList(.0))]
    Invalid(Vec<FieldError>),
    /// `acKind` is neither `ImageManifest` nor `PodManifest`.
    #[error("unknown acKind {0:?}: expected \"ImageManifest\" or \"PodManifest\"")]
    UnknownKind(String),
    /// Encoding to JSON failed (only a custom serializer bug could cause it).
    #[error("cannot encode manifest as JSON: {0}")]
    Encode(String),
}

impl ManifestError {
    /// The individual field errors: all of them for `Invalid`, the one for `Decode`.
    pub fn errors(&self) -> &[FieldError] {
        match self {
            ManifestError::Decode(e) => std::slice::from_ref(e),
            ManifestError::Invalid(v) => v,
            ManifestError::UnknownKind(_) | ManifestError::Encode(_) => &[],
        }
    }
}

struct ErrorList<'a>(&'a [FieldError]);

impl fmt::Display for ErrorList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Which manifest a JSON document is, by its `acKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    Image,
    Pod,
}

/// Reads only `acKind`, so a tool can pick the right parser (`builder aci validate FILE`).
pub fn detect_kind(json: &[u8]) -> Result<ManifestKind, ManifestError> {
    #[derive(Deserialize)]
    struct KindOnly {
        #[serde(rename = "acKind")]
        ac_kind: String,
    }
    let k: KindOnly = decode(json)?;
    match k.ac_kind.as_str() {
        ImageManifestKind::NAME => Ok(ManifestKind::Image),
        PodManifestKind::NAME => Ok(ManifestKind::Pod),
        _ => Err(ManifestError::UnknownKind(k.ac_kind)),
    }
}

/// Either manifest, for callers that accept both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    Image(Box<ImageManifest>),
    Pod(Box<PodManifest>),
}

impl Manifest {
    /// Detects the kind and decodes and validates accordingly; pods in `mode`.
    pub fn from_json(json: &[u8], mode: PodMode) -> Result<Manifest, ManifestError> {
        match detect_kind(json)? {
            ManifestKind::Image => Ok(Manifest::Image(Box::new(ImageManifest::from_json(json)?))),
            ManifestKind::Pod => Ok(Manifest::Pod(Box::new(PodManifest::from_json_with(
                json, mode,
            )?))),
        }
    }
}

/// serde_json with the JSON path of the failing field attached.
pub(crate) fn decode<T: DeserializeOwned>(json: &[u8]) -> Result<T, ManifestError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
    // Trailing bytes after the document would otherwise pass unnoticed.
    de.end().map_err(|e| {
        ManifestError::Decode(FieldError {
            path: String::new(),
            reason: e.to_string(),
        })
    })?;
    Ok(value)
}

fn path_error(e: serde_path_to_error::Error<serde_json::Error>) -> ManifestError {
    let path = e.path().to_string();
    let path = if path == "." { String::new() } else { path };
    ManifestError::Decode(FieldError {
        path,
        reason: e.into_inner().to_string(),
    })
}

pub(crate) fn encode_pretty<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ManifestError> {
    let mut out =
        serde_json::to_vec_pretty(value).map_err(|e| ManifestError::Encode(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

/// Deserializes JSON `null` as the type's default (empty list or map): Go writes nil slices as
/// `null` in fields without `omitempty`, e.g. a pod manifest's `"volumes": null`.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
pub(crate) mod test_util;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_image_and_pod_manifests() {
        assert_eq!(
            detect_kind(br#"{"acKind":"ImageManifest","x":1}"#).unwrap(),
            ManifestKind::Image
        );
        assert_eq!(
            detect_kind(br#"{"acKind":"PodManifest"}"#).unwrap(),
            ManifestKind::Pod
        );
    }

    #[test]
    fn detect_kind_names_unknown_and_missing_kind() {
        assert_eq!(
            detect_kind(br#"{"acKind":"Other"}"#).unwrap_err(),
            ManifestError::UnknownKind("Other".into())
        );
        let err = detect_kind(b"{}").unwrap_err();
        assert!(err.to_string().contains("missing field `acKind`"), "{err}");
        assert!(detect_kind(b"not json").is_err());
    }

    #[test]
    fn manifest_fixtures_validate_unless_named_invalid() {
        let dir = format!("{}/test_data/manifests", env!("CARGO_MANIFEST_DIR"));
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            seen += 1;
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let result = Manifest::from_json(&std::fs::read(&path).unwrap(), PodMode::Reified);
            if name.starts_with("invalid-") {
                // A rule, not a typo in the fixture, must be what rejects it.
                assert!(
                    matches!(result, Err(ManifestError::Invalid(_))),
                    "{name} should break a validation rule, got {result:?}"
                );
            } else {
                let m = result.unwrap_or_else(|e| panic!("{name}: {e}"));
                match (name.starts_with("pod-"), m) {
                    (true, Manifest::Pod(_)) | (false, Manifest::Image(_)) => {}
                    (_, other) => panic!("{name} decoded as {other:?}"),
                }
            }
        }
        assert!(seen >= 6, "fixtures missing from {dir}");
    }

    #[test]
    fn manifest_from_json_picks_parser_by_kind() {
        let image = test_util::example("image.json");
        assert!(matches!(
            Manifest::from_json(&image, PodMode::Reified),
            Ok(Manifest::Image(_))
        ));
        let template = test_util::example("pod_template.json");
        assert!(Manifest::from_json(&template, PodMode::Reified).is_err());
        assert!(matches!(
            Manifest::from_json(&template, PodMode::Template),
            Ok(Manifest::Pod(_))
        ));
    }

    /// Manifests come from untrusted archives and init must not panic: every truncation and a
    /// spread of byte corruptions of the examples must come back as a result.
    #[test]
    fn never_panics_on_truncated_or_corrupted_examples() {
        for name in ["image.json", "pod_runtime.json", "pod_template.json"] {
            let bytes = test_util::example(name);
            for len in 0..bytes.len() {
                let _ = Manifest::from_json(&bytes[..len], PodMode::Template);
            }
            for at in (0..bytes.len()).step_by(3) {
                for b in [b'"', b'0', b'-', b']', 0xff] {
                    let mut corrupt = bytes.clone();
                    corrupt[at] = b;
                    let _ = Manifest::from_json(&corrupt, PodMode::Reified);
                }
            }
        }
    }

    #[test]
    fn invalid_error_display_lists_every_error() {
        let err = ManifestError::Invalid(vec![
            FieldError {
                path: "a".into(),
                reason: "x".into(),
            },
            FieldError {
                path: "b[1]".into(),
                reason: "y".into(),
            },
        ]);
        assert_eq!(err.to_string(), "invalid manifest: a: x; b[1]: y");
    }

    #[test]
    fn rejects_trailing_garbage_after_document() {
        assert!(detect_kind(br#"{"acKind":"PodManifest"} x"#).is_err());
    }

    #[test]
    fn decode_error_names_field_path() {
        let err = ImageManifest::from_json(
            br#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"a",
                 "app":{"user":"0","group":"0","ports":[{"name":"p","protocol":"tcp","port":"80"}]}}"#,
        )
        .unwrap_err();
        let e = &err.errors()[0];
        assert_eq!(e.path, "app.ports[0].port");
        assert!(e.reason.contains("invalid type"), "{e}");
    }
}
