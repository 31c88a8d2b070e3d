//! The blocking stub resolver init uses: IP literals, then `/etc/hosts`, then the cache, then
//! each DNS server in turn over UDP, with a configuration that can be swapped while it runs.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::cache::Cache;
use super::hosts::Hosts;
use super::query::{Answer, Query, QueryError, Rcode, RecordType, ResponseError};
use super::resolv_conf::ResolvConf;

/// Room for any UDP answer; without EDNS servers send at most 512 bytes, but a datagram cut
/// by a short buffer would read as malformed.
const RECV_BUFFER: usize = 4096;

/// What the resolver asks and whom. Swapped whole with [`Resolver::set_config`].
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    /// Asked in order. Port 53 unless a test says otherwise.
    pub servers: Vec<SocketAddr>,
    pub hosts: Hosts,
    /// How long one try waits for a server's answers.
    pub timeout: Duration,
    /// Rounds over all servers (glibc's `attempts`): at most `attempts × servers` tries.
    pub attempts: u32,
}

impl Default for ResolverConfig {
    /// No servers yet, an empty hosts table, and glibc's 5 s × 2 attempts.
    fn default() -> Self {
        ResolverConfig {
            servers: Vec::new(),
            hosts: Hosts::default(),
            timeout: Duration::from_secs(5),
            attempts: 2,
        }
    }
}

impl ResolverConfig {
    /// The servers, timeout and attempts of a resolv.conf, with this hosts table.
    pub fn from_resolv_conf(conf: &ResolvConf, hosts: Hosts) -> ResolverConfig {
        ResolverConfig {
            servers: conf.server_addrs(),
            hosts,
            timeout: conf.timeout(),
            attempts: conf.attempts(),
        }
    }
}

/// The servers a lookup asked, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Servers(pub Vec<SocketAddr>);

impl std::fmt::Display for Servers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Error)]
pub enum ResolveError {
    #[error("cannot resolve {host:?}: it is not a valid host name")]
    InvalidName {
        host: String,
        #[source]
        source: QueryError,
    },
    #[error(
        "cannot resolve {host:?}: no DNS servers are configured (none from DHCP or the host declaration)"
    )]
    NoServers { host: String },
    #[error("{host:?} does not exist: {server} answered NXDOMAIN")]
    NoSuchName { host: String, server: SocketAddr },
    #[error("{host:?} has no IPv4 or IPv6 address: {server} answered without A or AAAA records")]
    NoAddresses { host: String, server: SocketAddr },
    #[error(
        "cannot resolve {host:?}: no answer from {servers} ({attempts} rounds, {timeout:?} per try)"
    )]
    Timeout {
        host: String,
        servers: Servers,
        attempts: u32,
        timeout: Duration,
    },
    #[error("cannot resolve {host:?}: {server} answered {rcode} (servers tried: {servers})")]
    ServerFailure {
        host: String,
        server: SocketAddr,
        rcode: Rcode,
        servers: Servers,
    },
    #[error(
        "cannot resolve {host:?}: the answer from {server} did not fit in UDP and TCP is not supported (servers tried: {servers})"
    )]
    Truncated {
        host: String,
        server: SocketAddr,
        servers: Servers,
    },
    #[error(
        "cannot resolve {host:?}: the answer from {server} is malformed (servers tried: {servers})"
    )]
    Malformed {
        host: String,
        server: SocketAddr,
        servers: Servers,
        #[source]
        source: Box<ResponseError>,
    },
    #[error(
        "cannot resolve {host:?}: cannot send to or receive from {server} (servers tried: {servers})"
    )]
    Socket {
        host: String,
        server: SocketAddr,
        servers: Servers,
        #[source]
        source: io::Error,
    },
}

impl ResolveError {
    fn io_kind(&self) -> io::ErrorKind {
        match self {
            ResolveError::InvalidName { .. } => io::ErrorKind::InvalidInput,
            ResolveError::NoSuchName { .. } | ResolveError::NoAddresses { .. } => {
                io::ErrorKind::NotFound
            }
            ResolveError::Timeout { .. } => io::ErrorKind::TimedOut,
            ResolveError::NoServers { .. } => io::ErrorKind::NotConnected,
            _ => io::ErrorKind::Other,
        }
    }
}

/// Why one try at one server gave no definite answer for one record type.
#[derive(Debug)]
enum TryFailure {
    Timeout,
    Response(ResponseError),
    Socket(io::Error),
}

impl TryFailure {
    /// Which failure explains a lookup best when every try failed: a server's own words
    /// before our inability to reach it, and silence last.
    fn weight(&self) -> u8 {
        match self {
            TryFailure::Response(ResponseError::ServerFailure { .. }) => 4,
            TryFailure::Response(ResponseError::Truncated { .. }) => 3,
            TryFailure::Response(_) => 2,
            TryFailure::Socket(_) => 1,
            TryFailure::Timeout => 0,
        }
    }
}

/// A DNS stub resolver. Share it behind an `Arc`; [`Resolver::set_servers`] from the DHCP
/// client takes effect for lookups that start afterwards.
///
/// aci's HTTP client takes name resolution through `aci::discovery::Resolver`
/// (`resolve(&self, host, port) -> io::Result<Vec<SocketAddr>>`). hostnet does not depend on
/// aci; init wires the two with an adapter:
///
/// ```ignore
/// struct Dns(Arc<hostnet::dns::Resolver>);
/// impl aci::discovery::Resolver for Dns {
///     fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
///         self.0.resolve_socket_addrs(host, port)
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Resolver {
    config: RwLock<Arc<ResolverConfig>>,
    cache: Mutex<Cache>,
    ids: IdSource,
}

impl Resolver {
    pub fn new(config: ResolverConfig) -> Resolver {
        Resolver {
            config: RwLock::new(Arc::new(config)),
            cache: Mutex::new(Cache::default()),
            ids: IdSource::new(),
        }
    }

    /// The configuration lookups starting now use.
    pub fn config(&self) -> Arc<ResolverConfig> {
        // A poisoned lock still holds a whole Arc: writers only swap it.
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the whole configuration and forgets cached answers, which came from the old
    /// servers. Lookups under way finish with the configuration they started with.
    pub fn set_config(&self, config: ResolverConfig) {
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
        self.lock_cache().clear();
    }

    /// Replaces only the servers, as a new or changed DHCP lease does.
    pub fn set_servers(&self, servers: Vec<SocketAddr>) {
        let mut config = (*self.config()).clone();
        config.servers = servers;
        self.set_config(config);
    }

    /// The addresses of `host`, IPv4 first. An IP literal is returned as is; a name in the
    /// hosts table is not sent to DNS.
    pub fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let literal = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let config = self.config();
        let from_hosts = config.hosts.lookup(host);
        if !from_hosts.is_empty() {
            return Ok(from_hosts);
        }
        // Built once up front so a bad name fails before any server is asked.
        Query::new(host, RecordType::A, 0).map_err(|source| ResolveError::InvalidName {
            host: host.to_owned(),
            source,
        })?;
        let key = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if let Some(cached) = self.lock_cache().get(&key, Instant::now()) {
            return Ok(cached);
        }
        if config.servers.is_empty() {
            return Err(ResolveError::NoServers {
                host: host.to_owned(),
            });
        }
        let (addrs, ttl) = self.ask_servers(host, &config)?;
        self.lock_cache().insert(&key, &addrs, ttl, Instant::now());
        Ok(addrs)
    }

    /// [`Resolver::resolve`] with a port, in the shape of `aci::discovery::Resolver`.
    pub fn resolve_socket_addrs(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        match self.resolve(host) {
            Ok(ips) => Ok(ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect()),
            Err(e) => Err(io::Error::new(e.io_kind(), e)),
        }
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // The cache is only ever a hint; a panic mid-update leaves at worst a stale entry.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks for A and AAAA together, server by server, round by round, until both have a
    /// definite answer. A family answered once is not asked again, so a server that drops
    /// AAAA queries (some home routers do) still yields the IPv4 addresses.
    fn ask_servers(
        &self,
        host: &str,
        config: &ResolverConfig,
    ) -> Result<(Vec<IpAddr>, u32), ResolveError> {
        let mut answers: [Option<(Answer, SocketAddr)>; 2] = [None, None];
        let mut failures: Vec<(SocketAddr, TryFailure)> = Vec::new();
        let mut tried: Vec<SocketAddr> = Vec::new();
        let types = [RecordType::A, RecordType::Aaaa];
        'rounds: for _ in 0..config.attempts.max(1) {
            for &server in &config.servers {
                let wanted: Vec<RecordType> = types
                    .iter()
                    .zip(&answers)
                    .filter(|(_, a)| a.is_none())
                    .map(|(t, _)| *t)
                    .collect();
                if wanted.is_empty() {
                    break 'rounds;
                }
                if !tried.contains(&server) {
                    tried.push(server);
                }
                for (qtype, outcome) in self.try_server(host, server, &wanted, config.timeout) {
                    let slot = usize::from(qtype == RecordType::Aaaa);
                    match outcome {
                        Ok(Answer::NoSuchName) if !has_addresses(&answers) => {
                            return Err(ResolveError::NoSuchName {
                                host: host.to_owned(),
                                server,
                            });
                        }
                        // A server that has just given addresses for the other family
                        // contradicts this one; the addresses are the useful part.
                        Ok(Answer::NoSuchName) => answers[slot] = Some((Answer::NoData, server)),
                        Ok(answer) => answers[slot] = Some((answer, server)),
                        Err(failure) => failures.push((server, failure)),
                    }
                }
            }
        }
        let mut addrs = Vec::new();
        let mut ttl = u32::MAX;
        for (answer, _) in answers.iter().flatten() {
            if let Answer::Addresses(list) = answer {
                for a in list {
                    if !addrs.contains(&a.ip) {
                        addrs.push(a.ip);
                    }
                    ttl = ttl.min(a.ttl);
                }
            }
        }
        if !addrs.is_empty() {
            return Ok((addrs, ttl));
        }
        if let [Some((_, server)), Some(_)] = &answers {
            return Err(ResolveError::NoAddresses {
                host: host.to_owned(),
                server: *server,
            });
        }
        Err(explain(host, tried, failures, config))
    }

    /// One try: both queries to `server` from a fresh socket, then answers until the timeout.
    fn try_server(
        &self,
        host: &str,
        server: SocketAddr,
        wanted: &[RecordType],
        timeout: Duration,
    ) -> Vec<(RecordType, Result<Answer, TryFailure>)> {
        let fail_all = |e: io::Error| {
            wanted
                .iter()
                .map(|t| {
                    (
                        *t,
                        Err(TryFailure::Socket(io::Error::new(e.kind(), e.to_string()))),
                    )
                })
                .collect()
        };
        // A new unconnected socket per try: port 0 gives a fresh random source port, which
        // with the random id is the defence against forged answers.
        let local: SocketAddr = match server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = match UdpSocket::bind(local) {
            Ok(s) => s,
            Err(e) => return fail_all(e),
        };
        let mut pending: Vec<(Query, Option<Result<Answer, TryFailure>>)> = Vec::new();
        for &qtype in wanted {
            let query = match Query::new(host, qtype, self.ids.next()) {
                Ok(q) => q,
                // Checked in `resolve`; a name that passed there cannot fail here.
                Err(e) => return fail_all(io::Error::new(io::ErrorKind::InvalidInput, e)),
            };
            if let Err(e) = socket.send_to(query.bytes(), server) {
                return fail_all(e);
            }
            pending.push((query, None));
        }
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; RECV_BUFFER];
        while pending.iter().any(|(_, r)| r.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Err(e) = socket.set_read_timeout(Some(left)) {
                return fail_all(e);
            }
            let (len, from) = match socket.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return fail_all(e),
            };
            // Anyone can send to our port; only the server we asked may answer.
            if from != server {
                continue;
            }
            let datagram = &buf[..len];
            for (query, result) in pending.iter_mut().filter(|(_, r)| r.is_none()) {
                match query.check_response(datagram) {
                    Err(ResponseError::NotOurs { .. }) => continue,
                    Ok(answer) => *result = Some(Ok(answer)),
                    Err(e) => *result = Some(Err(TryFailure::Response(e))),
                }
                break;
            }
        }
        pending
            .into_iter()
            .map(|(q, r)| (q.qtype(), r.unwrap_or(Err(TryFailure::Timeout))))
            .collect()
    }
}

fn has_addresses(answers: &[Option<(Answer, SocketAddr)>; 2]) -> bool {
    answers
        .iter()
        .flatten()
        .any(|(a, _)| matches!(a, Answer::Addresses(_)))
}

/// The error for a lookup where no try gave a usable answer.
fn explain(
    host: &str,
    tried: Vec<SocketAddr>,
    failures: Vec<(SocketAddr, TryFailure)>,
    config: &ResolverConfig,
) -> ResolveError {
    let host = host.to_owned();
    let servers = Servers(tried);
    // The latest of the most telling failures.
    let worst = failures.into_iter().rev().max_by_key(|(_, f)| f.weight());
    match worst {
        None | Some((_, TryFailure::Timeout)) => ResolveError::Timeout {
            host,
            servers,
            attempts: config.attempts.max(1),
            timeout: config.timeout,
        },
        Some((server, TryFailure::Socket(source))) => ResolveError::Socket {
            host,
            server,
            servers,
            source,
        },
        Some((server, TryFailure::Response(ResponseError::ServerFailure { rcode, .. }))) => {
            ResolveError::ServerFailure {
                host,
                server,
                rcode,
                servers,
            }
        }
        Some((server, TryFailure::Response(ResponseError::Truncated { .. }))) => {
            ResolveError::Truncated {
                host,
                server,
                servers,
            }
        }
        Some((server, TryFailure::Response(source))) => ResolveError::Malformed {
            host,
            server,
            servers,
            source: Box::new(source),
        },
    }
}

/// Query ids: SipHash under the process's random key (std seeds it from the kernel's
/// getrandom without blocking at boot) over a counter. A PRF over a counter gives ids an
/// off-path attacker cannot predict, without a dependency.
#[derive(Debug)]
struct IdSource {
    key: RandomState,
    counter: AtomicU64,
}

impl IdSource {
    fn new() -> IdSource {
        IdSource {
            key: RandomState::new(),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> u16 {
        let mut h = self.key.build_hasher();
        h.write_u64(self.counter.fetch_add(1, Ordering::Relaxed));
        // Any 16 bits of a SipHash output are as good as any other.
        h.finish() as u16
    }
}

#[cfg(test)]
#[path = "resolver_tests.rs"]
mod tests;
