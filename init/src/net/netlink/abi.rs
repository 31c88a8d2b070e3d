//! The NETLINK_ROUTE wire format: the constants of `<linux/netlink.h>`, `<linux/rtnetlink.h>`,
//! `<linux/if_link.h>`, `<linux/if_addr.h>` we use, and the fixed headers as plain structs
//! with explicit encoders and bounds-checked decoders (no transmutes, so no `unsafe`).
//!
//! Netlink integers are in host byte order; IPv4 addresses inside attributes are in network
//! order (the four octets as written).

use super::message::MessageError;

// Netlink message types and flags (<linux/netlink.h>).
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x01;
pub const NLM_F_ACK: u16 = 0x04;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub const NLM_F_DUMP: u16 = 0x100 | 0x200;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;

// rtnetlink message types (<linux/rtnetlink.h>).
pub const RTM_NEWLINK: u16 = 16;
pub const RTM_DELLINK: u16 = 17;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_DELADDR: u16 = 21;
pub const RTM_GETADDR: u16 = 22;
pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_DELROUTE: u16 = 25;
pub const RTM_GETROUTE: u16 = 26;

/// The multicast group of link changes, as the legacy `bind` bit mask.
pub const RTMGRP_LINK: u32 = 0x01;

pub const AF_UNSPEC: u8 = 0;
pub const AF_INET: u8 = 2;

// Link attributes (<linux/if_link.h>) and flags (<linux/if.h>).
pub const IFLA_ADDRESS: u16 = 1;
pub const IFLA_IFNAME: u16 = 3;
pub const IFLA_MTU: u16 = 4;
pub const IFLA_OPERSTATE: u16 = 16;
pub const IFLA_CARRIER: u16 = 33;
pub const IFF_UP: u32 = 0x1;
pub const IFF_RUNNING: u32 = 0x40;
pub const IFF_LOWER_UP: u32 = 0x1_0000;
pub const ARPHRD_ETHER: u16 = 1;
pub const ARPHRD_LOOPBACK: u16 = 772;

// Address attributes (<linux/if_addr.h>).
pub const IFA_ADDRESS: u16 = 1;
pub const IFA_LOCAL: u16 = 2;
pub const IFA_LABEL: u16 = 3;
pub const IFA_BROADCAST: u16 = 4;
pub const IFA_CACHEINFO: u16 = 6;
/// `ifa_valid`/`ifa_prefered` meaning "forever".
pub const INFINITY_LIFE_TIME: u32 = u32::MAX;

// Route attributes and header values (<linux/rtnetlink.h>).
pub const RTA_DST: u16 = 1;
pub const RTA_OIF: u16 = 4;
pub const RTA_GATEWAY: u16 = 5;
pub const RTA_PRIORITY: u16 = 6;
pub const RTA_PREFSRC: u16 = 7;
pub const RTA_TABLE: u16 = 15;
pub const RT_TABLE_MAIN: u8 = 254;
pub const RT_SCOPE_UNIVERSE: u8 = 0;
pub const RT_SCOPE_LINK: u8 = 253;
/// In a delete request: match a route of any scope.
pub const RT_SCOPE_NOWHERE: u8 = 255;
pub const RTN_UNICAST: u8 = 1;
pub const RTPROT_BOOT: u8 = 3;
pub const RTPROT_STATIC: u8 = 4;
pub const RTPROT_DHCP: u8 = 16;

pub const NLMSG_HDRLEN: usize = 16;
pub const RTA_HDRLEN: usize = 4;

/// Netlink's 4-byte alignment of messages and attributes.
pub const fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// Reads fixed-size fields off the front of a slice, failing (never panicking) when it is short.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str, need: usize) -> Result<Self, MessageError> {
        if buf.len() < need {
            return Err(MessageError::Short {
                what,
                need,
                have: buf.len(),
            });
        }
        Ok(Reader { buf, what })
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], MessageError> {
        let (head, rest) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(MessageError::Short {
                what: self.what,
                need: N,
                have: self.buf.len(),
            })?;
        self.buf = rest;
        Ok(*head)
    }
    pub fn u8(&mut self) -> Result<u8, MessageError> {
        Ok(self.take::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, MessageError> {
        self.take().map(u16::from_ne_bytes)
    }
    pub fn u32(&mut self) -> Result<u32, MessageError> {
        self.take().map(u32::from_ne_bytes)
    }
    pub fn i32(&mut self) -> Result<i32, MessageError> {
        self.take().map(i32::from_ne_bytes)
    }
}

/// `struct nlmsghdr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NlMsgHdr {
    pub len: u32,
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub pid: u32,
}

impl NlMsgHdr {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.len.to_ne_bytes());
        out.extend_from_slice(&self.kind.to_ne_bytes());
        out.extend_from_slice(&self.flags.to_ne_bytes());
        out.extend_from_slice(&self.seq.to_ne_bytes());
        out.extend_from_slice(&self.pid.to_ne_bytes());
    }
    pub fn decode(buf: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(buf, "nlmsghdr", NLMSG_HDRLEN)?;
        Ok(NlMsgHdr {
            len: r.u32()?,
            kind: r.u16()?,
            flags: r.u16()?,
            seq: r.u32()?,
            pid: r.u32()?,
        })
    }
}

/// `struct ifinfomsg`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfInfoMsg {
    pub family: u8,
    pub kind: u16,
    pub index: i32,
    pub flags: u32,
    pub change: u32,
}

impl IfInfoMsg {
    pub const LEN: usize = 16;
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.family, 0]);
        out.extend_from_slice(&self.kind.to_ne_bytes());
        out.extend_from_slice(&self.index.to_ne_bytes());
        out.extend_from_slice(&self.flags.to_ne_bytes());
        out.extend_from_slice(&self.change.to_ne_bytes());
    }
    pub fn decode(buf: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(buf, "ifinfomsg", Self::LEN)?;
        let family = r.u8()?;
        let _pad = r.u8()?;
        Ok(IfInfoMsg {
            family,
            kind: r.u16()?,
            index: r.i32()?,
            flags: r.u32()?,
            change: r.u32()?,
        })
    }
}

/// `struct ifaddrmsg`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfAddrMsg {
    pub family: u8,
    pub prefix_len: u8,
    pub flags: u8,
    pub scope: u8,
    pub index: u32,
}

impl IfAddrMsg {
    pub const LEN: usize = 8;
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.family, self.prefix_len, self.flags, self.scope]);
        out.extend_from_slice(&self.index.to_ne_bytes());
    }
    pub fn decode(buf: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(buf, "ifaddrmsg", Self::LEN)?;
        Ok(IfAddrMsg {
            family: r.u8()?,
            prefix_len: r.u8()?,
            flags: r.u8()?,
            scope: r.u8()?,
            index: r.u32()?,
        })
    }
}

/// `struct rtmsg`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtMsg {
    pub family: u8,
    pub dst_len: u8,
    pub src_len: u8,
    pub tos: u8,
    pub table: u8,
    pub protocol: u8,
    pub scope: u8,
    pub kind: u8,
    pub flags: u32,
}

impl RtMsg {
    pub const LEN: usize = 12;
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[
            self.family,
            self.dst_len,
            self.src_len,
            self.tos,
            self.table,
            self.protocol,
            self.scope,
            self.kind,
        ]);
        out.extend_from_slice(&self.flags.to_ne_bytes());
    }
    pub fn decode(buf: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(buf, "rtmsg", Self::LEN)?;
        Ok(RtMsg {
            family: r.u8()?,
            dst_len: r.u8()?,
            src_len: r.u8()?,
            tos: r.u8()?,
            table: r.u8()?,
            protocol: r.u8()?,
            scope: r.u8()?,
            kind: r.u8()?,
            flags: r.u32()?,
        })
    }
}

/// `struct ifa_cacheinfo`: the lifetimes of an address, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfaCacheInfo {
    pub preferred: u32,
    pub valid: u32,
}

impl IfaCacheInfo {
    pub const LEN: usize = 16;
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[0..4].copy_from_slice(&self.preferred.to_ne_bytes());
        out[4..8].copy_from_slice(&self.valid.to_ne_bytes());
        // cstamp and tstamp are the kernel's to fill in.
        out
    }
    pub fn decode(buf: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(buf, "ifa_cacheinfo", Self::LEN)?;
        Ok(IfaCacheInfo {
            preferred: r.u32()?,
            valid: r.u32()?,
        })
    }
}
