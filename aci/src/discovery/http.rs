//! The HTTP(S) client discovery and fetching use: HTTPS only unless plain HTTP is allowed,
//! redirects followed by hand (so the scheme rule holds on every hop), timeouts, bounded
//! retries with exponential backoff, a size limit, and an ETag cache in a directory.
//!
//! Built on `ureq` (synchronous, rustls, no async runtime) because `init` links this too. Name
//! resolution goes through [`Resolver`] so the static guest, which has no NSS, can plug in its
//! own DNS client.

use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use url::Url;

/// Resolves a host name to socket addresses. The default uses the C library (`getaddrinfo`).
pub trait Resolver: Send + Sync {
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

/// Which certificate authorities HTTPS trusts.
#[derive(Debug, Clone, Default)]
pub enum RootCertificates {
    /// The Mozilla roots compiled in (webpki-roots).
    #[default]
    WebPki,
    /// Only these DER certificates (a private CA, or tests).
    Only(Vec<Vec<u8>>),
    /// The Mozilla roots and these DER certificates beside them (a declaration's extra CAs).
    WebPkiAnd(Vec<Vec<u8>>),
}

/// Client settings. The defaults suit fetching images over the internet.
#[derive(Clone)]
pub struct HttpOptions {
    /// Allow `http://` URLs, and redirects from HTTPS to HTTP. Off by default.
    pub allow_http: bool,
    pub connect_timeout: Duration,
    /// Limit on one attempt of a request: connecting, the TLS handshake, the head and the
    /// whole body. Every socket read waits at most the time left, so a server that trickles
    /// bytes is cut off at this deadline. Each retry gets a fresh deadline.
    pub timeout: Duration,
    pub max_redirects: u32,
    /// Extra attempts after a transport error or a 5xx/429 answer. A refused connection is
    /// not retried: the host answered that nothing listens there (e.g. no HTTPS on a server
    /// that discovery will try again over HTTP), and waiting rarely changes that.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// Where ETags and the bodies they name are kept; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    pub roots: RootCertificates,
    pub resolver: Option<Arc<dyn Resolver>>,
    pub user_agent: String,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            allow_http: false,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(300),
            max_redirects: 10,
            retries: 3,
            backoff: Duration::from_millis(500),
            cache_dir: None,
            roots: RootCertificates::WebPki,
            resolver: None,
            user_agent: concat!("aci/", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}

impl std::fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOptions")
            .field("allow_http", &self.allow_http)
            .field("timeout", &self.timeout)
            .field("max_redirects", &self.max_redirects)
            .field("retries", &self.retries)
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

/// Failures of one GET, each naming the URL.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0:?} is not a valid URL")]
    Url(String),
    #[error("refusing {url}: only https:// is allowed (plain HTTP needs the insecure-http option)")]
    InsecureScheme { url: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: redirect without a usable Location header")]
    BadRedirect { url: String },
    #[error("{url}: more than {max} redirects")]
    TooManyRedirects { url: String, max: u32 },
    #[error("{url}: the body is larger than the limit of {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    /// `message` is ureq's description without the URL, which this variant already names.
    #[error("{url}: request failed after {attempts} attempt(s): {message}")]
    Transport {
        url: String,
        attempts: u32,
        message: String,
        /// Worth retrying (timeouts, resets, name resolution), unlike a refused connection.
        transient: bool,
    },
    #[error("{url}: no complete answer within the request timeout of {timeout:?}")]
    TimedOut { url: String, timeout: Duration },
    #[error("{url}: storing the body")]
    Body {
        url: String,
        #[source]
        source: io::Error,
    },
    #[error("{url}: 304 Not Modified, but the cached copy is gone")]
    NotModifiedWithoutCache { url: String },
    #[error("using the HTTP cache file {path}")]
    Cache {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(String),
}

impl HttpError {
    /// The HTTP status, when the server answered with an error status.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Where a body goes. `reset` empties it before a retry so a failed attempt leaves nothing.
pub trait Sink: Write {
    fn reset(&mut self) -> io::Result<()>;
}

impl Sink for Vec<u8> {
    fn reset(&mut self) -> io::Result<()> {
        self.clear();
        Ok(())
    }
}

impl Sink for File {
    fn reset(&mut self) -> io::Result<()> {
        self.set_len(0)?;
        self.rewind()
    }
}

/// What a completed GET returned besides the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The URL after redirects.
    pub url: String,
    /// The body came from the ETag cache after a 304.
    pub from_cache: bool,
    pub size: u64,
}

/// A configured client. Cheap to clone (shares its connection pool).
#[derive(Clone)]
pub struct HttpClient {
    agent: ureq::Agent,
    opts: HttpOptions,
}

struct ResolverAdapter(Arc<dyn Resolver>);

impl ureq::Resolver for ResolverAdapter {
    fn resolve(&self, netloc: &str) -> io::Result<Vec<SocketAddr>> {
        // ureq passes "host:port", with IPv6 hosts in brackets.
        let (host, port) = netloc
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no port in address"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.0.resolve(host, port)
    }
}

enum Attempt {
    Done(Fetched),
    Redirect(Url),
}

impl HttpClient {
    pub fn new(mut opts: HttpOptions) -> Result<HttpClient, HttpError> {
        // `Instant + Duration` panics on overflow (here and inside ureq); a year is "no limit".
        const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
        opts.timeout = opts.timeout.min(YEAR);
        opts.connect_timeout = opts.connect_timeout.min(YEAR);
        // ureq's whole-request deadline, not a per-read timeout: with the deadline ureq sets
        // each socket read's timeout to the time left (two setsockopt calls per 8 KiB read), so
        // neither a trickled head nor a trickled body outlives it. A per-read timeout alone
        // lets a server that sends a byte every few seconds hold a request for days.
        let mut builder = ureq::AgentBuilder::new()
            .timeout_connect(opts.connect_timeout)
            .timeout(opts.timeout)
            // Redirects are followed in `get` so every hop is checked against the scheme rule.
            .redirects(0)
            .user_agent(&opts.user_agent);
        if let Some(r) = &opts.resolver {
            builder = builder.resolver(ResolverAdapter(r.clone()));
        }
        let custom = match &opts.roots {
            RootCertificates::WebPki => None,
            RootCertificates::Only(certs) => Some((rustls::RootCertStore::empty(), certs)),
            RootCertificates::WebPkiAnd(certs) => Some((
                rustls::RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                },
                certs,
            )),
        };
        if let Some((mut roots, certs)) = custom {
            for der in certs {
                roots
                    .add(rustls::pki_types::CertificateDer::from(der.clone()))
                    .map_err(|e| HttpError::Tls(e.to_string()))?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| HttpError::Tls(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            builder = builder.tls_config(Arc::new(config));
        }
        Ok(HttpClient {
            agent: builder.build(),
            opts,
        })
    }

    pub fn options(&self) -> &HttpOptions {
        &self.opts
    }

    fn check_scheme(&self, url: &Url) -> Result<(), HttpError> {
        match url.scheme() {
            "https" => Ok(()),
            "http" if self.opts.allow_http => Ok(()),
            _ => Err(HttpError::InsecureScheme {
                url: url.to_string(),
            }),
        }
    }

    /// GETs `url` into memory, refusing bodies over `limit` bytes.
    pub fn get_bytes(&self, url: &str, limit: u64) -> Result<(Vec<u8>, Fetched), HttpError> {
        let mut body = Vec::new();
        let fetched = self.get(url, limit, &mut body)?;
        Ok((body, fetched))
    }

    /// GETs `url` into `sink`, following redirects, retrying transient failures and using the
    /// ETag cache.
    pub fn get(&self, url: &str, limit: u64, sink: &mut dyn Sink) -> Result<Fetched, HttpError> {
        let mut url = Url::parse(url).map_err(|_| HttpError::Url(url.into()))?;
        for _ in 0..=self.opts.max_redirects {
            self.check_scheme(&url)?;
            match self.with_retries(&url, limit, sink)? {
                Attempt::Done(f) => return Ok(f),
                Attempt::Redirect(next) => url = next,
            }
        }
        Err(HttpError::TooManyRedirects {
            url: url.to_string(),
            max: self.opts.max_redirects,
        })
    }

    fn with_retries(
        &self,
        url: &Url,
        limit: u64,
        sink: &mut dyn Sink,
    ) -> Result<Attempt, HttpError> {
        let mut delay = self.opts.backoff;
        let mut attempt = 1;
        loop {
            match self.attempt(url, limit, sink, attempt) {
                Err(e) if attempt <= self.opts.retries && retryable(&e) => {
                    log::warn!("{e}; retrying in {delay:?}");
                    std::thread::sleep(delay);
                    delay = delay.saturating_mul(2);
                    attempt += 1;
                    sink.reset().map_err(|source| HttpError::Body {
                        url: url.to_string(),
                        source,
                    })?;
                }
                other => return other,
            }
        }
    }

    fn attempt(
        &self,
        url: &Url,
        limit: u64,
        sink: &mut dyn Sink,
        attempt: u32,
    ) -> Result<Attempt, HttpError> {
        let cache = self
            .opts
            .cache_dir
            .as_deref()
            .map(|d| CacheEntry::new(d, url));
        let deadline = Instant::now() + self.opts.timeout;
        let mut req = self.agent.request_url("GET", url);
        let cached_etag = cache.as_ref().and_then(CacheEntry::etag);
        if let Some(etag) = &cached_etag {
            req = req.set("If-None-Match", etag);
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(status, _)) => {
                return Err(HttpError::Status {
                    url: url.to_string(),
                    status,
                });
            }
            Err(ureq::Error::Transport(t)) => {
                return Err(self.transport_error(url, attempt, deadline, &t));
            }
        };
        let status = resp.status();
        if matches!(status, 301 | 302 | 303 | 307 | 308) {
            let next = resp
                .header("Location")
                .and_then(|l| url.join(l).ok())
                .ok_or_else(|| HttpError::BadRedirect {
                    url: url.to_string(),
                })?;
            return Ok(Attempt::Redirect(next));
        }
        if status == 304 {
            let Some(cache) = cache.filter(|_| cached_etag.is_some()) else {
                return Err(HttpError::NotModifiedWithoutCache {
                    url: url.to_string(),
                });
            };
            let size = cache
                .copy_body(sink)
                .map_err(|source| match source.kind() {
                    io::ErrorKind::NotFound => HttpError::NotModifiedWithoutCache {
                        url: url.to_string(),
                    },
                    _ => HttpError::Cache {
                        path: cache.body.clone(),
                        source,
                    },
                })?;
            return Ok(Attempt::Done(Fetched {
                url: url.to_string(),
                from_cache: true,
                size,
            }));
        }
        if status != 200 {
            return Err(HttpError::Status {
                url: url.to_string(),
                status,
            });
        }
        let etag = resp.header("ETag").map(str::to_string);
        let body_err = |source| HttpError::Body {
            url: url.to_string(),
            source,
        };
        // Tee into the cache as the body streams, so big images are not held in memory.
        let mut tee = match (&cache, &etag) {
            (Some(c), Some(_)) => Some(c.begin().map_err(|source| HttpError::Cache {
                path: c.body.clone(),
                source,
            })?),
            _ => None,
        };
        let streamed = stream_body(
            resp,
            Body {
                url,
                limit,
                attempt,
                deadline,
                timeout: self.opts.timeout,
            },
            sink,
            tee.as_mut().map(|(f, _)| f),
        );
        let size = match streamed {
            Ok(size) => size,
            Err(e) => {
                // Never leave a partial body in the cache directory.
                if let Some((_, tmp)) = &tee {
                    let _ = fs::remove_file(tmp);
                }
                return Err(e);
            }
        };
        sink.flush().map_err(body_err)?;
        if let (Some(cache), Some(etag), Some((file, tmp))) = (cache, etag, tee) {
            // A failed cache write only costs a later re-download.
            if let Err(e) = cache.commit(file, &tmp, &etag) {
                log::warn!("not caching {url}: {e}");
            }
        }
        Ok(Attempt::Done(Fetched {
            url: url.to_string(),
            from_cache: false,
            size,
        }))
    }

    fn transport_error(
        &self,
        url: &Url,
        attempts: u32,
        deadline: Instant,
        t: &ureq::Transport,
    ) -> HttpError {
        let io = std::error::Error::source(t).and_then(|s| s.downcast_ref::<io::Error>());
        let kind = io.map(io::Error::kind);
        if kind.is_some_and(is_timeout) && past(deadline) {
            return HttpError::TimedOut {
                url: url.to_string(),
                timeout: self.opts.timeout,
            };
        }
        // ureq's own Display starts with the URL; rebuild it without.
        let mut message = t.kind().to_string();
        if let Some(m) = t.message() {
            message = format!("{message}: {m}");
        }
        if let Some(s) = std::error::Error::source(t) {
            message = format!("{message}: {s}");
        }
        HttpError::Transport {
            url: url.to_string(),
            attempts,
            message,
            transient: kind != Some(io::ErrorKind::ConnectionRefused),
        }
    }
}

/// Unix sockets report an expired `SO_RCVTIMEO` as `WouldBlock`.
fn is_timeout(kind: io::ErrorKind) -> bool {
    matches!(kind, io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)
}

/// Whether the deadline has passed, allowing for a socket timeout that fires a tick early.
fn past(deadline: Instant) -> bool {
    Instant::now() + Duration::from_millis(20) >= deadline
}

/// Bytes read from the socket per write to the sinks: big writes keep the file, hash and
/// unpack pipe calls few (ureq itself reads 8 KiB at a time).
const BODY_CHUNK: usize = 256 * 1024;

struct Body<'a> {
    url: &'a Url,
    limit: u64,
    attempt: u32,
    deadline: Instant,
    timeout: Duration,
}

/// Copies the body into `sink` (and the cache file), refusing more than `limit` bytes.
fn stream_body(
    resp: ureq::Response,
    body: Body<'_>,
    sink: &mut dyn Sink,
    mut tee: Option<&mut File>,
) -> Result<u64, HttpError> {
    let url = body.url;
    let body_err = |source| HttpError::Body {
        url: url.to_string(),
        source,
    };
    let read_err = |e: io::Error| {
        if is_timeout(e.kind()) && past(body.deadline) {
            HttpError::TimedOut {
                url: url.to_string(),
                timeout: body.timeout,
            }
        } else {
            HttpError::Transport {
                url: url.to_string(),
                attempts: body.attempt,
                message: format!("reading the body: {e}"),
                transient: true,
            }
        }
    };
    let mut reader = resp.into_reader().take(body.limit.saturating_add(1));
    let mut buf = vec![0u8; BODY_CHUNK];
    let mut size: u64 = 0;
    let mut eof = false;
    while !eof {
        // Fill the buffer before handing it on. This cannot outlive the deadline: ureq bounds
        // each socket read by the time left and fails the read once it has passed.
        let mut filled = 0;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(e)),
            }
        }
        size += filled as u64;
        if size > body.limit {
            return Err(HttpError::TooLarge {
                url: url.to_string(),
                limit: body.limit,
            });
        }
        sink.write_all(&buf[..filled]).map_err(body_err)?;
        if let Some(file) = tee.as_mut() {
            file.write_all(&buf[..filled]).map_err(body_err)?;
        }
    }
    Ok(size)
}

fn retryable(e: &HttpError) -> bool {
    match e {
        HttpError::Transport { transient, .. } => *transient,
        HttpError::TimedOut { .. } => true,
        HttpError::Status { status, .. } => *status >= 500 || *status == 429,
        _ => false,
    }
}

/// One URL's cache files: `<sha256(url)>.etag` and `<sha256(url)>.body`.
struct CacheEntry {
    dir: PathBuf,
    etag: PathBuf,
    body: PathBuf,
}

impl CacheEntry {
    fn new(dir: &Path, url: &Url) -> CacheEntry {
        let key = hex::encode(Sha256::digest(url.as_str().as_bytes()));
        CacheEntry {
            dir: dir.to_path_buf(),
            etag: dir.join(format!("{key}.etag")),
            body: dir.join(format!("{key}.body")),
        }
    }

    fn etag(&self) -> Option<String> {
        let etag = fs::read_to_string(&self.etag).ok()?;
        // Only offer an ETag whose body is really there.
        self.body.is_file().then(|| etag.trim().to_string())
    }

    fn copy_body(&self, sink: &mut dyn Sink) -> io::Result<u64> {
        let mut file = File::open(&self.body)?;
        let mut buf = vec![0u8; BODY_CHUNK];
        let mut size = 0;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(size);
            }
            sink.write_all(&buf[..n])?;
            size += n as u64;
        }
    }

    fn begin(&self) -> io::Result<(File, PathBuf)> {
        fs::create_dir_all(&self.dir)?;
        let tmp = self
            .body
            .with_extension(format!("tmp{}", std::process::id()));
        Ok((File::create(&tmp)?, tmp))
    }

    /// Body first, then the ETag: an ETag file never points at a missing or partial body.
    fn commit(&self, file: File, tmp: &Path, etag: &str) -> io::Result<()> {
        file.sync_all()?;
        let _ = fs::remove_file(&self.etag);
        fs::rename(tmp, &self.body)?;
        let etag_tmp = self.etag.with_extension("etag.tmp");
        fs::write(&etag_tmp, etag)?;
        fs::rename(etag_tmp, &self.etag)
    }
}
