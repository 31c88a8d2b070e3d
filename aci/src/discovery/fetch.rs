//! Fetching a discovered image: download the `.aci` and its `.aci.minisig`, verify them
//! against the trust store, and check the manifest matches the request. The caller (the store)
//! gets a file that passed every check; a file that did not is deleted.

use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};

use super::{App, AppError, Discovered, DiscoveryError, Endpoint, HttpClient, HttpError, discover};
use crate::archive::manifest_view::ManifestView;
use crate::archive::{self, ArchiveError};
use crate::trust::{InsecureOptions, TrustError, TrustStore, Verified};

/// Limits and opt-outs for one fetch.
#[derive(Debug, Clone, Copy)]
pub struct FetchOptions {
    pub insecure: InsecureOptions,
    /// Largest `.aci` accepted, in bytes (compressed, as downloaded).
    pub max_image_size: u64,
    /// Largest signature file accepted.
    pub max_signature_size: u64,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            insecure: InsecureOptions::default(),
            max_image_size: 4 << 30,
            max_signature_size: 64 << 10,
        }
    }
}

/// An image that was downloaded, verified and matched against the request.
#[derive(Debug, Clone)]
pub struct FetchedImage {
    /// The `.aci` file, exactly as downloaded (the bytes the signature covers).
    pub path: PathBuf,
    pub endpoint: Endpoint,
    pub verified: Verified,
    /// The manifest as the archive reader saw it.
    pub manifest: ManifestView,
    /// `sha512-…` of the uncompressed tar.
    pub image_id: String,
    pub from_cache: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error("fetching image {app}: every endpoint failed; last: {last}")]
    Download {
        app: String,
        #[source]
        last: HttpError,
    },
    #[error("fetching the signature of image {app}")]
    Signature {
        app: String,
        #[source]
        source: HttpError,
    },
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("image {app} from {url} is not a valid ACI")]
    Archive {
        app: String,
        url: String,
        #[source]
        source: ArchiveError,
    },
    #[error("image from {url} does not match the request")]
    Mismatch {
        url: String,
        #[source]
        source: AppError,
    },
    #[error("opening the downloaded image {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Discovers `app`, downloads the image to `dest` and its signature, and returns it only when
/// the trust store accepts it and its manifest carries the requested name and labels.
/// `dest` is removed on any failure, so an unverified image is never left where it could be
/// mistaken for a good one.
pub fn fetch_image(
    app: &App,
    client: &HttpClient,
    trust: &TrustStore,
    dest: &Path,
    opts: &FetchOptions,
) -> Result<FetchedImage, FetchError> {
    let discovered = discover(app, client)?;
    fetch_discovered(app, &discovered, client, trust, dest, opts)
}

/// [`fetch_image`] for endpoints already discovered (or given by hand).
pub fn fetch_discovered(
    app: &App,
    discovered: &Discovered,
    client: &HttpClient,
    trust: &TrustStore,
    dest: &Path,
    opts: &FetchOptions,
) -> Result<FetchedImage, FetchError> {
    let result = fetch_inner(app, discovered, client, trust, dest, opts);
    if result.is_err() {
        let _ = fs::remove_file(dest);
    }
    result
}

fn fetch_inner(
    app: &App,
    discovered: &Discovered,
    client: &HttpClient,
    trust: &TrustStore,
    dest: &Path,
    opts: &FetchOptions,
) -> Result<FetchedImage, FetchError> {
    let mut last = None;
    for endpoint in &discovered.images {
        // Mirrors may be down: a transport or HTTP failure moves on to the next endpoint.
        // A verification failure does not, because it means someone served a bad image.
        let fetched = match client.get_to_file(&endpoint.aci, dest, opts.max_image_size) {
            Ok(f) => f,
            Err(e) => {
                log::warn!("image {app}: {e}");
                last = Some(e);
                continue;
            }
        };
        let signature = match client.get_bytes(&endpoint.signature, opts.max_signature_size) {
            Ok((bytes, _)) => Some(bytes),
            // No signature published: the trust store decides (refused unless insecure).
            Err(e) if matches!(e.status(), Some(404 | 410)) => None,
            Err(source) => {
                return Err(FetchError::Signature {
                    app: app.to_string(),
                    source,
                });
            }
        };
        let open = || {
            File::open(dest)
                .map(BufReader::new)
                .map_err(|source| FetchError::Open {
                    path: dest.to_path_buf(),
                    source,
                })
        };
        let verified = trust.verify(&app.name, open()?, signature.as_deref(), opts.insecure)?;
        let summary =
            archive::read_aci(open()?, &archive::ReadOptions::default()).map_err(|source| {
                FetchError::Archive {
                    app: app.to_string(),
                    url: fetched.url.clone(),
                    source,
                }
            })?;
        app.check_manifest(&summary.manifest.name, &summary.manifest.labels)
            .map_err(|source| FetchError::Mismatch {
                url: fetched.url.clone(),
                source,
            })?;
        return Ok(FetchedImage {
            path: dest.to_path_buf(),
            endpoint: endpoint.clone(),
            verified,
            image_id: summary.id.as_str().to_string(),
            manifest: summary.manifest,
            from_cache: fetched.from_cache,
        });
    }
    Err(match last {
        Some(last) => FetchError::Download {
            app: app.to_string(),
            last,
        },
        None => FetchError::Discovery(DiscoveryError::NotFound {
            app: app.to_string(),
            tried: vec!["no endpoints".into()],
        }),
    })
}
