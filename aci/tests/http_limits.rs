//! The HTTP client's limits against hostile local servers: a trickled head or body is cut off
//! at the whole-request deadline, an HTTPS page cannot redirect to plain HTTP, and an error's
//! chain names the URL once. Servers listen on 127.0.0.1 only and stop within seconds.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aci::discovery::{HttpClient, HttpError, HttpOptions, Resolver, RootCertificates};

/// Sends every name to fixed addresses: port 443 to `https`, anything else to `http`.
struct To {
    http: SocketAddr,
    https: SocketAddr,
}

impl Resolver for To {
    fn resolve(&self, _host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(vec![if port == 443 { self.https } else { self.http }])
    }
}

fn client(http: SocketAddr, https: SocketAddr, tweak: impl FnOnce(&mut HttpOptions)) -> HttpClient {
    let mut opts = HttpOptions {
        allow_http: true,
        retries: 0,
        timeout: Duration::from_secs(1),
        resolver: Some(Arc::new(To { http, https })),
        ..HttpOptions::default()
    };
    tweak(&mut opts);
    HttpClient::new(opts).unwrap()
}

/// Accepts one connection, reads the request head, writes `head` whole, then `trickle` one
/// byte every `every` until the client hangs up or the bytes run out.
fn trickling_server(
    head: &'static [u8],
    trickle: &'static [u8],
    every: Duration,
) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let Ok((mut tcp, _)) = listener.accept() else {
            return;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(k) => req.extend_from_slice(&buf[..k]),
            }
        }
        if tcp.write_all(head).is_err() {
            return;
        }
        for byte in trickle.chunks(1) {
            std::thread::sleep(every);
            if tcp.write_all(byte).and_then(|()| tcp.flush()).is_err() {
                return;
            }
        }
    });
    (addr, thread)
}

const NOWHERE: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

/// Runs one GET against a server trickling a byte every `every` with a 1 s timeout and checks
/// it fails as a timeout near the deadline, long before the trickle would have ended (100
/// bytes at 200 ms take 20 s).
fn assert_cut_off_at_deadline(head: &'static [u8], trickle: &'static [u8], every: Duration) {
    let (addr, thread) = trickling_server(head, trickle, every);
    let client = client(addr, NOWHERE, |_| {});
    let started = Instant::now();
    let err = client
        .get_bytes("http://example.com/slow", 1 << 20)
        .unwrap_err();
    let took = started.elapsed();
    eprintln!("a byte every {every:?}: cut off after {took:?}");
    assert!(matches!(err, HttpError::TimedOut { .. }), "{err:?}");
    assert!(
        took >= Duration::from_millis(900),
        "gave up early, after {took:?}"
    );
    assert!(
        took < Duration::from_millis(2500),
        "held for {took:?} with a 1 s timeout"
    );
    thread.join().unwrap();
}

const HUNDRED: &[u8] = &[b'x'; 100];

#[test]
fn a_trickled_body_is_cut_off_at_the_request_timeout() {
    for every in [200, 500] {
        assert_cut_off_at_deadline(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
            HUNDRED,
            Duration::from_millis(every),
        );
    }
}

#[test]
fn a_trickled_response_head_is_cut_off_at_the_request_timeout() {
    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nX-Slow: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n\r\n";
    assert_cut_off_at_deadline(b"", HEAD, Duration::from_millis(200));
}

#[test]
fn an_https_page_cannot_redirect_to_plain_http() {
    // The plain server counts requests: the redirect must be refused before any is made.
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_addr = plain.local_addr().unwrap();
    plain.set_nonblocking(true).unwrap();
    let redirect = b"HTTP/1.1 302 Found\r\nLocation: http://example.com/image.aci\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let (ca, tls_addr, thread) = common::tls::server(redirect.to_vec(), 1);
    let client = client(plain_addr, tls_addr, |o| {
        o.allow_http = false;
        o.timeout = Duration::from_secs(10);
        o.roots = RootCertificates::Only(vec![ca]);
    });
    let err = client
        .get_bytes("https://example.com/image.aci", 1 << 20)
        .unwrap_err();
    match &err {
        HttpError::InsecureScheme { url } => assert_eq!(url, "http://example.com/image.aci"),
        other => panic!("expected the redirect to be refused, got {other:?}"),
    }
    thread.join().unwrap();
    let served = AtomicUsize::new(0);
    while plain.accept().is_ok() {
        served.fetch_add(1, Ordering::SeqCst);
    }
    assert_eq!(
        served.load(Ordering::SeqCst),
        0,
        "the plain HTTP server was contacted"
    );
}

/// Display of the error and of every cause below it, as a caller prints the chain.
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[test]
fn an_http_error_chain_names_the_url_once() {
    // Nothing listens on port 1; a refused connection is a transport error.
    let client = client(NOWHERE, NOWHERE, |_| {});
    let url = "http://example.com/refused.aci";
    let err = client.get_bytes(url, 1 << 20).unwrap_err();
    assert!(matches!(err, HttpError::Transport { .. }), "{err:?}");
    let text = chain(&err);
    assert_eq!(text.matches(url).count(), 1, "{text}");

    // A body that cannot be stored: the sink's error is the source, the URL is said once.
    let (addr, thread) = trickling_server(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
        b"",
        Duration::ZERO,
    );
    let client = self::client(addr, NOWHERE, |_| {});
    let url = "http://example.com/full.aci";
    let err = client.get(url, 1 << 20, &mut Full).unwrap_err();
    assert!(matches!(err, HttpError::Body { .. }), "{err:?}");
    let text = chain(&err);
    assert_eq!(text.matches(url).count(), 1, "{text}");
    thread.join().unwrap();
}

/// A sink on a full disk.
struct Full;

impl Write for Full {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(28))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl aci::discovery::Sink for Full {
    fn reset(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn an_unlimited_timeout_does_not_overflow_the_deadline() {
    // `Duration::MAX` as "no limit" must not panic when the deadline is computed.
    let client = client(NOWHERE, NOWHERE, |o| {
        o.timeout = Duration::MAX;
        o.connect_timeout = Duration::MAX;
    });
    let err = client.get_bytes("http://example.com/x", 1).unwrap_err();
    assert!(matches!(err, HttpError::Transport { .. }), "{err:?}");
}
