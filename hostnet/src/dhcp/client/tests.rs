//! The client against recorded replies (QEMU's user network, ISC dhcpd) and a fake clock.

use super::*;
use crate::dhcp::frame;
use crate::dhcp::options::Route;

const QEMU_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const ISC_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0xaa, 0xbb, 0xcc];
const QEMU_SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const QEMU_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const SEED: u64 = 7;

mod renewal;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/test_data/dhcp/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.split_whitespace()
        .map(|byte| u8::from_str_radix(byte, 16).unwrap())
        .collect()
}

/// A recorded reply replayed for the client's current transaction.
fn replay(name: &str, client: &Client) -> Vec<u8> {
    let mut bytes = fixture(name);
    bytes[4..8].copy_from_slice(&client.state.exchange().unwrap().xid.to_be_bytes());
    bytes
}

/// A reply built for the client's current transaction, for cases no fixture covers.
fn reply(client: &Client, message_type: MessageType, yiaddr: Ipv4Addr, lease_secs: u32) -> Message {
    let xid = client.state.exchange().unwrap().xid;
    let mut message = Message::new(Op::Reply, message_type, xid, client.config.mac);
    message.yiaddr = yiaddr;
    message.options.server_id = Some(QEMU_SERVER);
    message.options.lease_time = Some(lease_secs);
    message.options.subnet_mask = Some(Ipv4Addr::new(255, 255, 255, 0));
    message.options.routers = vec![QEMU_SERVER];
    message
}

fn sends(actions: &[Action]) -> Vec<&Transmit> {
    actions
        .iter()
        .filter_map(|a| {
            if let Action::Send(t) = a {
                Some(t)
            } else {
                None
            }
        })
        .collect()
}

fn events(actions: &[Action]) -> Vec<&Event> {
    actions
        .iter()
        .filter_map(|a| {
            if let Action::Event(e) = a {
                Some(e)
            } else {
                None
            }
        })
        .collect()
}

fn only_send(actions: &[Action]) -> (Message, Transmit) {
    let sent = sends(actions);
    assert_eq!(sent.len(), 1, "{actions:?}");
    (Message::decode(&sent[0].payload).unwrap(), sent[0].clone())
}

fn qemu_client() -> Client {
    Client::new(ClientConfig::new(QEMU_MAC), SEED)
}

/// A client bound to QEMU's lease (86400 s, T1 43200 s, T2 75600 s) acquired at `t0`.
fn bound(t0: Instant) -> Client {
    let mut client = qemu_client();
    client.start(t0);
    client
        .handle_packet(&replay("slirp_offer", &client), t0)
        .unwrap();
    client
        .handle_packet(&replay("slirp_ack", &client), t0)
        .unwrap();
    assert_eq!(client.state(), StateKind::Bound);
    client
}

/// A client bound to a short lease: 1000 s, T1 500 s, T2 875 s.
fn bound_short(t0: Instant) -> Client {
    let mut client = qemu_client();
    client.start(t0);
    client
        .handle_packet(&replay("slirp_offer", &client), t0)
        .unwrap();
    client
        .handle_packet(
            &reply(&client, MessageType::Ack, QEMU_ADDRESS, 1000).encode(),
            t0,
        )
        .unwrap();
    client
}

#[test]
fn full_dora_against_qemu_user_network() {
    let t0 = Instant::now();
    let mut client = qemu_client();

    let (discover, transmit) = only_send(&client.start(t0));
    assert_eq!(discover.message_type, MessageType::Discover);
    assert_eq!(
        (transmit.source, transmit.destination),
        (Ipv4Addr::UNSPECIFIED, Destination::Broadcast)
    );
    assert_eq!(
        discover.options.client_id.as_deref(),
        Some(&[1, 0x52, 0x54, 0, 0x12, 0x34, 0x56][..])
    );
    assert!(
        discover
            .options
            .parameter_request_list
            .contains(&code::ROUTER)
    );
    assert_eq!(client.state(), StateKind::Selecting);

    // QEMU sends its OFFER in IPv4 to the broadcast address; init unwraps it.
    let mut offer_frame = fixture("slirp_offer_ipv4");
    offer_frame[28 + 4..28 + 8].copy_from_slice(&discover.xid.to_be_bytes());
    offer_frame[26..28].copy_from_slice(&[0, 0]); // the patched xid breaks the UDP checksum
    let offer = frame::unwrap(&offer_frame).unwrap();
    let t1 = t0 + secs(1);
    let (request, transmit) = only_send(&client.handle_packet(offer.payload, t1).unwrap());
    assert_eq!(request.message_type, MessageType::Request);
    assert_eq!(
        request.xid, discover.xid,
        "the REQUEST answers the OFFER's transaction"
    );
    assert_eq!(request.options.requested_ip, Some(QEMU_ADDRESS));
    assert_eq!(request.options.server_id, Some(QEMU_SERVER));
    assert_eq!(request.ciaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(request.secs, 1);
    assert_eq!(transmit.destination, Destination::Broadcast);

    let t2 = t0 + secs(2);
    let actions = client
        .handle_packet(&replay("slirp_ack", &client), t2)
        .unwrap();
    let [Event::LeaseAcquired(lease)] = events(&actions)[..] else {
        panic!("{actions:?}")
    };
    let expected = Lease {
        address: QEMU_ADDRESS,
        prefix_len: 24,
        gateway: Some(QEMU_SERVER),
        routes: vec![],
        dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
        domain: None,
        mtu: None,
        server_id: QEMU_SERVER,
        lease_time: secs(86400),
        // QEMU sends no T1/T2: the RFC's defaults.
        t1: secs(43200),
        t2: secs(75600),
        acquired_at: t1,
    };
    assert_eq!(lease, &expected);
    assert_eq!(client.state(), StateKind::Bound);
    assert_eq!(client.next_deadline(), Some(t1 + secs(43200)));
    assert!(sends(&actions).is_empty());
}

#[test]
fn isc_ack_keeps_server_timers_and_options() {
    let t0 = Instant::now();
    let mut client = Client::new(ClientConfig::new(ISC_MAC), SEED);
    client.start(t0);
    client
        .handle_packet(&replay("isc_offer", &client), t0)
        .unwrap();
    // dhcpd unicasts to the offered address; the packet socket sees it all the same.
    let mut ack_frame = fixture("isc_ack_ipv4");
    ack_frame[32..36].copy_from_slice(&client.state.exchange().unwrap().xid.to_be_bytes());
    ack_frame[26..28].copy_from_slice(&[0, 0]);
    let ack = frame::unwrap(&ack_frame).unwrap();
    assert_eq!(ack.destination, Ipv4Addr::new(192, 168, 1, 100));
    let actions = client.handle_packet(ack.payload, t0).unwrap();
    let [Event::LeaseAcquired(lease)] = events(&actions)[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(
        (lease.lease_time, lease.t1, lease.t2),
        (secs(600), secs(300), secs(525))
    );
    assert_eq!(lease.domain.as_deref(), Some("example.org"));
    assert_eq!(lease.mtu, Some(1400));
    assert_eq!(
        lease.dns,
        [Ipv4Addr::new(192, 168, 1, 1), Ipv4Addr::new(192, 168, 1, 2)]
    );
    assert_eq!(lease.gateway, Some(Ipv4Addr::new(192, 168, 1, 1)));
}

#[test]
fn retransmit_schedule_doubles_from_4s_and_caps_at_64s_with_1s_jitter() {
    let t0 = Instant::now();
    let mut client = qemu_client();
    let (first, _) = only_send(&client.start(t0));
    let mut sent_at = t0;
    for base in [4u64, 8, 16, 32, 64, 64, 64] {
        let deadline = client.next_deadline().unwrap();
        let wait = deadline - sent_at;
        assert!(
            wait >= secs(base - 1) && wait <= secs(base + 1),
            "waited {wait:?} for {base} s"
        );
        assert!(
            client
                .handle_timeout(deadline - Duration::from_millis(1))
                .is_empty(),
            "early"
        );
        let (again, _) = only_send(&client.handle_timeout(deadline));
        assert_eq!(again.xid, first.xid, "a retransmit keeps the transaction");
        assert_eq!(u64::from(again.secs), (deadline - t0).as_secs());
        sent_at = deadline;
    }
}

#[test]
fn the_seed_decides_xids_and_jitter() {
    let t0 = Instant::now();
    let started = |seed| {
        let mut client = Client::new(ClientConfig::new(QEMU_MAC), seed);
        client.start(t0);
        (client.state.exchange().unwrap().xid, client.next_deadline())
    };
    assert_eq!(started(SEED), started(SEED));
    assert_ne!(started(SEED).0, started(SEED + 1).0);
}

#[test]
fn nak_in_requesting_returns_to_init_and_rediscovers_after_the_delay() {
    let t0 = Instant::now();
    let mut client = qemu_client();
    let (discover, _) = only_send(&client.start(t0));
    client
        .handle_packet(&replay("slirp_offer", &client), t0)
        .unwrap();
    let actions = client
        .handle_packet(&replay("slirp_nak", &client), t0)
        .unwrap();
    assert!(
        actions.is_empty(),
        "no lease yet, so nothing to lose: {actions:?}"
    );
    assert_eq!(client.state(), StateKind::Init);
    assert_eq!(client.next_deadline(), Some(t0 + client.config.nak_delay));
    let (again, _) = only_send(&client.handle_timeout(t0 + client.config.nak_delay));
    assert_eq!(again.message_type, MessageType::Discover);
    assert_ne!(again.xid, discover.xid);
}

#[test]
fn replies_for_another_transaction_or_hardware_address_change_nothing() {
    let t0 = Instant::now();
    let mut client = qemu_client();
    client.start(t0);
    let deadline = client.next_deadline();
    let xid = client.state.exchange().unwrap().xid;
    let mut wrong_xid = replay("slirp_offer", &client);
    wrong_xid[4] ^= 0xff;
    assert_eq!(
        client.handle_packet(&wrong_xid, t0),
        Err(Rejected::WrongXid {
            expected: xid,
            got: xid ^ 0xff00_0000
        })
    );
    let mut wrong_mac = replay("slirp_offer", &client);
    wrong_mac[33] ^= 1;
    assert_eq!(
        client.handle_packet(&wrong_mac, t0),
        Err(Rejected::WrongHardwareAddress)
    );
    let mut request = replay("slirp_offer", &client);
    request[0] = 1;
    assert_eq!(client.handle_packet(&request, t0), Err(Rejected::NotAReply));
    assert_eq!(
        (client.state(), client.next_deadline()),
        (StateKind::Selecting, deadline)
    );
}

#[test]
fn malformed_packets_are_errors_that_change_nothing() {
    let t0 = Instant::now();
    let mut client = qemu_client();
    client.start(t0);
    let deadline = client.next_deadline();
    let offer = replay("slirp_offer", &client);
    let mut bad_cookie = offer.clone();
    bad_cookie[236] = 0;
    let mut overrun = offer[..240].to_vec();
    overrun.extend([53, 1, 2, 54, 4, 10, 0]);
    let mut zero_type = offer[..240].to_vec();
    zero_type.extend([53, 0, 255]);
    let cases: [(&[u8], DecodeError); 4] = [
        (&offer[..100], DecodeError::TruncatedHeader { len: 100 }),
        (&bad_cookie, DecodeError::BadMagicCookie([0, 130, 83, 99])),
        (&overrun, DecodeError::OptionOverrun { code: 54 }),
        (
            &zero_type,
            DecodeError::BadOptionLength { code: 53, len: 0 },
        ),
    ];
    for (bytes, error) in cases {
        assert_eq!(
            client.handle_packet(bytes, t0),
            Err(Rejected::Decode(error))
        );
    }
    assert_eq!(
        (client.state(), client.next_deadline()),
        (StateKind::Selecting, deadline)
    );
}

#[test]
fn rejects_offers_of_unusable_addresses_and_acks_for_another_address() {
    let t0 = Instant::now();
    let mut client = qemu_client();
    client.start(t0);
    for bad in [Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST] {
        let offer = reply(&client, MessageType::Offer, bad, 86400);
        assert_eq!(
            client.handle_packet(&offer.encode(), t0),
            Err(LeaseError::UnusableAddress(bad).into())
        );
    }
    client
        .handle_packet(&replay("slirp_offer", &client), t0)
        .unwrap();
    let other = Ipv4Addr::new(10, 0, 2, 16);
    let ack = reply(&client, MessageType::Ack, other, 86400);
    assert_eq!(
        client.handle_packet(&ack.encode(), t0),
        Err(Rejected::AddressMismatch {
            expected: QEMU_ADDRESS,
            got: other
        })
    );
    assert_eq!(client.state(), StateKind::Requesting);
}

#[test]
fn gives_up_requesting_after_four_requests() {
    let t0 = Instant::now();
    let mut client = qemu_client();
    client.start(t0);
    client
        .handle_packet(&replay("slirp_offer", &client), t0)
        .unwrap();
    let mut types = Vec::new();
    for _ in 0..4 {
        let actions = client.handle_timeout(client.next_deadline().unwrap());
        types.push(only_send(&actions).0.message_type);
    }
    use MessageType::{Discover, Request};
    assert_eq!(types, [Request, Request, Request, Discover]);
}

#[test]
fn a_lease_without_router_or_dns_has_neither() {
    let t0 = Instant::now();
    let mut client = qemu_client();
    client.start(t0);
    client
        .handle_packet(&replay("slirp_offer", &client), t0)
        .unwrap();
    let mut ack = reply(&client, MessageType::Ack, QEMU_ADDRESS, 3600);
    ack.options.routers.clear();
    ack.options.subnet_mask = None;
    let actions = client.handle_packet(&ack.encode(), t0).unwrap();
    let [Event::LeaseAcquired(lease)] = events(&actions)[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(
        (lease.gateway, lease.dns.len(), lease.prefix_len),
        (None, 0, 32)
    );
}

#[test]
fn a_non_contiguous_mask_gives_a_host_route_and_classless_routes_override_the_router() {
    let t0 = Instant::now();
    let mut client = qemu_client();
    client.start(t0);
    client
        .handle_packet(&replay("slirp_offer", &client), t0)
        .unwrap();
    let mut ack = reply(&client, MessageType::Ack, QEMU_ADDRESS, 3600);
    ack.options.subnet_mask = Some(Ipv4Addr::new(255, 0, 255, 0));
    let default_route = Route {
        destination: Ipv4Addr::UNSPECIFIED,
        prefix_len: 0,
        gateway: Ipv4Addr::new(10, 0, 2, 1),
    };
    ack.options.classless_routes = vec![default_route];
    let actions = client.handle_packet(&ack.encode(), t0).unwrap();
    let [Event::LeaseAcquired(lease)] = events(&actions)[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(
        (lease.prefix_len, lease.gateway),
        (32, Some(Ipv4Addr::new(10, 0, 2, 1)))
    );
    assert_eq!(lease.routes, [default_route]);
}

#[test]
fn sends_the_configured_hostname_and_client_id() {
    let mut config = ClientConfig::new(QEMU_MAC);
    config.hostname = Some("node-1".into());
    config.client_id = Some(b"\xffid".to_vec());
    let mut client = Client::new(config, SEED);
    let (discover, _) = only_send(&client.start(Instant::now()));
    assert_eq!(discover.options.hostname.as_deref(), Some(&b"node-1"[..]));
    assert_eq!(discover.options.client_id.as_deref(), Some(&b"\xffid"[..]));
}
