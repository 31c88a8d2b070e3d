//! One DNS question and the checks on its answer, without I/O: the query's bytes, and what a
//! datagram that claims to answer it means (addresses, no such name, try another server, or
//! not an answer to us at all).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use simple_dns::rdata::RData;
use simple_dns::{CLASS, Name, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, TYPE};
use thiserror::Error;

use super::hosts::check_name;

/// The header is 12 bytes; a question at least 5 (root name, type, class); a record at least
/// 11 (root name, type, class, TTL, rdlength).
const HEADER_LEN: usize = 12;
const MIN_QUESTION_LEN: usize = 5;
const MIN_RECORD_LEN: usize = 11;

/// Longest CNAME chain followed inside one answer. glibc stops at 16 (MAXPACKET-bound loops
/// aside); a legitimate chain is rarely longer than 3.
const MAX_CNAME_HOPS: usize = 16;

const FLAG_QR: u16 = 0x8000;
const FLAG_TC: u16 = 0x0200;

/// Which address family a query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    A,
    Aaaa,
}

impl RecordType {
    fn dns_type(self) -> TYPE {
        match self {
            RecordType::A => TYPE::A,
            RecordType::Aaaa => TYPE::AAAA,
        }
    }
}

impl std::fmt::Display for RecordType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
        })
    }
}

/// An address from an answer, with its time to live in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    pub ip: IpAddr,
    pub ttl: u32,
}

/// What a valid answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The name (or the end of its CNAME chain) has these addresses of the asked type.
    Addresses(Vec<Address>),
    /// The name exists but has no record of the asked type (NOERROR, nothing relevant).
    NoData,
    /// NXDOMAIN: the name does not exist. Definite: other servers are not asked.
    NoSuchName,
}

/// Why an answer was not accepted.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ResponseError {
    /// Not an answer to this query (wrong id, not a response, another question). A resolver
    /// keeps waiting: it may be a late answer to an earlier try or a spoofing attempt.
    #[error("not an answer to our {qtype} query for {name:?}: {reason}")]
    NotOurs {
        name: String,
        qtype: RecordType,
        reason: &'static str,
    },
    /// SERVFAIL, REFUSED, NOTIMP, FORMERR...: this server cannot answer; try the next.
    #[error("the server answered {rcode} to the {qtype} query for {name:?}")]
    ServerFailure {
        name: String,
        qtype: RecordType,
        rcode: Rcode,
    },
    /// The answer did not fit in a UDP datagram. Retrying over TCP is not implemented.
    #[error(
        "the answer to the {qtype} query for {name:?} was truncated (TC) and TCP is not supported"
    )]
    Truncated { name: String, qtype: RecordType },
    #[error("the answer to the {qtype} query for {name:?} is malformed: {reason}")]
    Malformed {
        name: String,
        qtype: RecordType,
        reason: String,
    },
}

/// Why a query could not be built.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("{name:?} is not a host name DNS can be asked for: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("cannot encode the {qtype} query for {name:?}: {reason}")]
    Encode {
        name: String,
        qtype: RecordType,
        reason: String,
    },
}

/// A response code, named when it is one a stub resolver meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rcode(pub u8);

impl std::fmt::Display for Rcode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0 => f.write_str("NOERROR"),
            1 => f.write_str("FORMERR"),
            2 => f.write_str("SERVFAIL"),
            3 => f.write_str("NXDOMAIN"),
            4 => f.write_str("NOTIMP"),
            5 => f.write_str("REFUSED"),
            n => write!(f, "RCODE {n}"),
        }
    }
}

/// A query for one name and type, kept to check the answers that claim to be for it.
#[derive(Debug, Clone)]
pub struct Query {
    name: String,
    qtype: RecordType,
    id: u16,
    bytes: Vec<u8>,
}

impl Query {
    /// A recursive (RD) query with one question. `id` should come from a random source: with
    /// the random source port it is what stops an off-path attacker from forging the answer.
    pub fn new(name: &str, qtype: RecordType, id: u16) -> Result<Query, QueryError> {
        let invalid = |reason: String| QueryError::InvalidName {
            name: name.to_owned(),
            reason,
        };
        check_name(name).map_err(|e| invalid(e.to_string()))?;
        let trimmed = name.strip_suffix('.').unwrap_or(name);
        let encode = |e: simple_dns::SimpleDnsError| QueryError::Encode {
            name: name.to_owned(),
            qtype,
            reason: e.to_string(),
        };
        let qname = Name::new(trimmed).map_err(|e| invalid(e.to_string()))?;
        let mut packet = Packet::new_query(id);
        packet.set_flags(PacketFlag::RECURSION_DESIRED);
        packet.questions.push(Question::new(
            qname,
            QTYPE::TYPE(qtype.dns_type()),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        let bytes = packet.build_bytes_vec().map_err(encode)?;
        Ok(Query {
            name: trimmed.to_owned(),
            qtype,
            id,
            bytes,
        })
    }

    /// The datagram to send.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn id(&self) -> u16 {
        self.id
    }

    pub fn qtype(&self) -> RecordType {
        self.qtype
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks a datagram that arrived for this query and reads its answer.
    pub fn check_response(&self, bytes: &[u8]) -> Result<Answer, ResponseError> {
        let not_ours = |reason| ResponseError::NotOurs {
            name: self.name.clone(),
            qtype: self.qtype,
            reason,
        };
        let malformed = |reason: String| ResponseError::Malformed {
            name: self.name.clone(),
            qtype: self.qtype,
            reason,
        };
        // The header is read by hand first: a truncated or failing answer is classified even
        // when its body would not parse.
        let Some(header) = bytes.get(..HEADER_LEN) else {
            return Err(not_ours("shorter than a DNS header"));
        };
        let word = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
        let (id, flags, qdcount) = (word(0), word(2), word(4));
        if id != self.id {
            return Err(not_ours("another message id"));
        }
        if flags & FLAG_QR == 0 {
            return Err(not_ours("a query, not a response"));
        }
        if (flags >> 11) & 0xf != 0 {
            return Err(not_ours("not a standard query response"));
        }
        let rcode = Rcode((flags & 0xf) as u8);
        let failed = !matches!(rcode.0, 0 | 3);
        if flags & FLAG_TC != 0 {
            return Err(ResponseError::Truncated {
                name: self.name.clone(),
                qtype: self.qtype,
            });
        }
        // FORMERR and its kin may come without the question (RFC 1035 does not require the
        // echo); the id and source address are all there is to match on.
        if failed && qdcount == 0 {
            return Err(self.server_failure(rcode));
        }
        let counts = [word(6), word(8), word(10)];
        let least = usize::from(qdcount) * MIN_QUESTION_LEN
            + counts.iter().map(|&n| usize::from(n)).sum::<usize>() * MIN_RECORD_LEN;
        // The parser reserves room for every counted record up front; a 12-byte datagram
        // claiming 65535 of each must not cost megabytes.
        if least > bytes.len() - HEADER_LEN {
            return Err(malformed(format!(
                "the header counts {qdcount} questions and {} records, more than {} bytes hold",
                counts.iter().map(|&n| u32::from(n)).sum::<u32>(),
                bytes.len()
            )));
        }
        let packet = Packet::parse(bytes).map_err(|e| malformed(e.to_string()))?;
        let [question] = packet.questions.as_slice() else {
            return Err(not_ours("not exactly one question"));
        };
        // Name equality ignores ASCII case, so a server's 0x20 case echo still matches.
        let ours = Name::new_unchecked(&self.name);
        if question.qname != ours
            || question.qtype != QTYPE::TYPE(self.qtype.dns_type())
            || question.qclass != QCLASS::CLASS(CLASS::IN)
        {
            return Err(not_ours("another question"));
        }
        if failed {
            return Err(self.server_failure(rcode));
        }
        if packet.rcode() == RCODE::NameError {
            return Ok(Answer::NoSuchName);
        }
        let (target, chain_ttl) = follow_cnames(&packet, ours).map_err(malformed)?;
        let addresses: Vec<Address> = packet
            .answers
            .iter()
            .filter(|rr| rr.class == CLASS::IN && rr.name == target)
            .filter_map(|rr| {
                let ip = match (&rr.rdata, self.qtype) {
                    (RData::A(a), RecordType::A) => IpAddr::V4(Ipv4Addr::from(a.address)),
                    (RData::AAAA(a), RecordType::Aaaa) => IpAddr::V6(Ipv6Addr::from(a.address)),
                    _ => return None,
                };
                // An address reached through a CNAME is only as fresh as the CNAME.
                Some(Address {
                    ip,
                    ttl: rr.ttl.min(chain_ttl),
                })
            })
            .collect();
        Ok(if addresses.is_empty() {
            Answer::NoData
        } else {
            Answer::Addresses(addresses)
        })
    }

    fn server_failure(&self, rcode: Rcode) -> ResponseError {
        ResponseError::ServerFailure {
            name: self.name.clone(),
            qtype: self.qtype,
            rcode,
        }
    }
}

/// The name the answer's addresses belong to: `start`, or where its CNAME chain in the answer
/// section ends, with the chain's lowest TTL. Records for other names are left alone (a
/// resolver may add unrelated ones).
fn follow_cnames<'a>(packet: &'a Packet<'a>, start: Name<'a>) -> Result<(Name<'a>, u32), String> {
    let mut current = start;
    let mut ttl = u32::MAX;
    let mut seen: Vec<Name<'a>> = Vec::new();
    loop {
        let next = packet.answers.iter().find_map(|rr| match &rr.rdata {
            RData::CNAME(cname) if rr.class == CLASS::IN && rr.name == current => {
                Some((cname.0.clone(), rr.ttl))
            }
            _ => None,
        });
        let Some((next, hop_ttl)) = next else {
            return Ok((current, ttl));
        };
        ttl = ttl.min(hop_ttl);
        seen.push(current);
        if seen.contains(&next) {
            return Err(format!("the CNAME chain loops back to {next}"));
        }
        if seen.len() > MAX_CNAME_HOPS {
            return Err(format!("the CNAME chain is longer than {MAX_CNAME_HOPS}"));
        }
        current = next;
    }
}

#[cfg(test)]
#[path = "query_tests.rs"]
mod tests;
