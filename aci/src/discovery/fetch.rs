//! Fetching a discovered image, signature first: the `.aci.minisig` (small; an unsigned or
//! untrusted image is refused before its bytes are downloaded), then the `.aci` body, teed as
//! it arrives into the BLAKE2b-512 prehash the signature covers and a temp file, and nothing
//! else. Only once the signature verifies is the temp file decompressed, its Image ID computed
//! and (for the store) unpacked, and only when the manifest's name and labels match the request
//! and the key is trusted for that name is anything made visible; on any failure every temp
//! file and tree is deleted. No decompressor, tar reader or JSON decoder sees a byte of an
//! image whose signature did not verify.

use std::fs::{self, File};
use std::io::{self, BufReader, Seek, Write};
use std::path::{Path, PathBuf};

use super::http::Sink;
use super::{App, AppError, Discovered, DiscoveryError, Endpoint, HttpClient, HttpError, discover};
use crate::archive::manifest_view::ManifestView;
use crate::archive::{self, AciSummary, ArchiveError};
use crate::sign::Prehasher;
use crate::store::{Ingest, Ingested, Store, StoreError, StoredImage};
use crate::trust::{Accepted, InsecureOptions, TrustError, TrustStore, Verified};

/// Limits and opt-outs for one fetch.
#[derive(Debug, Clone, Copy)]
pub struct FetchOptions {
    pub insecure: InsecureOptions,
    /// Largest `.aci` accepted, in bytes (compressed, as downloaded).
    pub max_image_size: u64,
    /// Largest signature file accepted.
    pub max_signature_size: u64,
    /// [`fetch_into_store`] also unpacks the image into a store tree while it downloads.
    pub unpack: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            insecure: InsecureOptions::default(),
            max_image_size: 4 << 30,
            max_signature_size: 64 << 10,
            unpack: true,
        }
    }
}

/// An image that was downloaded to a file, verified and matched against the request.
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

/// An image that was downloaded into the store (and unpacked, if asked), verified and matched.
#[derive(Debug, Clone)]
pub struct FetchedIntoStore {
    pub stored: StoredImage,
    pub endpoint: Endpoint,
    pub verified: Verified,
    pub from_cache: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error("fetching image {app}: every endpoint failed; the last one")]
    Download {
        app: String,
        #[source]
        last: HttpError,
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
    #[error("image {app} from {url} has ID {found}, but {pinned} was pinned; refusing it")]
    PinMismatch {
        app: String,
        url: String,
        pinned: String,
        found: String,
    },
    #[error("opening the downloaded image {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the downloaded image {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("storing image {app}")]
    Store {
        app: String,
        #[source]
        source: Box<StoreError>,
    },
}

/// Discovers `app`, downloads the image to `dest` and its signature, and returns it only when
/// the trust store accepts it and its manifest carries the requested name and labels. The
/// bytes go to a temp file beside `dest`, renamed over it only after every check passed, so
/// an unverified image is never left where it could be mistaken for a good one.
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
    let tmp = partial_path(dest);
    let (received, got) = fetch_with(app, discovered, client, trust, opts, || {
        FileReceiver::create(&tmp)
    })?;
    let summary = received.summary;
    fs::rename(&received.guard.0, dest).map_err(|source| FetchError::Write {
        path: dest.to_path_buf(),
        source,
    })?;
    std::mem::forget(received.guard);
    Ok(FetchedImage {
        path: dest.to_path_buf(),
        endpoint: got.endpoint,
        verified: got.verified,
        image_id: summary.id.as_str().to_string(),
        manifest: summary.manifest,
        from_cache: got.from_cache,
    })
}

/// Discovers `app` and fetches it into `store`: download (hashed as it arrives), signature
/// check, then Image ID and (with [`FetchOptions::unpack`]) the unpacked tree from the
/// verified blob. Only a verified image that matches the request becomes visible in the store.
pub fn fetch_into_store(
    app: &App,
    client: &HttpClient,
    trust: &TrustStore,
    store: &Store,
    opts: &FetchOptions,
) -> Result<FetchedIntoStore, FetchError> {
    let discovered = discover(app, client)?;
    fetch_discovered_into_store(app, &discovered, client, trust, store, opts)
}

/// [`fetch_into_store`] for endpoints already discovered.
pub fn fetch_discovered_into_store(
    app: &App,
    discovered: &Discovered,
    client: &HttpClient,
    trust: &TrustStore,
    store: &Store,
    opts: &FetchOptions,
) -> Result<FetchedIntoStore, FetchError> {
    fetch_pinned_into_store(app, discovered, client, trust, store, opts, None)
}

/// [`fetch_discovered_into_store`] that, with `pinned` (a full Image ID or a prefix of one),
/// also refuses an image whose ID does not match it, before anything becomes visible: the ID
/// is known only once the verified blob is decompressed, so the check sits between that and
/// the commit.
pub fn fetch_pinned_into_store(
    app: &App,
    discovered: &Discovered,
    client: &HttpClient,
    trust: &TrustStore,
    store: &Store,
    opts: &FetchOptions,
    pinned: Option<&str>,
) -> Result<FetchedIntoStore, FetchError> {
    let store_err = |source| FetchError::Store {
        app: app.to_string(),
        source: Box::new(source),
    };
    let (received, got) = fetch_with(app, discovered, client, trust, opts, || {
        store
            .begin_ingest(opts.unpack)
            .map(StoreReceiver)
            .map_err(store_err)
    })?;
    let found = &received.summary().id;
    if let Some(pin) = pinned
        && !found.matches_prefix(pin)
    {
        // Dropping `received` deletes its temp blob and tree.
        return Err(FetchError::PinMismatch {
            app: app.to_string(),
            url: got.endpoint.aci,
            pinned: pin.to_string(),
            found: found.to_string(),
        });
    }
    let stored = received.commit().map_err(store_err)?;
    Ok(FetchedIntoStore {
        stored,
        endpoint: got.endpoint,
        verified: got.verified,
        from_cache: got.from_cache,
    })
}

/// `dest` with `.partial` appended: where a download waits for its checks.
fn partial_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// Where the body of one download goes: written as it arrives (and nowhere else), reset
/// before a retry, and, once the signature verified, parsed into something holding the
/// summary and the bytes the signature covers.
trait Receive: Write {
    type Received: Received;
    fn reset(&mut self) -> io::Result<()>;
    /// The bytes written so far, for signatures that cover them rather than their hash.
    fn blob_path(&self) -> &Path;
    /// Syncs what arrived and parses it; `accepted` is the verdict on exactly those bytes.
    fn complete(
        self,
        accepted: &Accepted,
        app: &App,
        url: &str,
    ) -> Result<Self::Received, FetchError>;
}

trait Received {
    fn summary(&self) -> &AciSummary;
}

/// The tee: BLAKE2b-512 for a prehashed signature, then the receiver.
struct Download<'a, R> {
    prehasher: Option<Prehasher>,
    inner: &'a mut R,
}

impl<R: Receive> Write for Download<'_, R> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.inner.write_all(data)?;
        if let Some(h) = &mut self.prehasher {
            h.update(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Receive> Sink for Download<'_, R> {
    fn reset(&mut self) -> io::Result<()> {
        if self.prehasher.is_some() {
            self.prehasher = Some(Prehasher::new());
        }
        self.inner.reset()
    }
}

struct Got {
    endpoint: Endpoint,
    verified: Verified,
    from_cache: bool,
}

fn fetch_with<R: Receive>(
    app: &App,
    discovered: &Discovered,
    client: &HttpClient,
    trust: &TrustStore,
    opts: &FetchOptions,
    mut begin: impl FnMut() -> Result<R, FetchError>,
) -> Result<(R::Received, Got), FetchError> {
    let mut last = None;
    for endpoint in &discovered.images {
        // Mirrors may be down or misconfigured: any failure to get the signature or the body
        // (transport, HTTP status, size limit, scheme) moves on to the next endpoint. A trust
        // or verification failure does not, because it means someone served a bad image.
        let signature = match client.get_bytes(&endpoint.signature, opts.max_signature_size) {
            Ok((bytes, _)) => Some(bytes),
            // No signature published: the trust store decides (refused unless insecure).
            Err(e) if matches!(e.status(), Some(404 | 410)) => None,
            Err(e) => {
                log::warn!("image {app}: fetching its signature failed: {e}");
                last = Some(e);
                continue;
            }
        };
        // Refuses unsigned and untrusted images before their bytes are downloaded.
        let pending = trust.prepare(&app.name, signature.as_deref(), opts.insecure)?;
        let mut receiver = begin()?;
        let mut download = Download {
            prehasher: pending.wants_prehash().then(Prehasher::new),
            inner: &mut receiver,
        };
        let got = client.get(&endpoint.aci, opts.max_image_size, &mut download);
        let prehash = download.prehasher.take().map(Prehasher::finish);
        let fetched = match got {
            Ok(f) => f,
            Err(e) => {
                log::warn!("image {app}: {e}");
                last = Some(e);
                continue;
            }
        };
        // The verdict on the raw bytes comes before anything parses them.
        let accepted = match &prehash {
            Some(h) => pending.finish_prehash(h)?,
            None => {
                let path = receiver.blob_path();
                let file = File::open(path).map_err(|source| FetchError::Open {
                    path: path.to_path_buf(),
                    source,
                })?;
                pending.finish_reader(BufReader::with_capacity(1 << 20, file))?
            }
        };
        let received = receiver.complete(&accepted, app, &fetched.url)?;
        let manifest = &received.summary().manifest;
        app.check_manifest(&manifest.name, &manifest.labels)
            .map_err(|source| FetchError::Mismatch {
                url: fetched.url.clone(),
                source,
            })?;
        let verified = accepted.admit(&manifest.name)?;
        let got = Got {
            endpoint: endpoint.clone(),
            verified,
            from_cache: fetched.from_cache,
        };
        return Ok((received, got));
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

fn archive_error(app: &App, url: &str, source: ArchiveError) -> FetchError {
    FetchError::Archive {
        app: app.to_string(),
        url: url.to_string(),
        source,
    }
}

struct StoreReceiver<'s>(Ingest<'s>);

impl Write for StoreReceiver<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.write(data)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<'s> Receive for StoreReceiver<'s> {
    type Received = Ingested<'s>;
    fn reset(&mut self) -> io::Result<()> {
        self.0.reset()
    }
    fn blob_path(&self) -> &Path {
        self.0.blob_path()
    }
    fn complete(
        self,
        accepted: &Accepted,
        app: &App,
        url: &str,
    ) -> Result<Ingested<'s>, FetchError> {
        let store_err = |source| FetchError::Store {
            app: app.to_string(),
            source: Box::new(source),
        };
        let received = self.0.finish().map_err(store_err)?;
        received.unpack(accepted, url).map_err(|e| match e {
            StoreError::InsertInvalid { source, .. } => archive_error(app, url, source),
            source => store_err(source),
        })
    }
}

impl Received for Ingested<'_> {
    fn summary(&self) -> &AciSummary {
        Ingested::summary(self)
    }
}

/// Removes the partial file unless forgotten.
struct PartialGuard(PathBuf);

impl Drop for PartialGuard {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// A download to a plain file, validated (not unpacked) once its signature verified.
struct FileReceiver {
    file: File,
    guard: PartialGuard,
}

struct FileReceived {
    guard: PartialGuard,
    summary: AciSummary,
}

impl FileReceiver {
    fn create(path: &Path) -> Result<FileReceiver, FetchError> {
        let file = File::create(path).map_err(|source| FetchError::Write {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(FileReceiver {
            file,
            guard: PartialGuard(path.to_path_buf()),
        })
    }
}

impl Write for FileReceiver {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.file.write_all(data)?;
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Receive for FileReceiver {
    type Received = FileReceived;
    fn reset(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.rewind()?;
        Ok(())
    }
    fn blob_path(&self) -> &Path {
        &self.guard.0
    }
    fn complete(
        self,
        _accepted: &Accepted,
        app: &App,
        url: &str,
    ) -> Result<FileReceived, FetchError> {
        let path = self.guard.0.clone();
        let werr = |source| FetchError::Write {
            path: path.clone(),
            source,
        };
        self.file.sync_all().map_err(werr)?;
        let file = File::open(&path).map_err(|source| FetchError::Open {
            path: path.clone(),
            source,
        })?;
        let summary = archive::read_aci(
            BufReader::with_capacity(1 << 20, file),
            &archive::ReadOptions::default(),
        )
        .map_err(|source| archive_error(app, url, source))?;
        Ok(FileReceived {
            guard: self.guard,
            summary,
        })
    }
}

impl Received for FileReceived {
    fn summary(&self) -> &AciSummary {
        &self.summary
    }
}
