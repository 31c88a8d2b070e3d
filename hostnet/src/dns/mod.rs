//! The DNS stub resolver (RFC 1035, AAAA RFC 3596), `/etc/hosts` and `resolv.conf`.

mod cache;
pub mod hosts;
pub mod query;
pub mod resolv_conf;
pub mod resolver;

pub use hosts::{Hosts, HostsEntry, HostsWarning, RenderHostsError, render_hosts};
pub use query::{Address, Answer, Query, QueryError, Rcode, RecordType, ResponseError};
pub use resolv_conf::{MAX_NAMESERVERS, ResolvConf, ResolvOptions};
pub use resolver::{ResolveError, Resolver, ResolverConfig, Servers};
