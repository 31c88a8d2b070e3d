//! A lease: what an ACK grants, with its timers made sane, in the terms init configures.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::options::Route;
use super::packet::Message;

/// RFC 2132 §5.1: no link has a smaller MTU; a smaller value is a server's mistake.
const MIN_MTU: u16 = 68;
/// A shorter lease would have the client in a request loop; servers do not mean it.
pub const MIN_LEASE: Duration = Duration::from_secs(10);

/// Why an ACK cannot become a lease.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("the ACK has no server identifier (option 54)")]
    MissingServerId,
    #[error("the ACK has no lease time (option 51)")]
    MissingLeaseTime,
    #[error("the address {0} cannot be a host's own address")]
    UnusableAddress(Ipv4Addr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    /// From the subnet mask; 32 when the server sent none or a non-contiguous one (RFC 950
    /// forbids those), which leaves only the gateway, reached with an on-link route.
    pub prefix_len: u8,
    /// The first router, or with classless routes (RFC 3442, which says to ignore the router
    /// option then) the gateway of their default route, if they have one.
    pub gateway: Option<Ipv4Addr>,
    pub routes: Vec<Route>,
    pub dns: Vec<Ipv4Addr>,
    /// Only when it is UTF-8 (a trailing NUL, which some servers send, removed): resolv.conf
    /// cannot hold anything else usefully.
    pub domain: Option<String>,
    /// Only when at least 68.
    pub mtu: Option<u16>,
    pub server_id: Ipv4Addr,
    /// At least `MIN_LEASE`; 0xffffffff ("infinite") is taken as 136 years.
    pub lease_time: Duration,
    /// 0 < t1 <= t2 <= lease_time.
    pub t1: Duration,
    pub t2: Duration,
    /// When the REQUEST that won it was first sent (RFC 2131 §4.4.1): the timers run from then.
    pub acquired_at: Instant,
}

impl Lease {
    pub fn renew_at(&self) -> Instant {
        later(self.acquired_at, self.t1)
    }

    pub fn rebind_at(&self) -> Instant {
        later(self.acquired_at, self.t2)
    }

    pub fn expires_at(&self) -> Instant {
        later(self.acquired_at, self.lease_time)
    }

    /// The lease an ACK grants, for the address in its `yiaddr`.
    pub fn from_ack(ack: &Message, acquired_at: Instant) -> Result<Self, LeaseError> {
        let options = &ack.options;
        let server_id = options.server_id.ok_or(LeaseError::MissingServerId)?;
        let lease_secs = options.lease_time.ok_or(LeaseError::MissingLeaseTime)?;
        check_usable(ack.yiaddr)?;
        let (lease_time, t1, t2) = timers(lease_secs, options.renewal_time, options.rebinding_time);
        let gateway = if options.classless_routes.is_empty() {
            options.routers.first().copied()
        } else {
            options
                .classless_routes
                .iter()
                .find(|r| r.prefix_len == 0)
                .map(|r| r.gateway)
        };
        let domain = options
            .domain_name
            .as_deref()
            .map(|name| name.strip_suffix(b"\0").unwrap_or(name))
            .and_then(|name| std::str::from_utf8(name).ok())
            .filter(|name| !name.is_empty())
            .map(str::to_owned);
        Ok(Self {
            address: ack.yiaddr,
            prefix_len: options.subnet_mask.and_then(prefix_len).unwrap_or(32),
            gateway,
            routes: options.classless_routes.clone(),
            dns: options.dns.clone(),
            domain,
            mtu: options.mtu.filter(|&mtu| mtu >= MIN_MTU),
            server_id,
            lease_time,
            t1,
            t2,
            acquired_at,
        })
    }
}

/// An address a server may hand out: not 0.0.0.0, broadcast, multicast or loopback.
pub fn check_usable(address: Ipv4Addr) -> Result<(), LeaseError> {
    if address.is_unspecified()
        || address.is_broadcast()
        || address.is_multicast()
        || address.is_loopback()
    {
        return Err(LeaseError::UnusableAddress(address));
    }
    Ok(())
}

/// The lease time and T1, T2, with RFC 2131 §4.4.5's defaults (0.5 and 0.875 of the lease)
/// standing in for values the server left out or that break t1 <= t2 <= lease.
fn timers(
    lease_secs: u32,
    t1_secs: Option<u32>,
    t2_secs: Option<u32>,
) -> (Duration, Duration, Duration) {
    let lease = Duration::from_secs(lease_secs.into()).max(MIN_LEASE);
    let given = |secs: Option<u32>| {
        secs.map(|s| Duration::from_secs(s.into()))
            .filter(|d| !d.is_zero())
    };
    let t2 = given(t2_secs)
        .filter(|&t2| t2 <= lease)
        .unwrap_or(lease * 7 / 8);
    let t1 = given(t1_secs)
        .filter(|&t1| t1 <= t2)
        .unwrap_or((lease / 2).min(t2));
    (lease, t1, t2)
}

/// The prefix length of a contiguous mask; `None` for a mask like 255.0.255.0.
fn prefix_len(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8) // at most 32
}

/// `base + by`, saturating. A u32 of seconds never overflows a Linux `Instant` (an i64 of
/// seconds); on a platform where it did, the lease would end at once rather than never.
pub(crate) fn later(base: Instant, by: Duration) -> Instant {
    base.checked_add(by).unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn defaults_t1_and_t2_to_half_and_seven_eighths_of_the_lease() {
        assert_eq!(timers(86400, None, None), (S(86400), S(43200), S(75600)));
    }

    #[test]
    fn keeps_server_timers_that_are_in_order() {
        assert_eq!(timers(600, Some(300), Some(525)), (S(600), S(300), S(525)));
    }

    #[test]
    fn replaces_timers_that_are_out_of_order() {
        // T2 past the lease and T1 past T2 are both replaced by the defaults.
        assert_eq!(timers(600, Some(700), Some(900)), (S(600), S(300), S(525)));
        // A T2 below the default T1 pulls T1 down with it.
        assert_eq!(timers(600, None, Some(100)), (S(600), S(100), S(100)));
        assert_eq!(timers(600, Some(0), Some(0)), (S(600), S(300), S(525)));
    }

    #[test]
    fn raises_a_tiny_lease_to_the_minimum() {
        assert_eq!(timers(0, None, None).0, MIN_LEASE);
    }

    #[test]
    fn derives_prefix_length_from_contiguous_masks_only() {
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(prefix_len(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(prefix_len(Ipv4Addr::new(255, 0, 255, 0)), None);
    }

    #[test]
    fn rejects_addresses_a_host_cannot_own() {
        for bad in [
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            Ipv4Addr::new(224, 0, 0, 1),
            Ipv4Addr::LOCALHOST,
        ] {
            assert_eq!(check_usable(bad), Err(LeaseError::UnusableAddress(bad)));
        }
        assert_eq!(check_usable(Ipv4Addr::new(10, 0, 2, 15)), Ok(()));
    }
}
