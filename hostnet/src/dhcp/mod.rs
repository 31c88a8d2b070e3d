//! DHCPv4 (RFC 2131, options RFC 2132): the packet codec and the client's state machine.
//!
//! Nothing here does I/O. init owns an AF_PACKET SOCK_DGRAM socket (ETH_P_IP) on the
//! interface, a clock and a poll loop, and drives a [`Client`]:
//!
//! - `client.start(now)` (or `link_changed(true, now)`) when the carrier is up;
//! - every received IPv4 packet through [`frame::unwrap`] (UDP to port 68, checksums), then
//!   `client.handle_packet(payload, now)`; an `Err(Rejected)` is someone else's packet or a
//!   malformed one, worth a debug line and nothing more;
//! - `client.handle_timeout(now)` once `now >= client.next_deadline()`;
//! - then each [`Action`] in order: `Send` is a message to send (`Transmit::to_ipv4` wraps it
//!   for the packet socket: broadcasts go to ff:ff:ff:ff:ff:ff; a renewal is unicast to the
//!   server and can go through a UDP socket bound to the leased address, whose kernel resolves
//!   the server's MAC); `Event` says to add, update or remove the address and its routes.
//!
//! Time is `std::time::Instant`, passed in, so tests step a fake clock by adding to one
//! `Instant`. Randomness (xids, jitter) is a SplitMix64 seeded by the caller.
//!
//! # States (RFC 2131 §4.4, figure 5)
//!
//! ```text
//! Stopped --start/link up--> Selecting --OFFER--> Requesting --ACK--> Bound
//!    |  (lease still valid)                  \--NAK--> Init (after nak_delay) --> Selecting
//!    \--link up--> Rebooting --ACK--> Bound;  --NAK--> LeaseLost, Init;  no answer --> Bound
//! Bound --T1--> Renewing (unicast) --T2--> Rebinding (broadcast) --expiry--> LeaseLost, Selecting
//!           Renewing/Rebinding --ACK--> LeaseRenewed, Bound;  --NAK--> LeaseLost, Init
//! any --link down--> Stopped, keeping the lease, which expires (LeaseLost) on its own timer
//! ```
//!
//! # Timers
//!
//! - DISCOVER goes out at once; DISCOVERs and the REQUESTs of Requesting and Rebooting are
//!   resent after 4, 8, 16, 32, then every 64 s, ±1 s (RFC 2131 §4.1). Selecting never gives
//!   up; Requesting and Rebooting give up after four REQUESTs (to Selecting, or for Rebooting
//!   back to the lease's own timeline, which RFC 2131 §3.2 allows).
//! - T1 and T2 default to 0.5 and 0.875 of the lease; server values that break
//!   T1 <= T2 <= lease are replaced by those; a lease under 10 s counts as 10 s.
//! - Renewing and Rebinding resend after half the time left until T2 (or expiry), at least
//!   `renew_retransmit_floor` (60 s per RFC 2131 §4.4.5; lower for tests), never past it.
//! - A late wakeup (suspend, a loaded machine) jumps straight to the state the lease's timers
//!   say, so a lease long expired is reported lost rather than renewed.
//!
//! # Validation
//!
//! Replies must be BOOTREPLYs for our MAC and the current xid. Offers must carry a server id
//! and a usable `yiaddr` (not 0.0.0.0, broadcast, multicast or loopback). An ACK must carry a
//! server id and a lease time, and be for the address asked for (and in Requesting, from the
//! selected server). A missing or non-contiguous subnet mask gives a /32; see [`Lease`].
//!
//! # Left out
//!
//! DHCPDECLINE after an ARP conflict check (init would need ARP probing), DHCPINFORM, the
//! broadcast flag (the packet socket sees unicast replies to an unconfigured address), rapid
//! commit (RFC 4039), FQDN (RFC 4702), several offers compared, relays (`giaddr`), and IPv4
//! fragments in [`frame::unwrap`] (DHCP replies fit one frame).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod action;
pub mod client;
pub mod frame;
pub mod lease;
pub mod options;
pub mod packet;

pub use action::{Action, Destination, Event, LossReason, Transmit};
pub use client::{Client, ClientConfig, Rejected, StateKind};
pub use lease::Lease;
pub use packet::{DecodeError, Message, MessageType};
