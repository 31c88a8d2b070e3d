//! A static HTTPS server for appc images, for tests whose guest fetches its pods' images by
//! discovery: it answers every `?ac-discovery=1` request with one `ac-discovery` template,
//! serves the files added to it, records every request, and can misbehave on purpose (answer
//! 503 for a while, send slowly, stop).
//!
//! ```no_run
//! use std::net::Ipv4Addr;
//! use std::time::Duration;
//! use qemu_tests::image_server::{ImageServer, ServerOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = ImageServer::start(ServerOptions::default())?;
//! // images.test/busybox and images.test/large, for amd64 guests.
//! qemu_tests::fetch_images::fetch_images()?.serve(&server, qemu_tests::Arch::X86_64);
//! // host.toml: [fetch] ca = [server.ca_pem_path()], a hosts entry images.test = 10.0.2.100
//! # let image = qemu_tests::build_image("images/minimal.toml".as_ref(), qemu_tests::Arch::X86_64)?;
//! let vm = image
//!     .direct_boot()
//!     .guest_forward(Ipv4Addr::new(10, 0, 2, 100), 443, server.addr())
//!     .start()?;
//! server.wait_for_request(|r| r.path.ends_with(".aci") && r.complete, Duration::from_secs(120))?;
//! # drop(vm);
//! # Ok(())
//! # }
//! ```
//!
//! The discovery page says `<meta name="ac-discovery" content="PREFIX
//! https://HOST/aci/{name}-{version}-{os}-{arch}.{ext}">`, so image `images.test/busybox`
//! version 1.0 for amd64 is `/aci/images.test/busybox-1.0-linux-amd64.aci` (and
//! `.aci.minisig`). Each connection carries one request (`Connection: close`) on its own
//! thread. The certificate is signed by a CA shared by every server of the test process
//! (unless [`ServerOptions::own_ca`]), so one built image can trust all of them.

mod ca;
mod http;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;

use ca::Ca;
use http::{Pacing, Request};

/// How a guest's requests or a test's waits can go wrong with an [`ImageServer`].
#[derive(Debug, thiserror::Error)]
pub enum ImageServerError {
    #[error("could not listen on 127.0.0.1")]
    Bind(#[source] io::Error),

    #[error("could not make the {what} certificate")]
    Certificate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },

    #[error("the test process's CA could not be made: {0}")]
    SharedCa(String),

    #[error("could not configure TLS with the server certificate")]
    Tls(#[source] rustls::Error),

    #[error("could not {action} {}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("could not start the server's thread")]
    Thread(#[source] io::Error),

    #[error("no request for {what} within {timeout:?}; the server saw:\n{}", list(.seen))]
    NoRequest {
        what: String,
        timeout: Duration,
        seen: Vec<RequestRecord>,
    },
}

fn list(seen: &[RequestRecord]) -> String {
    if seen.is_empty() {
        return "  (no requests)".into();
    }
    let lines: Vec<String> = seen.iter().map(|r| format!("  {r}")).collect();
    lines.join("\n")
}

/// What to serve as: see [`ImageServer::start`].
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The name in the certificate and the templates (`images.test`).
    pub hostname: String,
    /// The image-name prefix the discovery template is for (`images.test/`).
    pub prefix: String,
    /// TLS (the default); plain HTTP otherwise, with `http://` templates.
    pub https: bool,
    /// A CA made for this server alone instead of the process's, for a guest that must not
    /// trust the server.
    pub own_ca: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            hostname: "images.test".into(),
            prefix: "images.test/".into(),
            https: true,
            own_ca: false,
        }
    }
}

/// One request the server answered (or is answering).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    /// The request target as sent: path and query (`/images.test/busybox?ac-discovery=1`).
    pub path: String,
    pub status: u16,
    /// The body's length (`Content-Length`).
    pub body_len: u64,
    /// Body bytes written so far: grows while a body is sent.
    pub bytes_sent: u64,
    /// Whether the whole body was written (false while sending, and after a cut connection).
    pub complete: bool,
    /// When the request head arrived.
    pub at: Instant,
}

impl std::fmt::Display for RequestRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} -> {} ({}/{} bytes{})",
            self.method,
            self.path,
            self.status,
            self.bytes_sent,
            self.body_len,
            if self.complete { "" } else { ", incomplete" }
        )
    }
}

/// What the connection threads share with the [`ImageServer`].
struct Shared {
    opts: ServerOptions,
    files: Mutex<HashMap<String, PathBuf>>,
    /// Until then every request gets 503.
    answer_from: Mutex<Option<Instant>>,
    /// Bytes per second for bodies; 0 for unlimited.
    rate: AtomicU64,
    stopped: AtomicBool,
    log: Mutex<Vec<RequestRecord>>,
    log_changed: Condvar,
    tls_failures: Mutex<Vec<String>>,
    /// Open connections (clones), shut down by `stop` so no thread waits on a read.
    open: Mutex<HashMap<usize, TcpStream>>,
    next_conn: AtomicUsize,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A running server on 127.0.0.1; stops when dropped. See the module documentation.
pub struct ImageServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca: Arc<Ca>,
    /// The directory of an own CA, removed on drop.
    own_ca_dir: Option<PathBuf>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl ImageServer {
    /// Listens on 127.0.0.1 on a free port with a certificate for `opts.hostname`, and serves
    /// until [`stop`](Self::stop) or drop.
    pub fn start(opts: ServerOptions) -> Result<ImageServer, ImageServerError> {
        let (ca, own_ca_dir) = if opts.own_ca {
            static SERVERS: AtomicUsize = AtomicUsize::new(0);
            let shared = Ca::shared()?;
            let parent = shared.pem_path().parent().unwrap_or(Path::new("."));
            let dir = parent.join(format!("own-{}", SERVERS.fetch_add(1, Ordering::Relaxed)));
            (
                Arc::new(Ca::generate("hostos untrusted test CA", &dir)?),
                Some(dir),
            )
        } else {
            (Ca::shared()?, None)
        };
        let tls = if opts.https {
            let leaf = ca.leaf(&opts.hostname)?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(ImageServerError::Tls)?
                .with_no_client_auth()
                .with_single_cert(leaf.chain, leaf.key)
                .map_err(ImageServerError::Tls)?;
            Some(Arc::new(config))
        } else {
            None
        };
        let listener = TcpListener::bind("127.0.0.1:0").map_err(ImageServerError::Bind)?;
        let addr = listener.local_addr().map_err(ImageServerError::Bind)?;
        let shared = Arc::new(Shared {
            opts,
            files: Mutex::new(HashMap::new()),
            answer_from: Mutex::new(None),
            rate: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
            log_changed: Condvar::new(),
            tls_failures: Mutex::new(Vec::new()),
            open: Mutex::new(HashMap::new()),
            next_conn: AtomicUsize::new(0),
            threads: Mutex::new(Vec::new()),
        });
        let for_thread = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name(format!("image-server-{}", addr.port()))
            .spawn(move || accept_loop(&listener, &for_thread, tls.as_ref()))
            .map_err(ImageServerError::Thread)?;
        Ok(ImageServer {
            shared,
            addr,
            ca,
            own_ca_dir,
            acceptor: Mutex::new(Some(acceptor)),
        })
    }

    /// Where it listens (127.0.0.1 and its port), for [`QemuConfig::guest_forward`](crate::QemuConfig::guest_forward).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn hostname(&self) -> &str {
        &self.shared.opts.hostname
    }

    /// The CA certificate (PEM) that signed the server's, for `[fetch] ca = [...]`.
    pub fn ca_pem_path(&self) -> &Path {
        self.ca.pem_path()
    }

    /// The CA certificate (DER), for clients in tests.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der()
    }

    /// Serves `local` at `url_path` (`/aci/...`; no query).
    pub fn add_file(&self, url_path: &str, local: impl Into<PathBuf>) {
        lock(&self.shared.files).insert(url_path.to_string(), local.into());
    }

    /// Serves an image and its signature where the discovery template points for `name`,
    /// `version`, os `linux` and `arch` (appc's label: `amd64`, `aarch64`).
    pub fn add_image(&self, name: &str, version: &str, arch: &str, aci: &Path, signature: &Path) {
        self.add_file(&image_path(name, version, arch, "aci"), aci);
        self.add_file(&image_path(name, version, arch, "aci.minisig"), signature);
    }

    /// Answers every request with 503 Service Unavailable for `delay` from now (a server that
    /// is up but not ready, rather than connections refused, so the guest's retries show in
    /// [`requests`](Self::requests)).
    pub fn answer_after(&self, delay: Duration) {
        *lock(&self.shared.answer_from) = Some(Instant::now() + delay);
    }

    /// Sends bodies at most `bytes_per_sec` (from the next chunk on, also mid-body), so a test
    /// can act while a large image is downloading.
    pub fn throttle(&self, bytes_per_sec: u64) {
        self.shared
            .rate
            .store(bytes_per_sec.max(1), Ordering::Relaxed);
    }

    /// Sends bodies as fast as the connection takes them again.
    pub fn unthrottle(&self) {
        self.shared.rate.store(0, Ordering::Relaxed);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log).clone()
    }

    /// Handshakes that failed (e.g. a guest that does not trust the CA), one line each.
    pub fn tls_failures(&self) -> Vec<String> {
        lock(&self.shared.tls_failures).clone()
    }

    /// Waits for a request (also one still being answered) that `matches`, and returns it as
    /// it was then.
    pub fn wait_for_request(
        &self,
        matches: impl Fn(&RequestRecord) -> bool,
        timeout: Duration,
    ) -> Result<RequestRecord, ImageServerError> {
        let deadline = Instant::now() + timeout;
        let mut log = lock(&self.shared.log);
        loop {
            if let Some(found) = log.iter().find(|r| matches(r)) {
                return Ok(found.clone());
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err(ImageServerError::NoRequest {
                    what: "the one waited for".into(),
                    timeout,
                    seen: log.clone(),
                });
            };
            log = self
                .shared
                .log_changed
                .wait_timeout(log, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Stops listening (new connections are refused), cuts the open ones mid-body, and waits
    /// for every thread. Drop does this too.
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        let acceptor = lock(&self.acceptor).take();
        if let Some(acceptor) = acceptor {
            // Wakes the blocking accept, which then sees `stopped`.
            let _ = TcpStream::connect(self.addr);
            let _ = acceptor.join();
        }
        for stream in lock(&self.shared.open).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.own_ca_dir {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// `/aci/{name}-{version}-linux-{arch}.{ext}`: where the discovery template points.
pub fn image_path(name: &str, version: &str, arch: &str, ext: &str) -> String {
    format!("/aci/{name}-{version}-linux-{arch}.{ext}")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking connection thread leaves the data as good as it was.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    tls: Option<&Arc<rustls::ServerConfig>>,
) {
    for stream in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(tcp) = stream else { continue };
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = tcp.try_clone() {
            lock(&shared.open).insert(id, clone);
        }
        let shared_conn = Arc::clone(shared);
        let tls = tls.cloned();
        let spawned = std::thread::Builder::new()
            .name(format!("image-server-conn-{id}"))
            .spawn(move || {
                serve_connection(tcp, &shared_conn, tls);
                lock(&shared_conn.open).remove(&id);
            });
        match spawned {
            Ok(thread) => {
                let mut threads = lock(&shared.threads);
                threads.retain(|t| !t.is_finished());
                threads.push(thread);
            }
            Err(_) => {
                lock(&shared.open).remove(&id);
            }
        }
    }
}

/// A connection, TLS or plain.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

impl Conn {
    /// Ends the response cleanly: TLS close_notify, then the shutdown of our side.
    fn finish(mut self) {
        if let Conn::Tls(s) = &mut self {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
        let tcp = match &self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        };
        let _ = tcp.shutdown(Shutdown::Write);
    }
}

/// How long a connection may sit idle: a guest under TCG is slow, but not this slow.
const IDLE: Duration = Duration::from_secs(60);

fn serve_connection(tcp: TcpStream, shared: &Shared, tls: Option<Arc<rustls::ServerConfig>>) {
    let peer = tcp
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let _ = tcp.set_read_timeout(Some(IDLE));
    let _ = tcp.set_write_timeout(Some(IDLE));
    let mut conn = match tls {
        None => Conn::Plain(tcp),
        Some(config) => {
            let server = match rustls::ServerConnection::new(config) {
                Ok(s) => s,
                Err(e) => return lock(&shared.tls_failures).push(format!("{peer}: {e}")),
            };
            let mut stream = rustls::StreamOwned::new(server, tcp);
            // The handshake first, so its failures are told apart from the request's.
            while stream.conn.is_handshaking() {
                if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
                    if !shared.stopped.load(Ordering::SeqCst) {
                        lock(&shared.tls_failures).push(format!("{peer}: {e}"));
                    }
                    return;
                }
            }
            Conn::Tls(Box::new(stream))
        }
    };
    let Ok(Some(request)) = http::read_request(&mut conn) else {
        return;
    };
    if respond(&mut conn, shared, &request).is_ok() {
        conn.finish();
    }
}

/// What a request gets.
enum Answer {
    Status(u16),
    Page(String),
    File(PathBuf),
}

fn answer(shared: &Shared, request: &Request) -> Answer {
    let not_ready = lock(&shared.answer_from).is_some_and(|from| Instant::now() < from);
    if not_ready {
        return Answer::Status(503);
    }
    if request.method != "GET" && request.method != "HEAD" {
        return Answer::Status(405);
    }
    if request.is_discovery() {
        return Answer::Page(discovery_page(&shared.opts));
    }
    match lock(&shared.files).get(request.path()) {
        Some(path) => Answer::File(path.clone()),
        None => Answer::Status(404),
    }
}

/// The HTML page with the one `ac-discovery` tag.
fn discovery_page(opts: &ServerOptions) -> String {
    let scheme = if opts.https { "https" } else { "http" };
    format!(
        "<!DOCTYPE html>\n<html><head>\n<meta name=\"ac-discovery\" content=\"{} \
         {scheme}://{}/aci/{{name}}-{{version}}-{{os}}-{{arch}}.{{ext}}\">\n</head></html>\n",
        opts.prefix, opts.hostname
    )
}

fn respond(conn: &mut Conn, shared: &Shared, request: &Request) -> io::Result<()> {
    let empty = |status| -> (u16, &str, u64, Box<dyn Read>) {
        (status, "text/plain", 0, Box::new(io::empty()))
    };
    let (status, content_type, body_len, mut body): (u16, &str, u64, Box<dyn Read>) =
        match answer(shared, request) {
            Answer::Status(status) => empty(status),
            Answer::Page(html) => (
                200,
                "text/html",
                html.len() as u64,
                Box::new(io::Cursor::new(html)),
            ),
            Answer::File(path) => {
                match File::open(&path).and_then(|f| Ok((f.metadata()?.len(), f))) {
                    Ok((len, file)) => (200, "application/octet-stream", len, Box::new(file)),
                    Err(_) => empty(404),
                }
            }
        };
    let at = Instant::now();
    let index = {
        let mut log = lock(&shared.log);
        log.push(RequestRecord {
            method: request.method.clone(),
            path: request.target.clone(),
            status,
            body_len: if request.method == "HEAD" {
                0
            } else {
                body_len
            },
            bytes_sent: 0,
            complete: false,
            at,
        });
        log.len() - 1
    };
    shared.log_changed.notify_all();
    let update = |sent: u64, complete: bool| {
        if let Some(record) = lock(&shared.log).get_mut(index) {
            record.bytes_sent = sent;
            record.complete = complete;
        }
        shared.log_changed.notify_all();
    };
    conn.write_all(&http::head(status, content_type, body_len))?;
    if request.method == "HEAD" {
        conn.flush()?;
        update(0, true);
        return Ok(());
    }
    let rate = || Some(shared.rate.load(Ordering::Relaxed)).filter(|&r| r > 0);
    let keep_going = || !shared.stopped.load(Ordering::SeqCst);
    let mut progress = |sent| update(sent, false);
    let sent = http::send_body(
        conn,
        &mut body,
        Pacing {
            rate: &rate,
            keep_going: &keep_going,
            progress: &mut progress,
        },
    )?;
    update(sent, sent == body_len);
    Ok(())
}
