//! IPv4 and UDP headers around a DHCP message, for an AF_PACKET SOCK_DGRAM socket: the client
//! sends before it has an address and must see replies unicast to an address it does not
//! have yet, which a UDP socket can do neither of.

use std::net::Ipv4Addr;

pub const CLIENT_PORT: u16 = 68;
pub const SERVER_PORT: u16 = 67;
const IPV4_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;
const PROTOCOL_UDP: u8 = 17;
/// RFC 1122 recommends 64; DHCP only ever crosses one link (or a relay, which re-sends).
const TTL: u8 = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the DHCP message of {len} bytes does not fit in one UDP datagram")]
    WrapTooLarge { len: usize },
    #[error("the packet of {len} bytes is too short for its IPv4 and UDP headers")]
    Truncated { len: usize },
    #[error("the packet is IPv{0}, not IPv4")]
    NotIpv4(u8),
    #[error("the IPv4 header checksum is wrong")]
    BadIpChecksum,
    #[error("the packet is an IPv4 fragment, which DHCP replies never need to be")]
    Fragment,
    #[error("the IPv4 payload is protocol {0}, not UDP")]
    NotUdp(u8),
    #[error("the UDP datagram is for port {0}, not the DHCP client port 68")]
    NotClientPort(u16),
    #[error("the UDP length {0} does not match the IPv4 packet")]
    BadUdpLength(u16),
    #[error("the UDP checksum is wrong")]
    BadUdpChecksum,
}

/// A received UDP datagram for the DHCP client port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub source: Ipv4Addr,
    pub destination: Ipv4Addr,
    pub source_port: u16,
    pub payload: &'a [u8],
}

/// An IPv4 packet carrying `payload` in UDP from the client port to the server port.
pub fn wrap(
    payload: &[u8],
    source: Ipv4Addr,
    destination: Ipv4Addr,
) -> Result<Vec<u8>, FrameError> {
    let too_large = || FrameError::WrapTooLarge { len: payload.len() };
    let udp_len = u16::try_from(UDP_HEADER_LEN + payload.len()).map_err(|_| too_large())?;
    let total_len = udp_len
        .checked_add(IPV4_HEADER_LEN as u16)
        .ok_or_else(too_large)?;

    let mut packet = Vec::with_capacity(usize::from(total_len));
    packet.extend([0x45, 0]); // version 4, 5 words of header; no TOS
    packet.extend(total_len.to_be_bytes());
    packet.extend([0, 0, 0, 0]); // identification, flags, fragment offset: never fragmented
    packet.extend([TTL, PROTOCOL_UDP, 0, 0]);
    packet.extend(source.octets());
    packet.extend(destination.octets());
    let ip_checksum = !fold(sum(&packet, 0));
    packet[10..12].copy_from_slice(&ip_checksum.to_be_bytes());

    packet.extend(CLIENT_PORT.to_be_bytes());
    packet.extend(SERVER_PORT.to_be_bytes());
    packet.extend(udp_len.to_be_bytes());
    packet.extend([0, 0]);
    packet.extend_from_slice(payload);
    let udp_checksum = match !fold(sum(
        &packet[IPV4_HEADER_LEN..],
        pseudo_header(source, destination, udp_len),
    )) {
        // RFC 768: a computed zero goes out as all ones; zero means "no checksum".
        0 => 0xffff,
        c => c,
    };
    packet[IPV4_HEADER_LEN + 6..IPV4_HEADER_LEN + 8].copy_from_slice(&udp_checksum.to_be_bytes());
    Ok(packet)
}

/// The UDP payload of an IPv4 packet for the DHCP client port, with both checksums checked.
/// Bytes past the IPv4 total length (Ethernet padding) are ignored.
pub fn unwrap(packet: &[u8]) -> Result<Datagram<'_>, FrameError> {
    let truncated = || FrameError::Truncated { len: packet.len() };
    let &first = packet.first().ok_or_else(truncated)?;
    if first >> 4 != 4 {
        return Err(FrameError::NotIpv4(first >> 4));
    }
    let header_len = usize::from(first & 0x0f) * 4;
    let header = packet
        .get(..header_len)
        .filter(|_| header_len >= IPV4_HEADER_LEN)
        .ok_or_else(truncated)?;
    let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let packet = packet
        .get(..total_len)
        .filter(|_| total_len >= header_len)
        .ok_or_else(truncated)?;
    if fold(sum(header, 0)) != 0xffff {
        return Err(FrameError::BadIpChecksum);
    }
    // More-fragments set or a non-zero offset: a piece of something we would have to reassemble.
    if u16::from_be_bytes([header[6], header[7]]) & 0x3fff != 0 {
        return Err(FrameError::Fragment);
    }
    if header[9] != PROTOCOL_UDP {
        return Err(FrameError::NotUdp(header[9]));
    }
    let source = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
    let destination = Ipv4Addr::new(header[16], header[17], header[18], header[19]);

    let udp = packet.get(header_len..).unwrap_or_default();
    let udp_header = udp.get(..UDP_HEADER_LEN).ok_or_else(truncated)?;
    let field = |at: usize| u16::from_be_bytes([udp_header[at], udp_header[at + 1]]);
    let destination_port = field(2);
    if destination_port != CLIENT_PORT {
        return Err(FrameError::NotClientPort(destination_port));
    }
    let udp_len = field(4);
    let datagram = udp
        .get(..usize::from(udp_len))
        .filter(|_| usize::from(udp_len) >= UDP_HEADER_LEN)
        .ok_or(FrameError::BadUdpLength(udp_len))?;
    if field(6) != 0 && fold(sum(datagram, pseudo_header(source, destination, udp_len))) != 0xffff {
        return Err(FrameError::BadUdpChecksum);
    }
    Ok(Datagram {
        source,
        destination,
        source_port: field(0),
        payload: datagram.get(UDP_HEADER_LEN..).unwrap_or_default(),
    })
}

/// The UDP pseudo-header's share of the checksum (RFC 768).
fn pseudo_header(source: Ipv4Addr, destination: Ipv4Addr, udp_len: u16) -> u32 {
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&source.octets());
    bytes[4..8].copy_from_slice(&destination.octets());
    bytes[9] = PROTOCOL_UDP;
    bytes[10..].copy_from_slice(&udp_len.to_be_bytes());
    sum(&bytes, 0)
}

/// The Internet checksum's running sum (RFC 1071), odd trailing byte padded with zero. A u32
/// does not overflow for any packet under 128 KiB, and IPv4 packets are under 64 KiB.
fn sum(bytes: &[u8], start: u32) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    let mut total = start;
    for pair in &mut chunks {
        total += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        total += u32::from(*last) << 8;
    }
    total
}

fn fold(mut total: u32) -> u16 {
    while total > 0xffff {
        total = (total & 0xffff) + (total >> 16);
    }
    total as u16 // the loop leaves 16 bits
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

    /// A reply as a server would send it: the wrapped request with ports and addresses swapped.
    fn reply(payload: &[u8]) -> Vec<u8> {
        let mut packet = wrap(payload, SERVER, Ipv4Addr::BROADCAST).unwrap();
        packet[20..24].copy_from_slice(&[0, 67, 0, 68]);
        packet[26..28].copy_from_slice(&[0, 0]); // no UDP checksum
        packet
    }

    #[test]
    fn wraps_with_checksums_a_receiver_accepts() {
        let packet = wrap(b"hello", Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST).unwrap();
        assert_eq!(packet.len(), 20 + 8 + 5);
        assert_eq!(fold(sum(&packet[..20], 0)), 0xffff, "IPv4 header checksum");
        let pseudo = pseudo_header(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 13);
        assert_eq!(fold(sum(&packet[20..], pseudo)), 0xffff, "UDP checksum");
        assert_eq!(packet[20..24], [0, 68, 0, 67]);
    }

    #[test]
    fn unwraps_a_reply_and_ignores_ethernet_padding() {
        let mut packet = reply(b"offer");
        packet.extend([0; 17]);
        let datagram = unwrap(&packet).unwrap();
        assert_eq!(
            (datagram.source, datagram.source_port, datagram.payload),
            (SERVER, 67, &b"offer"[..])
        );
    }

    #[test]
    fn rejects_our_own_requests_seen_on_the_packet_socket() {
        let packet = wrap(b"discover", Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST).unwrap();
        assert_eq!(unwrap(&packet), Err(FrameError::NotClientPort(67)));
    }

    #[test]
    fn rejects_a_corrupted_udp_payload() {
        let mut packet = wrap(b"offer", SERVER, Ipv4Addr::BROADCAST).unwrap();
        packet[20..24].copy_from_slice(&[0, 67, 0, 68]); // ports swap keeps the sum
        packet[30] ^= 1;
        assert_eq!(unwrap(&packet), Err(FrameError::BadUdpChecksum));
    }

    #[test]
    fn rejects_a_corrupted_ip_header_fragments_and_other_protocols() {
        let mut bad_sum = reply(b"x");
        bad_sum[8] = 1;
        assert_eq!(unwrap(&bad_sum), Err(FrameError::BadIpChecksum));
        let mut tcp = reply(b"x");
        tcp[9] = 6;
        let tcp = rechecksum(tcp);
        assert_eq!(unwrap(&tcp), Err(FrameError::NotUdp(6)));
        let mut fragment = reply(b"x");
        fragment[6] = 0x20; // more fragments
        assert_eq!(unwrap(&rechecksum(fragment)), Err(FrameError::Fragment));
    }

    #[test]
    fn rejects_truncated_packets_and_udp_lengths_past_the_packet() {
        let packet = reply(b"offer");
        for len in [0, 1, 19, 27] {
            assert!(unwrap(&packet[..len]).is_err(), "{len} bytes");
        }
        let mut long_udp = packet.clone();
        long_udp[24..26].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(unwrap(&long_udp), Err(FrameError::BadUdpLength(100)));
        assert_eq!(unwrap(&[0x60]), Err(FrameError::NotIpv4(6)));
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/test_data/dhcp/{name}.hex", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        text.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    #[test]
    fn unwraps_recorded_replies_whose_checksums_another_implementation_computed() {
        let offer = fixture("slirp_offer_ipv4");
        let datagram = unwrap(&offer).unwrap();
        assert_eq!(
            (datagram.source, datagram.destination),
            (SERVER, Ipv4Addr::BROADCAST)
        );
        assert_eq!(datagram.payload, fixture("slirp_offer"));
        let ack = fixture("isc_ack_ipv4");
        let datagram = unwrap(&ack).unwrap();
        assert_eq!(datagram.destination, Ipv4Addr::new(192, 168, 1, 100));
        assert_eq!(datagram.payload, fixture("isc_ack"));
        // And wrapping the same payload yields the same UDP checksum.
        let rewrapped = wrap(datagram.payload, datagram.source, datagram.destination).unwrap();
        let mut swapped = rewrapped[20..].to_vec();
        swapped[..4].copy_from_slice(&[0, 67, 0, 68]);
        assert_eq!(swapped, ack[20..]);
    }

    fn rechecksum(mut packet: Vec<u8>) -> Vec<u8> {
        packet[10..12].copy_from_slice(&[0, 0]);
        let checksum = !fold(sum(&packet[..20], 0));
        packet[10..12].copy_from_slice(&checksum.to_be_bytes());
        packet
    }
}
