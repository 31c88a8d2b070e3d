//! A local HTTPS server for the fetch tests: a CA and a leaf for `example.com` made at test
//! time, one thread per connection, answers chosen per path (a body, a status, a stall, an
//! endless body), and every path it was asked for.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aci::discovery::Resolver;

/// What the server answers for one path.
#[derive(Clone)]
pub(super) enum Reply {
    Body(Vec<u8>),
    Status(u16),
    /// A 200 head promising a body that never comes.
    Stall,
    /// A 200 head without a length, then bytes without end.
    Endless,
}

type Route = dyn Fn(&str) -> Reply + Send + Sync;

/// An HTTPS server on 127.0.0.1 for `example.com`, one thread per connection.
pub(super) struct Server {
    pub(super) addr: SocketAddr,
    pub(super) ca: Vec<u8>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub(super) fn start(route: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Server {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["example.com".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![leaf.der().clone()],
                    rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
                )
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let route: Arc<Route> = Arc::new(route);
        // Lives as long as the test process; each connection ends within seconds.
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let (config, log, route) = (config.clone(), log.clone(), route.clone());
                std::thread::spawn(move || serve(tcp, config, &log, &*route));
            }
        });
        Server {
            addr,
            ca: ca.der().to_vec(),
            requests,
        }
    }

    pub(super) fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    log: &Mutex<Vec<String>>,
    route: &Route,
) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let conn = rustls::ServerConnection::new(config).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(k) => req.extend_from_slice(&buf[..k]),
        }
    }
    let head = String::from_utf8_lossy(&req);
    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
    log.lock().unwrap().push(path.clone());
    let write = |tls: &mut rustls::StreamOwned<_, _>, bytes: &[u8]| -> io::Result<()> {
        tls.write_all(bytes)?;
        tls.flush()
    };
    let _ = match route(&path) {
        Reply::Body(body) => write(
            &mut tls,
            &[
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
                &body,
            ]
            .concat(),
        ),
        Reply::Status(s) => write(
            &mut tls,
            format!("HTTP/1.1 {s} Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        ),
        Reply::Stall => {
            let r = write(
                &mut tls,
                b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n",
            );
            std::thread::sleep(Duration::from_secs(5));
            r
        }
        Reply::Endless => {
            let _ = write(&mut tls, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let chunk = vec![b'x'; 64 << 10];
            while write(&mut tls, &chunk).is_ok() {}
            Ok(())
        }
    };
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

/// Every name resolves to `0` (a refused port when the test has no server).
pub(super) struct To(pub(super) SocketAddr);

impl Resolver for To {
    fn resolve(&self, _host: &str, _port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(vec![self.0])
    }
}

pub(super) const NOWHERE: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);
