//! Discovery and fetch against local HTTP and HTTPS servers started by each test: meta pages,
//! walking up the path, 404s, redirects, size limits, ETag reuse, retries, the trust check on
//! fetched images and HTTPS with a CA made at test time. Host names resolve through the
//! client's resolver seam, so `example.com` here is always 127.0.0.1.

mod common;

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aci::discovery::{
    self, App, FetchError, FetchOptions, HttpClient, HttpError, HttpOptions, Resolver,
    RootCertificates,
};
use aci::sign::SecretKey;
use aci::trust::{InsecureOptions, TrustError, TrustScope, TrustStore, Verified};

/// What the test server answers for one request.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send the body in small chunks with a pause between them.
    slow: bool,
}

fn reply(status: u16, body: impl Into<Vec<u8>>) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: body.into(),
        slow: false,
    }
}

/// A body that trickles out: 16 KiB every 10 ms.
struct Trickle(io::Cursor<Vec<u8>>);

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        std::thread::sleep(Duration::from_millis(10));
        let n = buf.len().min(16 << 10);
        self.0.read(&mut buf[..n])
    }
}

impl Reply {
    fn slowly(mut self) -> Reply {
        self.slow = true;
        self
    }

    fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
}

type Handler = dyn Fn(&str, Option<&str>, usize) -> Reply + Send + Sync;

/// A plain HTTP server on 127.0.0.1 answering from `handler(path+query, If-None-Match, nth
/// request for this path)`, recording every path+query it is asked for.
struct Server {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    _thread: std::thread::JoinHandle<()>,
}

impl Server {
    fn start(
        handler: impl Fn(&str, Option<&str>, usize) -> Reply + Send + Sync + 'static,
    ) -> Server {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let addr = server.server_addr().to_ip().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        let handler: Arc<Handler> = Arc::new(handler);
        let thread = std::thread::spawn(move || {
            let mut counts: HashMap<String, usize> = HashMap::new();
            // Bounded: the server stops on its own after a few seconds idle.
            while let Ok(Some(req)) = server.recv_timeout(Duration::from_secs(10)) {
                let url = req.url().to_string();
                let inm = req
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("If-None-Match"))
                    .map(|h| h.value.as_str().to_string());
                let n = counts.entry(url.clone()).or_default();
                *n += 1;
                log2.lock().unwrap().push(url.clone());
                let r = handler(&url, inm.as_deref(), *n);
                let headers: Vec<tiny_http::Header> = r
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).unwrap()
                    })
                    .collect();
                let len = r.body.len();
                let _ = if r.slow {
                    req.respond(tiny_http::Response::new(
                        r.status.into(),
                        headers,
                        Trickle(io::Cursor::new(r.body)),
                        Some(len),
                        None,
                    ))
                } else {
                    req.respond(tiny_http::Response::new(
                        r.status.into(),
                        headers,
                        io::Cursor::new(r.body),
                        Some(len),
                        None,
                    ))
                };
            }
        });
        Server {
            addr,
            log,
            _thread: thread,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

/// Every name resolves to the test server; port 443 goes to a closed port so an HTTPS attempt
/// fails fast and plain HTTP (allowed in these tests) is tried next.
struct ToServer {
    http: SocketAddr,
    https: Option<SocketAddr>,
}

impl Resolver for ToServer {
    fn resolve(&self, _host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(vec![match (port, self.https) {
            (443, Some(tls)) => tls,
            (443, None) => SocketAddr::from(([127, 0, 0, 1], 1)),
            _ => self.http,
        }])
    }
}

fn client_for(server: &Server, tweak: impl FnOnce(&mut HttpOptions)) -> HttpClient {
    let mut opts = HttpOptions {
        allow_http: true,
        retries: 0,
        backoff: Duration::from_millis(10),
        timeout: Duration::from_secs(10),
        resolver: Some(Arc::new(ToServer {
            http: server.addr,
            https: None,
        })),
        ..HttpOptions::default()
    };
    tweak(&mut opts);
    HttpClient::new(opts).unwrap()
}

fn page(prefix: &str, template: &str) -> String {
    format!(
        "<html><head><meta name=\"ac-discovery\" content=\"{prefix} {template}\">\
         <meta name=\"ac-discovery-pubkeys\" content=\"{prefix} http://example.com/key.pub\"></head></html>"
    )
}

#[test]
fn discovers_image_signature_and_key_urls() {
    let server = Server::start(|url, _, _| match url {
        "/app?ac-discovery=1" => reply(
            200,
            page(
                "example.com",
                "http://example.com/{name}-{version}-{os}-{arch}.{ext}",
            ),
        ),
        _ => reply(404, "no"),
    });
    let app = App::parse("example.com/app:1.0,os=linux,arch=amd64").unwrap();
    let found = discovery::discover(&app, &client_for(&server, |_| {})).unwrap();
    assert_eq!(found.images.len(), 1);
    assert_eq!(
        found.images[0].aci,
        "http://example.com/example.com/app-1.0-linux-amd64.aci"
    );
    assert_eq!(
        found.images[0].signature,
        "http://example.com/example.com/app-1.0-linux-amd64.aci.minisig"
    );
    assert_eq!(
        found.public_keys,
        vec!["http://example.com/key.pub".to_string()]
    );
}

#[test]
fn walks_up_the_path_on_404_and_on_pages_without_matching_tags() {
    let server = Server::start(|url, _, _| match url {
        "/a/b?ac-discovery=1" => reply(404, "missing"),
        "/a?ac-discovery=1" => reply(200, page("other.org", "http://x/{name}.{ext}")),
        "/?ac-discovery=1" => reply(
            200,
            page("example.com/a", "http://example.com/{name}.{ext}"),
        ),
        _ => reply(404, ""),
    });
    let app = App::parse("example.com/a/b").unwrap();
    let found = discovery::discover(&app, &client_for(&server, |_| {})).unwrap();
    assert_eq!(
        found.images[0].aci,
        "http://example.com/example.com/a/b.aci"
    );
    assert_eq!(
        server.requests(),
        [
            "/a/b?ac-discovery=1",
            "/a?ac-discovery=1",
            "/?ac-discovery=1"
        ]
    );
}

#[test]
fn reports_every_attempt_when_nothing_is_found() {
    let server = Server::start(|_, _, _| reply(404, "no"));
    let app = App::parse("example.com/a").unwrap();
    let err = discovery::discover(&app, &client_for(&server, |_| {})).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("example.com/a") && text.contains("404"),
        "{text}"
    );
    // https and http for each of the two path levels.
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn follows_redirects_but_not_endlessly() {
    let server = Server::start(|url, _, _| match url {
        "/app?ac-discovery=1" => reply(302, "").header("Location", "/moved/page.html"),
        "/moved/page.html" => reply(200, page("example.com", "http://example.com/{name}.{ext}")),
        "/loop" => reply(301, "").header("Location", "/loop"),
        _ => reply(404, ""),
    });
    let client = client_for(&server, |o| o.max_redirects = 3);
    let found = discovery::discover(&App::parse("example.com/app").unwrap(), &client).unwrap();
    assert_eq!(found.page, "http://example.com/moved/page.html");
    let err = client
        .get_bytes("http://example.com/loop", 100)
        .unwrap_err();
    assert!(
        matches!(err, HttpError::TooManyRedirects { max: 3, .. }),
        "{err:?}"
    );
}

#[test]
fn refuses_plain_http_unless_allowed() {
    let server = Server::start(|_, _, _| reply(200, "x"));
    let strict = client_for(&server, |o| o.allow_http = false);
    let err = strict.get_bytes("http://example.com/x", 100).unwrap_err();
    assert!(matches!(err, HttpError::InsecureScheme { .. }), "{err:?}");
    assert!(server.requests().is_empty());
}

#[test]
fn refuses_bodies_over_the_size_limit() {
    let server = Server::start(|_, _, _| reply(200, vec![b'x'; 10_000]).header("ETag", "\"big\""));
    let cache = tempfile::tempdir().unwrap();
    let client = client_for(&server, |o| o.cache_dir = Some(cache.path().to_path_buf()));
    let err = client
        .get_bytes("http://example.com/big", 9_999)
        .unwrap_err();
    assert!(
        matches!(err, HttpError::TooLarge { limit: 9_999, .. }),
        "{err:?}"
    );
    // Nothing partial is left in the cache.
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
    assert_eq!(
        client
            .get_bytes("http://example.com/big", 10_000)
            .unwrap()
            .0
            .len(),
        10_000
    );
}

#[test]
fn reuses_the_cached_copy_when_the_server_answers_304() {
    let server = Server::start(|_, inm, _| match inm {
        Some("\"v1\"") => reply(304, ""),
        _ => reply(200, "fresh body").header("ETag", "\"v1\""),
    });
    let cache = tempfile::tempdir().unwrap();
    let client = client_for(&server, |o| o.cache_dir = Some(cache.path().to_path_buf()));
    let (body, first) = client
        .get_bytes("http://example.com/img.aci", 1000)
        .unwrap();
    assert_eq!(
        (body.as_slice(), first.from_cache),
        (&b"fresh body"[..], false)
    );
    let (body, second) = client
        .get_bytes("http://example.com/img.aci", 1000)
        .unwrap();
    assert_eq!(
        (body.as_slice(), second.from_cache),
        (&b"fresh body"[..], true)
    );
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn retries_server_errors_with_a_bounded_number_of_attempts() {
    let server = Server::start(|url, _, n| match url {
        "/flaky" if n <= 2 => reply(503, "busy"),
        "/flaky" => reply(200, "ok"),
        _ => reply(500, "down"),
    });
    let client = client_for(&server, |o| o.retries = 2);
    assert_eq!(
        client.get_bytes("http://example.com/flaky", 100).unwrap().0,
        b"ok"
    );
    let err = client
        .get_bytes("http://example.com/down", 100)
        .unwrap_err();
    assert_eq!(err.status(), Some(500));
    let downs = server.requests().iter().filter(|r| *r == "/down").count();
    assert_eq!(downs, 3, "one attempt and two retries");
}

#[test]
fn does_not_retry_client_errors() {
    let server = Server::start(|_, _, _| reply(404, ""));
    let client = client_for(&server, |o| o.retries = 3);
    assert_eq!(
        client
            .get_bytes("http://example.com/x", 100)
            .unwrap_err()
            .status(),
        Some(404)
    );
    assert_eq!(server.requests().len(), 1);
}

/// A gzip-less (plain tar) ACI with `name` and labels.
fn make_aci(name: &str, labels: &[(&str, &str)]) -> Vec<u8> {
    let labels: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{{\"name\":\"{k}\",\"value\":\"{v}\"}}"))
        .collect();
    let manifest = format!(
        "{{\"acKind\":\"ImageManifest\",\"acVersion\":\"0.8.11\",\"name\":\"{name}\",\"labels\":[{}]}}",
        labels.join(",")
    );
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(manifest.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, "manifest", manifest.as_bytes())
        .unwrap();
    let mut d = tar::Header::new_ustar();
    d.set_size(0);
    d.set_mode(0o755);
    d.set_uid(0);
    d.set_gid(0);
    d.set_mtime(0);
    d.set_entry_type(tar::EntryType::Directory);
    b.append_data(&mut d, "rootfs/", io::empty()).unwrap();
    b.into_inner().unwrap()
}

struct Published {
    server: Server,
    key: SecretKey,
    trust: tempfile::TempDir,
    out: tempfile::TempDir,
}

/// Serves a discovery page, `aci` and (if `signed`) its signature made with a fresh key that
/// is trusted for `example.com`.
fn publish(aci: Vec<u8>, signature_over: Option<Vec<u8>>) -> Published {
    let key = SecretKey::generate().unwrap();
    let sig = signature_over.map(|b| key.sign(&b, "test").unwrap().to_minisign());
    let server = Server::start(move |url, _, _| match url {
        "/app?ac-discovery=1" => reply(
            200,
            page(
                "example.com",
                "http://example.com/images/{name}-{version}.{ext}",
            ),
        ),
        "/images/example.com/app-1.0.aci" => reply(200, aci.clone()),
        "/images/example.com/app-1.0.aci.minisig" => match &sig {
            Some(s) => reply(200, s.clone()),
            None => reply(404, ""),
        },
        _ => reply(404, ""),
    });
    let trust = tempfile::tempdir().unwrap();
    TrustStore::new(trust.path())
        .add(&TrustScope::Prefix("example.com".into()), &key.public_key())
        .unwrap();
    Published {
        server,
        key,
        trust,
        out: tempfile::tempdir().unwrap(),
    }
}

fn fetch(
    p: &Published,
    app: &str,
    insecure: InsecureOptions,
) -> (
    Result<discovery::FetchedImage, FetchError>,
    std::path::PathBuf,
) {
    let dest = p.out.path().join("app.aci");
    let opts = FetchOptions {
        insecure,
        ..FetchOptions::default()
    };
    let r = discovery::fetch_image(
        &App::parse(app).unwrap(),
        &client_for(&p.server, |_| {}),
        &TrustStore::new(p.trust.path()),
        &dest,
        &opts,
    );
    (r, dest)
}

#[test]
fn fetch_returns_a_verified_image_that_matches_the_request() {
    let aci = make_aci("example.com/app", &[("version", "1.0"), ("os", "linux")]);
    let p = publish(aci.clone(), Some(aci.clone()));
    let (r, dest) = fetch(
        &p,
        "example.com/app:1.0,os=linux",
        InsecureOptions::default(),
    );
    let got = r.unwrap();
    assert_eq!(got.verified.key_id(), Some(p.key.id()));
    assert!(got.image_id.starts_with("sha512-"));
    assert_eq!(std::fs::read(&dest).unwrap(), aci);
}

#[test]
fn fetch_refuses_a_tampered_image_and_removes_it() {
    let aci = make_aci("example.com/app", &[("version", "1.0")]);
    let mut other = aci.clone();
    other[600] ^= 1; // inside the manifest's padding: still a valid tar
    let p = publish(other, Some(aci));
    let (r, dest) = fetch(&p, "example.com/app:1.0", InsecureOptions::default());
    assert!(
        matches!(r, Err(FetchError::Trust(TrustError::BadSignature { .. }))),
        "{r:?}"
    );
    assert!(!dest.exists(), "a refused image must not be left behind");
}

#[test]
fn fetch_refuses_an_unsigned_image_unless_explicitly_allowed() {
    let aci = make_aci("example.com/app", &[("version", "1.0")]);
    let p = publish(aci, None);
    let (r, dest) = fetch(&p, "example.com/app:1.0", InsecureOptions::default());
    assert!(
        matches!(r, Err(FetchError::Trust(TrustError::Unsigned { .. }))),
        "{r:?}"
    );
    assert!(!dest.exists());
    let insecure = InsecureOptions {
        allow_unsigned: true,
        allow_http: true,
    };
    let (r, dest) = fetch(&p, "example.com/app:1.0", insecure);
    assert_eq!(r.unwrap().verified, Verified::UnsignedAllowed);
    assert!(dest.exists());
}

#[test]
fn fetch_refuses_an_image_whose_manifest_does_not_match_the_request() {
    // Correctly signed, but it is another image (or another version) than the one requested.
    for (name, version) in [("example.com/other", "1.0"), ("example.com/app", "2.0")] {
        let aci = make_aci(name, &[("version", version)]);
        let p = publish(aci.clone(), Some(aci));
        let (r, dest) = fetch(&p, "example.com/app:1.0", InsecureOptions::default());
        assert!(
            matches!(r, Err(FetchError::Mismatch { .. })),
            "{name} {version}: {r:?}"
        );
        assert!(!dest.exists());
    }
}

// ---- HTTPS with a CA generated for the test ----

/// Serves `body` for every request over TLS with a certificate for example.com signed by a
/// fresh CA; returns the CA's DER and the address. Handles `n` connections, then stops.
fn tls_server(body: &'static str, n: usize) -> (Vec<u8>, SocketAddr, std::thread::JoinHandle<()>) {
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    common::tls::server(response.into_bytes(), n)
}

fn https_client(tls: SocketAddr, roots: RootCertificates) -> HttpClient {
    HttpClient::new(HttpOptions {
        retries: 0,
        roots,
        resolver: Some(Arc::new(ToServer {
            http: SocketAddr::from(([127, 0, 0, 1], 1)),
            https: Some(tls),
        })),
        ..HttpOptions::default()
    })
    .unwrap()
}

#[test]
fn discovers_over_https_with_a_private_ca() {
    let body =
        "<meta name=\"ac-discovery\" content=\"example.com https://example.com/{name}.{ext}\">";
    let (ca, addr, thread) = tls_server(body, 1);
    let client = https_client(addr, RootCertificates::Only(vec![ca]));
    let found = discovery::discover(&App::parse("example.com/app").unwrap(), &client).unwrap();
    assert_eq!(
        found.images[0].aci,
        "https://example.com/example.com/app.aci"
    );
    thread.join().unwrap();
}

#[test]
fn a_private_ca_added_beside_the_web_roots_is_trusted_too() {
    let body =
        "<meta name=\"ac-discovery\" content=\"example.com https://example.com/{name}.{ext}\">";
    let (ca, addr, thread) = tls_server(body, 1);
    let client = https_client(addr, RootCertificates::WebPkiAnd(vec![ca]));
    let found = discovery::discover(&App::parse("example.com/app").unwrap(), &client).unwrap();
    assert_eq!(found.images.len(), 1);
    thread.join().unwrap();
    // The web roots alone do not trust the private CA.
    let (_ca, addr, thread) = tls_server("x", 1);
    let client = https_client(addr, RootCertificates::WebPki);
    let err = client.get_bytes("https://example.com/", 100).unwrap_err();
    assert!(matches!(err, HttpError::Transport { .. }), "{err:?}");
    thread.join().unwrap();
}

#[test]
fn refuses_https_servers_whose_certificate_is_not_trusted() {
    let (_ca, addr, thread) = tls_server("x", 1);
    // Trusts another CA only.
    let (other_ca, _, other) = tls_server("x", 0);
    let client = https_client(addr, RootCertificates::Only(vec![other_ca]));
    let err = client.get_bytes("https://example.com/", 100).unwrap_err();
    assert!(matches!(err, HttpError::Transport { .. }), "{err:?}");
    thread.join().unwrap();
    other.join().unwrap();
}

// ---- One-pass fetch into the store: download, verify, unpack; nothing visible on refusal ----

/// A gzip ACI named example.com/app (version 1.0) whose rootfs holds `hello` (64 KiB, so the
/// body spans several reads).
fn make_gzip_aci() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("manifest"),
        r#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/app","labels":[{"name":"version","value":"1.0"}]}"#,
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("rootfs")).unwrap();
    let content: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.path().join("rootfs/hello"), content).unwrap();
    let mut out = Vec::new();
    let opts = aci::archive::WriteOptions {
        compression: aci::archive::Compression::Gzip,
        ..aci::archive::WriteOptions::default()
    };
    aci::archive::write_aci(dir.path(), &mut out, &opts).unwrap();
    out
}

fn fetch_to_store(
    p: &Published,
    insecure: InsecureOptions,
) -> (
    Result<discovery::FetchedIntoStore, FetchError>,
    aci::store::Store,
) {
    let store = aci::store::Store::open(p.out.path().join("store")).unwrap();
    let opts = FetchOptions {
        insecure,
        ..FetchOptions::default()
    };
    let r = discovery::fetch_into_store(
        &App::parse("example.com/app:1.0").unwrap(),
        &client_for(&p.server, |_| {}),
        &TrustStore::new(p.trust.path()),
        &store,
        &opts,
    );
    (r, store)
}

/// Every entry under the store's images/ and trees/ directories, temp files included.
fn store_entries(store: &aci::store::Store) -> Vec<String> {
    let mut names = Vec::new();
    for sub in ["images", "trees"] {
        for e in std::fs::read_dir(store.root().join(sub)).unwrap() {
            names.push(format!(
                "{sub}/{}",
                e.unwrap().file_name().to_string_lossy()
            ));
        }
    }
    names
}

#[test]
fn fetch_into_store_makes_a_verified_image_and_its_tree_visible() {
    let aci = make_gzip_aci();
    let p = publish(aci.clone(), Some(aci.clone()));
    let (r, store) = fetch_to_store(&p, InsecureOptions::default());
    let got = r.unwrap();
    assert_eq!(got.verified.key_id(), Some(p.key.id()));
    let record = store.get(got.stored.record.id.as_str()).unwrap();
    assert_eq!(record.name, "example.com/app");
    assert_eq!(std::fs::read(store.blob_path(&record.id)).unwrap(), aci);
    let tree = got
        .stored
        .tree
        .expect("an image without dependencies is unpacked");
    assert_eq!(std::fs::read(tree.path.join("hello")).unwrap().len(), 65536);
    // The tree is the one rendering would have made.
    let rendered = store
        .render(&record.id, &mut aci::store::StoreOnly)
        .unwrap();
    assert_eq!(rendered.path, tree.path);
    assert!(
        store_entries(&store).iter().all(|n| !n.contains(".tmp-")),
        "{:?}",
        store_entries(&store)
    );
}

#[test]
fn fetch_into_store_refuses_tampered_bytes_and_leaves_nothing_visible() {
    let aci = make_gzip_aci();
    // One flipped bit in the compressed stream, and one in the last byte (gzip trailer).
    for at in [aci.len() / 2, aci.len() - 1] {
        let mut bad = aci.clone();
        bad[at] ^= 1;
        let p = publish(bad, Some(aci.clone()));
        let (r, store) = fetch_to_store(&p, InsecureOptions::default());
        assert!(
            matches!(r, Err(FetchError::Trust(TrustError::BadSignature { .. }))),
            "byte {at}: {r:?}"
        );
        assert!(store.list().unwrap().is_empty());
        assert_eq!(store_entries(&store), Vec::<String>::new(), "byte {at}");
    }
}

#[test]
fn fetch_into_store_refuses_an_unsigned_image_before_downloading_it() {
    let aci = make_gzip_aci();
    let p = publish(aci, None);
    let (r, store) = fetch_to_store(&p, InsecureOptions::default());
    assert!(
        matches!(r, Err(FetchError::Trust(TrustError::Unsigned { .. }))),
        "{r:?}"
    );
    assert_eq!(store_entries(&store), Vec::<String>::new());
    assert!(
        !p.server.requests().iter().any(|r| r.ends_with(".aci")),
        "the image itself must not be downloaded: {:?}",
        p.server.requests()
    );
}

#[test]
fn fetch_into_store_refuses_a_key_not_in_the_trust_store() {
    let aci = make_gzip_aci();
    let p = publish(aci.clone(), Some(aci));
    // An empty trust directory: the signature is fine but its key is not trusted.
    let empty = tempfile::tempdir().unwrap();
    let store = aci::store::Store::open(p.out.path().join("store")).unwrap();
    let r = discovery::fetch_into_store(
        &App::parse("example.com/app:1.0").unwrap(),
        &client_for(&p.server, |_| {}),
        &TrustStore::new(empty.path()),
        &store,
        &FetchOptions::default(),
    );
    assert!(
        matches!(r, Err(FetchError::Trust(TrustError::UntrustedKey { .. }))),
        "{r:?}"
    );
    assert_eq!(store_entries(&store), Vec::<String>::new());
}

#[test]
fn fetch_into_store_checks_legacy_signatures_over_the_whole_file() {
    let aci = make_gzip_aci();
    let key = SecretKey::generate().unwrap();
    let sig = key.sign_legacy(&aci, "legacy").unwrap().to_minisign();
    let p = publish(aci.clone(), None);
    let served = aci.clone();
    let server = Server::start(move |url, _, _| match url {
        "/app?ac-discovery=1" => reply(
            200,
            page(
                "example.com",
                "http://example.com/images/{name}-{version}.{ext}",
            ),
        ),
        "/images/example.com/app-1.0.aci" => reply(200, served.clone()),
        "/images/example.com/app-1.0.aci.minisig" => reply(200, sig.clone()),
        _ => reply(404, ""),
    });
    TrustStore::new(p.trust.path())
        .add(&TrustScope::Root, &key.public_key())
        .unwrap();
    let store = aci::store::Store::open(p.out.path().join("store")).unwrap();
    let got = discovery::fetch_into_store(
        &App::parse("example.com/app:1.0").unwrap(),
        &client_for(&server, |_| {}),
        &TrustStore::new(p.trust.path()),
        &store,
        &FetchOptions::default(),
    )
    .unwrap();
    assert_eq!(got.verified.key_id(), Some(key.id()));
    assert!(got.stored.tree.is_some());
}

#[test]
fn fetch_into_store_refuses_a_mismatched_image_and_leaves_nothing_visible() {
    let aci = make_gzip_aci();
    let p = publish(aci.clone(), Some(aci));
    let store = aci::store::Store::open(p.out.path().join("store")).unwrap();
    let r = discovery::fetch_into_store(
        // Signed and served at the URL asked for, but the manifest has no `os=linux` label.
        &App::parse("example.com/app:1.0,os=linux").unwrap(),
        &client_for(&p.server, |_| {}),
        &TrustStore::new(p.trust.path()),
        &store,
        &FetchOptions::default(),
    );
    assert!(matches!(r, Err(FetchError::Mismatch { .. })), "{r:?}");
    assert_eq!(store_entries(&store), Vec::<String>::new());
}

#[test]
fn does_not_retry_a_refused_connection() {
    let server = Server::start(|_, _, _| reply(200, ""));
    let client = client_for(&server, |o| {
        o.retries = 3;
        o.backoff = Duration::from_secs(2);
    });
    let started = std::time::Instant::now();
    // Port 443 resolves to a closed port: refused at once, and not worth a retry.
    let err = client.get_bytes("https://example.com/x", 100).unwrap_err();
    assert!(
        matches!(err, HttpError::Transport { attempts: 1, .. }),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

const FETCH_CRASH_ENV: &str = "ACI_FETCH_CRASH_CHILD";

/// An uncompressed image large enough that its slow download takes seconds.
fn big_aci() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("manifest"),
        r#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/app","labels":[{"name":"version","value":"1.0"}]}"#,
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("rootfs")).unwrap();
    let content: Vec<u8> = (0..(2u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.path().join("rootfs/big"), content).unwrap();
    let mut out = Vec::new();
    let opts = aci::archive::WriteOptions {
        compression: aci::archive::Compression::None,
        ..aci::archive::WriteOptions::default()
    };
    aci::archive::write_aci(dir.path(), &mut out, &opts).unwrap();
    out
}

/// Not a test of its own: the body of the child process that
/// `killed_fetch_into_store_leaves_nothing_and_a_second_fetch_succeeds` starts (with
/// `--ignored`) and kills, so a plain test run never counts it as a pass.
#[test]
#[ignore = "runs only as the child of killed_fetch_into_store_leaves_nothing_and_a_second_fetch_succeeds"]
fn crash_child_fetches_into_store_slowly() {
    let env = std::env::var(FETCH_CRASH_ENV).expect("started without ACI_FETCH_CRASH_CHILD");
    let mut parts = env.split('|');
    let (addr, trust, store) = (
        parts.next().unwrap().parse::<SocketAddr>().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let client = HttpClient::new(HttpOptions {
        allow_http: true,
        retries: 0,
        timeout: Duration::from_secs(60),
        resolver: Some(Arc::new(ToServer {
            http: addr,
            https: None,
        })),
        ..HttpOptions::default()
    })
    .unwrap();
    let store = aci::store::Store::open(store).unwrap();
    discovery::fetch_into_store(
        &App::parse("example.com/app:1.0").unwrap(),
        &client,
        &TrustStore::new(trust),
        &store,
        &FetchOptions::default(),
    )
    .unwrap();
    panic!("the parent should have killed this fetch before it finished");
}

#[test]
fn killed_fetch_into_store_leaves_nothing_and_a_second_fetch_succeeds() {
    let aci = big_aci();
    let key = SecretKey::generate().unwrap();
    let sig = key.sign(&aci, "test").unwrap().to_minisign();
    // The signature comes at once, the body trickles.
    let server = Server::start(move |url, _, _| match url {
        "/app?ac-discovery=1" => reply(
            200,
            page(
                "example.com",
                "http://example.com/images/{name}-{version}.{ext}",
            ),
        ),
        "/images/example.com/app-1.0.aci" => reply(200, aci.clone()).slowly(),
        "/images/example.com/app-1.0.aci.minisig" => reply(200, sig.clone()),
        _ => reply(404, ""),
    });
    let trust = tempfile::tempdir().unwrap();
    TrustStore::new(trust.path())
        .add(&TrustScope::Prefix("example.com".into()), &key.public_key())
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let store_dir = root.path().join("store");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "crash_child_fetches_into_store_slowly",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            FETCH_CRASH_ENV,
            format!(
                "{}|{}|{}",
                server.addr,
                trust.path().display(),
                store_dir.display()
            ),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let images = store_dir.join("images");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // Wait until a good part of the body is in the temp blob, then SIGKILL the child.
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "child never started downloading"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "child exited before the kill"
        );
        let partial = std::fs::read_dir(&images).ok().and_then(|rd| {
            rd.flatten().find(|e| {
                e.file_name().to_string_lossy().starts_with(".tmp-")
                    && e.metadata().is_ok_and(|m| m.len() > 256 * 1024)
            })
        });
        if partial.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let left: Vec<String> = ["images", "trees"]
        .iter()
        .flat_map(|d| std::fs::read_dir(store_dir.join(d)).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // Only the temp blob: nothing is unpacked while the body is still arriving (the tree
    // waits for the signature, which waits for the last byte).
    assert_eq!(
        left.iter()
            .filter(|n| n.starts_with(".tmp-"))
            .map(|n| n.ends_with(".aci"))
            .collect::<Vec<_>>(),
        [true],
        "the kill should leave exactly a temp blob behind: {left:?}"
    );
    let store = aci::store::Store::open(&store_dir).unwrap();
    assert!(
        store.list().unwrap().is_empty(),
        "a partial image is visible"
    );
    assert!(
        store.trees().unwrap().is_empty(),
        "a partial tree is visible"
    );
    assert_eq!(store_entries(&store), Vec::<String>::new());

    let got = discovery::fetch_into_store(
        &App::parse("example.com/app:1.0").unwrap(),
        &client_for(&server, |_| {}),
        &TrustStore::new(trust.path()),
        &store,
        &FetchOptions::default(),
    )
    .unwrap();
    assert_eq!(store.list().unwrap(), vec![got.stored.record.clone()]);
    let tree = got.stored.tree.expect("the second fetch unpacks the image");
    assert_eq!(std::fs::read(tree.path.join("big")).unwrap().len(), 2 << 20);
}

#[test]
fn a_mirror_whose_signature_fails_is_skipped_for_the_next_one() {
    let aci = make_gzip_aci();
    let p = publish(aci.clone(), Some(aci.clone()));
    let sig = p.key.sign(&aci, "test").unwrap().to_minisign();
    let served = aci.clone();
    let server = Server::start(move |url, _, _| match url {
        "/broken/app.aci.minisig" => reply(500, "down"),
        "/huge/app.aci.minisig" => reply(200, vec![b'x'; 128 << 10]),
        "/good/app.aci.minisig" => reply(200, sig.clone()),
        "/good/app.aci" => reply(200, served.clone()),
        _ => reply(404, ""),
    });
    let endpoint = |dir: &str| discovery::Endpoint {
        aci: format!("http://example.com/{dir}/app.aci"),
        signature: format!("http://example.com/{dir}/app.aci.minisig"),
        asc: format!("http://example.com/{dir}/app.aci.asc"),
    };
    let discovered = discovery::Discovered {
        images: vec![endpoint("broken"), endpoint("huge"), endpoint("good")],
        public_keys: Vec::new(),
        page: "http://example.com/app?ac-discovery=1".into(),
    };
    let store = aci::store::Store::open(p.out.path().join("store")).unwrap();
    let got = discovery::fetch_discovered_into_store(
        &App::parse("example.com/app:1.0").unwrap(),
        &discovered,
        &client_for(&server, |_| {}),
        &TrustStore::new(p.trust.path()),
        &store,
        &FetchOptions::default(),
    )
    .unwrap();
    assert_eq!(got.endpoint, endpoint("good"));
    assert_eq!(store.list().unwrap().len(), 1);

    // Every mirror failing is reported with the last failure, not as a bad image.
    let discovered = discovery::Discovered {
        images: vec![endpoint("huge"), endpoint("broken")],
        ..discovered
    };
    let err = discovery::fetch_discovered_into_store(
        &App::parse("example.com/app:1.0").unwrap(),
        &discovered,
        &client_for(&server, |_| {}),
        &TrustStore::new(p.trust.path()),
        &store,
        &FetchOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, FetchError::Download { last, .. } if last.status() == Some(500)),
        "{err}"
    );
}

/// A real signature by the trusted key, copied from another image, over 3 GiB of zstd zeros
/// in about 100 KB: the signature is refused before a decompressor sees the body.
#[test]
fn a_zstd_bomb_under_a_copied_signature_is_refused_before_it_is_decompressed() {
    let bomb = common::bomb::zstd_zeros_aci(3 << 30);
    common::bomb::assert_is_a_real_bomb(&bomb);
    let p = publish(bomb, Some(make_gzip_aci()));

    let started = std::time::Instant::now();
    let (r, store) = fetch_to_store(&p, InsecureOptions::default());
    let took = started.elapsed();
    assert!(
        matches!(r, Err(FetchError::Trust(TrustError::BadSignature { .. }))),
        "{r:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "fetch_into_store took {took:?}"
    );
    assert_eq!(store_entries(&store), Vec::<String>::new());

    let started = std::time::Instant::now();
    let (r, dest) = fetch(&p, "example.com/app:1.0", InsecureOptions::default());
    let took = started.elapsed();
    assert!(
        matches!(r, Err(FetchError::Trust(TrustError::BadSignature { .. }))),
        "{r:?}"
    );
    assert!(took < Duration::from_secs(2), "fetch_image took {took:?}");
    assert!(!dest.exists());
    assert_eq!(
        std::fs::read_dir(p.out.path()).unwrap().count(),
        1,
        "only the store directory: no partial download is left"
    );
}
