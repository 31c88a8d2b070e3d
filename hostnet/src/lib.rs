//! The network protocols init speaks, as pure code: every function takes bytes and the current
//! time and returns bytes and deadlines, so the state machines are tested against recorded
//! packets and fuzzed without a socket. init owns the sockets, netlink and the event loop.

pub mod dhcp;
pub mod dns;
