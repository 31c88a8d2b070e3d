//! The DHCP message (RFC 2131 §2): the BOOTP fixed header, the magic cookie and the options,
//! decoded from untrusted bytes without panicking and encoded for sending.

use std::net::Ipv4Addr;

pub use super::options::Options;
use super::options::{RawOptions, code, put};

/// The fixed header up to and including the magic cookie.
pub const HEADER_LEN: usize = 240;
/// RFC 1542 §2.1: relays and some servers drop BOOTP messages shorter than this.
const MIN_MESSAGE_LEN: usize = 300;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// The `flags` bit asking the server to broadcast its reply (RFC 2131 §4.1).
pub const FLAG_BROADCAST: u16 = 0x8000;
/// `htype` for Ethernet.
pub const HTYPE_ETHERNET: u8 = 1;

const SNAME: std::ops::Range<usize> = 44..108;
const FILE: std::ops::Range<usize> = 108..236;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("a DHCP message is at least {HEADER_LEN} bytes, got {len}")]
    TruncatedHeader { len: usize },
    #[error("the BOOTP op is {0}, neither request (1) nor reply (2)")]
    UnknownOp(u8),
    #[error("the magic cookie is {0:?}, not 99.130.83.99")]
    BadMagicCookie([u8; 4]),
    #[error("option {code} runs past the end of its area")]
    OptionOverrun { code: u8 },
    #[error("option {code} has {len} bytes, which is not a valid size for it")]
    BadOptionLength { code: u8, len: usize },
    #[error("the option overload value is {0}, not 1, 2 or 3")]
    BadOverload(u8),
    #[error("the classless static routes option ({len} bytes) is malformed")]
    BadClasslessRoutes { len: usize },
    #[error("the message has no DHCP message type option: a plain BOOTP message")]
    MissingMessageType,
    #[error("the DHCP message type is {0}, not one of 1 to 8")]
    UnknownMessageType(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Request = 1,
    Reply = 2,
}

/// Option 53 (RFC 2132 §9.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl MessageType {
    fn from_u8(value: u8) -> Result<Self, DecodeError> {
        Ok(match value {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            other => return Err(DecodeError::UnknownMessageType(other)),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub op: Op,
    pub htype: u8,
    pub hlen: u8,
    pub hops: u8,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
    /// Raw, also when option overload put options in it (those are in `options` too).
    pub sname: [u8; 64],
    /// Raw, like `sname`.
    pub file: [u8; 128],
    pub message_type: MessageType,
    pub options: Options,
}

impl Message {
    /// A message from an Ethernet client with every other field zero.
    pub fn new(op: Op, message_type: MessageType, xid: u32, mac: [u8; 6]) -> Self {
        let mut chaddr = [0u8; 16];
        chaddr[..6].copy_from_slice(&mac);
        Self {
            op,
            htype: HTYPE_ETHERNET,
            hlen: 6,
            hops: 0,
            xid,
            secs: 0,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            sname: [0; 64],
            file: [0; 128],
            message_type,
            options: Options::default(),
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let header: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(DecodeError::TruncatedHeader { len: bytes.len() })?;
        let op = match header[0] {
            1 => Op::Request,
            2 => Op::Reply,
            other => return Err(DecodeError::UnknownOp(other)),
        };
        let cookie = [header[236], header[237], header[238], header[239]];
        if cookie != MAGIC_COOKIE {
            return Err(DecodeError::BadMagicCookie(cookie));
        }
        let ip =
            |at: usize| Ipv4Addr::new(header[at], header[at + 1], header[at + 2], header[at + 3]);
        let mut chaddr = [0u8; 16];
        chaddr.copy_from_slice(&header[28..44]);
        let mut sname = [0u8; 64];
        sname.copy_from_slice(&header[SNAME]);
        let mut file = [0u8; 128];
        file.copy_from_slice(&header[FILE]);

        let mut raw = RawOptions::default();
        raw.parse_area(bytes.get(HEADER_LEN..).unwrap_or_default())?;
        // RFC 2132 §9.3: the overload option lives in the options field and says whether
        // `file` (1), `sname` (2) or both (3) hold more options; RFC 3396 fixes the order.
        if let Some(overload) = raw.take(code::OVERLOAD) {
            let [value] = overload[..] else {
                return Err(DecodeError::BadOptionLength {
                    code: code::OVERLOAD,
                    len: overload.len(),
                });
            };
            if !(1..=3).contains(&value) {
                return Err(DecodeError::BadOverload(value));
            }
            if value & 1 != 0 {
                raw.parse_area(&file)?;
            }
            if value & 2 != 0 {
                raw.parse_area(&sname)?;
            }
            // An overload option inside an overloaded field means nothing; dropping it keeps
            // the encoding of the decoded message free of overload.
            raw.take(code::OVERLOAD);
        }
        let message_type = match raw.take(code::MESSAGE_TYPE) {
            None => return Err(DecodeError::MissingMessageType),
            Some(v) => match v[..] {
                [value] => MessageType::from_u8(value)?,
                _ => {
                    return Err(DecodeError::BadOptionLength {
                        code: code::MESSAGE_TYPE,
                        len: v.len(),
                    });
                }
            },
        };
        Ok(Self {
            op,
            htype: header[1],
            hlen: header[2],
            hops: header[3],
            xid: u32::from_be_bytes([header[4], header[5], header[6], header[7]]),
            secs: u16::from_be_bytes([header[8], header[9]]),
            flags: u16::from_be_bytes([header[10], header[11]]),
            ciaddr: ip(12),
            yiaddr: ip(16),
            siaddr: ip(20),
            giaddr: ip(24),
            chaddr,
            sname,
            file,
            message_type,
            options: raw.into_options()?,
        })
    }

    /// The message as sent: every option in the options field (never overloaded), padded to
    /// the 300-byte BOOTP minimum.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MIN_MESSAGE_LEN);
        out.extend([self.op as u8, self.htype, self.hlen, self.hops]);
        out.extend(self.xid.to_be_bytes());
        out.extend(self.secs.to_be_bytes());
        out.extend(self.flags.to_be_bytes());
        for ip in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            out.extend(ip.octets());
        }
        out.extend(self.chaddr);
        out.extend(self.sname);
        out.extend(self.file);
        out.extend(MAGIC_COOKIE);
        put(&mut out, code::MESSAGE_TYPE, &[self.message_type as u8]);
        self.options.encode_into(&mut out);
        out.push(code::END);
        if out.len() < MIN_MESSAGE_LEN {
            out.resize(MIN_MESSAGE_LEN, code::PAD);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discover() -> Message {
        let mut message = Message::new(
            Op::Request,
            MessageType::Discover,
            0x1234_5678,
            [2, 0, 0, 0, 0, 1],
        );
        message.flags = FLAG_BROADCAST;
        message.options.parameter_request_list = vec![1, 3, 6];
        message
    }

    #[test]
    fn encodes_the_fixed_header_at_its_rfc_offsets() {
        let bytes = discover().encode();
        assert_eq!(bytes.len(), MIN_MESSAGE_LEN);
        assert_eq!(bytes[..4], [1, 1, 6, 0]);
        assert_eq!(bytes[4..8], [0x12, 0x34, 0x56, 0x78]);
        assert_eq!(bytes[10..12], [0x80, 0]);
        assert_eq!(bytes[28..34], [2, 0, 0, 0, 0, 1]);
        assert_eq!(bytes[236..243], [99, 130, 83, 99, 53, 1, 1]);
    }

    #[test]
    fn decodes_what_it_encodes() {
        let message = discover();
        assert_eq!(Message::decode(&message.encode()), Ok(message));
    }

    #[test]
    fn rejects_a_truncated_header() {
        let bytes = discover().encode();
        assert_eq!(
            Message::decode(&bytes[..239]),
            Err(DecodeError::TruncatedHeader { len: 239 })
        );
        assert_eq!(
            Message::decode(&[]),
            Err(DecodeError::TruncatedHeader { len: 0 })
        );
    }

    #[test]
    fn rejects_a_bad_magic_cookie() {
        let mut bytes = discover().encode();
        bytes[236] = 0;
        assert_eq!(
            Message::decode(&bytes),
            Err(DecodeError::BadMagicCookie([0, 130, 83, 99]))
        );
    }

    #[test]
    fn rejects_a_message_without_a_message_type() {
        let mut bytes = discover().encode();
        bytes.truncate(HEADER_LEN);
        bytes.push(code::END);
        assert_eq!(
            Message::decode(&bytes),
            Err(DecodeError::MissingMessageType)
        );
    }

    #[test]
    fn rejects_a_zero_length_message_type() {
        let mut bytes = discover().encode();
        bytes.truncate(HEADER_LEN);
        bytes.extend([53, 0, 255]);
        assert_eq!(
            Message::decode(&bytes),
            Err(DecodeError::BadOptionLength { code: 53, len: 0 })
        );
    }

    #[test]
    fn reads_options_from_file_and_sname_when_overloaded() {
        let mut bytes = discover().encode();
        bytes.truncate(HEADER_LEN);
        bytes.extend([52, 1, 3, 53, 1, 2, 255]);
        // The domain name starts in `file` and continues in `sname` (RFC 3396 order).
        bytes[FILE.start..FILE.start + 5].copy_from_slice(&[15, 2, b'a', b'b', 255]);
        bytes[SNAME.start..SNAME.start + 4].copy_from_slice(&[15, 1, b'c', 255]);
        let message = Message::decode(&bytes).unwrap();
        assert_eq!(message.message_type, MessageType::Offer);
        assert_eq!(message.options.domain_name.as_deref(), Some(&b"abc"[..]));
    }

    #[test]
    fn rejects_an_overload_value_other_than_1_2_3() {
        let mut bytes = discover().encode();
        bytes.truncate(HEADER_LEN);
        bytes.extend([52, 1, 4, 53, 1, 2, 255]);
        assert_eq!(Message::decode(&bytes), Err(DecodeError::BadOverload(4)));
    }

    #[test]
    fn ignores_sname_and_file_without_overload() {
        let mut bytes = discover().encode();
        bytes[FILE.start..FILE.start + 3].copy_from_slice(&[15, 9, b'a']);
        assert_eq!(Message::decode(&bytes).unwrap().options.domain_name, None);
    }
}
