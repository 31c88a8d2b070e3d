//! An IPv4 address with its prefix length (`10.0.2.15/24`): what an interface is given and
//! what a route leads to, with the subnet arithmetic the gateway check needs.

use std::fmt;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an IPv4 prefix is at most 32 bits long, not {0}")]
pub struct PrefixTooLong(pub u8);

/// An address and prefix length; the address keeps its host bits (`10.0.2.15/24`, not
/// `10.0.2.0/24`), as an interface address does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// `127.0.0.1/8`, loopback's address.
    pub const LOCALHOST: Ipv4Cidr = Ipv4Cidr {
        addr: Ipv4Addr::LOCALHOST,
        prefix: 8,
    };

    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, PrefixTooLong> {
        if prefix > 32 {
            return Err(PrefixTooLong(prefix));
        }
        Ok(Ipv4Cidr { addr, prefix })
    }

    /// `addr/32`.
    pub fn host(addr: Ipv4Addr) -> Self {
        Ipv4Cidr { addr, prefix: 32 }
    }

    /// `0.0.0.0/0`, the destination of a default route.
    pub fn any() -> Self {
        Ipv4Cidr {
            addr: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
        }
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn netmask(&self) -> Ipv4Addr {
        // checked_shl: a shift by 32 (prefix 0) is no mask at all, not an overflow.
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        Ipv4Addr::from(mask)
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & u32::from(self.netmask()))
    }

    /// The subnet's broadcast address; none for /31 (RFC 3021 point-to-point) and /32.
    pub fn broadcast(&self) -> Option<Ipv4Addr> {
        (self.prefix <= 30)
            .then(|| Ipv4Addr::from(u32::from(self.addr) | !u32::from(self.netmask())))
    }

    /// Whether `ip` is inside this subnet (so reachable without a router).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::from(self.netmask());
        u32::from(ip) & mask == u32::from(self.addr) & mask
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str, prefix: u8) -> Ipv4Cidr {
        Ipv4Cidr::new(s.parse().unwrap(), prefix).unwrap()
    }

    #[test]
    fn subnet_arithmetic_of_a_slash_24() {
        let c = cidr("10.0.2.15", 24);
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(c.network(), Ipv4Addr::new(10, 0, 2, 0));
        assert_eq!(c.broadcast(), Some(Ipv4Addr::new(10, 0, 2, 255)));
        assert!(c.contains(Ipv4Addr::new(10, 0, 2, 2)));
        assert!(!c.contains(Ipv4Addr::new(10, 0, 3, 2)));
        assert_eq!(c.to_string(), "10.0.2.15/24");
    }

    #[test]
    fn a_slash_32_contains_only_itself_and_has_no_broadcast() {
        // Cloud DHCP servers hand out /32 leases with a gateway outside them.
        let c = cidr("10.128.0.5", 32);
        assert!(c.contains(Ipv4Addr::new(10, 128, 0, 5)));
        assert!(!c.contains(Ipv4Addr::new(10, 128, 0, 1)));
        assert_eq!(c.broadcast(), None);
        assert_eq!(cidr("10.0.0.0", 31).broadcast(), None);
    }

    #[test]
    fn prefix_zero_contains_everything() {
        assert_eq!(Ipv4Cidr::any().netmask(), Ipv4Addr::UNSPECIFIED);
        assert!(Ipv4Cidr::any().contains(Ipv4Addr::new(192, 0, 2, 1)));
    }

    #[test]
    fn rejects_a_prefix_longer_than_32() {
        assert_eq!(
            Ipv4Cidr::new(Ipv4Addr::LOCALHOST, 33),
            Err(PrefixTooLong(33))
        );
    }
}
