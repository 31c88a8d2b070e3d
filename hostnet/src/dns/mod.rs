//! The DNS stub resolver (RFC 1035, AAAA RFC 3596), `/etc/hosts` and `resolv.conf`.

pub mod hosts;
pub mod query;
pub mod resolv_conf;
