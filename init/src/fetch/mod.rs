//! Fetching pods' images over the network at boot, off the event loop: each request runs on
//! its own thread and reports back through a channel and an eventfd the event loop polls.
//!
//! # Threads
//! One thread per request, started by [`Fetcher::submit`]. A request blocks in ureq (a
//! synchronous client) for as long as a download takes, and a blocking call cannot be
//! multiplexed on one thread without an async runtime; so a single worker serving requests
//! round-robin would let one stalled or slow server hold every other pod's image up for the
//! whole request timeout. The number of threads is the number of images the declaration
//! asks for (a handful), each mostly asleep in a socket read or a backoff wait. A request's
//! dependencies are fetched on its thread, one after the other. Two requests needing the same
//! image may both download it; the store keeps the first copy published and drops the other.
//!
//! # Outcomes
//! Per request: [`FetchOutcome::Present`] when the store already has the image and its
//! dependencies (no network at all), else [`FetchOutcome::Fetched`] once it and its
//! dependencies are in the store, or [`FetchOutcome::Refused`] for good; before each retry,
//! [`FetchOutcome::Retrying`]. [`Fetcher::drain`] collects them without blocking.
//!
//! # What is checked, and when
//! aci does the checks, in this order, before anything is visible in the store (see
//! `aci::discovery::fetch`): the `.aci.minisig` names a key the trust store holds for the
//! image's name (root or a covering prefix), else the image is refused before its bytes are
//! downloaded; the body streams into a locked temp blob while it is hashed; the signature
//! must verify over exactly those bytes before any decompressor or tar reader sees them;
//! then the manifest must carry the requested name and labels, the key must be trusted for
//! that name, and the Image ID must match the pin. Only then are record, blob and tree
//! published, each synced. Unsigned images are never allowed here.
//!
//! # Classification and backoff
//! See `classify`: refusals of authenticity or identity (unsigned, untrusted key, key not
//! valid for the name's prefix, bad signature, manifest name or labels, pin) and requests that
//! can never work are permanent and not retried. The network, DNS, refused connections,
//! timeouts, any HTTP status (404 included: a server at boot may answer before its content is
//! in place), truncated bodies and local I/O are transient, retried without end after
//! [`Backoff`] delays (1 s, doubling, capped at 60 s) until [`Fetcher::stop`]. A body over
//! its size limit is retried too but reported as [`Transient::TooLarge`], which points at a
//! hostile or misconfigured server rather than a slow one. One caveat: a body sent without a
//! length that is cut short cannot be told from a tampered one and is refused as a bad
//! signature.
//!
//! # Limits against hostile servers
//! [`Limits`]: connect 5 s; a discovery page 1 MiB (aci's limit) within 30 s; a signature
//! 64 KiB and the image 4 GiB, together within 10 min per attempt. aci's timeout is a
//! deadline on the whole request (each socket read waits at most the time left), so a server
//! that trickles bytes is cut off at it, and a stalled one too. There is no separate
//! read-stall timeout: ureq 2 ignores its per-read timeout once a deadline is set, so a
//! stalled image download is noticed only at the 10 min deadline (other requests go on
//! meanwhile). A stall timeout needs a change in aci's HTTP client.
//!
//! # Power cut mid-fetch
//! Downloads go to locked `.tmp-*` files and trees inside the store, published by renames
//! after fsyncs; a power cut leaves only those temps (or half of a record/blob pair), which
//! [`aci::store::Store::open`] removes. [`Fetcher::spawn`] opens the store, so leftovers
//! never accumulate and the next boot fetches again from scratch.
//!
//! # The clock
//! HTTPS certificates are checked against the system clock. A guest without an RTC (or
//! before the kernel set the clock from it) boots at 1970, where every certificate is not
//! valid yet: each attempt then fails in the TLS handshake, which is transient, so the
//! fetcher retries until the clock is right and then succeeds; the console shows the
//! certificate error meanwhile. What init does about it: our kernel has `CONFIG_RTC_HCTOSYS`
//! (it sets the clock from the RTC before init runs), and init raises a clock that is still
//! earlier than its floor to the floor before anything fetches (`crate::clock`), as systemd
//! does with its build-time epoch; there is no NTP. Plain-HTTP fetches do not depend on the
//! clock; the minisign checks never do.

pub mod boot;
mod classify;
mod wake;
mod worker;

#[cfg(test)]
mod test_server;
#[cfg(test)]
mod tests;

use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use aci::archive::ImageId;
use aci::discovery::{Resolver, RootCertificates};
use aci::store::{Store, StoreError};
use aci::trust::TrustStore;

pub use classify::{Refusal, Transient, is_permanent};
use wake::Wake;
pub use worker::AttemptError;

/// One image a pod needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// `pod/app`, for messages.
    pub app: String,
    /// The image name (an AC identifier).
    pub name: String,
    /// Labels the image must carry (`version`, `os`, `arch`, ...), also used by discovery.
    pub labels: Vec<(String, String)>,
    /// The Image ID (or a prefix of it) the image must have.
    pub pinned_id: Option<String>,
    /// The image's URL instead of discovery; its signature is the URL with `.minisig` added.
    pub url: Option<String>,
    /// Allow plain HTTP for discovery and download (HTTPS is tried first).
    pub allow_http: bool,
}

/// Delays between attempts: `first`, multiplied by `factor` each time, at most `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub factor: u32,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            factor: 2,
            cap: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The wait after failed attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let mut d = self.first;
        for _ in 1..attempt {
            d = d.saturating_mul(self.factor);
            if d >= self.cap {
                break;
            }
        }
        d.min(self.cap)
    }
}

/// Timeouts and size limits of one attempt (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub connect_timeout: Duration,
    /// A whole discovery page request. (Its size limit is aci's
    /// [`aci::discovery::META_PAGE_LIMIT`].)
    pub page_timeout: Duration,
    /// A whole signature or image request.
    pub image_timeout: Duration,
    pub max_signature_size: u64,
    pub max_image_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect_timeout: Duration::from_secs(5),
            page_timeout: Duration::from_secs(30),
            image_timeout: Duration::from_secs(600),
            max_signature_size: 64 << 10,
            max_image_size: 4 << 30,
        }
    }
}

/// What the fetcher needs from init.
#[derive(Clone)]
pub struct FetchConfig {
    /// The image store ([`hostimg::STORE_DIR`] on a booted host).
    pub store_dir: PathBuf,
    /// The trust store ([`hostimg::TRUST_PATH`]), as `pod::images` uses it.
    pub trust: TrustStore,
    /// Which CAs HTTPS trusts: the compiled-in Mozilla roots, or only given DER certificates
    /// (a private CA; aci cannot add to the Mozilla set).
    pub roots: RootCertificates,
    /// Name resolution (the static guest has no NSS).
    pub resolver: Arc<dyn Resolver>,
    pub backoff: Backoff,
    pub limits: Limits,
}

/// A report from the fetcher; every variant names the request's `app`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The store already had the image and its dependencies; no network was used.
    Present { app: String, image_id: ImageId },
    /// The image (and any missing dependencies) are now in the store.
    Fetched {
        app: String,
        image_id: ImageId,
        /// Downloaded bytes, dependencies included.
        bytes: u64,
        /// Since the request started, waits included.
        elapsed: Duration,
    },
    /// Refused for good; `image` is the one refused (the request's or a dependency).
    Refused {
        app: String,
        image: String,
        /// The signing key, when the refusal is about one.
        key: Option<String>,
        reason: Refusal,
        /// The whole error chain.
        detail: String,
    },
    /// Attempt `attempt` failed; the next one starts after `delay`.
    Retrying {
        app: String,
        image: String,
        attempt: u32,
        delay: Duration,
        kind: Transient,
        /// The whole error chain.
        error: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("opening the image store {path:?} for fetching failed")]
    OpenStore {
        path: PathBuf,
        #[source]
        source: Box<StoreError>,
    },
    #[error("creating the fetcher's eventfd failed")]
    Eventfd(#[source] std::io::Error),
    #[error("starting a fetch thread for {app} failed")]
    Spawn {
        app: String,
        #[source]
        source: std::io::Error,
    },
}

/// Set once the fetcher stops; wakes every backoff wait at once.
#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    cv: Condvar,
}

impl Stop {
    fn set(&self) {
        // A poisoned lock only means a worker panicked holding it; the flag is still ours.
        let mut s = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        *s = true;
        self.cv.notify_all();
    }

    /// Waits up to `d`; true when the fetcher stopped meanwhile (or already had).
    fn wait(&self, d: Duration) -> bool {
        let s = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let (s, _) = self
            .cv
            .wait_timeout_while(s, d, |stopped| !*stopped)
            .unwrap_or_else(|e| e.into_inner());
        *s
    }
}

/// What every request thread shares.
struct Shared {
    store: Store,
    trust: TrustStore,
    roots: RootCertificates,
    resolver: Arc<dyn Resolver>,
    backoff: Backoff,
    limits: Limits,
    wake: Wake,
    stop: Stop,
    active: AtomicUsize,
}

/// The fetcher: submit requests, poll [`Fetcher::wake_fd`], then [`Fetcher::drain`].
pub struct Fetcher {
    shared: Arc<Shared>,
    tx: Sender<FetchOutcome>,
    rx: Receiver<FetchOutcome>,
}

/// Counts a request thread as active until it ends, however it ends.
struct Active(Arc<Shared>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Fetcher {
    /// Opens the store (removing what an interrupted fetch left) and the wake eventfd.
    pub fn spawn(config: FetchConfig) -> Result<Fetcher, FetchError> {
        let store = Store::open(&config.store_dir).map_err(|source| FetchError::OpenStore {
            path: config.store_dir.clone(),
            source: Box::new(source),
        })?;
        let (tx, rx) = mpsc::channel();
        Ok(Fetcher {
            shared: Arc::new(Shared {
                store,
                trust: config.trust,
                roots: config.roots,
                resolver: config.resolver,
                backoff: config.backoff,
                limits: config.limits,
                wake: Wake::new().map_err(FetchError::Eventfd)?,
                stop: Stop::default(),
                active: AtomicUsize::new(0),
            }),
            tx,
            rx,
        })
    }

    /// Starts fetching `req` on its own thread.
    pub fn submit(&self, req: FetchRequest) -> Result<(), FetchError> {
        let app = req.app.clone();
        let shared = self.shared.clone();
        let tx = self.tx.clone();
        shared.active.fetch_add(1, Ordering::SeqCst);
        let active = Active(shared.clone());
        std::thread::Builder::new()
            .name("fetch".into())
            .spawn(move || {
                let _active = active;
                worker::run(req, shared, tx);
            })
            .map(drop)
            .map_err(|source| FetchError::Spawn { app, source })
    }

    /// Readable when outcomes are waiting.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.shared.wake.fd()
    }

    /// Every outcome reported since the last call, without blocking; also resets the wake fd.
    pub fn drain(&self) -> Vec<FetchOutcome> {
        // Reset first: an outcome sent after this read sets the fd again, so none is missed.
        self.shared.wake.clear();
        self.rx.try_iter().collect()
    }

    /// Request threads still running (downloading or waiting to retry).
    pub fn active(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// Ends every backoff wait and starts no new attempt. A download under way runs until it
    /// ends or times out (ureq cannot be interrupted), then its thread ends.
    pub fn stop(&self) {
        self.shared.stop.set();
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.stop();
    }
}
