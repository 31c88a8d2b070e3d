//! The DHCPv4 client's state machine (RFC 2131 §4.4): it decides what to send and when, and
//! what the lease is; init does the sending, the clock and the address configuration.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::action::{Action, Destination, Event, LossReason, Transmit};
use super::lease::{Lease, LeaseError, check_usable, later};
use super::options::code;
use super::packet::{DecodeError, Message, MessageType, Op};

/// RFC 2131 §4.1: retransmit after 4 s, then 8, 16, 32, 64 s, each ±1 s at random.
const FIRST_BACKOFF: Duration = Duration::from_secs(4);
const MAX_BACKOFF: Duration = Duration::from_secs(64);
const JITTER_MS: u64 = 1000;
/// REQUESTs sent in REQUESTING or INIT-REBOOT before giving up on them (4 + 8 + 16 + 32 s,
/// about a minute, like other clients).
const MAX_REQUESTS: u32 = 4;
/// Option 57: init reads whole Ethernet frames, so any reply that fits one is fine.
const MAX_MESSAGE_SIZE: u16 = 1500;
/// Option 55: what `Lease` is made of, and the timers.
const PARAMETERS: [u8; 10] = [
    code::SUBNET_MASK,
    code::CLASSLESS_ROUTES,
    code::ROUTER,
    code::DNS,
    code::DOMAIN_NAME,
    code::MTU,
    code::LEASE_TIME,
    code::SERVER_ID,
    code::RENEWAL_TIME,
    code::REBINDING_TIME,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    pub mac: [u8; 6],
    /// Option 12, so the server (and its DNS) can name us.
    pub hostname: Option<String>,
    /// Option 61; `None` sends hardware type 1 and the MAC (RFC 2132 §9.14).
    pub client_id: Option<Vec<u8>>,
    /// The least time between renewal retransmits: 60 s in RFC 2131 §4.4.5; tests with short
    /// leases lower it.
    pub renew_retransmit_floor: Duration,
    /// How long to wait after a NAK before starting over, so a server that NAKs everything
    /// does not get a request storm.
    pub nak_delay: Duration,
}

impl ClientConfig {
    pub fn new(mac: [u8; 6]) -> Self {
        Self {
            mac,
            hostname: None,
            client_id: None,
            renew_retransmit_floor: Duration::from_secs(60),
            nak_delay: Duration::from_secs(2),
        }
    }
}

/// The RFC 2131 states, plus `Stopped` (not started, released, or link down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    Stopped,
    Init,
    Selecting,
    Requesting,
    Rebooting,
    Bound,
    Renewing,
    Rebinding,
}

/// Why a received packet changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("cannot decode the DHCP message")]
    Decode(#[from] DecodeError),
    #[error("the message is a BOOTREQUEST, not a reply")]
    NotAReply,
    #[error("the message is for another hardware address")]
    WrongHardwareAddress,
    #[error("the client is {0:?} and waits for no reply")]
    NotWaiting(StateKind),
    #[error("the message is for transaction {got:#010x}, not ours ({expected:#010x})")]
    WrongXid { expected: u32, got: u32 },
    #[error("a {message_type:?} means nothing in state {state:?}")]
    Unexpected {
        message_type: MessageType,
        state: StateKind,
    },
    #[error("the reply is from server {got:?}, not the selected {expected}")]
    ServerMismatch {
        expected: Ipv4Addr,
        got: Option<Ipv4Addr>,
    },
    #[error("the ACK is for {got}, but the client asked for {expected}")]
    AddressMismatch { expected: Ipv4Addr, got: Ipv4Addr },
    #[error("the reply offers nothing usable")]
    Unusable(#[from] LeaseError),
}

/// One request/reply transaction: its xid, when it began (for `secs`, and a renewal's lease
/// start) and how many times its message went out (for the backoff).
#[derive(Debug, Clone, Copy)]
struct Exchange {
    xid: u32,
    started: Instant,
    sends: u32,
}

#[derive(Debug, Clone)]
enum State {
    Stopped {
        lease: Option<Lease>,
    },
    Init,
    Selecting(Exchange),
    Requesting {
        exchange: Exchange,
        address: Ipv4Addr,
        server_id: Ipv4Addr,
        sent_at: Instant,
    },
    Rebooting {
        exchange: Exchange,
        lease: Lease,
    },
    Bound {
        lease: Lease,
    },
    Renewing {
        exchange: Exchange,
        lease: Lease,
    },
    Rebinding {
        exchange: Exchange,
        lease: Lease,
    },
}

impl State {
    fn kind(&self) -> StateKind {
        match self {
            Self::Stopped { .. } => StateKind::Stopped,
            Self::Init => StateKind::Init,
            Self::Selecting(_) => StateKind::Selecting,
            Self::Requesting { .. } => StateKind::Requesting,
            Self::Rebooting { .. } => StateKind::Rebooting,
            Self::Bound { .. } => StateKind::Bound,
            Self::Renewing { .. } => StateKind::Renewing,
            Self::Rebinding { .. } => StateKind::Rebinding,
        }
    }

    fn exchange(&self) -> Option<Exchange> {
        match self {
            Self::Selecting(exchange)
            | Self::Requesting { exchange, .. }
            | Self::Rebooting { exchange, .. }
            | Self::Renewing { exchange, .. }
            | Self::Rebinding { exchange, .. } => Some(*exchange),
            Self::Stopped { .. } | Self::Init | Self::Bound { .. } => None,
        }
    }

    fn lease(&self) -> Option<&Lease> {
        match self {
            Self::Stopped { lease } => lease.as_ref(),
            Self::Rebooting { lease, .. }
            | Self::Bound { lease }
            | Self::Renewing { lease, .. }
            | Self::Rebinding { lease, .. } => Some(lease),
            Self::Init | Self::Selecting(_) | Self::Requesting { .. } => None,
        }
    }

    fn into_lease(self) -> Option<Lease> {
        match self {
            Self::Stopped { lease } => lease,
            Self::Rebooting { lease, .. }
            | Self::Bound { lease }
            | Self::Renewing { lease, .. }
            | Self::Rebinding { lease, .. } => Some(lease),
            Self::Init | Self::Selecting(_) | Self::Requesting { .. } => None,
        }
    }
}

/// SplitMix64: tiny, and good enough for xids and jitter, which need to differ between
/// clients, not to be secret.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// `Clone` copies the random state too: a clone sends the same xids (fuzzing uses that).
#[derive(Debug, Clone)]
pub struct Client {
    config: ClientConfig,
    rng: Rng,
    state: State,
    deadline: Option<Instant>,
}

impl Client {
    /// A stopped client; `seed` (from getrandom in init, a constant in tests) drives the xids
    /// and the retransmit jitter.
    pub fn new(config: ClientConfig, seed: u64) -> Self {
        Self {
            config,
            rng: Rng(seed),
            state: State::Stopped { lease: None },
            deadline: None,
        }
    }

    /// Starts from INIT, sending the first DISCOVER now. The same as `link_changed(true)`.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        self.link_changed(true, now)
    }

    pub fn state(&self) -> StateKind {
        self.state.kind()
    }

    /// The lease the client holds, also while renewing or with the link down.
    pub fn lease(&self) -> Option<&Lease> {
        self.state.lease()
    }

    /// When `handle_timeout` next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Carrier lost: stop talking, but keep the lease (and its expiry) for when it returns.
    /// Carrier back: confirm a lease still valid with INIT-REBOOT (RFC 2131 §3.2), else INIT.
    pub fn link_changed(&mut self, up: bool, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let stopped = matches!(self.state, State::Stopped { .. });
        if !up && !stopped {
            let lease = std::mem::replace(&mut self.state, State::Init).into_lease();
            self.deadline = lease.as_ref().map(Lease::expires_at);
            self.state = State::Stopped { lease };
        } else if up && stopped {
            match std::mem::replace(&mut self.state, State::Init).into_lease() {
                Some(lease) if now < lease.expires_at() => {
                    let exchange = self.exchange(now);
                    self.enter(State::Rebooting { exchange, lease }, now, &mut out);
                }
                Some(lease) => {
                    out.push(lost(lease, LossReason::Expired));
                    self.discover(now, &mut out);
                }
                None => self.discover(now, &mut out),
            }
        }
        out
    }

    /// Gives the lease back (RFC 2131 §4.4.6) and stops; `start` begins again.
    pub fn release(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        let link_up = !matches!(self.state, State::Stopped { .. });
        if let Some(lease) = std::mem::replace(&mut self.state, State::Init).into_lease() {
            if link_up {
                let mut message = Message::new(
                    Op::Request,
                    MessageType::Release,
                    self.xid(),
                    self.config.mac,
                );
                message.ciaddr = lease.address;
                message.options.server_id = Some(lease.server_id);
                message.options.client_id = Some(self.client_id());
                out.push(Action::Send(Transmit {
                    payload: message.encode(),
                    source: lease.address,
                    destination: Destination::Unicast(lease.server_id),
                }));
            }
            out.push(lost(lease, LossReason::Released));
        }
        self.state = State::Stopped { lease: None };
        self.deadline = None;
        out
    }

    /// Retransmits, or moves on to renewing, rebinding or expiry, when the deadline has passed.
    /// Earlier calls do nothing, so a spurious wakeup is harmless.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.deadline.is_none_or(|deadline| now < deadline) {
            return out;
        }
        match std::mem::replace(&mut self.state, State::Init) {
            State::Stopped { lease } => {
                out.extend(lease.map(|lease| lost(lease, LossReason::Expired)));
                self.state = State::Stopped { lease: None };
                self.deadline = None;
            }
            State::Init => self.discover(now, &mut out),
            State::Requesting { exchange, .. } if exchange.sends >= MAX_REQUESTS => {
                self.discover(now, &mut out)
            }
            // The server did not answer: RFC 2131 §3.2 lets the client use the lease until it
            // ends, so it goes on as if it had never lost the link.
            State::Rebooting { exchange, lease } if exchange.sends >= MAX_REQUESTS => {
                self.resume(lease, now, &mut out)
            }
            State::Bound { lease } => self.resume(lease, now, &mut out),
            State::Renewing { lease, .. } if now >= lease.rebind_at() => {
                self.resume(lease, now, &mut out)
            }
            State::Rebinding { lease, .. } if now >= lease.expires_at() => {
                self.resume(lease, now, &mut out)
            }
            mut state => {
                if let State::Selecting(exchange)
                | State::Requesting { exchange, .. }
                | State::Rebooting { exchange, .. }
                | State::Renewing { exchange, .. }
                | State::Rebinding { exchange, .. } = &mut state
                {
                    exchange.sends = exchange.sends.saturating_add(1);
                }
                self.enter(state, now, &mut out);
            }
        }
        out
    }

    /// A DHCP message received (the UDP payload). On `Err` nothing changed.
    pub fn handle_packet(&mut self, bytes: &[u8], now: Instant) -> Result<Vec<Action>, Rejected> {
        let reply = Message::decode(bytes)?;
        if reply.op != Op::Reply {
            return Err(Rejected::NotAReply);
        }
        if reply.chaddr.get(..6) != Some(&self.config.mac[..]) {
            return Err(Rejected::WrongHardwareAddress);
        }
        let exchange = self
            .state
            .exchange()
            .ok_or(Rejected::NotWaiting(self.state()))?;
        if reply.xid != exchange.xid {
            return Err(Rejected::WrongXid {
                expected: exchange.xid,
                got: reply.xid,
            });
        }
        let mut out = Vec::new();
        match (&self.state, reply.message_type) {
            (State::Selecting(_), MessageType::Offer) => {
                // The first acceptable offer wins: waiting for more buys nothing on one link.
                check_usable(reply.yiaddr)?;
                let server_id = reply.options.server_id.ok_or(LeaseError::MissingServerId)?;
                // RFC 2131 §4.4.1: the REQUEST keeps the DISCOVER's xid.
                let exchange = Exchange {
                    sends: 1,
                    ..exchange
                };
                let next = State::Requesting {
                    exchange,
                    address: reply.yiaddr,
                    server_id,
                    sent_at: now,
                };
                self.enter(next, now, &mut out);
            }
            (
                &State::Requesting {
                    address,
                    server_id,
                    sent_at,
                    ..
                },
                MessageType::Ack,
            ) => {
                if reply.options.server_id != Some(server_id) {
                    return Err(Rejected::ServerMismatch {
                        expected: server_id,
                        got: reply.options.server_id,
                    });
                }
                if reply.yiaddr != address {
                    return Err(Rejected::AddressMismatch {
                        expected: address,
                        got: reply.yiaddr,
                    });
                }
                let lease = Lease::from_ack(&reply, sent_at)?;
                out.push(Action::Event(Event::LeaseAcquired(lease.clone())));
                self.enter(State::Bound { lease }, now, &mut out);
            }
            (&State::Requesting { server_id, .. }, MessageType::Nak) => {
                // QEMU's NAK has no server id; one that names another server is not for us.
                if reply.options.server_id.is_some_and(|id| id != server_id) {
                    return Err(Rejected::ServerMismatch {
                        expected: server_id,
                        got: reply.options.server_id,
                    });
                }
                self.enter(State::Init, now, &mut out);
            }
            (
                State::Rebooting { lease, .. }
                | State::Renewing { lease, .. }
                | State::Rebinding { lease, .. },
                MessageType::Ack,
            ) => {
                if reply.yiaddr != lease.address {
                    return Err(Rejected::AddressMismatch {
                        expected: lease.address,
                        got: reply.yiaddr,
                    });
                }
                let lease = Lease::from_ack(&reply, exchange.started)?;
                out.push(Action::Event(Event::LeaseRenewed(lease.clone())));
                self.enter(State::Bound { lease }, now, &mut out);
            }
            (
                State::Rebooting { lease, .. }
                | State::Renewing { lease, .. }
                | State::Rebinding { lease, .. },
                MessageType::Nak,
            ) => {
                out.push(lost(lease.clone(), LossReason::Nak));
                self.enter(State::Init, now, &mut out);
            }
            (state, message_type) => {
                return Err(Rejected::Unexpected {
                    message_type,
                    state: state.kind(),
                });
            }
        }
        Ok(out)
    }

    /// INIT → SELECTING: a new transaction, its DISCOVER sent now.
    fn discover(&mut self, now: Instant, out: &mut Vec<Action>) {
        let exchange = self.exchange(now);
        self.enter(State::Selecting(exchange), now, out);
    }

    /// Where a lease's timers say the client is at `now`: BOUND, RENEWING, REBINDING, or past
    /// expiry and back to INIT.
    fn resume(&mut self, lease: Lease, now: Instant, out: &mut Vec<Action>) {
        if now >= lease.expires_at() {
            out.push(lost(lease, LossReason::Expired));
            self.discover(now, out);
        } else if now >= lease.rebind_at() {
            let exchange = self.exchange(now);
            self.enter(State::Rebinding { exchange, lease }, now, out);
        } else if now >= lease.renew_at() {
            let exchange = self.exchange(now);
            self.enter(State::Renewing { exchange, lease }, now, out);
        } else {
            self.enter(State::Bound { lease }, now, out);
        }
    }

    /// Makes `state` current, sends its message if it has one, and sets the deadline of its
    /// next step.
    fn enter(&mut self, state: State, now: Instant, out: &mut Vec<Action>) {
        self.state = state;
        out.extend(self.message(now).map(Action::Send));
        // A zero floor would resend in a tight loop as the time left halves towards nothing.
        let floor = self
            .config
            .renew_retransmit_floor
            .max(Duration::from_secs(1));
        // Half the time left to the next state change, but not less than the floor (RFC 2131
        // §4.4.5), and never past the state change itself.
        let renewal_retry = |until: Instant| {
            later(now, (until.saturating_duration_since(now) / 2).max(floor)).min(until)
        };
        self.deadline = match &self.state {
            State::Stopped { lease } => lease.as_ref().map(Lease::expires_at),
            State::Init => Some(later(now, self.config.nak_delay)),
            State::Selecting(exchange)
            | State::Requesting { exchange, .. }
            | State::Rebooting { exchange, .. } => {
                let sends = exchange.sends;
                Some(later(now, self.backoff(sends)))
            }
            State::Bound { lease } => Some(lease.renew_at()),
            State::Renewing { lease, .. } => Some(renewal_retry(lease.rebind_at())),
            State::Rebinding { lease, .. } => Some(renewal_retry(lease.expires_at())),
        };
    }

    /// The message the current state sends, and resends on each retransmit.
    fn message(&self, now: Instant) -> Option<Transmit> {
        let (exchange, message_type, requested, server_id, lease) = match &self.state {
            State::Selecting(exchange) => (exchange, MessageType::Discover, None, None, None),
            State::Requesting {
                exchange,
                address,
                server_id,
                ..
            } => (
                exchange,
                MessageType::Request,
                Some(*address),
                Some(*server_id),
                None,
            ),
            State::Rebooting { exchange, lease } => (
                exchange,
                MessageType::Request,
                Some(lease.address),
                None,
                None,
            ),
            State::Renewing { exchange, lease } | State::Rebinding { exchange, lease } => {
                (exchange, MessageType::Request, None, None, Some(lease))
            }
            State::Stopped { .. } | State::Init | State::Bound { .. } => return None,
        };
        let mut message = Message::new(Op::Request, message_type, exchange.xid, self.config.mac);
        message.secs = u16::try_from(now.saturating_duration_since(exchange.started).as_secs())
            .unwrap_or(u16::MAX);
        let options = &mut message.options;
        options.requested_ip = requested;
        options.server_id = server_id;
        options.client_id = Some(self.client_id());
        options.hostname = self
            .config
            .hostname
            .as_ref()
            .map(|name| name.as_bytes().to_vec());
        options.parameter_request_list = PARAMETERS.to_vec();
        options.max_message_size = Some(MAX_MESSAGE_SIZE);
        let (source, destination) = match lease {
            // RENEWING unicasts to the server that granted the lease, REBINDING asks anyone.
            Some(lease) => {
                message.ciaddr = lease.address;
                let to = match self.state {
                    State::Renewing { .. } => Destination::Unicast(lease.server_id),
                    _ => Destination::Broadcast,
                };
                (lease.address, to)
            }
            None => (Ipv4Addr::UNSPECIFIED, Destination::Broadcast),
        };
        Some(Transmit {
            payload: message.encode(),
            source,
            destination,
        })
    }

    fn exchange(&mut self, now: Instant) -> Exchange {
        Exchange {
            xid: self.xid(),
            started: now,
            sends: 1,
        }
    }

    fn xid(&mut self) -> u32 {
        (self.rng.next() >> 32) as u32 // the high half of a u64 fits
    }

    /// The wait after the `sends`-th transmission: 4 s doubling to 64 s, ±1 s.
    fn backoff(&mut self, sends: u32) -> Duration {
        let doublings = sends.saturating_sub(1).min(4);
        let base = (FIRST_BACKOFF * (1 << doublings)).min(MAX_BACKOFF);
        let jitter = Duration::from_millis(self.rng.next() % (2 * JITTER_MS + 1));
        base.saturating_sub(Duration::from_millis(JITTER_MS)) + jitter
    }

    fn client_id(&self) -> Vec<u8> {
        match &self.config.client_id {
            Some(id) => id.clone(),
            None => [&[1u8][..], &self.config.mac].concat(),
        }
    }
}

fn lost(lease: Lease, reason: LossReason) -> Action {
    Action::Event(Event::LeaseLost { lease, reason })
}

#[cfg(test)]
mod tests;
