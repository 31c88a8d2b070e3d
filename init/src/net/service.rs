//! The network service init runs: it finds the configured interfaces (also ones that appear
//! later), applies static addresses at once, drives a hostnet DHCP client per DHCP interface
//! over its sockets, applies leases (address with lifetimes, default route, MTU), and keeps
//! `resolv.conf` and `hosts` under /run current.
//!
//! It does no waiting of its own. init's loop polls [`NetworkService::fds`] until
//! [`NetworkService::next_deadline`], then calls [`NetworkService::on_ready`] or
//! [`NetworkService::on_timer`] and prints the [`NetEvent`]s they return. Only opening the
//! service's own sockets can fail; afterwards a failure (a socket, a netlink request, a file)
//! becomes a [`NetEvent::Warning`] and the service carries on: the host without a network is
//! better than no host.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use hostnet::dhcp::frame::{self, FrameError};
use hostnet::dhcp::{Client, ClientConfig, Lease};

use super::config::{DhcpTiming, IfaceConfig, IfaceMode, IfaceName, NetConfig, RunPaths};
use super::dhcp_io::{PacketSocket, RECV_BUF, RecvBuf, SocketError, UnicastSocket};
use super::event::NetEvent;
use super::netlink::{
    Iface, Link, LinkEvent, LinkEventKind, LinkType, LinkWatcher, NetlinkError, NewAddress,
    RouteProtocol, Rtnl,
};
use super::resolv::{self, RunFileError};
use super::{Ipv4Cidr, bring_up_loopback};
use crate::fatal::chain;

mod lease;

/// Packets handled per socket per `on_ready`: the poll is level-triggered, so a flood is
/// worked off a batch per loop turn and cannot starve init's other duties.
const RECV_BATCH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("opening the network configuration socket failed")]
    OpenRtnl(#[source] NetlinkError),
    #[error("bringing up loopback failed")]
    Loopback(#[source] NetlinkError),
    #[error("watching network interfaces failed")]
    WatchLinks(#[source] NetlinkError),
    #[error("listing network interfaces failed")]
    ListLinks(#[source] NetlinkError),
    #[error("bringing up {iface} failed")]
    BringUp {
        iface: String,
        #[source]
        source: NetlinkError,
    },
    #[error("{iface} has no Ethernet address, which DHCP needs")]
    NoMac { iface: String },
    #[error("setting up DHCP on {iface} failed")]
    DhcpSockets {
        iface: String,
        #[source]
        source: SocketError,
    },
    #[error("configuring the static address {address} on {iface} failed")]
    Static {
        iface: String,
        address: Ipv4Cidr,
        #[source]
        source: NetlinkError,
    },
    #[error("applying the DHCP lease {address} on {iface} failed")]
    ApplyLease {
        iface: String,
        address: Ipv4Cidr,
        #[source]
        source: NetlinkError,
    },
    #[error("removing the lost DHCP lease {address} from {iface} failed")]
    RemoveLease {
        iface: String,
        address: Ipv4Cidr,
        #[source]
        source: NetlinkError,
    },
    #[error("wrapping a DHCP message for {iface} failed")]
    Wrap {
        iface: String,
        #[source]
        source: FrameError,
    },
    #[error("the DHCP client of {iface} lost a socket")]
    Dhcp {
        iface: String,
        #[source]
        source: SocketError,
    },
    #[error("reading link events failed")]
    ReadLinkEvents(#[source] NetlinkError),
    #[error("updating the network files failed")]
    RunFile(#[source] RunFileError),
}

pub struct NetworkService {
    rtnl: Rtnl,
    watcher: LinkWatcher,
    hostname: String,
    extra_dns: Vec<IpAddr>,
    timing: DhcpTiming,
    paths: RunPaths,
    slots: Vec<Slot>,
    /// Events not yet handed to init; non-empty makes `next_deadline` due at once.
    pending: Vec<NetEvent>,
    started: Instant,
    /// What resolv.conf holds, so a renewal with the same servers does not rewrite it.
    last_resolv: Option<String>,
}

/// One configured interface and how far it got.
struct Slot {
    config: IfaceConfig,
    state: SlotState,
}

enum SlotState {
    /// Not present (yet): the next matching device to appear is configured.
    Waiting,
    /// Configuring failed (reported); retried if the device goes away and comes back.
    Failed {
        index: u32,
    },
    Static {
        iface: Iface,
    },
    Dhcp(Box<DhcpIface>),
}

struct DhcpIface {
    iface: Iface,
    client: Client,
    packet: PacketSocket,
    /// Exists while a lease is applied.
    unicast: Option<UnicastSocket>,
    carrier: bool,
    /// The lease configured on the interface.
    applied: Option<Lease>,
}

impl SlotState {
    fn index(&self) -> Option<u32> {
        match self {
            SlotState::Waiting => None,
            SlotState::Failed { index } => Some(*index),
            SlotState::Static { iface } => Some(iface.index),
            SlotState::Dhcp(d) => Some(d.iface.index),
        }
    }
}

impl NetworkService {
    /// Brings loopback up, writes the hosts file and resolv.conf, and configures every
    /// interface already present; DHCP clients whose link has carrier send their DISCOVER.
    /// What happened is returned by the first `on_timer` (due at once).
    pub fn start(
        config: NetConfig,
        paths: RunPaths,
        hostname: &str,
        now: Instant,
    ) -> Result<NetworkService, NetError> {
        let mut rtnl = Rtnl::open().map_err(NetError::OpenRtnl)?;
        bring_up_loopback(&mut rtnl).map_err(NetError::Loopback)?;
        // Subscribed before listing, so a device appearing in between is seen either way.
        let watcher = LinkWatcher::open().map_err(NetError::WatchLinks)?;
        let links = rtnl.links().map_err(NetError::ListLinks)?;
        let mut service = NetworkService {
            rtnl,
            watcher,
            hostname: hostname.to_owned(),
            extra_dns: config.extra_dns,
            timing: config.dhcp,
            paths,
            slots: config
                .interfaces
                .into_iter()
                .map(|config| Slot {
                    config,
                    state: SlotState::Waiting,
                })
                .collect(),
            pending: Vec::new(),
            started: now,
            last_resolv: None,
        };
        // The hosts file depends on nothing a lease changes: written once.
        let hosts = resolv::render_hosts_file(&service.hostname, &config.hosts)
            .and_then(|text| resolv::write_atomically(&service.paths.hosts, &text));
        if let Err(e) = hosts {
            service.warn(&NetError::RunFile(e));
        }
        for slot in 0..service.slots.len() {
            if let Some(link) = service.pick(slot, &links).cloned() {
                service.configure(slot, &link, now);
            }
        }
        service.write_resolv();
        Ok(service)
    }

    /// The link watcher, and each DHCP interface's sockets.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut fds = vec![self.watcher.as_fd()];
        for slot in &self.slots {
            if let SlotState::Dhcp(d) = &slot.state {
                fds.push(d.packet.as_fd());
                fds.extend(d.unicast.as_ref().map(AsFd::as_fd));
            }
        }
        fds
    }

    /// When `on_timer` has something to do: the earliest DHCP deadline, or at once when
    /// events wait to be reported.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.pending.is_empty() {
            return Some(self.started);
        }
        self.slots
            .iter()
            .filter_map(|slot| match &slot.state {
                SlotState::Dhcp(d) => d.client.next_deadline(),
                _ => None,
            })
            .min()
    }

    /// Reads whatever is waiting on every socket (link events, DHCP replies), without
    /// blocking, and acts on it.
    pub fn on_ready(&mut self, now: Instant) -> Vec<NetEvent> {
        self.read_link_events(now);
        let mut buf: RecvBuf = [0; RECV_BUF];
        for slot in 0..self.slots.len() {
            if let SlotState::Dhcp(d) = &self.slots[slot].state
                && let Some(unicast) = &d.unicast
            {
                unicast.drain();
            }
            for _ in 0..RECV_BATCH {
                let SlotState::Dhcp(d) = &mut self.slots[slot].state else {
                    break;
                };
                let len = match d.packet.try_recv(&mut buf) {
                    Ok(Some(len)) => len,
                    Ok(None) => break,
                    Err(source) => {
                        let iface = d.iface.name.clone();
                        self.warn(&NetError::Dhcp { iface, source });
                        break;
                    }
                };
                // Not UDP to port 68 with good checksums, or not a reply for this client
                // (another host's, a stale xid): nothing to act on, and nothing to report.
                let Ok(datagram) = frame::unwrap(&buf[..len]) else {
                    continue;
                };
                let Ok(actions) = d.client.handle_packet(datagram.payload, now) else {
                    continue;
                };
                self.run(slot, actions, now);
            }
        }
        std::mem::take(&mut self.pending)
    }

    /// Retransmits and lease timers that are due.
    pub fn on_timer(&mut self, now: Instant) -> Vec<NetEvent> {
        for slot in 0..self.slots.len() {
            if let SlotState::Dhcp(d) = &mut self.slots[slot].state {
                let actions = d.client.handle_timeout(now);
                self.run(slot, actions, now);
            }
        }
        std::mem::take(&mut self.pending)
    }

    /// The host's DNS servers in order: each interface's configured servers, or where it has
    /// none its lease's, then the extra servers; each once, at most three.
    pub fn dns_servers(&self) -> Vec<IpAddr> {
        let per_iface = self.slots.iter().flat_map(|slot| {
            let leased = match &slot.state {
                SlotState::Dhcp(d) if slot.config.dns.is_empty() => {
                    d.applied.as_ref().map(|l| l.dns.clone())
                }
                _ => None,
            };
            let leased = leased.unwrap_or_default().into_iter().map(IpAddr::V4);
            leased.chain(slot.config.dns.iter().copied())
        });
        resolv::merge_servers(per_iface.chain(self.extra_dns.iter().copied()))
    }

    fn warn(&mut self, err: &NetError) {
        self.pending.push(NetEvent::Warning(chain(err)));
    }

    /// The device `slot` should configure among `links`, if one is there and free.
    fn pick<'l>(&self, slot: usize, links: &'l [Link]) -> Option<&'l Link> {
        let mut free = links.iter().filter(|l| !self.claimed(slot, l));
        match &self.slots[slot].config.name {
            IfaceName::Named(name) => free.find(|l| l.iface.name == *name),
            IfaceName::Auto => free
                .filter(|l| l.link_type == LinkType::Ethernet)
                .min_by_key(|l| l.iface.index),
        }
    }

    /// Whether another slot has the device or names it.
    fn claimed(&self, slot: usize, link: &Link) -> bool {
        self.slots.iter().enumerate().any(|(i, other)| {
            i != slot
                && (other.state.index() == Some(link.iface.index)
                    || other.config.name == IfaceName::Named(link.iface.name.clone()))
        })
    }

    fn configure(&mut self, slot: usize, link: &Link, now: Instant) {
        let iface = link.iface.clone();
        let result = match self.slots[slot].config.mode.clone() {
            IfaceMode::Static {
                address,
                gateway,
                mtu,
            } => self.configure_static(&iface, address, gateway, mtu),
            IfaceMode::Dhcp => self.configure_dhcp(link),
        };
        match result {
            Ok(state) => self.slots[slot].state = state,
            Err(e) => {
                self.warn(&e);
                self.slots[slot].state = SlotState::Failed { index: iface.index };
                return;
            }
        }
        if let SlotState::Dhcp(d) = &mut self.slots[slot].state
            && d.carrier
        {
            let actions = d.client.start(now);
            self.pending.push(NetEvent::LinkUp {
                iface: iface.name.clone(),
            });
            self.run(slot, actions, now);
        }
    }

    fn configure_static(
        &mut self,
        iface: &Iface,
        address: Ipv4Cidr,
        gateway: Option<std::net::Ipv4Addr>,
        mtu: Option<u32>,
    ) -> Result<SlotState, NetError> {
        let fail = |source| NetError::Static {
            iface: iface.name.clone(),
            address,
            source,
        };
        self.rtnl.set_link_up(iface).map_err(fail)?;
        if let Some(mtu) = mtu {
            self.rtnl.set_mtu(iface, mtu).map_err(fail)?;
        }
        self.rtnl
            .replace_address(iface, &NewAddress::new(address))
            .map_err(fail)?;
        if let Some(gateway) = gateway {
            self.rtnl
                .replace_default_route(iface, address, gateway, RouteProtocol::Boot, None)
                .map_err(fail)?;
        }
        self.pending.push(NetEvent::StaticConfigured {
            iface: iface.name.clone(),
            address,
            gateway,
        });
        Ok(SlotState::Static {
            iface: iface.clone(),
        })
    }

    fn configure_dhcp(&mut self, link: &Link) -> Result<SlotState, NetError> {
        let iface = &link.iface;
        let mac = link.mac.ok_or_else(|| NetError::NoMac {
            iface: iface.name.clone(),
        })?;
        self.rtnl
            .set_link_up(iface)
            .map_err(|source| NetError::BringUp {
                iface: iface.name.clone(),
                source,
            })?;
        let packet = PacketSocket::open(iface).map_err(|source| NetError::DhcpSockets {
            iface: iface.name.clone(),
            source,
        })?;
        // The carrier as it is now that the link is up; later changes come as events.
        let carrier = self
            .rtnl
            .links()
            .map_err(NetError::ListLinks)?
            .iter()
            .any(|l| l.iface.index == iface.index && l.is_lower_up());
        let mut config = ClientConfig::new(mac.0);
        config.hostname = Some(self.hostname.clone()).filter(|h| !h.is_empty());
        config.renew_retransmit_floor = self.timing.renew_retransmit_floor;
        config.nak_delay = self.timing.nak_delay;
        Ok(SlotState::Dhcp(Box::new(DhcpIface {
            iface: iface.clone(),
            client: Client::new(config, seed(mac.0)),
            packet,
            unicast: None,
            carrier,
            applied: None,
        })))
    }

    fn read_link_events(&mut self, now: Instant) {
        let events = match self.watcher.read_events() {
            Ok(events) => events,
            Err(e) => return self.warn(&NetError::ReadLinkEvents(e)),
        };
        for event in events {
            let owner = (0..self.slots.len())
                .find(|&s| self.slots[s].state.index() == Some(event.iface.index));
            match owner {
                Some(slot) => self.link_changed(slot, &event, now),
                None if event.kind != LinkEventKind::Removed => self.link_appeared(&event, now),
                None => {}
            }
        }
    }

    /// A device no slot has: configure it if a waiting slot wants it.
    fn link_appeared(&mut self, event: &LinkEvent, now: Instant) {
        let waiting =
            (0..self.slots.len()).filter(|&s| matches!(self.slots[s].state, SlotState::Waiting));
        let waiting: Vec<usize> = waiting.collect();
        if waiting.is_empty() {
            return;
        }
        // The event lacks the MAC; the listing has it.
        let links = match self.rtnl.links() {
            Ok(links) => links,
            Err(e) => return self.warn(&NetError::ListLinks(e)),
        };
        let Some(link) = links.iter().find(|l| l.iface.index == event.iface.index) else {
            return; // gone again already
        };
        let one = std::slice::from_ref(link);
        // A slot naming the device before an Auto one, which would take any Ethernet device.
        let chosen = waiting
            .iter()
            .copied()
            .filter(|&s| self.slots[s].config.name != IfaceName::Auto)
            .chain(waiting.iter().copied())
            .find(|&s| self.pick(s, one).is_some());
        if let Some(slot) = chosen {
            self.configure(slot, link, now);
        }
    }

    fn link_changed(&mut self, slot: usize, event: &LinkEvent, now: Instant) {
        if event.kind == LinkEventKind::Removed {
            let old = std::mem::replace(&mut self.slots[slot].state, SlotState::Waiting);
            if let SlotState::Dhcp(d) = old {
                if d.carrier {
                    self.pending.push(NetEvent::LinkDown {
                        iface: d.iface.name.clone(),
                    });
                }
                // Its addresses and routes went with the device; its DNS servers go now.
                if d.applied.is_some() {
                    self.write_resolv();
                }
            }
            return;
        }
        let SlotState::Dhcp(d) = &self.slots[slot].state else {
            return;
        };
        if event.carrier == d.carrier {
            return;
        }
        // Events queue up while init is busy, so this one may predate the last change (our
        // own `set_link_up` among them): the kernel's current state decides.
        let carrier = self
            .rtnl
            .links()
            .ok()
            .and_then(|links| {
                links
                    .into_iter()
                    .find(|l| l.iface.index == event.iface.index)
            })
            .map_or(event.carrier, |l| l.is_lower_up());
        let SlotState::Dhcp(d) = &mut self.slots[slot].state else {
            return;
        };
        if carrier == d.carrier {
            return;
        }
        d.carrier = carrier;
        let iface = d.iface.name.clone();
        let actions = d.client.link_changed(carrier, now);
        self.pending.push(if carrier {
            NetEvent::LinkUp { iface }
        } else {
            NetEvent::LinkDown { iface }
        });
        self.run(slot, actions, now);
    }

    /// Rewrites resolv.conf if the servers (or the lease's domain) changed.
    fn write_resolv(&mut self) {
        let domain = self.slots.iter().find_map(|slot| match &slot.state {
            SlotState::Dhcp(d) => d.applied.as_ref().and_then(|l| l.domain.clone()),
            _ => None,
        });
        let text = resolv::render_resolv_conf(&self.dns_servers(), domain.as_deref());
        if self.last_resolv.as_ref() == Some(&text) {
            return;
        }
        match resolv::write_atomically(&self.paths.resolv_conf, &text) {
            Ok(()) => self.last_resolv = Some(text),
            Err(e) => self.warn(&NetError::RunFile(e)),
        }
    }
}

/// The client's random seed: std's per-process random keys (from getrandom, without
/// blocking at early boot), mixed with the MAC so two interfaces differ.
fn seed(mac: [u8; 6]) -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write(&mac);
    hasher.finish()
}
