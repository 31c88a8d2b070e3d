//! Why an app's image could not be made ready. A refusal's message starts with the image (its
//! payload file, or its ID when no file is involved), names the key whenever a signature
//! names one, and says why; init prints it as `init: pod <pod>: refused: <chain>`.

use std::path::PathBuf;

use aci::manifest::ManifestError;
use aci::sign::{KeyId, SignError};
use aci::store::StoreError;
use aci::trust::TrustError;

/// `sha512-` and the first 12 hex digits, as the console names images.
pub fn id12(id: &str) -> &str {
    id.get(..7 + 12).unwrap_or(id)
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("opening the image store {path} failed")]
    OpenStore {
        path: PathBuf,
        #[source]
        source: Box<StoreError>,
    },
    #[error(
        "image {}: not in the store and not embedded in the payload (fetching at boot is not implemented yet)",
        id12(id)
    )]
    NotAvailable { id: String },
    #[error("image {name}: none with labels {labels:?} is in the store or embedded in the payload")]
    NoEmbeddedMatch {
        name: String,
        labels: Vec<(String, String)>,
    },
    #[error("image {file}: not signed (no signature at {signature}); refusing it")]
    Unsigned { file: PathBuf, signature: PathBuf },
    #[error("image {file}: the signature {signature} is malformed")]
    MalformedSignature {
        file: PathBuf,
        signature: PathBuf,
        #[source]
        source: SignError,
    },
    #[error("image {file}: signed by key {key}, which the trust store does not hold")]
    UntrustedKey { file: PathBuf, key: KeyId },
    #[error(
        "image {file}: signed by key {key}, which is trusted only for {}, not for {name}",
        prefixes.join(", ")
    )]
    KeyNotTrustedForName {
        file: PathBuf,
        key: KeyId,
        name: String,
        prefixes: Vec<String>,
    },
    #[error(
        "image {file}: the signature by key {key} does not match the file (tampered or corrupt)"
    )]
    BadSignature {
        file: PathBuf,
        key: KeyId,
        /// What else failed (an altered trusted comment); `None` when the data did not match,
        /// which the message already says.
        #[source]
        detail: Option<SignError>,
    },
    #[error("image {file}: signed by key {key}, but its manifest names it {found}, not {expected}")]
    NameMismatch {
        file: PathBuf,
        key: KeyId,
        expected: String,
        found: String,
    },
    #[error("image {file}: signed by key {key}, but its Image ID is {found}, not the pinned {pin}")]
    IdMismatch {
        file: PathBuf,
        key: KeyId,
        found: String,
        pin: String,
    },
    #[error("image {file}: signed by key {key}, but it is not a valid ACI")]
    Invalid {
        file: PathBuf,
        key: KeyId,
        #[source]
        source: Box<StoreError>,
    },
    #[error("image {file}: reading {path} failed")]
    Read {
        file: PathBuf,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image {what}: reading the trust store failed")]
    TrustStore {
        what: String,
        #[source]
        source: Box<TrustError>,
    },
    #[error("image {what}: the image store failed")]
    Store {
        what: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("image {} ({name}): its stored manifest is invalid", id12(id))]
    Manifest {
        id: String,
        name: String,
        #[source]
        source: Box<ManifestError>,
    },
    #[error("image {} ({name}): its dependency {dependency} is refused", id12(id))]
    Dependency {
        id: String,
        name: String,
        dependency: String,
        #[source]
        source: Box<ImageError>,
    },
}

impl ImageError {
    /// The key the refusal is about, when a signature named one.
    pub fn key(&self) -> Option<KeyId> {
        match self {
            ImageError::UntrustedKey { key, .. }
            | ImageError::KeyNotTrustedForName { key, .. }
            | ImageError::BadSignature { key, .. }
            | ImageError::NameMismatch { key, .. }
            | ImageError::IdMismatch { key, .. }
            | ImageError::Invalid { key, .. } => Some(*key),
            ImageError::Dependency { source, .. } => source.key(),
            _ => None,
        }
    }

    /// Turns the trust store's verdict on embedded `file` into a refusal naming the file.
    pub(super) fn from_trust(file: PathBuf, signature: PathBuf, e: TrustError) -> ImageError {
        match e {
            TrustError::Unsigned { .. } => ImageError::Unsigned { file, signature },
            TrustError::MalformedSignature { source, .. } => ImageError::MalformedSignature {
                file,
                signature,
                source,
            },
            TrustError::UntrustedKey { key, .. } => ImageError::UntrustedKey { file, key },
            TrustError::KeyNotTrustedForImage {
                image,
                key,
                prefixes,
            } => ImageError::KeyNotTrustedForName {
                file,
                key,
                name: image,
                prefixes,
            },
            TrustError::BadSignature { key, source, .. } => ImageError::BadSignature {
                file,
                key,
                detail: (!matches!(source, SignError::BadSignature(_))).then_some(source),
            },
            other => ImageError::TrustStore {
                what: file.display().to_string(),
                source: Box::new(other),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id12_keeps_the_algorithm_and_twelve_hex_digits() {
        let id = format!("sha512-{}", "ab".repeat(64));
        assert_eq!(id12(&id), "sha512-abababababab");
        assert_eq!(id12("sha512-ab"), "sha512-ab");
    }
}
