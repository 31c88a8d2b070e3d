//! The netlink code against the running kernel, each test in a fresh network namespace of its
//! own (a dedicated thread that unshares CLONE_NEWNET) with TAP devices from /dev/net/tun as
//! the Ethernet NICs. Needs root, which CI has: without it the tests fail, saying so.

use std::fs::OpenOptions;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::CloneFlags;

use super::netlink::{
    Iface, Link, LinkEvent, LinkEventKind, LinkType, LinkWatcher, NetlinkError, NewAddress,
    RouteProtocol, RouteSpec, Rtnl,
};
use super::{Ipv4Cidr, bring_up_loopback, first_ethernet};

/// Runs `f` on a new thread inside a new, empty network namespace (only `lo`, down).
pub(super) fn in_netns(f: impl FnOnce() + Send + 'static) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the net:: namespace tests create network namespaces and TAP devices and need root; \
         run `cargo test -p init --lib net::` as root (CI does)"
    );
    let thread = std::thread::spawn(move || {
        // Namespaces are per thread: this one never returns to a pool and its namespace goes
        // with it, taking the TAP devices along.
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        f()
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// A TAP device; it exists while the fd is open, unless made persistent.
pub(super) struct Tap {
    pub(super) fd: OwnedFd,
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data (a name array and a union of integers and sockaddrs);
    // all zeroes is a valid value of it.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr
}

impl Tap {
    pub(super) fn create(name: &str) -> Tap {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .expect("open /dev/net/tun");
        let mut ifr = ifreq(name);
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which `ifr` is, for the whole call;
        // the fd is an open /dev/net/tun.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
        assert_eq!(rc, 0, "TUNSETIFF {name}: {}", io::Error::last_os_error());
        Tap { fd: file.into() }
    }

    /// A persistent TAP outlives its fd, with the carrier off while no fd is attached.
    pub(super) fn persist(&self) {
        // SAFETY: TUNSETPERSIST takes its argument by value; the fd is an attached TAP.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TUNSETPERSIST, 1) };
        assert_eq!(rc, 0, "TUNSETPERSIST: {}", io::Error::last_os_error());
    }
}

/// The MAC as SIOCGIFHWADDR reports it: a second source to check the dump against.
fn hwaddr_by_ioctl(name: &str) -> [u8; 6] {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("a UDP socket for the ioctl");
    let mut ifr = ifreq(name);
    // SAFETY: SIOCGIFHWADDR writes one ifreq, which `ifr` is, for the whole call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut ifr) };
    assert_eq!(
        rc,
        0,
        "SIOCGIFHWADDR {name}: {}",
        io::Error::last_os_error()
    );
    // SAFETY: SIOCGIFHWADDR filled the union's hwaddr member.
    let data = unsafe { ifr.ifr_ifru.ifru_hwaddr.sa_data };
    std::array::from_fn(|i| data[i] as u8)
}

fn link(rtnl: &mut Rtnl, name: &str) -> Link {
    rtnl.link_by_name(name)
        .unwrap()
        .unwrap_or_else(|| panic!("{name} not listed"))
}

fn cidr(addr: [u8; 4], prefix: u8) -> Ipv4Cidr {
    Ipv4Cidr::new(Ipv4Addr::from(addr), prefix).unwrap()
}

/// Reads events until one matches (polling the watcher's fd, as init's loop does), or fails
/// after two seconds showing everything seen.
fn wait_for(watcher: &mut LinkWatcher, what: &str, want: impl Fn(&LinkEvent) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut seen = Vec::new();
    loop {
        let batch = watcher.read_events().unwrap();
        if batch.iter().any(&want) {
            return;
        }
        seen.extend(batch);
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no event {what}; saw {seen:#?}");
        let mut fds = [PollFd::new(watcher.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        poll(&mut fds, PollTimeout::from(ms)).unwrap();
    }
}

#[test]
fn loopback_comes_up_with_127_0_0_1() {
    in_netns(|| {
        let mut rtnl = Rtnl::open().unwrap();
        let lo = link(&mut rtnl, "lo");
        assert_eq!(lo.link_type, LinkType::Loopback);
        assert!(!lo.is_up(), "a new namespace's lo starts down");

        let iface = bring_up_loopback(&mut rtnl).unwrap();
        assert_eq!(iface.name, "lo");
        assert!(link(&mut rtnl, "lo").is_up());
        let addrs = rtnl.addresses_of(&iface).unwrap();
        assert!(
            addrs.iter().any(|a| a.cidr == Ipv4Cidr::LOCALHOST),
            "the kernel adds 127.0.0.1/8 when lo goes up: {addrs:?}"
        );
        // A second call (init restarted its network setup) changes nothing and succeeds.
        bring_up_loopback(&mut rtnl).unwrap();
        std::net::UdpSocket::bind("127.0.0.1:0").expect("127.0.0.1 is usable");
    });
}

#[test]
fn loopback_gets_127_0_0_1_back_if_it_was_removed() {
    in_netns(|| {
        let mut rtnl = Rtnl::open().unwrap();
        let lo = bring_up_loopback(&mut rtnl).unwrap();
        rtnl.delete_address(&lo, Ipv4Cidr::LOCALHOST).unwrap();
        bring_up_loopback(&mut rtnl).unwrap();
        let addrs = rtnl.addresses_of(&lo).unwrap();
        assert!(addrs.iter().any(|a| a.cidr == Ipv4Cidr::LOCALHOST));
    });
}

#[test]
fn tap_is_listed_as_ethernet_with_its_mac() {
    in_netns(|| {
        let _tap = Tap::create("tap0");
        let mut rtnl = Rtnl::open().unwrap();
        let links = rtnl.links().unwrap();
        let tap = links.iter().find(|l| l.iface.name == "tap0").unwrap();
        assert_eq!(tap.link_type, LinkType::Ethernet);
        assert_eq!(tap.mac.unwrap().0, hwaddr_by_ioctl("tap0"));
        assert_eq!(tap.mtu, Some(1500));
        assert!(!tap.is_up());
        assert_eq!(first_ethernet(&links).unwrap().iface.name, "tap0");
    });
}

#[test]
fn first_ethernet_is_the_lowest_index_and_never_loopback() {
    in_netns(|| {
        let mut rtnl = Rtnl::open().unwrap();
        bring_up_loopback(&mut rtnl).unwrap();
        assert!(
            first_ethernet(&rtnl.links().unwrap()).is_none(),
            "lo alone is no Ethernet device"
        );
        // Created in this order, so tapb has the lower index despite its name.
        let _b = Tap::create("tapb");
        let _a = Tap::create("tapa");
        let links = rtnl.links().unwrap();
        assert_eq!(first_ethernet(&links).unwrap().iface.name, "tapb");
    });
}

#[test]
fn set_up_and_down_are_reflected_in_the_flags() {
    in_netns(|| {
        let _tap = Tap::create("tap0");
        let mut rtnl = Rtnl::open().unwrap();
        let iface = link(&mut rtnl, "tap0").iface;
        rtnl.set_link_up(&iface).unwrap();
        let up = link(&mut rtnl, "tap0");
        assert!(up.is_up());
        // The fd is attached, so the TAP has carrier.
        assert!(up.is_lower_up(), "{up:?}");
        assert_eq!(up.carrier, Some(true));
        // (Its operstate stays UNKNOWN: TUN does not report one, so it is not checked here.)
        rtnl.set_link_down(&iface).unwrap();
        assert!(!link(&mut rtnl, "tap0").is_up());
    });
}

#[test]
fn mtu_is_set_and_read_back_and_an_impossible_one_names_the_interface() {
    in_netns(|| {
        let _tap = Tap::create("tap0");
        let mut rtnl = Rtnl::open().unwrap();
        let iface = link(&mut rtnl, "tap0").iface;
        rtnl.set_mtu(&iface, 1400).unwrap();
        assert_eq!(link(&mut rtnl, "tap0").mtu, Some(1400));

        let err = rtnl.set_mtu(&iface, 10).unwrap_err();
        assert!(
            matches!(&err, NetlinkError::SetMtu { iface: i, mtu: 10, source }
                if *i == iface && source.raw_os_error() == Some(libc::EINVAL)),
            "{err:?}"
        );
        assert!(err.to_string().contains("tap0"), "{err}");
    });
}

#[test]
fn address_and_default_route_are_configured_listed_and_removed() {
    in_netns(|| {
        let _tap = Tap::create("tap0");
        let mut rtnl = Rtnl::open().unwrap();
        let iface = link(&mut rtnl, "tap0").iface;
        rtnl.set_link_up(&iface).unwrap();

        let addr = cidr([10, 0, 2, 15], 24);
        rtnl.add_address(&iface, &NewAddress::new(addr)).unwrap();
        let listed = rtnl.addresses_of(&iface).unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].cidr, addr);
        assert_eq!(listed[0].broadcast, Some(Ipv4Addr::new(10, 0, 2, 255)));
        assert_eq!(
            listed[0].lifetime, None,
            "added without a lifetime: permanent"
        );

        let gateway = Ipv4Addr::new(10, 0, 2, 2);
        rtnl.replace_default_route(&iface, addr, gateway, RouteProtocol::Dhcp, Some(100))
            .unwrap();
        let routes = rtnl.routes().unwrap();
        let default = routes
            .iter()
            .find(|r| r.is_default() && r.table == 254)
            .unwrap_or_else(|| panic!("no default route in {routes:#?}"));
        assert_eq!(default.gateway, Some(gateway));
        assert_eq!(default.oif, Some(iface.index));
        assert_eq!(default.metric, Some(100));
        assert_eq!(default.protocol, RouteProtocol::Dhcp.raw());
        assert!(
            !routes.iter().any(|r| r.dst == Ipv4Cidr::host(gateway)),
            "a gateway inside the subnet needs no on-link route: {routes:#?}"
        );
        // The renewal path: setting the same default route again is not an error.
        rtnl.replace_default_route(&iface, addr, gateway, RouteProtocol::Dhcp, Some(100))
            .unwrap();
        let defaults = rtnl
            .routes()
            .unwrap()
            .into_iter()
            .filter(|r| r.is_default())
            .count();
        assert_eq!(defaults, 1);

        let spec = RouteSpec::default_via(gateway, RouteProtocol::Dhcp).with_metric(100);
        rtnl.delete_route(&iface, &spec).unwrap();
        assert!(!rtnl.routes().unwrap().iter().any(|r| r.is_default()));
        let err = rtnl.delete_route(&iface, &spec).unwrap_err();
        assert!(matches!(err, NetlinkError::DeleteRoute { .. }), "{err:?}");

        rtnl.delete_address(&iface, addr).unwrap();
        assert!(rtnl.addresses_of(&iface).unwrap().is_empty());
    });
}

#[test]
fn adding_an_address_twice_fails_and_replacing_updates_its_lifetime() {
    in_netns(|| {
        let _tap = Tap::create("tap0");
        let mut rtnl = Rtnl::open().unwrap();
        let iface = link(&mut rtnl, "tap0").iface;
        let addr = cidr([10, 0, 2, 15], 24);
        rtnl.add_address(&iface, &NewAddress::new(addr).with_lifetime(600, 300))
            .unwrap();
        let err = rtnl
            .add_address(&iface, &NewAddress::new(addr))
            .unwrap_err();
        assert!(
            matches!(&err, NetlinkError::AddAddress { source, .. }
                if source.raw_os_error() == Some(libc::EEXIST)),
            "{err:?}"
        );

        // A renewed lease: same address, longer lifetime, still one address.
        rtnl.replace_address(&iface, &NewAddress::new(addr).with_lifetime(86400, 43200))
            .unwrap();
        let listed = rtnl.addresses_of(&iface).unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        let life = listed[0].lifetime.unwrap();
        assert!(
            life.valid_secs > 86000 && life.valid_secs <= 86400,
            "{life:?}"
        );
        assert!(
            life.preferred_secs > 43000 && life.preferred_secs <= 43200,
            "{life:?}"
        );
    });
}

#[test]
fn a_gateway_outside_a_slash_32_gets_an_on_link_route_first() {
    in_netns(|| {
        let _tap = Tap::create("tap0");
        let mut rtnl = Rtnl::open().unwrap();
        let iface = link(&mut rtnl, "tap0").iface;
        rtnl.set_link_up(&iface).unwrap();
        let addr = cidr([10, 128, 0, 5], 32);
        rtnl.add_address(&iface, &NewAddress::new(addr)).unwrap();
        let gateway = Ipv4Addr::new(10, 128, 0, 1);

        // Why the on-link route exists: without it the kernel refuses the default route.
        let err = rtnl
            .add_route(
                &iface,
                &RouteSpec::default_via(gateway, RouteProtocol::Dhcp),
            )
            .unwrap_err();
        assert!(
            matches!(&err, NetlinkError::AddRoute { source, .. }
                if source.raw_os_error() == Some(libc::ENETUNREACH)),
            "{err:?}"
        );

        rtnl.replace_default_route(&iface, addr, gateway, RouteProtocol::Dhcp, None)
            .unwrap();
        let routes = rtnl.routes().unwrap();
        let on_link = routes
            .iter()
            .find(|r| r.dst == Ipv4Cidr::host(gateway) && r.table == 254)
            .unwrap_or_else(|| panic!("no on-link route to the gateway in {routes:#?}"));
        assert_eq!(on_link.gateway, None);
        assert_eq!(on_link.scope, 253, "scope link");
        assert!(
            routes
                .iter()
                .any(|r| r.is_default() && r.gateway == Some(gateway))
        );
    });
}

#[test]
fn flush_removes_every_address_of_the_link_and_only_those() {
    in_netns(|| {
        let _tap = Tap::create("tap0");
        let mut rtnl = Rtnl::open().unwrap();
        let lo = bring_up_loopback(&mut rtnl).unwrap();
        let iface = link(&mut rtnl, "tap0").iface;
        for a in [
            cidr([10, 0, 2, 15], 24),
            cidr([10, 0, 2, 16], 24),
            cidr([192, 168, 7, 1], 24),
        ] {
            rtnl.add_address(&iface, &NewAddress::new(a)).unwrap();
        }
        let removed = rtnl.flush_addresses(&iface).unwrap();
        // 10.0.2.16 is a secondary of 10.0.2.15 and goes with it.
        assert!((2..=3).contains(&removed), "{removed}");
        assert!(rtnl.addresses_of(&iface).unwrap().is_empty());
        assert!(
            !rtnl.addresses_of(&lo).unwrap().is_empty(),
            "lo keeps 127.0.0.1"
        );
        assert_eq!(rtnl.flush_addresses(&iface).unwrap(), 0);
    });
}

#[test]
fn adding_an_address_to_a_missing_interface_names_it() {
    in_netns(|| {
        let mut rtnl = Rtnl::open().unwrap();
        let ghost = Iface {
            index: 4242,
            name: "ghost0".into(),
        };
        let addr = cidr([10, 0, 2, 15], 24);
        let err = rtnl
            .add_address(&ghost, &NewAddress::new(addr))
            .unwrap_err();
        match &err {
            NetlinkError::AddAddress {
                iface,
                addr: a,
                source,
            } => {
                assert_eq!(iface, &ghost);
                assert_eq!(*a, addr);
                assert_eq!(source.raw_os_error(), Some(libc::ENODEV));
            }
            other => panic!("expected AddAddress, got {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "adding 10.0.2.15/24 to ghost0 (index 4242) failed"
        );
        let err = rtnl.set_link_up(&ghost).unwrap_err();
        assert!(matches!(err, NetlinkError::SetLinkUp { .. }), "{err:?}");
    });
}

#[test]
fn a_new_tap_is_reported_as_added_and_its_removal_as_removed() {
    in_netns(|| {
        let mut watcher = LinkWatcher::open().unwrap();
        let mut rtnl = Rtnl::open().unwrap();
        bring_up_loopback(&mut rtnl).unwrap();
        let lo_events = watcher.read_events().unwrap();
        assert!(
            lo_events.iter().all(|e| e.kind == LinkEventKind::Changed),
            "lo was known when the watcher opened: {lo_events:#?}"
        );

        let tap = Tap::create("tap0");
        wait_for(&mut watcher, "adding tap0", |e| {
            e.kind == LinkEventKind::Added
                && e.iface.name == "tap0"
                && e.link_type == LinkType::Ethernet
        });
        drop(tap);
        wait_for(&mut watcher, "removing tap0", |e| {
            e.kind == LinkEventKind::Removed && e.iface.name == "tap0"
        });
        assert!(
            watcher.read_events().unwrap().is_empty(),
            "nothing else is pending"
        );
    });
}

#[test]
fn carrier_loss_and_link_down_are_reported() {
    in_netns(|| {
        let tap = Tap::create("tap0");
        tap.persist();
        let mut rtnl = Rtnl::open().unwrap();
        let iface = link(&mut rtnl, "tap0").iface;
        let mut watcher = LinkWatcher::open().unwrap();

        rtnl.set_link_up(&iface).unwrap();
        wait_for(&mut watcher, "tap0 up with carrier", |e| {
            e.kind == LinkEventKind::Changed && e.iface == iface && e.up && e.carrier
        });
        // The fd is the TAP's cable: closing it on a persistent TAP drops the carrier.
        drop(tap);
        wait_for(&mut watcher, "tap0 losing carrier", |e| {
            e.iface == iface && e.up && !e.carrier
        });
        assert!(!link(&mut rtnl, "tap0").is_lower_up());

        rtnl.set_link_down(&iface).unwrap();
        wait_for(&mut watcher, "tap0 down", |e| e.iface == iface && !e.up);
    });
}

#[test]
fn events_lost_to_a_full_socket_buffer_are_recovered_by_a_fresh_listing() {
    in_netns(|| {
        let mut rtnl = Rtnl::open().unwrap();
        let gone = Tap::create("tapgone");
        let mut watcher = LinkWatcher::open().unwrap();
        // The smallest buffer the kernel allows holds one or two link messages.
        rustix::net::sockopt::set_socket_recv_buffer_size(watcher.as_fd(), 1).unwrap();

        let taps: Vec<Tap> = (0..3).map(|i| Tap::create(&format!("tap{i}"))).collect();
        for _ in 0..10 {
            for i in 0..3 {
                let iface = link(&mut rtnl, &format!("tap{i}")).iface;
                rtnl.set_link_up(&iface).unwrap();
                rtnl.set_link_down(&iface).unwrap();
            }
        }
        drop(gone);

        let events = watcher.read_events().unwrap();
        for i in 0..3 {
            let name = format!("tap{i}");
            assert!(
                events
                    .iter()
                    .any(|e| e.kind == LinkEventKind::Added && e.iface.name == name),
                "{name} added; saw {events:#?}"
            );
        }
        assert!(
            events
                .iter()
                .any(|e| e.kind == LinkEventKind::Removed && e.iface.name == "tapgone"),
            "tapgone removed; saw {events:#?}"
        );
        drop(taps);
    });
}
