//! DHCPv4 (RFC 2131, options RFC 2132): the packet codec and the client's state machine.
//!
//! Design notes to be completed with the client.

pub mod frame;
pub mod options;
pub mod packet;
