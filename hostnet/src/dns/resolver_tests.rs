//! The resolver against tiny DNS servers on 127.0.0.1, each a thread with a scripted reply.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::thread::JoinHandle;

use super::*;

const TRY: Duration = Duration::from_millis(200);

/// How a test server reacts to one query: the datagrams to send back, from its own socket.
type Behaviour = dyn Fn(&[u8], SocketAddr) -> Vec<Vec<u8>> + Send + Sync;

struct TestServer {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    fn start(
        behaviour: impl Fn(&[u8], SocketAddr) -> Vec<Vec<u8>> + Send + Sync + 'static,
    ) -> Self {
        let behaviour: Box<Behaviour> = Box::new(behaviour);
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (q, s) = (queries.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                let Ok((len, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                q.fetch_add(1, Ordering::Relaxed);
                for reply in behaviour(&buf[..len], from) {
                    socket.send_to(&reply, from).unwrap();
                }
            }
        });
        TestServer {
            addr,
            queries,
            stop,
            thread: Some(thread),
        }
    }

    fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The query's type: the two bytes after the question name, which our queries never compress.
fn qtype(query: &[u8]) -> u16 {
    let end = query.len() - 4;
    u16::from_be_bytes([query[end], query[end + 1]])
}

/// A response echoing `query`'s id and question, with `rcode` and these addresses (those of
/// the asked family only) as answers named by a pointer to the question.
fn reply(query: &[u8], rcode: u8, ips: &[IpAddr], ttl: u32) -> Vec<u8> {
    let wanted: Vec<&IpAddr> = ips
        .iter()
        .filter(|ip| ip.is_ipv4() == (qtype(query) == 1))
        .collect();
    let mut out = query[..2].to_vec();
    out.extend_from_slice(&[0x81, 0x80 | rcode, 0, 1]);
    out.extend_from_slice(&(wanted.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&query[12..]);
    for ip in wanted {
        out.extend_from_slice(&[0xc0, 0x0c]);
        let (rtype, data) = match ip {
            IpAddr::V4(v4) => (1u16, v4.octets().to_vec()),
            IpAddr::V6(v6) => (28u16, v6.octets().to_vec()),
        };
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&[0, 1]);
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    out
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn answering(ips: &'static [&'static str]) -> TestServer {
    TestServer::start(move |q, _| {
        let ips: Vec<IpAddr> = ips.iter().map(|s| ip(s)).collect();
        vec![reply(q, 0, &ips, 60)]
    })
}

fn silent() -> TestServer {
    TestServer::start(|_, _| vec![])
}

fn resolver(servers: &[&TestServer], attempts: u32) -> Resolver {
    Resolver::new(ResolverConfig {
        servers: servers.iter().map(|s| s.addr).collect(),
        hosts: Hosts::default(),
        timeout: TRY,
        attempts,
    })
}

#[test]
fn asks_a_and_aaaa_and_returns_ipv4_first() {
    let server = answering(&["fd00::7", "10.0.0.7", "10.0.0.8"]);
    let got = resolver(&[&server], 1).resolve("registry.example").unwrap();
    assert_eq!(got, vec![ip("10.0.0.7"), ip("10.0.0.8"), ip("fd00::7")]);
    assert_eq!(server.queries(), 2);
}

#[test]
fn a_silent_server_times_out_and_the_next_one_answers() {
    let (dead, live) = (silent(), answering(&["10.0.0.7"]));
    let got = resolver(&[&dead, &live], 1)
        .resolve("registry.example")
        .unwrap();
    assert_eq!(got, vec![ip("10.0.0.7")]);
    assert_eq!(
        dead.queries(),
        2,
        "both families were asked of the first server"
    );
}

#[test]
fn servfail_moves_on_to_the_next_server() {
    let failing = TestServer::start(|q, _| vec![reply(q, 2, &[], 0)]);
    let live = answering(&["10.0.0.7"]);
    let got = resolver(&[&failing, &live], 1)
        .resolve("registry.example")
        .unwrap();
    assert_eq!(got, vec![ip("10.0.0.7")]);
    assert_eq!(live.queries(), 2);
}

#[test]
fn nxdomain_is_final_and_the_next_server_is_not_asked() {
    let denying = TestServer::start(|q, _| vec![reply(q, 3, &[], 0)]);
    let other = answering(&["10.0.0.7"]);
    let err = resolver(&[&denying, &other], 2)
        .resolve("nosuch.example")
        .unwrap_err();
    assert!(
        matches!(&err, ResolveError::NoSuchName { host, .. } if host == "nosuch.example"),
        "{err}"
    );
    assert_eq!(other.queries(), 0);
}

#[test]
fn a_name_with_neither_family_is_no_addresses() {
    let empty = TestServer::start(|q, _| vec![reply(q, 0, &[], 0)]);
    let err = resolver(&[&empty], 1).resolve("empty.example").unwrap_err();
    assert!(matches!(err, ResolveError::NoAddresses { .. }), "{err}");
    assert_eq!(
        resolver(&[&empty], 1)
            .resolve_socket_addrs("empty.example", 443)
            .unwrap_err()
            .kind(),
        io::ErrorKind::NotFound
    );
}

#[test]
fn every_server_silent_is_a_timeout_naming_the_host_and_servers() {
    let (a, b) = (silent(), silent());
    let err = resolver(&[&a, &b], 2)
        .resolve("registry.example")
        .unwrap_err();
    assert!(matches!(err, ResolveError::Timeout { .. }), "{err}");
    let message = err.to_string();
    for needle in ["registry.example", &a.addr.to_string(), &b.addr.to_string()] {
        assert!(message.contains(needle), "{message:?} lacks {needle}");
    }
    assert_eq!((a.queries(), b.queries()), (4, 4), "2 rounds × A and AAAA");
}

#[test]
fn every_server_failing_reports_the_failure_not_a_timeout() {
    let failing = TestServer::start(|q, _| vec![reply(q, 5, &[], 0)]);
    let dead = silent();
    let err = resolver(&[&failing, &dead], 1)
        .resolve("registry.example")
        .unwrap_err();
    assert!(
        matches!(err, ResolveError::ServerFailure { rcode: Rcode(5), server, .. } if server == failing.addr),
        "{err}"
    );
}

#[test]
fn a_server_dropping_aaaa_queries_still_yields_its_ipv4_addresses() {
    let server = TestServer::start(|q, _| {
        if qtype(q) == 1 {
            vec![reply(q, 0, &[ip("10.0.0.7")], 60)]
        } else {
            vec![]
        }
    });
    let got = resolver(&[&server], 2).resolve("registry.example").unwrap();
    assert_eq!(got, vec![ip("10.0.0.7")]);
    assert_eq!(server.queries(), 3, "A once, AAAA in each of 2 rounds");
}

#[test]
fn an_answer_from_another_address_is_ignored() {
    // A forger who knows our port and id, sending first from a socket that is not the server.
    let forger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = TestServer::start(move |q, from| {
        forger
            .send_to(&reply(q, 0, &[ip("6.6.6.6")], 60), from)
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        vec![reply(q, 0, &[ip("10.0.0.7")], 60)]
    });
    let got = resolver(&[&server], 1).resolve("registry.example").unwrap();
    assert_eq!(got, vec![ip("10.0.0.7")]);
}

#[test]
fn an_answer_with_a_stale_id_is_skipped_and_the_real_one_accepted() {
    let server = TestServer::start(|q, _| {
        let mut stale = reply(q, 0, &[ip("6.6.6.6")], 60);
        stale[0] ^= 0xff;
        vec![stale, reply(q, 0, &[ip("10.0.0.7")], 60)]
    });
    let got = resolver(&[&server], 1).resolve("registry.example").unwrap();
    assert_eq!(got, vec![ip("10.0.0.7")]);
}

#[test]
fn queries_use_fresh_ids_and_source_ports() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let server = TestServer::start(move |q, from| {
        log.lock()
            .unwrap()
            .push((u16::from_be_bytes([q[0], q[1]]), from.port()));
        vec![reply(q, 0, &[ip("10.0.0.7")], 0)]
    });
    let r = resolver(&[&server], 1);
    for _ in 0..3 {
        r.resolve("registry.example").unwrap();
    }
    let seen = seen.lock().unwrap();
    let mut ids: Vec<u16> = seen.iter().map(|(id, _)| *id).collect();
    let mut ports: Vec<u16> = seen.iter().map(|(_, p)| *p).collect();
    ids.sort();
    ids.dedup();
    ports.sort();
    ports.dedup();
    assert_eq!(seen.len(), 6);
    // Random, so a single collision among six 16-bit values is allowed for.
    assert!(ids.len() >= 5, "ids repeat: {seen:?}");
    assert!(ports.len() >= 2, "one socket for every try: {seen:?}");
}

#[test]
fn literals_and_hosts_entries_need_no_server() {
    let r = Resolver::new(ResolverConfig {
        hosts: Hosts::parse("10.0.0.5 registry.internal\n"),
        ..ResolverConfig::default()
    });
    assert_eq!(r.resolve("10.1.2.3").unwrap(), vec![ip("10.1.2.3")]);
    assert_eq!(r.resolve("[fd00::1]").unwrap(), vec![ip("fd00::1")]);
    assert_eq!(
        r.resolve("Registry.Internal").unwrap(),
        vec![ip("10.0.0.5")]
    );
    let err = r.resolve("registry.example").unwrap_err();
    assert!(matches!(err, ResolveError::NoServers { .. }), "{err}");
}

#[test]
fn hosts_entries_win_over_dns() {
    let server = answering(&["10.0.0.7"]);
    let mut config = resolver(&[&server], 1).config().as_ref().clone();
    config.hosts = Hosts::parse("10.0.0.5 registry.example\n");
    let got = Resolver::new(config).resolve("registry.example").unwrap();
    assert_eq!(got, vec![ip("10.0.0.5")]);
    assert_eq!(server.queries(), 0);
}

#[test]
fn an_invalid_name_is_refused_before_any_server_is_asked() {
    let server = answering(&["10.0.0.7"]);
    let err = resolver(&[&server], 1).resolve("bad name").unwrap_err();
    assert!(matches!(err, ResolveError::InvalidName { .. }), "{err}");
    assert_eq!(server.queries(), 0);
}

#[test]
fn a_cached_answer_is_reused_until_the_servers_change() {
    let server = answering(&["10.0.0.7"]);
    let r = resolver(&[&server], 1);
    r.resolve("registry.example").unwrap();
    r.resolve("REGISTRY.example.").unwrap();
    assert_eq!(server.queries(), 2, "the second lookup came from the cache");
    r.set_servers(vec![server.addr]);
    r.resolve("registry.example").unwrap();
    assert_eq!(server.queries(), 4, "new servers, cache forgotten");
}

#[test]
fn swapped_servers_serve_the_next_lookup() {
    let (dead, live) = (silent(), answering(&["10.0.0.7"]));
    let r = Arc::new(resolver(&[&dead], 1));
    assert!(r.resolve("registry.example").is_err());
    // As the DHCP client would, from another thread.
    let updater = r.clone();
    let addr = live.addr;
    std::thread::spawn(move || updater.set_servers(vec![addr]))
        .join()
        .unwrap();
    assert_eq!(r.resolve("registry.example").unwrap(), vec![ip("10.0.0.7")]);
}

#[test]
fn socket_addrs_carry_the_port_in_resolve_order() {
    let server = answering(&["fd00::7", "10.0.0.7"]);
    let got = resolver(&[&server], 1)
        .resolve_socket_addrs("registry.example", 443)
        .unwrap();
    assert_eq!(
        got,
        vec![
            "10.0.0.7:443".parse::<SocketAddr>().unwrap(),
            "[fd00::7]:443".parse().unwrap()
        ]
    );
}

#[test]
fn resolver_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Resolver>();
}
