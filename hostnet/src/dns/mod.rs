//! The DNS stub resolver (RFC 1035, AAAA RFC 3596), `/etc/hosts` and `resolv.conf`.
//!
//! init is static glibc without NSS, so `getaddrinfo` cannot resolve names; init resolves
//! them here. The pieces, from the bottom:
//!
//! - [`query`]: one A or AAAA question as bytes (random id supplied by the caller, RD set) and
//!   the checks on a datagram claiming to answer it. No I/O; tested against hex fixtures in
//!   `test_data/dns/` and fuzzed (`fuzz/`, target `dns_message`). The message format is
//!   `simple-dns` (no dependencies of its own but `bitflags`); its name parser only follows
//!   compression pointers backwards, so pointer loops end. The header is read by hand before
//!   it, so a truncated or failing answer is classified even when its body does not parse,
//!   and header counts larger than the datagram are refused before the parser reserves room
//!   for them.
//! - [`hosts`] and [`resolv_conf`]: the two files, parsed leniently (a bad line is skipped and
//!   recorded as a warning) and rendered strictly (a name that would not parse back is an
//!   error).
//! - [`resolver`]: the blocking resolver on `std::net::UdpSocket`. Order: IP literal, the hosts
//!   table, the cache, then DNS. Each try sends A and AAAA together from a fresh unconnected
//!   socket bound to port 0 (a random source port) and waits `timeout` for both; datagrams
//!   from any address but the server's, or with another id or question, are ignored. Tries go
//!   server by server, `attempts` rounds, as glibc does. NXDOMAIN ends the lookup; SERVFAIL,
//!   REFUSED and other failure codes, truncation, malformed answers and timeouts move on to
//!   the next server. A family answered once is not asked again, so a server that drops AAAA
//!   queries still yields IPv4 addresses. IPv4 addresses come first.
//!
//! The configuration sits behind `RwLock<Arc<..>>`: a lookup takes a snapshot when it starts,
//! and [`Resolver::set_servers`] (a new DHCP lease) or [`Resolver::set_config`] swaps it for
//! the lookups after, emptying the cache.
//!
//! aci's `discovery::Resolver` trait (`resolve(&self, host, port) -> io::Result<Vec<SocketAddr>>`,
//! used by its HTTP client) is the seam init fills; [`Resolver::resolve_socket_addrs`] has its
//! shape, and init wires them with the five-line adapter in [`Resolver`]'s docs, so hostnet
//! does not depend on aci. (`aci::store::Resolver` is unrelated: it finds image dependencies
//! in the store.)
//!
//! Left out, on purpose:
//! - TCP fallback: an answer with TC set is reported as [`ResolveError::Truncated`]. A and
//!   AAAA answers for the hosts init talks to fit in 512 bytes.
//! - Search domains and `ndots`: names are asked as given (absolute). resolv.conf's `search`
//!   is parsed and rendered for pods, whose own C library applies it.
//! - DNSSEC validation and EDNS(0): the stub trusts its (local, DHCP-given) recursive server,
//!   as glibc does; TLS authenticates the registries above it.
//! - Negative caching; the positive cache keeps at most 64 names for at most their TTL, capped
//!   at an hour (the TTL of a CNAME bounds the addresses behind it).
//! - `rotate`, `single-request` and other options; IPv6 zone indexes (`fe80::1%eth0`) in
//!   either file.

mod cache;
pub mod hosts;
pub mod query;
pub mod resolv_conf;
pub mod resolver;

pub use hosts::{Hosts, HostsEntry, HostsWarning, RenderHostsError, render_hosts};
pub use query::{Address, Answer, Query, QueryError, Rcode, RecordType, ResponseError};
pub use resolv_conf::{MAX_NAMESERVERS, ResolvConf, ResolvOptions};
pub use resolver::{ResolveError, Resolver, ResolverConfig, Servers};
