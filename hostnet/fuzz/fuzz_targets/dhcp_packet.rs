//! Fuzz target: DHCP messages and the IPv4/UDP frames around them from arbitrary bytes, decoded,
//! re-encoded, and fed to a client in each state that waits for a reply.
#![no_main]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use hostnet::dhcp::packet::Op;
use hostnet::dhcp::{Action, Client, ClientConfig, Message, MessageType, StateKind, frame};
use libfuzzer_sys::fuzz_target;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::decode(data) {
        // Whatever decodes, encodes to something that decodes the same.
        assert_eq!(Message::decode(&message.encode()).as_ref(), Ok(&message));
    }
    if let Ok(datagram) = frame::unwrap(data) {
        let _ = Message::decode(datagram.payload);
    }

    let now = Instant::now();
    for (mut client, xid) in clients(now) {
        // Raw, and patched with the client's xid and MAC so the state machine sees the rest.
        let _ = client.handle_packet(data, now);
        let mut patched = data.to_vec();
        if let Some(field) = patched.get_mut(4..8) {
            field.copy_from_slice(&xid.to_be_bytes());
        }
        if let Some(field) = patched.get_mut(28..34) {
            field.copy_from_slice(&MAC);
        }
        let _ = client.handle_packet(&patched, now);
        // Walk a few deadlines on from wherever that left it.
        for _ in 0..3 {
            let Some(deadline) = client.next_deadline() else {
                break;
            };
            for action in client.handle_timeout(deadline) {
                if let Action::Send(transmit) = action {
                    let _ = transmit.to_ipv4();
                }
            }
        }
    }
});

/// Clients in Selecting, Requesting, Rebooting, Renewing and Rebinding, with their xids.
fn clients(now: Instant) -> Vec<(Client, u32)> {
    let mut config = ClientConfig::new(MAC);
    config.renew_retransmit_floor = Duration::from_secs(1);
    let mut client = Client::new(config, 1);
    let mut out = Vec::new();
    let xid = last_xid(&client.start(now));
    out.push((client.clone(), xid));
    let _ = client.handle_packet(&reply(MessageType::Offer, xid), now);
    out.push((client.clone(), xid));
    let _ = client.handle_packet(&reply(MessageType::Ack, xid), now);

    let mut rebooting = client.clone();
    rebooting.link_changed(false, now);
    let reboot_xid = last_xid(&rebooting.link_changed(true, now + Duration::from_secs(1)));
    out.push((rebooting, reboot_xid));
    // A 100 s lease: T1 at 50 s, T2 at 87.5 s.
    let renew_xid = last_xid(&client.handle_timeout(now + Duration::from_secs(50)));
    out.push((client.clone(), renew_xid));
    let rebind_xid = last_xid(&client.handle_timeout(now + Duration::from_secs(88)));
    out.push((client, rebind_xid));
    let states: Vec<StateKind> = out.iter().map(|(client, _)| client.state()).collect();
    use StateKind::*;
    assert_eq!(
        states,
        [Selecting, Requesting, Rebooting, Renewing, Rebinding],
        "the setup drifted"
    );
    out
}

fn reply(message_type: MessageType, xid: u32) -> Vec<u8> {
    let mut message = Message::new(Op::Reply, message_type, xid, MAC);
    message.yiaddr = ADDRESS;
    message.options.server_id = Some(SERVER);
    message.options.lease_time = Some(100);
    message.encode()
}

fn last_xid(actions: &[Action]) -> u32 {
    actions
        .iter()
        .rev()
        .find_map(|action| match action {
            Action::Send(transmit) => Message::decode(&transmit.payload).ok().map(|m| m.xid),
            Action::Event(_) => None,
        })
        .unwrap_or(0)
}
