//! The server against a rustls client that trusts the test CA and connects to 127.0.0.1 with
//! SNI `images.test`, as a guest behind `guest_forward` does.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

fn client_config(ca: CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// `GET target` over TLS trusting `ca`; the whole response, read to the end.
fn get_with(
    server: &ImageServer,
    ca: CertificateDer<'static>,
    target: &str,
) -> std::io::Result<Response> {
    let name = rustls::pki_types::ServerName::try_from("images.test").unwrap();
    let conn = rustls::ClientConnection::new(client_config(ca), name).unwrap();
    let tcp = TcpStream::connect(server.addr())?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {target} HTTP/1.1\r\nHost: images.test\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw)?;
    Ok(parse(raw))
}

fn get(server: &ImageServer, target: &str) -> Response {
    get_with(server, server.ca_der(), target).unwrap()
}

fn parse(raw: Vec<u8>) -> Response {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = raw[split + 4..].to_vec();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(body.len(), len, "body and Content-Length disagree: {head}");
    Response { status, head, body }
}

fn start() -> ImageServer {
    ImageServer::start(ServerOptions::default()).unwrap()
}

/// A file of `len` bytes that are not all the same, in a directory removed after the test.
fn file_of(len: usize) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let path = dir.path().join("file");
    fs::write(&path, &bytes).unwrap();
    (dir, path, bytes)
}

#[test]
fn discovery_page_at_any_path_names_the_template_for_the_prefix() {
    let server = start();
    for target in ["/busybox?ac-discovery=1", "/?ac-discovery=1"] {
        let page = get(&server, target);
        assert_eq!(page.status, 200);
        assert!(
            page.head.contains("Content-Type: text/html"),
            "{}",
            page.head
        );
        let html = String::from_utf8(page.body).unwrap();
        assert!(
            html.contains(
                r#"<meta name="ac-discovery" content="images.test/ https://images.test/aci/{name}-{version}-{os}-{arch}.{ext}">"#
            ),
            "{html}"
        );
    }
    assert!(server.ca_pem_path().is_file());
    let pem = fs::read_to_string(server.ca_pem_path()).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
}

#[test]
fn an_added_image_and_signature_are_served_where_the_template_points() {
    let server = start();
    let (_dir, aci, bytes) = file_of(100_000);
    let (_dir2, sig, sig_bytes) = file_of(300);
    server.add_image("images.test/busybox", "1.0", "amd64", &aci, &sig);
    let got = get(&server, "/aci/images.test/busybox-1.0-linux-amd64.aci");
    assert_eq!((got.status, got.body == bytes), (200, true));
    let got = get(
        &server,
        "/aci/images.test/busybox-1.0-linux-amd64.aci.minisig",
    );
    assert_eq!((got.status, got.body == sig_bytes), (200, true));
    let log = server.requests();
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|r| r.complete && r.bytes_sent == r.body_len));
    assert_eq!(log[0].bytes_sent, 100_000);
}

#[test]
fn anything_else_is_404_and_logged() {
    let server = start();
    let got = get(&server, "/aci/images.test/busybox-1.0-linux-arm64.aci");
    assert_eq!(got.status, 404);
    let log = server.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].path.as_str(), log[0].status),
        ("/aci/images.test/busybox-1.0-linux-arm64.aci", 404)
    );
}

#[test]
fn answer_after_gives_503_until_the_delay_then_200() {
    let server = start();
    server.answer_after(Duration::from_millis(400));
    let started = Instant::now();
    assert_eq!(get(&server, "/x?ac-discovery=1").status, 503);
    while started.elapsed() < Duration::from_millis(450) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(&server, "/x?ac-discovery=1").status, 200);
    let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 200]);
}

#[test]
fn throttle_makes_a_megabyte_take_at_least_most_of_a_second_at_a_megabyte_a_second() {
    let server = start();
    let (_dir, path, bytes) = file_of(1_000_000);
    server.add_file("/big", &path);
    server.throttle(1_000_000);
    let started = Instant::now();
    let got = get(&server, "/big");
    let took = started.elapsed();
    assert!(got.body == bytes);
    // A lower bound only: the machine may be slower, never faster.
    assert!(took >= Duration::from_millis(900), "took {took:?}");
}

#[test]
fn wait_for_request_sees_a_download_that_has_started_and_not_finished() {
    let server = start();
    let (_dir, path, _) = file_of(400_000);
    server.add_file("/big", &path);
    server.throttle(200_000);
    let ca = server.ca_der();
    std::thread::scope(|s| {
        let download = s.spawn(|| get_with(&server, ca, "/big"));
        let seen = server
            .wait_for_request(
                |r| r.path == "/big" && r.bytes_sent > 0 && !r.complete,
                Duration::from_secs(10),
            )
            .unwrap();
        assert_eq!(seen.body_len, 400_000);
        server.unthrottle();
        assert_eq!(download.join().unwrap().unwrap().status, 200);
    });
    let done = server
        .wait_for_request(|r| r.complete, Duration::from_secs(10))
        .unwrap();
    assert_eq!(done.bytes_sent, 400_000);
}

#[test]
fn wait_for_request_times_out_listing_what_it_saw() {
    let server = start();
    get(&server, "/nothing");
    let err = server
        .wait_for_request(|r| r.status == 200, Duration::from_millis(100))
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("GET /nothing -> 404"), "{text}");
}

#[test]
fn stop_cuts_a_download_short_and_refuses_new_connections() {
    let server = start();
    let (_dir, path, _) = file_of(1_000_000);
    server.add_file("/big", &path);
    server.throttle(100_000);
    let ca = server.ca_der();
    std::thread::scope(|s| {
        let download = s.spawn(|| get_with(&server, ca, "/big"));
        server
            .wait_for_request(|r| r.bytes_sent > 0, Duration::from_secs(10))
            .unwrap();
        server.stop();
        // The client sees the connection end before the body did.
        assert!(download.join().unwrap().is_err());
    });
    let record = &server.requests()[0];
    assert!(
        !record.complete && record.bytes_sent < 1_000_000,
        "{record}"
    );
    assert!(TcpStream::connect(server.addr()).is_err());
}

#[test]
fn a_client_trusting_the_process_ca_refuses_a_server_with_its_own() {
    let server = ImageServer::start(ServerOptions {
        own_ca: true,
        ..ServerOptions::default()
    })
    .unwrap();
    let shared = start();
    assert_ne!(server.ca_pem_path(), shared.ca_pem_path());
    assert!(get_with(&server, shared.ca_der(), "/?ac-discovery=1").is_err());
    // The server notes the failure on its own thread, maybe after the client gave up.
    let failures = crate::wait_until(
        Instant::now() + Duration::from_secs(10),
        Duration::from_millis(20),
        || Some(server.tls_failures()).filter(|f| !f.is_empty()),
    )
    .expect("the failed handshake is recorded");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(server.requests().is_empty());
    // Its own CA it is trusted by, and the directory goes with the server.
    assert_eq!(get(&server, "/?ac-discovery=1").status, 200);
    let dir = server.ca_pem_path().parent().unwrap().to_path_buf();
    drop(server);
    assert!(!dir.exists());
}

#[test]
fn plain_http_serves_templates_with_http_urls() {
    let server = ImageServer::start(ServerOptions {
        https: false,
        hostname: "plain.test".into(),
        prefix: "plain.test/".into(),
        ..ServerOptions::default()
    })
    .unwrap();
    let mut tcp = TcpStream::connect(server.addr()).unwrap();
    tcp.write_all(b"GET /a?ac-discovery=1 HTTP/1.1\r\nHost: plain.test\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).unwrap();
    let page = parse(raw);
    let html = String::from_utf8(page.body).unwrap();
    assert!(
        html.contains(r#"content="plain.test/ http://plain.test/aci/{name}-"#),
        "{html}"
    );
}
