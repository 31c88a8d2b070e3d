//! The network protocols init speaks. DHCP is pure code: every function takes bytes and the
//! current time and returns bytes and deadlines, so the state machine is tested against
//! recorded packets and fuzzed without a socket; init owns the packet socket, netlink and the
//! event loop. DNS has the same pure core (queries and answers) plus a small blocking resolver
//! over `std::net::UdpSocket`, which init's fetch worker calls through aci's resolver seam.

pub mod dhcp;
pub mod dns;
