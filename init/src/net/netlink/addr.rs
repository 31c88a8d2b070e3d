//! IPv4 addresses: the RTM_GETADDR dump, add (exclusive), replace (add or update the
//! lifetimes, for a DHCP renewal), delete and flush.

use std::io;
use std::net::Ipv4Addr;

use super::abi::{
    AF_INET, IFA_ADDRESS, IFA_BROADCAST, IFA_CACHEINFO, IFA_LABEL, IFA_LOCAL, INFINITY_LIFE_TIME,
    IfAddrMsg, IfaCacheInfo, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE,
    RT_SCOPE_UNIVERSE, RTM_DELADDR, RTM_GETADDR, RTM_NEWADDR,
};
use super::message::{Message, MessageError, Request, attrs};
use super::{Iface, NetlinkError, Rtnl};
use crate::net::cidr::Ipv4Cidr;

/// How long an address lives, in seconds (a DHCP lease's time and its renewal time). The
/// kernel removes the address when `valid` runs out, so an expired lease cannot linger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub valid_secs: u32,
    pub preferred_secs: u32,
}

/// An address to put on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewAddress {
    pub cidr: Ipv4Cidr,
    pub broadcast: Option<Ipv4Addr>,
    /// `None`: permanent.
    pub lifetime: Option<Lifetime>,
}

impl NewAddress {
    /// A permanent address with the subnet's broadcast address (none for /31 and /32).
    pub fn new(cidr: Ipv4Cidr) -> Self {
        NewAddress {
            cidr,
            broadcast: cidr.broadcast(),
            lifetime: None,
        }
    }

    pub fn with_lifetime(mut self, valid_secs: u32, preferred_secs: u32) -> Self {
        self.lifetime = Some(Lifetime {
            valid_secs,
            preferred_secs,
        });
        self
    }

    pub(super) fn request(&self, iface: &Iface, flags: u16) -> Request {
        let mut req = Request::new(RTM_NEWADDR, NLM_F_ACK | flags)
            .header(|out| ifaddrmsg(iface, self.cidr).encode(out))
            .attr_ipv4(IFA_LOCAL, self.cidr.addr())
            .attr_ipv4(IFA_ADDRESS, self.cidr.addr());
        if let Some(brd) = self.broadcast {
            req = req.attr_ipv4(IFA_BROADCAST, brd);
        }
        if let Some(life) = self.lifetime {
            let info = IfaCacheInfo {
                preferred: life.preferred_secs,
                valid: life.valid_secs,
            };
            req = req.attr(IFA_CACHEINFO, &info.encode());
        }
        req
    }
}

/// An address as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    pub cidr: Ipv4Cidr,
    pub broadcast: Option<Ipv4Addr>,
    pub label: String,
    /// `None`: permanent. Otherwise the seconds left, as of the dump.
    pub lifetime: Option<Lifetime>,
}

fn ifaddrmsg(iface: &Iface, cidr: Ipv4Cidr) -> IfAddrMsg {
    IfAddrMsg {
        family: AF_INET,
        prefix_len: cidr.prefix(),
        flags: 0,
        // The kernel narrows 127/8 to host scope itself.
        scope: RT_SCOPE_UNIVERSE,
        index: iface.index,
    }
}

/// An RTM_NEWADDR as an IPv4 [`Address`]; other messages and families are `None`.
pub(crate) fn parse_address(m: &Message<'_>) -> Result<Option<Address>, MessageError> {
    if m.header.kind != RTM_NEWADDR {
        return Ok(None);
    }
    let head = IfAddrMsg::decode(m.payload)?;
    if head.family != AF_INET {
        return Ok(None);
    }
    let (mut local, mut address, mut broadcast, mut label, mut lifetime) =
        (None, None, None, String::new(), None);
    for attr in attrs(m.payload, IfAddrMsg::LEN) {
        let attr = attr?;
        match attr.kind {
            IFA_LOCAL => local = Some(attr.ipv4()?),
            IFA_ADDRESS => address = Some(attr.ipv4()?),
            IFA_BROADCAST => broadcast = Some(attr.ipv4()?),
            IFA_LABEL => label = attr.string(),
            IFA_CACHEINFO => {
                let info = IfaCacheInfo::decode(attr.data)?;
                lifetime = (info.valid != INFINITY_LIFE_TIME).then_some(Lifetime {
                    valid_secs: info.valid,
                    preferred_secs: info.preferred,
                });
            }
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS differs only on point-to-point
    // links (the peer), where it is all a message may carry.
    let Some(addr) = local.or(address) else {
        return Ok(None);
    };
    let Ok(cidr) = Ipv4Cidr::new(addr, head.prefix_len) else {
        return Ok(None);
    };
    Ok(Some(Address {
        index: head.index,
        cidr,
        broadcast,
        label,
        lifetime,
    }))
}

impl Rtnl {
    /// Every IPv4 address of every interface.
    pub fn addresses(&mut self) -> Result<Vec<Address>, NetlinkError> {
        self.dump_addresses().map_err(NetlinkError::ListAddresses)
    }

    /// The IPv4 addresses of one interface.
    pub fn addresses_of(&mut self, iface: &Iface) -> Result<Vec<Address>, NetlinkError> {
        let mut all = self.addresses()?;
        all.retain(|a| a.index == iface.index);
        Ok(all)
    }

    fn dump_addresses(&mut self) -> io::Result<Vec<Address>> {
        let req = Request::new(RTM_GETADDR, NLM_F_DUMP).header(|out| {
            IfAddrMsg {
                family: AF_INET,
                ..IfAddrMsg::default()
            }
            .encode(out)
        });
        self.sock.dump(req, parse_address)
    }

    /// Adds an address; fails with EEXIST if the interface already has it.
    pub fn add_address(&mut self, iface: &Iface, addr: &NewAddress) -> Result<(), NetlinkError> {
        self.sock
            .request(addr.request(iface, NLM_F_CREATE | NLM_F_EXCL))
            .map_err(|source| NetlinkError::AddAddress {
                iface: iface.clone(),
                addr: addr.cidr,
                source,
            })
    }

    /// Adds an address, or updates the broadcast and lifetimes of one already there with the
    /// same address and prefix (a renewed lease).
    pub fn replace_address(
        &mut self,
        iface: &Iface,
        addr: &NewAddress,
    ) -> Result<(), NetlinkError> {
        self.sock
            .request(addr.request(iface, NLM_F_CREATE | NLM_F_REPLACE))
            .map_err(|source| NetlinkError::ReplaceAddress {
                iface: iface.clone(),
                addr: addr.cidr,
                source,
            })
    }

    pub fn delete_address(&mut self, iface: &Iface, cidr: Ipv4Cidr) -> Result<(), NetlinkError> {
        self.sock
            .request(delete_request(iface, cidr))
            .map_err(|source| NetlinkError::DeleteAddress {
                iface: iface.clone(),
                addr: cidr,
                source,
            })
    }

    /// Removes every IPv4 address of the interface (a lost lease, a new one on another
    /// subnet); returns how many went. Routes through them go with them.
    pub fn flush_addresses(&mut self, iface: &Iface) -> Result<usize, NetlinkError> {
        let addrs = self
            .dump_addresses()
            .map_err(|source| NetlinkError::FlushAddresses {
                iface: iface.clone(),
                source,
            })?;
        let mut removed = 0;
        for a in addrs.iter().filter(|a| a.index == iface.index) {
            match self.sock.request(delete_request(iface, a.cidr)) {
                Ok(()) => removed += 1,
                // Removing a primary address takes its secondaries along.
                Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {}
                Err(source) => {
                    return Err(NetlinkError::DeleteAddress {
                        iface: iface.clone(),
                        addr: a.cidr,
                        source,
                    });
                }
            }
        }
        Ok(removed)
    }
}

fn delete_request(iface: &Iface, cidr: Ipv4Cidr) -> Request {
    Request::new(RTM_DELADDR, NLM_F_ACK)
        .header(|out| ifaddrmsg(iface, cidr).encode(out))
        .attr_ipv4(IFA_LOCAL, cidr.addr())
}
