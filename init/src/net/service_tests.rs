//! The network service against the running kernel, each test in a fresh network namespace
//! (see `tests.rs`): a TAP device is the NIC, and a test DHCP server (`test_server`) on its
//! fd is the other end of the wire. The service runs in a poll loop on the test thread, as in
//! init. Timeouts are generous and nothing asserts on how long anything took.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use hostnet::dhcp::{LossReason, MessageType};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::Ipv4Cidr;
use super::config::{DhcpTiming, IfaceConfig, IfaceMode, IfaceName, NetConfig, RunPaths};
use super::dhcp_io::{PacketSocket, RECV_BUF};
use super::event::NetEvent;
use super::netlink::{RouteProtocol, Rtnl};
use super::service::NetworkService;
use super::test_server::{self, CLIENT, Command, DNS, SERVER, SERVER_MAC, Seen, Server};
use super::tests::{Tap, in_netns};

/// Long enough for a loaded CI machine; a passing run takes a few seconds.
const PATIENCE: Duration = Duration::from_secs(60);

struct Harness {
    service: NetworkService,
    dir: tempfile::TempDir,
    events: Vec<NetEvent>,
    seen: Vec<Seen>,
}

impl Harness {
    fn start(config: NetConfig) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let paths = RunPaths {
            resolv_conf: dir.path().join("hostos/resolv.conf"),
            hosts: dir.path().join("hostos/hosts"),
        };
        let service = NetworkService::start(config, paths, "testhost", Instant::now()).unwrap();
        Harness {
            service,
            dir,
            events: Vec::new(),
            seen: Vec::new(),
        }
    }

    fn file(&self, name: &str) -> String {
        fs::read_to_string(self.dir.path().join("hostos").join(name)).unwrap()
    }

    /// Runs the service's poll loop until `done` holds for what it reported and what the
    /// server saw; fails after `PATIENCE` showing both.
    fn run_until(
        &mut self,
        server: Option<&Server>,
        what: &str,
        done: impl Fn(&[NetEvent], &[Seen]) -> bool,
    ) {
        let give_up = Instant::now() + PATIENCE;
        loop {
            if let Some(server) = server {
                self.seen.extend(server.seen.try_iter());
            }
            if done(&self.events, &self.seen) {
                return;
            }
            let now = Instant::now();
            assert!(
                now < give_up,
                "{what}: not seen; events {:#?}; server saw {:#?}",
                self.events,
                self.seen
            );
            // Short polls, so the server's observations are looked at often.
            let wait = self
                .service
                .next_deadline()
                .map_or(Duration::from_millis(100), |at| {
                    at.saturating_duration_since(now)
                })
                .min(Duration::from_millis(100));
            let fds = self.service.fds();
            let mut polled: Vec<PollFd> = fds
                .iter()
                .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
                .collect();
            let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
            poll(&mut polled, PollTimeout::from(ms)).unwrap();
            drop(polled);
            drop(fds);
            let now = Instant::now();
            let ready = self.service.on_ready(now);
            self.events.extend(ready);
            if self.service.next_deadline().is_some_and(|at| at <= now) {
                let due = self.service.on_timer(now);
                self.events.extend(due);
            }
        }
    }
}

fn dhcp_config() -> NetConfig {
    NetConfig {
        hosts: vec![("registry.lan".into(), IpAddr::from([10, 0, 2, 100]))],
        extra_dns: vec![IpAddr::from([1, 1, 1, 1])],
        dhcp: DhcpTiming {
            renew_retransmit_floor: Duration::from_secs(1),
            nak_delay: Duration::from_millis(200),
        },
        ..NetConfig::default()
    }
}

fn cidr(addr: Ipv4Addr, prefix: u8) -> Ipv4Cidr {
    Ipv4Cidr::new(addr, prefix).unwrap()
}

fn acquired(events: &[NetEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, NetEvent::LeaseAcquired { address, .. } if address.addr() == CLIENT))
}

fn count(events: &[NetEvent], pick: impl Fn(&NetEvent) -> bool) -> usize {
    events.iter().filter(|e| pick(e)).count()
}

/// The address and default route the kernel has for the TAP.
fn tap_state(name: &str) -> (Vec<Ipv4Cidr>, Option<Ipv4Addr>) {
    let mut rtnl = Rtnl::open().unwrap();
    let iface = rtnl.link_by_name(name).unwrap().unwrap().iface;
    let addrs = rtnl
        .addresses_of(&iface)
        .unwrap()
        .into_iter()
        .map(|a| a.cidr)
        .collect();
    let gateway = rtnl
        .routes()
        .unwrap()
        .into_iter()
        .find(|r| r.is_default() && r.table == 254 && r.oif == Some(iface.index))
        .inspect(|r| assert_eq!(r.protocol, RouteProtocol::Dhcp.raw(), "{r:?}"))
        .and_then(|r| r.gateway);
    (addrs, gateway)
}

#[test]
fn dhcp_lease_on_a_late_nic_is_applied_renewed_by_unicast_and_removed_on_nak() {
    in_netns(|| {
        // The service starts before the NIC exists, as when a device probes after init.
        let mut h = Harness::start(dhcp_config());
        assert!(h.file("hosts").contains("10.0.2.100\tregistry.lan\n"));
        assert!(h.file("hosts").contains("127.0.1.1\ttesthost\n"));
        assert_eq!(h.file("resolv.conf"), "nameserver 1.1.1.1\n");

        let tap = Tap::create("tap0");
        tap.persist();
        let server = Server::spawn(tap, "tap0");
        h.run_until(Some(&server), "a lease", |events, _| acquired(events));

        let lease = h
            .events
            .iter()
            .find(|e| matches!(e, NetEvent::LeaseAcquired { .. }));
        let Some(NetEvent::LeaseAcquired {
            iface,
            address,
            gateway,
            dns,
            lease_secs,
        }) = lease
        else {
            unreachable!()
        };
        assert_eq!(iface, "tap0");
        assert_eq!(*address, cidr(CLIENT, 24));
        assert_eq!(*gateway, Some(SERVER));
        assert_eq!(*dns, vec![IpAddr::V4(DNS), IpAddr::from([1, 1, 1, 1])]);
        assert_eq!(*lease_secs, u64::from(test_server::LEASE_SECS));
        assert_eq!(h.service.dns_servers(), *dns);
        assert_eq!(tap_state("tap0"), (vec![cidr(CLIENT, 24)], Some(SERVER)));
        assert_eq!(
            h.file("resolv.conf"),
            "nameserver 10.0.2.3\nnameserver 1.1.1.1\n"
        );

        // T1 is 2 s: the renewal goes unicast through the kernel, which ARPs for the server.
        h.run_until(Some(&server), "a renewal", |events, _| {
            events
                .iter()
                .any(|e| matches!(e, NetEvent::LeaseRenewed { .. }))
        });
        let renewal = h
            .seen
            .iter()
            .find(|s| s.message_type == MessageType::Request && s.ciaddr == CLIENT)
            .unwrap_or_else(|| panic!("no REQUEST with ciaddr set in {:#?}", h.seen));
        assert_eq!(renewal.ip_destination, SERVER, "{renewal:?}");
        assert_eq!(renewal.eth_destination, SERVER_MAC, "{renewal:?}");
        assert_eq!(tap_state("tap0").0, vec![cidr(CLIENT, 24)]);

        server.commands.send(Command::NakNext).unwrap();
        h.run_until(Some(&server), "the lease lost to a NAK", |events, _| {
            events.iter().any(|e| {
                matches!(
                    e,
                    NetEvent::LeaseLost {
                        reason: LossReason::Nak,
                        ..
                    }
                )
            })
        });
        // Checked before the client's next DISCOVER can win the address back (it waits
        // `nak_delay`, and this loop is not driven meanwhile).
        assert_eq!(tap_state("tap0"), (vec![], None));
        assert_eq!(h.file("resolv.conf"), "nameserver 1.1.1.1\n");
        assert_eq!(h.service.dns_servers(), vec![IpAddr::from([1, 1, 1, 1])]);
        let warnings = count(&h.events, |e| matches!(e, NetEvent::Warning(_)));
        assert_eq!(warnings, 0, "{:#?}", h.events);
    });
}

#[test]
fn carrier_loss_and_return_confirm_the_lease_with_init_reboot() {
    in_netns(|| {
        let tap = Tap::create("tap0");
        tap.persist();
        let server = Server::spawn(tap, "tap0");
        let mut h = Harness::start(dhcp_config());
        h.run_until(Some(&server), "a lease", |events, _| acquired(events));
        let downs = |e: &NetEvent| matches!(e, NetEvent::LinkDown { iface } if iface == "tap0");

        server.commands.send(Command::Unplug).unwrap();
        h.run_until(Some(&server), "carrier lost", |events, _| {
            count(events, downs) == 1
        });
        // The lease is kept while the cable is out: the address stays.
        assert_eq!(tap_state("tap0").0, vec![cidr(CLIENT, 24)]);

        let before = h.seen.len();
        server.commands.send(Command::Plug).unwrap();
        h.run_until(Some(&server), "an INIT-REBOOT REQUEST", |_, seen| {
            seen[before..].iter().any(|s| {
                s.message_type == MessageType::Request
                    && s.ciaddr == Ipv4Addr::UNSPECIFIED
                    && s.requested_ip == Some(CLIENT)
                    && s.ip_destination == Ipv4Addr::BROADCAST
            })
        });
        h.run_until(Some(&server), "the lease confirmed", |events, _| {
            let after_down = events.iter().skip_while(|e| !downs(e));
            after_down
                .filter(|e| matches!(e, NetEvent::LinkUp { .. } | NetEvent::LeaseRenewed { .. }))
                .count()
                >= 2
        });
        assert!(
            !h.seen[before..]
                .iter()
                .any(|s| s.message_type == MessageType::Discover),
            "a valid lease is confirmed, not started over: {:#?}",
            h.seen
        );
        assert_eq!(tap_state("tap0"), (vec![cidr(CLIENT, 24)], Some(SERVER)));
    });
}

#[test]
fn static_config_applies_address_route_and_mtu_at_once() {
    in_netns(|| {
        let _other = Tap::create("tap0");
        let _wanted = Tap::create("uplink");
        let address = cidr(Ipv4Addr::new(192, 168, 7, 2), 24);
        let gateway = Ipv4Addr::new(192, 168, 7, 1);
        let config = NetConfig {
            interfaces: vec![IfaceConfig {
                name: IfaceName::Named("uplink".into()),
                mode: IfaceMode::Static {
                    address,
                    gateway: Some(gateway),
                    mtu: Some(1400),
                },
                dns: vec![IpAddr::from([192, 168, 7, 53])],
            }],
            ..NetConfig::default()
        };
        let mut h = Harness::start(config);
        assert!(
            h.service.next_deadline().is_some(),
            "the events are due at once"
        );
        let events = h.service.on_timer(Instant::now());
        assert_eq!(
            events,
            vec![NetEvent::StaticConfigured {
                iface: "uplink".into(),
                address,
                gateway: Some(gateway),
            }]
        );
        assert_eq!(
            h.service.next_deadline(),
            None,
            "a static interface has no timers"
        );
        assert_eq!(h.file("resolv.conf"), "nameserver 192.168.7.53\n");

        let mut rtnl = Rtnl::open().unwrap();
        let link = rtnl.link_by_name("uplink").unwrap().unwrap();
        assert!(link.is_up());
        assert_eq!(link.mtu, Some(1400));
        let addrs: Vec<_> = rtnl.addresses_of(&link.iface).unwrap();
        assert_eq!(
            addrs.iter().map(|a| a.cidr).collect::<Vec<_>>(),
            vec![address]
        );
        assert_eq!(addrs[0].lifetime, None, "a static address is permanent");
        let routes = rtnl.routes().unwrap();
        assert!(
            routes.iter().any(|r| r.is_default()
                && r.gateway == Some(gateway)
                && r.oif == Some(link.iface.index)),
            "{routes:#?}"
        );
        let tap0 = rtnl.link_by_name("tap0").unwrap().unwrap();
        assert!(!tap0.is_up(), "the unnamed device is left alone");
    });
}

#[test]
fn an_auto_interface_moves_to_the_next_ethernet_device_when_its_own_goes_away() {
    in_netns(|| {
        let first = Tap::create("tap0");
        let mut h = Harness::start(dhcp_config());
        let up = |name: &'static str| move |e: &NetEvent| matches!(e, NetEvent::LinkUp { iface } if iface == name);
        h.run_until(None, "tap0 up", |events, _| events.iter().any(up("tap0")));

        drop(first);
        h.run_until(None, "tap0 gone", |events, _| {
            events
                .iter()
                .any(|e| matches!(e, NetEvent::LinkDown { iface } if iface == "tap0"))
        });
        let _second = Tap::create("tap1");
        h.run_until(None, "tap1 taken over", |events, _| {
            events.iter().any(up("tap1"))
        });
        let mut rtnl = Rtnl::open().unwrap();
        assert!(rtnl.link_by_name("tap1").unwrap().unwrap().is_up());
    });
}

#[test]
fn a_hostname_the_hosts_file_cannot_hold_is_a_warning_not_a_failure() {
    in_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let paths = RunPaths {
            resolv_conf: dir.path().join("resolv.conf"),
            hosts: dir.path().join("hosts"),
        };
        let config = NetConfig {
            interfaces: vec![],
            extra_dns: vec![IpAddr::from([1, 1, 1, 1])],
            ..NetConfig::default()
        };
        let mut service = NetworkService::start(config, paths, "bad name", Instant::now()).unwrap();
        let events = service.on_timer(Instant::now());
        assert!(
            matches!(&events[..], [NetEvent::Warning(w)] if w.contains("bad name")),
            "{events:#?}"
        );
        assert!(!dir.path().join("hosts").exists());
        let resolv = fs::read_to_string(dir.path().join("resolv.conf")).unwrap();
        assert_eq!(resolv, "nameserver 1.1.1.1\n");
    });
}

#[test]
fn the_packet_socket_sees_udp_to_port_68_and_nothing_else() {
    in_netns(|| {
        let tap = Tap::create("tap0");
        let mut rtnl = Rtnl::open().unwrap();
        let iface = rtnl.link_by_name("tap0").unwrap().unwrap().iface;
        rtnl.set_link_up(&iface).unwrap();
        let socket = PacketSocket::open(&iface).unwrap();
        let frame = |port: u16, payload: &[u8]| {
            let mut frame = vec![0xff; 6];
            frame.extend(SERVER_MAC);
            frame.extend([0x08, 0x00]);
            frame.extend(test_server::ipv4_udp(Ipv4Addr::BROADCAST, port, payload));
            frame
        };
        // Another service's broadcast, then a DHCP reply's: only the second gets through.
        rustix::io::write(&tap.fd, &frame(9999, b"not for dhcp")).unwrap();
        rustix::io::write(&tap.fd, &frame(68, b"for the client")).unwrap();
        let mut buf = [0u8; RECV_BUF];
        let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(5000u16)).unwrap();
        let len = socket
            .try_recv(&mut buf)
            .unwrap()
            .expect("the port 68 datagram");
        let datagram = hostnet::dhcp::frame::unwrap(&buf[..len]).unwrap();
        assert_eq!(datagram.payload, b"for the client");
        assert_eq!(
            socket.try_recv(&mut buf).unwrap(),
            None,
            "nothing else queued"
        );
    });
}
