//! Carrying out a DHCP client's actions: sending its messages, and putting its leases on the
//! interface (address, routes, MTU, DNS) or taking them off.

use std::io;
use std::time::Instant;

use hostnet::dhcp::{Action, Destination, Event, Lease, LossReason, Transmit};

use super::{DhcpIface, NetError, NetworkService, SlotState};
use crate::net::Ipv4Cidr;
use crate::net::dhcp_io::UnicastSocket;
use crate::net::event::NetEvent;
use crate::net::netlink::{NetlinkError, NewAddress, RouteProtocol, RouteSpec};

impl NetworkService {
    /// Carries out a client's actions in order.
    pub(super) fn run(&mut self, slot: usize, actions: Vec<Action>, now: Instant) {
        for action in actions {
            let SlotState::Dhcp(d) = &mut self.slots[slot].state else {
                return;
            };
            match action {
                Action::Send(transmit) => {
                    if let Err(e) = send(d, &transmit) {
                        self.warn(&e);
                    }
                }
                Action::Event(Event::LeaseAcquired(lease)) => self.apply(slot, lease, now, true),
                Action::Event(Event::LeaseRenewed(lease)) => self.apply(slot, lease, now, false),
                Action::Event(Event::LeaseLost { lease, reason }) => {
                    self.remove(slot, &lease, reason)
                }
            }
        }
    }

    /// Puts a lease on the interface: the address with the lease's remaining time as its
    /// lifetime (so the kernel drops it if init never gets to), MTU, routes, DNS.
    fn apply(&mut self, slot: usize, lease: Lease, now: Instant, acquired: bool) {
        let SlotState::Dhcp(d) = &mut self.slots[slot].state else {
            return;
        };
        let iface = d.iface.clone();
        let address = lease_cidr(&lease);
        let fail = |source| NetError::ApplyLease {
            iface: iface.name.clone(),
            address,
            source,
        };
        let mut warnings = Vec::new();
        if let Some(old) = d.applied.take().filter(|old| lease_cidr(old) != address)
            && let Err(e) = self.rtnl.delete_address(&iface, lease_cidr(&old))
        {
            warnings.push(fail(e));
        }
        let secs = lease.expires_at().saturating_duration_since(now).as_secs();
        let secs = u32::try_from(secs).unwrap_or(u32::MAX); // u32::MAX is "forever"
        let new = NewAddress::new(address).with_lifetime(secs, secs);
        if let Err(e) = self.rtnl.replace_address(&iface, &new) {
            // Without the address nothing else applies; the next renewal tries again.
            return self.warn(&fail(e));
        }
        if let Some(mtu) = lease.mtu
            && let Err(e) = self.rtnl.set_mtu(&iface, u32::from(mtu))
        {
            warnings.push(fail(e));
        }
        if let Some(gateway) = lease.gateway {
            let set = self.rtnl.replace_default_route(
                &iface,
                address,
                gateway,
                RouteProtocol::Dhcp,
                None,
            );
            if let Err(e) = set {
                warnings.push(fail(e));
            }
        }
        for route in classless_routes(&lease) {
            if let Err(e) = self.rtnl.replace_route(&iface, &route) {
                warnings.push(fail(e));
            }
        }
        let SlotState::Dhcp(d) = &mut self.slots[slot].state else {
            return;
        };
        if d.unicast.as_ref().map(UnicastSocket::address) != Some(lease.address) {
            d.unicast = None;
            match UnicastSocket::open(&iface, lease.address) {
                Ok(socket) => d.unicast = Some(socket),
                Err(source) => warnings.push(NetError::Dhcp {
                    iface: iface.name.clone(),
                    source,
                }),
            }
        }
        let (gateway, lease_secs) = (lease.gateway, lease.lease_time.as_secs());
        d.applied = Some(lease);
        for w in &warnings {
            self.warn(w);
        }
        self.write_resolv();
        let (iface, dns) = (iface.name, self.dns_servers());
        self.pending.push(if acquired {
            NetEvent::LeaseAcquired {
                iface,
                address,
                gateway,
                dns,
                lease_secs,
            }
        } else {
            NetEvent::LeaseRenewed {
                iface,
                address,
                gateway,
                dns,
                lease_secs,
            }
        });
    }

    /// Takes a lost lease off the interface: routes first, then the address. Either may be
    /// gone already (the kernel ends an address when its lifetime runs out, and its routes
    /// with it), which is what was wanted.
    fn remove(&mut self, slot: usize, lease: &Lease, reason: LossReason) {
        let SlotState::Dhcp(d) = &mut self.slots[slot].state else {
            return;
        };
        let iface = d.iface.clone();
        d.unicast = None;
        d.applied = None;
        let address = lease_cidr(lease);
        let mut routes = classless_routes(lease);
        if let Some(gateway) = lease.gateway {
            routes.push(RouteSpec::default_via(gateway, RouteProtocol::Dhcp));
            if !address.contains(gateway) {
                let host = Ipv4Cidr::host(gateway);
                routes.push(RouteSpec::on_link(host, RouteProtocol::Dhcp));
            }
        }
        let fail = |source| NetError::RemoveLease {
            iface: iface.name.clone(),
            address,
            source,
        };
        for route in &routes {
            match self.rtnl.delete_route(&iface, route) {
                Err(e) if !has_errno(&e, &[libc::ESRCH, libc::ENOENT]) => self.warn(&fail(e)),
                _ => {}
            }
        }
        match self.rtnl.delete_address(&iface, address) {
            Err(e) if !has_errno(&e, &[libc::EADDRNOTAVAIL, libc::ENODEV]) => self.warn(&fail(e)),
            _ => {}
        }
        self.write_resolv();
        let dns = self.dns_servers();
        self.pending.push(NetEvent::LeaseLost {
            iface: iface.name,
            address,
            reason,
            dns,
        });
    }
}

/// Sends one message: a broadcast through the packet socket, a unicast renewal through the
/// UDP socket bound to the lease (or, if that socket could not be opened, as an Ethernet
/// broadcast, which still reaches the server on the link).
fn send(d: &DhcpIface, transmit: &Transmit) -> Result<(), NetError> {
    let iface = || d.iface.name.clone();
    if let (Destination::Unicast(server), Some(udp)) = (transmit.destination, &d.unicast)
        && udp.address() == transmit.source
    {
        return udp
            .send(server, &transmit.payload)
            .map_err(|source| NetError::Dhcp {
                iface: iface(),
                source,
            });
    }
    let packet = transmit.to_ipv4().map_err(|source| NetError::Wrap {
        iface: iface(),
        source,
    })?;
    d.packet
        .broadcast(&packet)
        .map_err(|source| NetError::Dhcp {
            iface: iface(),
            source,
        })
}

fn lease_cidr(lease: &Lease) -> Ipv4Cidr {
    // hostnet derives prefix_len from a mask, so it is at most 32.
    Ipv4Cidr::new(lease.address, lease.prefix_len).unwrap_or(Ipv4Cidr::host(lease.address))
}

/// The lease's classless routes (RFC 3442) other than the default route, which the gateway
/// stands for; a gateway of 0.0.0.0 means on the link.
fn classless_routes(lease: &Lease) -> Vec<RouteSpec> {
    lease
        .routes
        .iter()
        .filter(|r| r.prefix_len > 0)
        .filter_map(|r| {
            let dst = Ipv4Cidr::new(r.destination, r.prefix_len).ok()?;
            let mut spec = RouteSpec::on_link(dst, RouteProtocol::Dhcp);
            spec.gateway = Some(r.gateway).filter(|g| !g.is_unspecified());
            Some(spec)
        })
        .collect()
}

/// Whether a netlink error's cause is one of these errnos.
fn has_errno(err: &NetlinkError, codes: &[i32]) -> bool {
    std::error::Error::source(err)
        .and_then(|s| s.downcast_ref::<io::Error>())
        .and_then(io::Error::raw_os_error)
        .is_some_and(|code| codes.contains(&code))
}
