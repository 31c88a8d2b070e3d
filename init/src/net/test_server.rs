//! A tiny DHCP server on the far end of a TAP device, for the service tests: it answers as
//! QEMU's slirp does (server 10.0.2.2, address 10.0.2.15/24, router 10.0.2.2, DNS 10.0.2.3),
//! with a short lease and T1 so a renewal happens within a test, answers ARP for 10.0.2.2 so
//! unicast renewals get through the kernel, and reports every DHCP message it sees.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use hostnet::dhcp::packet::Op;
use hostnet::dhcp::{Message, MessageType};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::tests::Tap;

pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
pub const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
pub const SERVER_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];
pub const LEASE_SECS: u32 = 20;
/// T1: the client renews this long after each ACK.
pub const RENEW_SECS: u32 = 2;

/// What the test asks of the server.
pub enum Command {
    /// Answer the next REQUEST with a NAK.
    NakNext,
    /// Close the TAP's fd: a persistent TAP loses its carrier.
    Unplug,
    /// Reopen it: the carrier returns.
    Plug,
}

/// A DHCP message the server received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub message_type: MessageType,
    pub ciaddr: Ipv4Addr,
    pub requested_ip: Option<Ipv4Addr>,
    /// The IPv4 destination: 255.255.255.255, or the server for a unicast renewal.
    pub ip_destination: Ipv4Addr,
    pub eth_destination: [u8; 6],
}

pub struct Server {
    pub commands: Sender<Command>,
    pub seen: Receiver<Seen>,
    thread: Option<JoinHandle<()>>,
    stop: Sender<()>,
}

impl Server {
    /// Serves on `tap` (named `name`, persistent so `Plug` can reopen it) on a new thread,
    /// which shares the caller's network namespace.
    pub fn spawn(tap: Tap, name: &str) -> Server {
        let (commands, command_rx) = channel();
        let (seen_tx, seen) = channel();
        let (stop, stop_rx) = channel();
        let name = name.to_owned();
        let thread =
            std::thread::spawn(move || serve(Some(tap), &name, &command_rx, &seen_tx, &stop_rx));
        Server {
            commands,
            seen,
            thread: Some(thread),
            stop,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    mut tap: Option<Tap>,
    name: &str,
    commands: &Receiver<Command>,
    seen: &Sender<Seen>,
    stop: &Receiver<()>,
) {
    let mut nak_next = false;
    let mut frame = [0u8; 2048];
    loop {
        if !matches!(stop.try_recv(), Err(TryRecvError::Empty)) {
            return;
        }
        match commands.try_recv() {
            Ok(Command::NakNext) => nak_next = true,
            Ok(Command::Unplug) => tap = None,
            Ok(Command::Plug) => tap = Some(Tap::create(name)),
            Err(_) => {}
        }
        let Some(wire) = &tap else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let mut fds = [PollFd::new(wire.fd.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(50u16)).unwrap() == 0 {
            continue;
        }
        let len = rustix::io::read(&wire.fd, &mut frame).unwrap();
        let reply = match frame.get(12..14) {
            Some([0x08, 0x06]) => arp_reply(&frame[..len]),
            Some([0x08, 0x00]) => dhcp_reply(&frame[..len], &mut nak_next, seen),
            _ => None,
        };
        if let Some(reply) = reply {
            rustix::io::write(&wire.fd, &reply).unwrap();
        }
    }
}

/// The 42-byte answer to "who has 10.0.2.2".
fn arp_reply(frame: &[u8]) -> Option<Vec<u8>> {
    let arp = frame.get(14..42)?;
    let (op, sender_mac, sender_ip, target_ip) =
        (&arp[6..8], &arp[8..14], &arp[14..18], &arp[24..28]);
    if op != [0, 1] || target_ip != SERVER.octets() {
        return None;
    }
    let mut out = Vec::with_capacity(42);
    out.extend_from_slice(sender_mac);
    out.extend(SERVER_MAC);
    out.extend([0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]);
    out.extend(SERVER_MAC);
    out.extend(SERVER.octets());
    out.extend_from_slice(sender_mac);
    out.extend_from_slice(sender_ip);
    Some(out)
}

fn dhcp_reply(frame: &[u8], nak_next: &mut bool, seen: &Sender<Seen>) -> Option<Vec<u8>> {
    let ip = frame.get(14..)?;
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let udp = ip.get(header_len..)?;
    if ip[9] != 17 || udp.get(2..4)? != 67u16.to_be_bytes() {
        return None;
    }
    let request = Message::decode(udp.get(8..)?).ok()?;
    let _ = seen.send(Seen {
        message_type: request.message_type,
        ciaddr: request.ciaddr,
        requested_ip: request.options.requested_ip,
        ip_destination: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        eth_destination: frame[..6].try_into().ok()?,
    });
    let reply_type = match request.message_type {
        MessageType::Discover => MessageType::Offer,
        MessageType::Request if std::mem::take(nak_next) => MessageType::Nak,
        MessageType::Request => MessageType::Ack,
        _ => return None,
    };
    let mac: [u8; 6] = request.chaddr[..6].try_into().ok()?;
    let mut reply = Message::new(Op::Reply, reply_type, request.xid, mac);
    reply.options.server_id = Some(SERVER);
    // slirp sends to the offered address, which the client does not have yet: only the
    // packet socket sees it. A NAK goes to everyone.
    let destination = if reply_type == MessageType::Nak {
        Ipv4Addr::BROADCAST
    } else {
        reply.yiaddr = CLIENT;
        reply.siaddr = SERVER;
        let o = &mut reply.options;
        o.subnet_mask = Some(Ipv4Addr::new(255, 255, 255, 0));
        o.routers = vec![SERVER];
        o.dns = vec![DNS];
        o.lease_time = Some(LEASE_SECS);
        o.renewal_time = Some(RENEW_SECS);
        CLIENT
    };
    let mut out = Vec::new();
    out.extend(mac);
    out.extend(SERVER_MAC);
    out.extend([0x08, 0x00]);
    out.extend(ipv4_udp(destination, 68, &reply.encode()));
    Some(out)
}

/// IPv4 and UDP headers from the server (port 67) to `port`; the UDP checksum is left 0
/// ("none"), which receivers accept.
pub fn ipv4_udp(destination: Ipv4Addr, port: u16, payload: &[u8]) -> Vec<u8> {
    let udp_len = u16::try_from(8 + payload.len()).unwrap();
    let total = udp_len + 20;
    let mut out = vec![0x45, 0];
    out.extend(total.to_be_bytes());
    out.extend([0, 0, 0, 0, 64, 17, 0, 0]);
    out.extend(SERVER.octets());
    out.extend(destination.octets());
    let sum: u32 = out
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !((folded & 0xffff) + (folded >> 16)) as u16;
    out[10..12].copy_from_slice(&checksum.to_be_bytes());
    out.extend(67u16.to_be_bytes());
    out.extend(port.to_be_bytes());
    out.extend(udp_len.to_be_bytes());
    out.extend([0, 0]);
    out.extend_from_slice(payload);
    out
}
