//! DHCPv4 (RFC 2131, options RFC 2132): the packet codec and the client's state machine.
