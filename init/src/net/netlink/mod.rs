//! NETLINK_ROUTE, written for the few messages init sends: a request socket ([`Rtnl`]) for
//! links (`link`), IPv4 addresses (`addr`) and routes (`route`), and a link-event
//! subscription ([`LinkWatcher`], `events`). `abi` and `message` hold the wire format;
//! `socket` the send/ack/dump loop.

mod abi;
mod addr;
mod error;
mod events;
mod link;
mod message;
mod route;
mod socket;
#[cfg(test)]
mod tests;

use std::fmt;

pub use addr::{Address, Lifetime, NewAddress};
pub use error::NetlinkError;
pub use events::{LinkEvent, LinkEventKind, LinkWatcher};
pub use link::{Link, LinkType, MacAddr, OperState};
pub use route::{Route, RouteProtocol, RouteSpec};
pub use socket::REPLY_TIMEOUT;

use socket::Socket;

/// An interface as operations name it: the kernel's index (what netlink addresses) and the
/// name (what errors and the console show).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Iface {
    pub index: u32,
    pub name: String,
}

impl Iface {
    /// `ifi_index` is an `int` in the ABI. No kernel hands out an index past `i32::MAX`; one
    /// that large cannot name a device, so it becomes an index the kernel rejects (ENODEV)
    /// rather than 0, which would mean "look the device up by name".
    fn raw_index(&self) -> i32 {
        i32::try_from(self.index).unwrap_or(i32::MAX)
    }
}

impl fmt::Display for Iface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (index {})", self.name, self.index)
    }
}

/// A NETLINK_ROUTE request socket. One request is in flight at a time; each waits for the
/// kernel's acknowledgement, so when a method returns the change is in place.
#[derive(Debug)]
pub struct Rtnl {
    sock: Socket,
}

impl Rtnl {
    pub fn open() -> Result<Self, NetlinkError> {
        Ok(Rtnl {
            sock: Socket::open(0).map_err(NetlinkError::Open)?,
        })
    }
}
