//! Building requests (nlmsghdr + family header + aligned rtattrs) and walking replies. Every
//! length in a reply is checked against the bytes actually received: a short or garbled buffer
//! is a [`MessageError`], never a panic or an out-of-bounds read.

use std::net::Ipv4Addr;

use super::abi::{NLMSG_HDRLEN, NlMsgHdr, RTA_HDRLEN, Reader, align};

/// A reply the kernel should not have sent: lengths that do not add up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("the {what} is {have} bytes, shorter than its {need}")]
    Short {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("a netlink message claims {len} bytes but only {left} are left in the datagram")]
    MessagePastEnd { len: usize, left: usize },
    #[error("attribute {kind} claims {len} bytes but only {left} are left in its message")]
    AttrPastEnd { kind: u16, len: usize, left: usize },
    #[error("attribute {kind} is {have} bytes where {need} are expected")]
    AttrSize { kind: u16, need: usize, have: usize },
}

/// One request, built front to back; [`Request::finish`] writes the total length and sequence.
#[derive(Debug, Clone)]
pub struct Request {
    buf: Vec<u8>,
}

impl Request {
    /// A message of type `kind`; `NLM_F_REQUEST` is always set.
    pub fn new(kind: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(128);
        NlMsgHdr {
            len: 0,
            kind,
            flags: flags | super::abi::NLM_F_REQUEST,
            seq: 0,
            pid: 0,
        }
        .encode(&mut buf);
        Request { buf }
    }

    /// Appends the family header (ifinfomsg, ifaddrmsg, rtmsg) through its encoder. All three
    /// are a multiple of 4 bytes, so the attributes after them start aligned.
    pub fn header(mut self, encode: impl FnOnce(&mut Vec<u8>)) -> Self {
        encode(&mut self.buf);
        self
    }

    /// Appends one rtattr, padded to 4 bytes. Attribute payloads here are a few bytes, far
    /// below rta_len's u16 limit; a longer one would be a bug of this module, and its rta_len
    /// of u16::MAX makes the kernel reject the request rather than misread it.
    pub fn attr(mut self, kind: u16, data: &[u8]) -> Self {
        let len = u16::try_from(RTA_HDRLEN + data.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    pub fn attr_u32(self, kind: u16, value: u32) -> Self {
        self.attr(kind, &value.to_ne_bytes())
    }

    pub fn attr_ipv4(self, kind: u16, addr: Ipv4Addr) -> Self {
        self.attr(kind, &addr.octets())
    }

    /// The bytes to send, with `nlmsg_len` and `nlmsg_seq` filled in (`new` wrote the
    /// 16-byte header these ranges are in).
    pub fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// One message of a received datagram: its header and the payload after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub header: NlMsgHdr,
    pub payload: &'a [u8],
}

/// The messages of one datagram. After the first error the iterator ends.
pub fn messages(buf: &[u8]) -> Messages<'_> {
    Messages { buf }
}

#[derive(Debug, Clone)]
pub struct Messages<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, MessageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let result = next_message(self.buf);
        match &result {
            Ok((_, rest)) => self.buf = rest,
            Err(_) => self.buf = &[],
        }
        Some(result.map(|(m, _)| m))
    }
}

fn next_message(buf: &[u8]) -> Result<(Message<'_>, &[u8]), MessageError> {
    let header = NlMsgHdr::decode(buf)?;
    let len = header.len as usize;
    if len < NLMSG_HDRLEN {
        return Err(MessageError::Short {
            what: "message (nlmsg_len)",
            need: NLMSG_HDRLEN,
            have: len,
        });
    }
    let payload = buf
        .get(NLMSG_HDRLEN..len)
        .ok_or(MessageError::MessagePastEnd {
            len,
            left: buf.len(),
        })?;
    // The last message of a datagram may omit its padding.
    let rest = buf.get(align(len)..).unwrap_or(&[]);
    Ok((Message { header, payload }, rest))
}

/// The errno of an NLMSG_ERROR payload: 0 for an acknowledgement, else a positive errno.
pub fn error_code(payload: &[u8]) -> Result<i32, MessageError> {
    let error = Reader::new(payload, "nlmsgerr", 4)?.i32()?;
    Ok(error.saturating_neg())
}

/// The attributes after a family header of `header_len` bytes.
pub fn attrs(payload: &[u8], header_len: usize) -> Attrs<'_> {
    Attrs {
        buf: payload.get(align(header_len)..).unwrap_or(&[]),
    }
}

/// The rtattrs of a message. After the first error the iterator ends.
#[derive(Debug, Clone)]
pub struct Attrs<'a> {
    buf: &'a [u8],
}

/// One attribute: its type (nested/byte-order bits masked off) and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    pub kind: u16,
    pub data: &'a [u8],
}

impl<'a> Attr<'a> {
    pub fn u8(&self) -> Result<u8, MessageError> {
        self.fixed::<1>().map(|b| b[0])
    }
    pub fn u32(&self) -> Result<u32, MessageError> {
        self.fixed().map(u32::from_ne_bytes)
    }
    pub fn ipv4(&self) -> Result<Ipv4Addr, MessageError> {
        self.fixed::<4>().map(Ipv4Addr::from)
    }
    /// A NUL-terminated string (the NUL is optional); invalid UTF-8 is replaced.
    pub fn string(&self) -> String {
        let bytes = self.data.split(|&b| b == 0).next().unwrap_or(&[]);
        String::from_utf8_lossy(bytes).into_owned()
    }
    pub fn fixed<const N: usize>(&self) -> Result<[u8; N], MessageError> {
        self.data.try_into().map_err(|_| MessageError::AttrSize {
            kind: self.kind,
            need: N,
            have: self.data.len(),
        })
    }
}

/// NLA_F_NESTED and NLA_F_NET_BYTEORDER live in the top bits of rta_type.
const NLA_TYPE_MASK: u16 = 0x3fff;

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>, MessageError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Fewer than a header's bytes left is trailing padding, not an attribute.
        if self.buf.len() < RTA_HDRLEN {
            return None;
        }
        let result = next_attr(self.buf);
        match &result {
            Ok((_, rest)) => self.buf = rest,
            Err(_) => self.buf = &[],
        }
        Some(result.map(|(a, _)| a))
    }
}

fn next_attr(buf: &[u8]) -> Result<(Attr<'_>, &[u8]), MessageError> {
    let mut r = Reader::new(buf, "rtattr", RTA_HDRLEN)?;
    let len = usize::from(r.u16()?);
    let kind = r.u16()? & NLA_TYPE_MASK;
    if len < RTA_HDRLEN {
        return Err(MessageError::Short {
            what: "attribute (rta_len)",
            need: RTA_HDRLEN,
            have: len,
        });
    }
    let data = buf.get(RTA_HDRLEN..len).ok_or(MessageError::AttrPastEnd {
        kind,
        len,
        left: buf.len(),
    })?;
    let rest = buf.get(align(len)..).unwrap_or(&[]);
    Ok((Attr { kind, data }, rest))
}
