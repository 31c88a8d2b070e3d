//! The fetcher against a local HTTPS server with a CA made here, real ACIs signed with keys
//! made here, and a store in a temp directory: fetched by discovery, then present offline;
//! each refusal reason; a server not ready yet, a stalled one and an endless body retried
//! with backoff; dependencies and cycles; and the leftovers of a power cut removed.

use std::collections::HashMap;
use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aci::archive::{ImageId, WriteOptions, write_aci};
use aci::sign::SecretKey;
use aci::trust::{TrustScope, TrustStore};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::test_server::{NOWHERE, Reply, Server, To};
use super::*;

const PAGE: &str = r#"<meta name="ac-discovery" content="example.com https://example.com/images/{name}-{version}.{ext}">"#;

/// An ACI named `name`, version 1.0, with `extra` manifest JSON (`,"dependencies":[...]`).
fn aci(name: &str, extra: &str) -> (Vec<u8>, ImageId) {
    let src = tempfile::tempdir().unwrap();
    let manifest = format!(
        r#"{{"acKind":"ImageManifest","acVersion":"0.8.11","name":"{name}","labels":[{{"name":"version","value":"1.0"}},{{"name":"os","value":"linux"}}]{extra}}}"#
    );
    fs::write(src.path().join("manifest"), manifest).unwrap();
    fs::create_dir(src.path().join("rootfs")).unwrap();
    fs::write(src.path().join("rootfs/hello"), name).unwrap();
    let mut out = Vec::new();
    let id = write_aci(src.path(), &mut out, &WriteOptions::default()).unwrap();
    (out, id)
}

fn sig(key: &SecretKey, bytes: &[u8]) -> Vec<u8> {
    key.sign(bytes, "test").unwrap().to_minisign().into_bytes()
}

/// The files a publisher serves: `/images/<name>-1.0.aci` and its `.minisig`.
#[derive(Default, Clone)]
struct Files(HashMap<String, Reply>);

impl Files {
    fn image(mut self, name: &str, body: Reply, signature: Option<Vec<u8>>) -> Files {
        let path = format!("/images/{name}-1.0.aci");
        if let Some(s) = signature {
            self.0.insert(format!("{path}.minisig"), Reply::Body(s));
        }
        self.0.insert(path, body);
        self
    }

    fn route(&self, path: &str) -> Reply {
        if path.ends_with("?ac-discovery=1") {
            return Reply::Body(PAGE.into());
        }
        self.0.get(path).cloned().unwrap_or(Reply::Status(404))
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    key: SecretKey,
    trust: TrustStore,
}

fn fixture(scope: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let trust = TrustStore::new(dir.path().join("trust"));
    trust
        .add(&TrustScope::Prefix(scope.into()), &key.public_key())
        .unwrap();
    Fixture { dir, key, trust }
}

impl Fixture {
    fn config(&self, server: Option<&Server>) -> FetchConfig {
        FetchConfig {
            store_dir: self.dir.path().join("store"),
            trust: self.trust.clone(),
            roots: RootCertificates::Only(server.map(|s| s.ca.clone()).into_iter().collect()),
            resolver: Arc::new(To(server.map_or(NOWHERE, |s| s.addr))),
            backoff: Backoff {
                first: Duration::from_millis(100),
                factor: 2,
                cap: Duration::from_millis(400),
            },
            limits: Limits {
                connect_timeout: Duration::from_secs(1),
                page_timeout: Duration::from_secs(2),
                image_timeout: Duration::from_secs(1),
                max_signature_size: 64 << 10,
                max_image_size: 1 << 20,
            },
        }
    }

    fn store(&self) -> Store {
        Store::open(self.dir.path().join("store")).unwrap()
    }
}

fn request(pinned: Option<&str>) -> FetchRequest {
    FetchRequest {
        app: "web/app".into(),
        name: "example.com/app".into(),
        labels: vec![("version".into(), "1.0".into())],
        pinned_id: pinned.map(str::to_string),
        url: None,
        allow_http: false,
    }
}

fn readable(fetcher: &Fetcher, ms: u16) -> bool {
    let mut fds = [PollFd::new(fetcher.wake_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::from(ms)).unwrap() > 0
}

/// Polls the wake fd and drains until an outcome other than `Retrying` arrives (or
/// `within` passes, or `until` says stop on a `Retrying`); returns everything seen.
fn outcomes_until(
    fetcher: &Fetcher,
    within: Duration,
    until: impl Fn(&FetchOutcome) -> bool,
) -> Vec<FetchOutcome> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if !readable(fetcher, 100) {
            continue;
        }
        for o in fetcher.drain() {
            let done = !matches!(o, FetchOutcome::Retrying { .. }) || until(&o);
            seen.push(o);
            if done {
                return seen;
            }
        }
    }
    panic!("no final outcome within {within:?}: {seen:?}");
}

fn run_one(config: FetchConfig, req: FetchRequest) -> Vec<FetchOutcome> {
    let fetcher = Fetcher::spawn(config).unwrap();
    fetcher.submit(req).unwrap();
    outcomes_until(&fetcher, Duration::from_secs(20), |_| false)
}

fn refusal(outcomes: &[FetchOutcome]) -> (Refusal, Option<String>, String) {
    match outcomes.last() {
        Some(FetchOutcome::Refused {
            reason,
            key,
            detail,
            ..
        }) => (*reason, key.clone(), detail.clone()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Nothing published and no temp left over.
fn assert_store_empty(f: &Fixture) {
    assert!(f.store().list().unwrap().is_empty());
    for sub in ["images", "trees"] {
        let names: Vec<_> = fs::read_dir(f.dir.path().join("store").join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(names.is_empty(), "{sub}: {names:?}");
    }
}

#[test]
fn fetches_by_https_discovery_then_finds_the_image_present_without_network() {
    let f = fixture("example.com");
    let (bytes, id) = aci("example.com/app", "");
    let files = Files::default().image(
        "example.com/app",
        Reply::Body(bytes.clone()),
        Some(sig(&f.key, &bytes)),
    );
    let server = Server::start(move |p| files.route(p));

    let fetcher = Fetcher::spawn(f.config(Some(&server))).unwrap();
    fetcher.submit(request(None)).unwrap();
    let got = outcomes_until(&fetcher, Duration::from_secs(20), |_| false);
    match got.last() {
        Some(FetchOutcome::Fetched {
            app,
            image_id,
            bytes: n,
            ..
        }) => {
            assert_eq!(app, "web/app");
            assert_eq!(image_id, &id);
            assert_eq!(*n, bytes.len() as u64);
        }
        other => panic!("{other:?} in {got:?}"),
    }
    // Drained: the wake fd is quiet again.
    assert!(!readable(&fetcher, 0));
    let record = f.store().get(id.as_str()).unwrap();
    assert_eq!(record.name, "example.com/app");
    drop(fetcher);

    // The next boot: no server at all, the image is there.
    let before = server.requests().len();
    let again = run_one(f.config(None), request(Some(id.as_str())));
    assert_eq!(
        again,
        vec![FetchOutcome::Present {
            app: "web/app".into(),
            image_id: id.clone()
        }]
    );
    let again = run_one(f.config(None), request(None));
    assert!(matches!(&again[..], [FetchOutcome::Present { image_id, .. }] if *image_id == id));
    assert_eq!(server.requests().len(), before);
}

#[test]
fn fetches_from_a_plain_url_without_discovery() {
    let f = fixture("example.com");
    let (bytes, id) = aci("example.com/app", "");
    let files = Files::default().image(
        "example.com/app",
        Reply::Body(bytes.clone()),
        Some(sig(&f.key, &bytes)),
    );
    let server = Server::start(move |p| files.route(p));
    let mut req = request(None);
    req.url = Some("https://example.com/images/example.com/app-1.0.aci".into());
    let got = run_one(f.config(Some(&server)), req);
    assert!(
        matches!(got.last(), Some(FetchOutcome::Fetched { image_id, .. }) if *image_id == id),
        "{got:?}"
    );
    assert!(
        server
            .requests()
            .iter()
            .all(|p| !p.contains("ac-discovery")),
        "{:?}",
        server.requests()
    );
}

#[test]
fn refuses_an_image_signed_by_a_key_the_trust_store_does_not_hold() {
    let f = fixture("example.com");
    let other = SecretKey::generate().unwrap();
    let (bytes, _) = aci("example.com/app", "");
    let files = Files::default().image(
        "example.com/app",
        Reply::Body(bytes.clone()),
        Some(sig(&other, &bytes)),
    );
    let server = Server::start(move |p| files.route(p));
    let got = run_one(f.config(Some(&server)), request(None));
    let (reason, key, detail) = refusal(&got);
    assert_eq!(reason, Refusal::UntrustedKey);
    assert_eq!(key, Some(other.id().to_string()));
    assert!(detail.contains("not in the trust store"), "{detail}");
    // Refused on the signature alone: the image itself was never requested.
    assert!(
        !server.requests().iter().any(|p| p.ends_with(".aci")),
        "{:?}",
        server.requests()
    );
    assert_store_empty(&f);
}

#[test]
fn refuses_a_key_trusted_only_for_another_prefix() {
    let f = fixture("example.org");
    let (bytes, _) = aci("example.com/app", "");
    let files = Files::default().image(
        "example.com/app",
        Reply::Body(bytes.clone()),
        Some(sig(&f.key, &bytes)),
    );
    let server = Server::start(move |p| files.route(p));
    let (reason, key, _) = refusal(&run_one(f.config(Some(&server)), request(None)));
    assert_eq!(reason, Refusal::KeyNotForName);
    assert_eq!(key, Some(f.key.id().to_string()));
    assert_store_empty(&f);
}

#[test]
fn refuses_a_tampered_image_and_stores_nothing() {
    let f = fixture("example.com");
    let (bytes, _) = aci("example.com/app", "");
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    let files = Files::default().image(
        "example.com/app",
        Reply::Body(bad),
        Some(sig(&f.key, &bytes)),
    );
    let server = Server::start(move |p| files.route(p));
    let (reason, _, _) = refusal(&run_one(f.config(Some(&server)), request(None)));
    assert_eq!(reason, Refusal::BadSignature);
    assert_store_empty(&f);
}

#[test]
fn refuses_an_unsigned_image() {
    let f = fixture("example.com");
    let (bytes, _) = aci("example.com/app", "");
    let files = Files::default().image("example.com/app", Reply::Body(bytes), None);
    let server = Server::start(move |p| files.route(p));
    let (reason, _, _) = refusal(&run_one(f.config(Some(&server)), request(None)));
    assert_eq!(reason, Refusal::Unsigned);
    assert_store_empty(&f);
}

#[test]
fn refuses_an_image_whose_id_is_not_the_pinned_one_and_stores_nothing() {
    let f = fixture("example.com");
    let (bytes, _) = aci("example.com/app", "");
    let files = Files::default().image(
        "example.com/app",
        Reply::Body(bytes.clone()),
        Some(sig(&f.key, &bytes)),
    );
    let server = Server::start(move |p| files.route(p));
    let pin = format!("sha512-{}", "0".repeat(128));
    let (reason, _, detail) = refusal(&run_one(f.config(Some(&server)), request(Some(&pin))));
    assert_eq!(reason, Refusal::PinMismatch);
    assert!(detail.contains(&pin), "{detail}");
    assert_store_empty(&f);
}

#[test]
fn retries_a_server_that_is_not_ready_with_growing_delays_then_fetches() {
    let f = fixture("example.com");
    let (bytes, id) = aci("example.com/app", "");
    let files = Files::default().image(
        "example.com/app",
        Reply::Body(bytes.clone()),
        Some(sig(&f.key, &bytes)),
    );
    let ready = Instant::now() + Duration::from_secs(2);
    let server = Server::start(move |p| {
        if Instant::now() < ready {
            Reply::Status(503)
        } else {
            files.route(p)
        }
    });
    let got = run_one(f.config(Some(&server)), request(None));
    let delays: Vec<Duration> = got
        .iter()
        .filter_map(|o| match o {
            FetchOutcome::Retrying {
                delay, attempt: _, ..
            } => Some(*delay),
            _ => None,
        })
        .collect();
    assert!(delays.len() >= 3, "{got:?}");
    assert_eq!(delays[0], Duration::from_millis(100));
    assert_eq!(delays[1], Duration::from_millis(200));
    assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
    assert!(delays.iter().all(|d| *d <= Duration::from_millis(400)));
    assert!(
        matches!(got.last(), Some(FetchOutcome::Fetched { image_id, .. }) if *image_id == id),
        "{got:?}"
    );
}

/// Runs a request whose image body is `body` until its first `Retrying`.
fn first_retry(body: Reply) -> (Transient, String, Duration) {
    let f = fixture("example.com");
    let (bytes, _) = aci("example.com/app", "");
    let files = Files::default().image("example.com/app", body, Some(sig(&f.key, &bytes)));
    let server = Server::start(move |p| files.route(p));
    let fetcher = Fetcher::spawn(f.config(Some(&server))).unwrap();
    let started = Instant::now();
    fetcher.submit(request(None)).unwrap();
    let got = outcomes_until(&fetcher, Duration::from_secs(20), |_| true);
    let took = started.elapsed();
    fetcher.stop();
    match got.last() {
        Some(FetchOutcome::Retrying { kind, error, .. }) => (*kind, error.clone(), took),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_stalled_server_is_retried_after_the_request_timeout() {
    let (kind, error, took) = first_retry(Reply::Stall);
    assert_eq!(kind, Transient::Timeout, "{error}");
    assert!(error.contains("within the request timeout"), "{error}");
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[test]
fn an_endless_body_is_cut_off_at_the_size_limit_and_retried() {
    let (kind, error, _) = first_retry(Reply::Endless);
    assert_eq!(kind, Transient::TooLarge, "{error}");
    assert!(error.contains("larger than the limit"), "{error}");
}

#[test]
fn fetches_missing_dependencies_and_then_finds_them_present() {
    let f = fixture("example.com");
    let dep = r#","dependencies":[{"imageName":"example.com/base","labels":[{"name":"version","value":"1.0"}]}]"#;
    let (app, app_id) = aci("example.com/app", dep);
    let (base, base_id) = aci("example.com/base", "");
    let files = Files::default()
        .image(
            "example.com/app",
            Reply::Body(app.clone()),
            Some(sig(&f.key, &app)),
        )
        .image(
            "example.com/base",
            Reply::Body(base.clone()),
            Some(sig(&f.key, &base)),
        );
    let server = Server::start(move |p| files.route(p));
    let got = run_one(f.config(Some(&server)), request(None));
    match got.last() {
        Some(FetchOutcome::Fetched {
            image_id, bytes, ..
        }) => {
            assert_eq!(*image_id, app_id);
            assert_eq!(*bytes, (app.len() + base.len()) as u64);
        }
        other => panic!("{other:?}"),
    }
    f.store().get(base_id.as_str()).unwrap();
    let again = run_one(f.config(None), request(None));
    assert!(
        matches!(&again[..], [FetchOutcome::Present { .. }]),
        "{again:?}"
    );
}

#[test]
fn refuses_dependencies_that_form_a_cycle() {
    let f = fixture("example.com");
    let on = |name: &str| {
        format!(
            r#","dependencies":[{{"imageName":"{name}","labels":[{{"name":"version","value":"1.0"}}]}}]"#
        )
    };
    let (app, _) = aci("example.com/app", &on("example.com/base"));
    let (base, _) = aci("example.com/base", &on("example.com/app"));
    let files = Files::default()
        .image(
            "example.com/app",
            Reply::Body(app.clone()),
            Some(sig(&f.key, &app)),
        )
        .image(
            "example.com/base",
            Reply::Body(base.clone()),
            Some(sig(&f.key, &base)),
        );
    let server = Server::start(move |p| files.route(p));
    let (reason, _, detail) = refusal(&run_one(f.config(Some(&server)), request(None)));
    assert_eq!(reason, Refusal::BadRequest);
    assert!(detail.contains("depends on itself"), "{detail}");
}

#[test]
fn spawning_removes_what_an_interrupted_fetch_left_in_the_store() {
    let f = fixture("example.com");
    let images = f.dir.path().join("store/images");
    fs::create_dir_all(&images).unwrap();
    fs::create_dir_all(f.dir.path().join("store/trees/.tmp-1-0-0")).unwrap();
    let temp = images.join(".tmp-1-0-0.aci");
    fs::write(&temp, b"half an image").unwrap();
    // A record whose blob never got renamed into place.
    let orphan = images.join(format!("sha512-{}.json", "a".repeat(128)));
    fs::write(&orphan, b"{}").unwrap();
    let _fetcher = Fetcher::spawn(f.config(None)).unwrap();
    assert_store_empty(&f);
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let b = Backoff::default();
    let secs: Vec<u64> = (1..=9).map(|a| b.delay(a).as_secs()).collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    assert_eq!(b.delay(u32::MAX), Duration::from_secs(60));
}

#[test]
fn stop_ends_a_request_waiting_to_retry() {
    let f = fixture("example.com");
    let mut config = f.config(None);
    config.backoff.first = Duration::from_secs(30);
    config.backoff.cap = Duration::from_secs(30);
    let fetcher = Fetcher::spawn(config).unwrap();
    fetcher.submit(request(None)).unwrap();
    outcomes_until(&fetcher, Duration::from_secs(10), |_| true);
    fetcher.stop();
    let deadline = Instant::now() + Duration::from_secs(5);
    while fetcher.active() > 0 {
        assert!(
            Instant::now() < deadline,
            "still {} active",
            fetcher.active()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
