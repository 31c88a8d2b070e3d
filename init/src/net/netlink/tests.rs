//! The wire format against byte fixtures, without a kernel: requests as the kernel expects
//! them, replies parsed, and short or garbled replies rejected without a panic.

use std::net::Ipv4Addr;

use super::abi::*;
use super::addr::parse_address;
use super::link::{LinkType, OperState, parse_link};
use super::message::{MessageError, Request, attrs, error_code, messages};
use super::route::{RouteProtocol, RouteSpec, parse_route};
use super::{Iface, NewAddress};
use crate::net::cidr::Ipv4Cidr;

/// A netlink message laid out by hand (not by `Request`), padded to 4 bytes.
fn nlmsg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&4242u32.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

fn rtattr(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

fn ifinfomsg(kind: u16, index: i32, flags: u32) -> Vec<u8> {
    let mut out = vec![0, 0];
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&index.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out
}

fn eth0_newlink() -> Vec<u8> {
    let mut payload = ifinfomsg(ARPHRD_ETHER, 2, IFF_UP | IFF_RUNNING | IFF_LOWER_UP);
    payload.extend(rtattr(IFLA_IFNAME, b"eth0\0"));
    payload.extend(rtattr(IFLA_ADDRESS, &[0x52, 0x54, 0, 0x12, 0x34, 0x56]));
    payload.extend(rtattr(IFLA_MTU, &1500u32.to_ne_bytes()));
    payload.extend(rtattr(IFLA_OPERSTATE, &[6]));
    payload.extend(rtattr(IFLA_CARRIER, &[1]));
    // An attribute this module does not know, with the nested bit set: skipped.
    payload.extend(rtattr(0x8000 | 26, &[1, 2, 3, 4]));
    nlmsg(RTM_NEWLINK, 0, 1, &payload)
}

#[test]
#[cfg(target_endian = "little")]
fn set_link_up_request_has_the_kernels_layout() {
    let iface = Iface {
        index: 2,
        name: "eth0".into(),
    };
    let req = Request::new(RTM_NEWLINK, NLM_F_ACK).header(|out| {
        IfInfoMsg {
            index: iface.raw_index(),
            flags: IFF_UP,
            change: IFF_UP,
            ..IfInfoMsg::default()
        }
        .encode(out)
    });
    #[rustfmt::skip]
    let expected: [u8; 32] = [
        32, 0, 0, 0,  16, 0,  5, 0,  7, 0, 0, 0,  0, 0, 0, 0, // nlmsghdr: REQUEST|ACK, seq 7
        0, 0, 0, 0,  2, 0, 0, 0,  1, 0, 0, 0,  1, 0, 0, 0,    // ifinfomsg: index 2, IFF_UP
    ];
    assert_eq!(req.finish(7), expected);
}

#[test]
fn attributes_are_padded_to_four_bytes_and_counted_in_nlmsg_len() {
    let bytes = Request::new(RTM_NEWLINK, NLM_F_ACK)
        .header(|out| IfInfoMsg::default().encode(out))
        .attr(IFLA_IFNAME, b"eth0\0")
        .attr_u32(IFLA_MTU, 1400)
        .finish(1);
    // 16 + 16 + (4 + 5 -> 12) + 8
    assert_eq!(bytes.len(), 52);
    assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()), 52);
    // rta_len is the unpadded 9; the MTU attribute starts on the next 4-byte boundary.
    assert_eq!(u16::from_ne_bytes([bytes[32], bytes[33]]), 9);
    assert_eq!(&bytes[36..44], b"eth0\0\0\0\0");
    assert_eq!(u16::from_ne_bytes([bytes[44], bytes[45]]), 8);
    assert_eq!(u16::from_ne_bytes([bytes[46], bytes[47]]), IFLA_MTU);
    let m = messages(&bytes).next().unwrap().unwrap();
    let found: Vec<_> = attrs(m.payload, IfInfoMsg::LEN)
        .map(|a| a.unwrap().kind)
        .collect();
    assert_eq!(found, [IFLA_IFNAME, IFLA_MTU]);
}

#[test]
fn parses_a_link_with_name_mac_mtu_and_state() {
    let bytes = eth0_newlink();
    let m = messages(&bytes).next().unwrap().unwrap();
    let link = parse_link(&m).unwrap().unwrap();
    assert_eq!(link.iface.index, 2);
    assert_eq!(link.iface.name, "eth0");
    assert_eq!(link.link_type, LinkType::Ethernet);
    assert_eq!(link.mac.unwrap().to_string(), "52:54:00:12:34:56");
    assert_eq!(link.mtu, Some(1500));
    assert_eq!(link.operstate, OperState::Up);
    assert_eq!(link.carrier, Some(true));
    assert!(link.is_up() && link.is_running() && link.is_lower_up());
}

#[test]
fn a_datagram_of_several_messages_is_walked_in_order() {
    let mut bytes = eth0_newlink();
    bytes.extend(nlmsg(NLMSG_DONE, 0, 1, &0i32.to_ne_bytes()));
    let kinds: Vec<_> = messages(&bytes).map(|m| m.unwrap().header.kind).collect();
    assert_eq!(kinds, [RTM_NEWLINK, NLMSG_DONE]);
}

#[test]
fn truncated_nlmsghdr_is_an_error_not_a_panic() {
    let bytes = eth0_newlink();
    let mut it = messages(&bytes[..10]);
    assert_eq!(
        it.next(),
        Some(Err(MessageError::Short {
            what: "nlmsghdr",
            need: 16,
            have: 10
        }))
    );
    assert_eq!(it.next(), None, "the walk stops at the first error");
}

#[test]
fn nlmsg_len_past_the_datagram_is_an_error() {
    let bytes = eth0_newlink();
    let cut = &bytes[..bytes.len() - 8];
    assert!(matches!(
        messages(cut).next(),
        Some(Err(MessageError::MessagePastEnd { .. }))
    ));
}

#[test]
fn nlmsg_len_below_the_header_is_an_error_not_an_endless_loop() {
    let mut bytes = nlmsg(RTM_NEWLINK, 0, 1, &[]);
    bytes[0..4].copy_from_slice(&0u32.to_ne_bytes());
    let all: Vec<_> = messages(&bytes).collect();
    assert_eq!(all.len(), 1);
    assert!(all[0].is_err());
}

#[test]
fn rtattr_length_past_the_end_of_its_message_is_an_error() {
    let mut payload = ifinfomsg(ARPHRD_ETHER, 2, 0);
    let mut name = rtattr(IFLA_IFNAME, b"eth0\0");
    name[0..2].copy_from_slice(&200u16.to_ne_bytes());
    payload.extend(name);
    let bytes = nlmsg(RTM_NEWLINK, 0, 1, &payload);
    let m = messages(&bytes).next().unwrap().unwrap();
    assert!(matches!(
        parse_link(&m),
        Err(MessageError::AttrPastEnd {
            kind: IFLA_IFNAME,
            len: 200,
            ..
        })
    ));
}

#[test]
fn rtattr_length_below_its_header_is_an_error() {
    let mut payload = ifinfomsg(ARPHRD_ETHER, 2, 0);
    payload.extend([2, 0, 3, 0, 0, 0, 0, 0]);
    let bytes = nlmsg(RTM_NEWLINK, 0, 1, &payload);
    let m = messages(&bytes).next().unwrap().unwrap();
    assert!(matches!(parse_link(&m), Err(MessageError::Short { .. })));
}

#[test]
fn an_attribute_of_the_wrong_size_is_an_error() {
    let mut payload = ifinfomsg(ARPHRD_ETHER, 2, 0);
    payload.extend(rtattr(IFLA_MTU, &[0xdc, 0x05]));
    let bytes = nlmsg(RTM_NEWLINK, 0, 1, &payload);
    let m = messages(&bytes).next().unwrap().unwrap();
    assert_eq!(
        parse_link(&m),
        Err(MessageError::AttrSize {
            kind: IFLA_MTU,
            need: 4,
            have: 2
        })
    );
}

#[test]
fn a_link_message_shorter_than_ifinfomsg_is_an_error() {
    let bytes = nlmsg(RTM_NEWLINK, 0, 1, &[0; 6]);
    let m = messages(&bytes).next().unwrap().unwrap();
    assert!(matches!(
        parse_link(&m),
        Err(MessageError::Short {
            what: "ifinfomsg",
            ..
        })
    ));
}

#[test]
fn nlmsg_error_carries_the_errno_and_zero_is_an_ack() {
    let mut payload = (-libc::ENODEV).to_ne_bytes().to_vec();
    payload.extend(nlmsg(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK, 3, &[]));
    let bytes = nlmsg(NLMSG_ERROR, 0, 3, &payload);
    let m = messages(&bytes).next().unwrap().unwrap();
    assert_eq!(m.header.kind, NLMSG_ERROR);
    assert_eq!(error_code(m.payload), Ok(libc::ENODEV));
    assert_eq!(error_code(&0i32.to_ne_bytes()), Ok(0));
}

#[test]
fn a_truncated_nlmsg_error_is_an_error() {
    assert!(matches!(
        error_code(&[0xed, 0xff]),
        Err(MessageError::Short { .. })
    ));
}

fn addr_msg(prefix: u8, index: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
    let mut payload = vec![AF_INET, prefix, 0, 0];
    payload.extend_from_slice(&index.to_ne_bytes());
    for a in attrs {
        payload.extend(a);
    }
    nlmsg(RTM_NEWADDR, 0, 1, &payload)
}

fn cacheinfo(preferred: u32, valid: u32) -> Vec<u8> {
    let mut data = Vec::new();
    for v in [preferred, valid, 100, 200] {
        data.extend_from_slice(&v.to_ne_bytes());
    }
    rtattr(IFA_CACHEINFO, &data)
}

#[test]
fn parses_an_address_with_its_lease_lifetime() {
    let bytes = addr_msg(
        24,
        2,
        &[
            rtattr(IFA_ADDRESS, &[10, 0, 2, 15]),
            rtattr(IFA_LOCAL, &[10, 0, 2, 15]),
            rtattr(IFA_BROADCAST, &[10, 0, 2, 255]),
            rtattr(IFA_LABEL, b"eth0\0"),
            cacheinfo(1800, 3600),
        ],
    );
    let m = messages(&bytes).next().unwrap().unwrap();
    let a = parse_address(&m).unwrap().unwrap();
    assert_eq!(a.index, 2);
    assert_eq!(a.cidr.to_string(), "10.0.2.15/24");
    assert_eq!(a.broadcast, Some(Ipv4Addr::new(10, 0, 2, 255)));
    assert_eq!(a.label, "eth0");
    let life = a.lifetime.unwrap();
    assert_eq!((life.valid_secs, life.preferred_secs), (3600, 1800));
}

#[test]
fn an_infinite_lifetime_is_a_permanent_address() {
    let bytes = addr_msg(
        8,
        1,
        &[
            rtattr(IFA_LOCAL, &[127, 0, 0, 1]),
            cacheinfo(u32::MAX, u32::MAX),
        ],
    );
    let m = messages(&bytes).next().unwrap().unwrap();
    assert_eq!(parse_address(&m).unwrap().unwrap().lifetime, None);
}

#[test]
fn an_address_message_with_a_prefix_past_32_is_skipped() {
    let bytes = addr_msg(40, 1, &[rtattr(IFA_LOCAL, &[10, 0, 0, 1])]);
    let m = messages(&bytes).next().unwrap().unwrap();
    assert_eq!(parse_address(&m), Ok(None));
}

#[test]
fn new_address_request_carries_local_address_broadcast_and_cacheinfo() {
    let iface = Iface {
        index: 3,
        name: "eth0".into(),
    };
    let cidr = Ipv4Cidr::new(Ipv4Addr::new(10, 0, 2, 15), 24).unwrap();
    let bytes = NewAddress::new(cidr)
        .with_lifetime(3600, 1800)
        .request(&iface, 0)
        .finish(1);
    let m = messages(&bytes).next().unwrap().unwrap();
    assert_eq!(
        IfAddrMsg::decode(m.payload).unwrap(),
        IfAddrMsg {
            family: AF_INET,
            prefix_len: 24,
            flags: 0,
            scope: 0,
            index: 3
        }
    );
    let found: Vec<(u16, Vec<u8>)> = attrs(m.payload, IfAddrMsg::LEN)
        .map(|a| a.unwrap())
        .map(|a| (a.kind, a.data.to_vec()))
        .collect();
    assert_eq!(found[0], (IFA_LOCAL, vec![10, 0, 2, 15]));
    assert_eq!(found[1], (IFA_ADDRESS, vec![10, 0, 2, 15]));
    assert_eq!(found[2], (IFA_BROADCAST, vec![10, 0, 2, 255]));
    assert_eq!(found[3].0, IFA_CACHEINFO);
    assert_eq!(
        IfaCacheInfo::decode(&found[3].1).unwrap(),
        IfaCacheInfo {
            preferred: 1800,
            valid: 3600
        }
    );
}

#[test]
fn parses_a_default_route_in_the_main_table() {
    let mut payload = vec![AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_DHCP, 0, RTN_UNICAST];
    payload.extend_from_slice(&0u32.to_ne_bytes());
    payload.extend(rtattr(RTA_TABLE, &254u32.to_ne_bytes()));
    payload.extend(rtattr(RTA_PRIORITY, &100u32.to_ne_bytes()));
    payload.extend(rtattr(RTA_GATEWAY, &[10, 0, 2, 2]));
    payload.extend(rtattr(RTA_OIF, &2u32.to_ne_bytes()));
    let bytes = nlmsg(RTM_NEWROUTE, NLM_F_MULTI_FOR_TEST, 1, &payload);
    let m = messages(&bytes).next().unwrap().unwrap();
    let r = parse_route(&m).unwrap().unwrap();
    assert!(r.is_default());
    assert_eq!(r.table, 254);
    assert_eq!(r.protocol, RTPROT_DHCP);
    assert_eq!(r.gateway, Some(Ipv4Addr::new(10, 0, 2, 2)));
    assert_eq!(r.oif, Some(2));
    assert_eq!(r.metric, Some(100));
}

/// NLM_F_MULTI, which dump replies carry; the parser must not care.
const NLM_F_MULTI_FOR_TEST: u16 = 0x02;

#[test]
fn route_spec_is_shown_as_ip_route_would() {
    let gw = Ipv4Addr::new(10, 0, 2, 2);
    assert_eq!(
        RouteSpec::default_via(gw, RouteProtocol::Dhcp)
            .with_metric(100)
            .to_string(),
        "default via 10.0.2.2 metric 100"
    );
    assert_eq!(
        RouteSpec::on_link(Ipv4Cidr::host(gw), RouteProtocol::Dhcp).to_string(),
        "10.0.2.2/32 on-link"
    );
}
