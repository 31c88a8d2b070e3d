//! The AF_NETLINK/NETLINK_ROUTE socket: one request at a time with a sequence number, its
//! replies read until the acknowledgement (NLMSG_ERROR) or the end of a dump (NLMSG_DONE).
//! A kernel errno comes back as that `io::Error`; a reply that does not parse as
//! `InvalidData`; no answer within [`REPLY_TIMEOUT`] as `TimedOut` (PID1 must not hang).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::sockopt::{Timeout, set_socket_timeout};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use super::abi::{NLM_F_DUMP_INTR, NLMSG_DONE, NLMSG_ERROR};
use super::message::{Message, MessageError, Request, error_code, messages};

/// The kernel answers rtnetlink requests at once; this only bounds a wedged kernel.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// The kernel sizes dump datagrams to the reader's buffer, capped at 32 KiB, so this holds
/// any datagram it sends.
const RECV_BUF_LEN: usize = 32 * 1024;
/// A dump the kernel flags as interrupted (the set changed while it was read) is retried.
const DUMP_ATTEMPTS: usize = 3;

#[derive(Debug)]
pub(crate) struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

pub(crate) fn invalid(e: MessageError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Socket {
    /// Opens a socket bound to the multicast `groups` (0 for none: a request socket).
    pub fn open(groups: u32) -> io::Result<Self> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            // NETLINK_ROUTE is protocol 0, which rustix spells `None`.
            None,
        )?;
        // Port id 0: the kernel picks a unique one, so several sockets can coexist.
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, groups))?;
        set_socket_timeout(&fd, Timeout::Recv, Some(REPLY_TIMEOUT))?;
        Ok(Socket {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUF_LEN],
        })
    }

    fn send(&mut self, req: Request) -> io::Result<u32> {
        // 0 is what multicast notifications carry; never use it for a request.
        self.seq = self.seq.wrapping_add(1).max(1);
        let bytes = req.finish(self.seq);
        let sent = rustix::net::send(&self.fd, &bytes, SendFlags::empty())?;
        if sent != bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("the kernel took {sent} of {} request bytes", bytes.len()),
            ));
        }
        Ok(self.seq)
    }

    /// Receives one datagram into `self.buf`, returning its length.
    fn recv(&mut self, flags: RecvFlags) -> io::Result<usize> {
        let (_, len) = rustix::net::recv(&self.fd, &mut self.buf[..], flags | RecvFlags::TRUNC)?;
        if len > self.buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a {len}-byte netlink datagram did not fit the {RECV_BUF_LEN}-byte buffer"),
            ));
        }
        Ok(len)
    }

    fn recv_reply(&mut self) -> io::Result<usize> {
        self.recv(RecvFlags::empty()).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the kernel did not answer within {REPLY_TIMEOUT:?}"),
                )
            } else {
                e
            }
        })
    }

    /// Sends `req` (built with NLM_F_ACK) and waits for the kernel's acknowledgement.
    pub fn request(&mut self, req: Request) -> io::Result<()> {
        let seq = self.send(req)?;
        loop {
            let len = self.recv_reply()?;
            for m in messages(&self.buf[..len]) {
                let m = m.map_err(invalid)?;
                // Answers to an earlier request that timed out, or notifications: not ours.
                if m.header.seq != seq || m.header.kind != NLMSG_ERROR {
                    continue;
                }
                return match error_code(m.payload).map_err(invalid)? {
                    0 => Ok(()),
                    errno => Err(io::Error::from_raw_os_error(errno)),
                };
            }
        }
    }

    /// Sends `req` (built with NLM_F_DUMP) and returns what `parse` makes of each message; messages it
    /// returns `None` for (other families, other types) are left out.
    pub fn dump<T>(
        &mut self,
        req: Request,
        mut parse: impl FnMut(&Message<'_>) -> Result<Option<T>, MessageError>,
    ) -> io::Result<Vec<T>> {
        let mut attempt = 1;
        loop {
            match self.dump_once(req.clone(), &mut parse)? {
                Some(items) => return Ok(items),
                None if attempt < DUMP_ATTEMPTS => attempt += 1,
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::Interrupted,
                        format!("the dump changed while it was read, {DUMP_ATTEMPTS} times"),
                    ));
                }
            }
        }
    }

    /// One dump; `None` when the kernel flagged it as interrupted.
    fn dump_once<T>(
        &mut self,
        req: Request,
        parse: &mut impl FnMut(&Message<'_>) -> Result<Option<T>, MessageError>,
    ) -> io::Result<Option<Vec<T>>> {
        let seq = self.send(req)?;
        let mut items = Vec::new();
        let mut interrupted = false;
        loop {
            let len = self.recv_reply()?;
            for m in messages(&self.buf[..len]) {
                let m = m.map_err(invalid)?;
                if m.header.seq != seq {
                    continue;
                }
                interrupted |= m.header.flags & NLM_F_DUMP_INTR != 0;
                match m.header.kind {
                    // NLMSG_DONE carries the dump's own error code, 0 when it succeeded.
                    NLMSG_DONE | NLMSG_ERROR => {
                        let errno = error_code(m.payload).map_err(invalid)?;
                        if errno != 0 {
                            return Err(io::Error::from_raw_os_error(errno));
                        }
                        return Ok((!interrupted).then_some(items));
                    }
                    _ => {
                        if let Some(item) = parse(&m).map_err(invalid)? {
                            items.push(item);
                        }
                    }
                }
            }
        }
    }

    /// The next datagram if one is waiting, without blocking.
    pub fn try_recv(&mut self) -> io::Result<Option<&[u8]>> {
        match self.recv(RecvFlags::DONTWAIT) {
            Ok(len) => Ok(self.buf.get(..len)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
