//! The host's network configuration, done by init itself: interfaces, IPv4 addresses, routes
//! and link-state events over NETLINK_ROUTE (`netlink`), and the two choices boot makes
//! before any DHCP: loopback up, and which interface is "the" Ethernet device. On top of
//! those, [`NetworkService`] (`service`) is what init's event loop runs: static and DHCP
//! interfaces (`config`), the DHCP client's sockets (`dhcp_io`), the files under /run
//! (`resolv`) and the console events (`event`).
//!
//! Design: init speaks rtnetlink directly (rustix sockets, our own ~10 message layouts)
//! rather than through `netlink-packet-route`, which costs 200–535 KiB for a PID1 that sends
//! five kinds of request (docs: research deps-C-D, "netlink"). Requests are synchronous: each
//! waits for the kernel's acknowledgement, bounded by [`netlink::REPLY_TIMEOUT`], so a caller
//! knows the change is in place when the call returns. Link events come on a separate
//! non-blocking socket ([`netlink::LinkWatcher`]) that init's poll loop watches, so an
//! Ethernet device that probes late, or a carrier change, wakes init without polling.
//! Only IPv4 is handled: that is all a DHCPv4 lease configures. Operations name interfaces
//! by [`netlink::Iface`] (index and name) so that every error says which one failed.

pub mod boot;
pub mod cidr;
pub mod config;
pub mod dhcp_io;
pub mod event;
pub mod from_plan;
pub mod netlink;
pub mod resolv;
pub mod service;
#[cfg(test)]
mod service_tests;
#[cfg(test)]
mod test_server;
#[cfg(test)]
mod tests;

pub use cidr::Ipv4Cidr;
pub use config::{DhcpTiming, IfaceConfig, IfaceMode, IfaceName, NetConfig, RunPaths};
pub use event::NetEvent;
use netlink::{Iface, Link, LinkType, NetlinkError, NewAddress, Rtnl};
pub use service::{NetError, NetworkService};

/// The first Ethernet interface by index (the NIC the firmware or hypervisor lists first).
/// Loopback and other hardware types (tunnels, `sit0`) are never chosen.
pub fn first_ethernet(links: &[Link]) -> Option<&Link> {
    links
        .iter()
        .filter(|l| l.link_type == LinkType::Ethernet)
        .min_by_key(|l| l.iface.index)
}

/// Brings loopback up and makes sure it has 127.0.0.1/8. The kernel adds that address
/// itself when `lo` goes up; it is added here only if something removed it.
pub fn bring_up_loopback(rtnl: &mut Rtnl) -> Result<Iface, NetlinkError> {
    let lo = rtnl
        .links()?
        .into_iter()
        .find(|l| l.link_type == LinkType::Loopback)
        .ok_or(NetlinkError::NoLoopback)?
        .iface;
    rtnl.set_link_up(&lo)?;
    let localhost = Ipv4Cidr::LOCALHOST;
    if !rtnl.addresses_of(&lo)?.iter().any(|a| a.cidr == localhost) {
        rtnl.replace_address(&lo, &NewAddress::new(localhost))?;
    }
    Ok(lo)
}
