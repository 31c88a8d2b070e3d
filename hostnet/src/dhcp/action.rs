//! What the client asks of init: messages to send and where, and lease events to act on.

use std::net::Ipv4Addr;

use super::frame::{self, FrameError};
use super::lease::Lease;

/// What init must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send(Transmit),
    Event(Event),
}

/// A DHCP message to send from the client port to the server port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub payload: Vec<u8>,
    /// 0.0.0.0 until the client holds a lease, then its address.
    pub source: Ipv4Addr,
    pub destination: Destination,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255, to the Ethernet broadcast address.
    Broadcast,
    /// The server, at an address the client can route to: a renewal (RFC 2131 §4.4.5).
    Unicast(Ipv4Addr),
}

impl Destination {
    pub fn address(self) -> Ipv4Addr {
        match self {
            Self::Broadcast => Ipv4Addr::BROADCAST,
            Self::Unicast(address) => address,
        }
    }
}

impl Transmit {
    /// The message in IPv4 and UDP headers, for an AF_PACKET SOCK_DGRAM socket.
    pub fn to_ipv4(&self) -> Result<Vec<u8>, FrameError> {
        frame::wrap(&self.payload, self.source, self.destination.address())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new address: configure it, its routes and DNS.
    LeaseAcquired(Lease),
    /// The same address with new timers, and perhaps new options.
    LeaseRenewed(Lease),
    /// The address must be removed now.
    LeaseLost { lease: Lease, reason: LossReason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReason {
    /// The server said no to a renewal or an INIT-REBOOT.
    Nak,
    /// Nobody renewed it in time.
    Expired,
    /// `Client::release`.
    Released,
}
