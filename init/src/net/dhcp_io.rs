//! The DHCP client's sockets. An AF_PACKET SOCK_DGRAM socket on the interface receives the
//! server's replies (to an address the host does not have yet) and sends broadcasts (from
//! 0.0.0.0, which no UDP socket can); a classic BPF filter lets only UDP to port 68 wake init.
//! Unicast renewals go through a UDP socket bound to the leased address and the device, so
//! the kernel routes them and resolves the server's MAC with ARP.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use hostnet::dhcp::frame::{CLIENT_PORT, SERVER_PORT};
use rustix::net::addr::{SocketAddrArg, SocketAddrLen, SocketAddrOpaque};
use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, bind, recv, sendto, socket_with,
};

use super::netlink::Iface;

/// Big enough for any frame on a 1500-byte link, and for jumbo frames' DHCP replies, which
/// are never larger than that.
pub const RECV_BUF: usize = 9216;

/// The receive buffer [`PacketSocket::try_recv`] fills.
pub type RecvBuf = [u8; RECV_BUF];

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("opening a packet socket for {iface} failed")]
    OpenPacket {
        iface: String,
        #[source]
        source: io::Error,
    },
    #[error("attaching the DHCP filter to the packet socket of {iface} failed")]
    AttachFilter {
        iface: String,
        #[source]
        source: io::Error,
    },
    #[error("binding the packet socket to {iface} failed")]
    BindPacket {
        iface: String,
        #[source]
        source: io::Error,
    },
    #[error("receiving on the packet socket of {iface} failed")]
    ReceivePacket {
        iface: String,
        #[source]
        source: io::Error,
    },
    #[error("broadcasting a DHCP message on {iface} failed")]
    Broadcast {
        iface: String,
        #[source]
        source: io::Error,
    },
    #[error("opening a UDP socket on {iface} for {address}:68 failed")]
    OpenUdp {
        iface: String,
        address: Ipv4Addr,
        #[source]
        source: io::Error,
    },
    #[error("sending a DHCP message to {server} from {iface} failed")]
    Unicast {
        iface: String,
        server: Ipv4Addr,
        #[source]
        source: io::Error,
    },
}

/// `sockaddr_ll` for a packet socket: the interface, the EtherType and, for sending, the
/// destination MAC.
struct LinkAddr(libc::sockaddr_ll);

impl LinkAddr {
    fn new(ifindex: u32, mac: [u8; 6]) -> Self {
        let mut addr = [0u8; 8];
        addr[..6].copy_from_slice(&mac);
        LinkAddr(libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: (libc::ETH_P_IP as u16).to_be(),
            // An index past i32::MAX names no device; the kernel answers ENODEV.
            sll_ifindex: i32::try_from(ifindex).unwrap_or(i32::MAX),
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 6,
            sll_addr: addr,
        })
    }
}

// SAFETY: `f` gets a pointer to the whole `sockaddr_ll`, which lives for the call, and its
// exact size; a sockaddr_ll with family AF_PACKET is what packet sockets' bind and sendto
// take.
unsafe impl SocketAddrArg for LinkAddr {
    unsafe fn with_sockaddr<R>(
        &self,
        f: impl FnOnce(*const SocketAddrOpaque, SocketAddrLen) -> R,
    ) -> R {
        let len = std::mem::size_of::<libc::sockaddr_ll>() as SocketAddrLen; // 20 bytes
        f(std::ptr::from_ref(&self.0).cast(), len)
    }
}

/// Classic BPF over the IPv4 packet (SOCK_DGRAM starts at the IP header): accept UDP that is
/// not a later fragment and goes to port 68, drop the rest, so the host's other traffic does
/// not wake init.
const DHCP_FILTER: [libc::sock_filter; 9] = [
    stmt(0x30, 9),            // ldb [9]: protocol
    jump(0x15, 17, 0, 6),     // jeq #UDP, else drop
    stmt(0x28, 6),            // ldh [6]: flags and fragment offset
    jump(0x45, 0x1fff, 4, 0), // jset #offset: a later fragment, drop
    stmt(0xb1, 0),            // ldxb 4*([0]&0xf): header length
    stmt(0x48, 2),            // ldh [x+2]: UDP destination port
    jump(0x15, 68, 0, 1),     // jeq #68, else drop
    stmt(0x06, u32::MAX),     // ret: accept the whole packet
    stmt(0x06, 0),            // ret: drop
];

const fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The packet socket of one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    iface: Iface,
}

impl PacketSocket {
    pub fn open(iface: &Iface) -> Result<Self, SocketError> {
        let name = || iface.name.clone();
        // Protocol 0 receives nothing until bind names ETH_P_IP: the filter is in place
        // before the first packet, and no other interface's packets queue up in between.
        let fd = socket_with(
            AddressFamily::PACKET,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .map_err(|e| SocketError::OpenPacket {
            iface: name(),
            source: e.into(),
        })?;
        attach_filter(&fd).map_err(|source| SocketError::AttachFilter {
            iface: name(),
            source,
        })?;
        bind(&fd, &LinkAddr::new(iface.index, [0; 6])).map_err(|e| SocketError::BindPacket {
            iface: name(),
            source: e.into(),
        })?;
        Ok(PacketSocket {
            fd,
            iface: iface.clone(),
        })
    }

    /// The next IPv4 packet waiting, or `None` when there is none.
    pub fn try_recv(&self, buf: &mut RecvBuf) -> Result<Option<usize>, SocketError> {
        match recv(&self.fd, &mut buf[..], RecvFlags::TRUNC) {
            Ok((_, len)) => Ok(Some(len.min(RECV_BUF))),
            Err(rustix::io::Errno::AGAIN) => Ok(None),
            Err(e) => Err(SocketError::ReceivePacket {
                iface: self.iface.name.clone(),
                source: e.into(),
            }),
        }
    }

    /// Sends an IPv4 packet (from `Transmit::to_ipv4`) to the Ethernet broadcast address.
    pub fn broadcast(&self, packet: &[u8]) -> Result<(), SocketError> {
        let to = LinkAddr::new(self.iface.index, [0xff; 6]);
        sendto(&self.fd, packet, SendFlags::empty(), &to)
            .map(drop)
            .map_err(|e| SocketError::Broadcast {
                iface: self.iface.name.clone(),
                source: e.into(),
            })
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn attach_filter(fd: &OwnedFd) -> io::Result<()> {
    let program = libc::sock_fprog {
        len: DHCP_FILTER.len() as u16, // 9
        filter: DHCP_FILTER.as_ptr().cast_mut(),
    };
    // SAFETY: SO_ATTACH_FILTER reads one sock_fprog, passed with its size; it points at the
    // constant program's `len` instructions, which the kernel copies during the call and
    // never writes.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            std::ptr::from_ref(&program).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    check(rc)
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A UDP socket on `<leased address>:68`, tied to the interface, for renewals. Replies to it
/// arrive on the packet socket too, which is where the client reads them; this one is
/// drained and its copies dropped.
#[derive(Debug)]
pub struct UnicastSocket {
    fd: OwnedFd,
    iface: String,
    address: Ipv4Addr,
}

impl UnicastSocket {
    pub fn open(iface: &Iface, address: Ipv4Addr) -> Result<Self, SocketError> {
        let fail = |source: io::Error| SocketError::OpenUdp {
            iface: iface.name.clone(),
            address,
            source,
        };
        let fd = socket_with(
            AddressFamily::INET,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .map_err(|e| fail(e.into()))?;
        bind_to_device(&fd, &iface.name).map_err(fail)?;
        bind(&fd, &SocketAddrV4::new(address, CLIENT_PORT)).map_err(|e| fail(e.into()))?;
        Ok(UnicastSocket {
            fd,
            iface: iface.name.clone(),
            address,
        })
    }

    /// The address the socket is bound to: a new lease for another address needs a new one.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    pub fn send(&self, server: Ipv4Addr, payload: &[u8]) -> Result<(), SocketError> {
        let to = SocketAddrV4::new(server, SERVER_PORT);
        sendto(&self.fd, payload, SendFlags::empty(), &to)
            .map(drop)
            .map_err(|e| SocketError::Unicast {
                iface: self.iface.clone(),
                server,
                source: e.into(),
            })
    }

    /// Discards whatever arrived (the packet socket has its own copy).
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        while recv(&self.fd, &mut buf[..], RecvFlags::TRUNC).is_ok() {}
    }
}

impl AsFd for UnicastSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// SO_BINDTODEVICE: rustix has no wrapper for it.
fn bind_to_device(fd: &OwnedFd, name: &str) -> io::Result<()> {
    // SAFETY: SO_BINDTODEVICE reads `len` bytes of the name (no NUL needed when the length
    // is given); `name` is alive for the call and the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            libc::socklen_t::try_from(name.len()).unwrap_or(libc::socklen_t::MAX),
        )
    };
    check(rc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_jumps_land_on_the_two_returns() {
        // A jump past the end would make the kernel refuse the program (EINVAL); one that
        // lands elsewhere would accept the wrong packets.
        let returns = [DHCP_FILTER.len() - 2, DHCP_FILTER.len() - 1];
        for (at, insn) in DHCP_FILTER.iter().enumerate() {
            if insn.code & 0x07 == 0x05 {
                for offset in [insn.jt, insn.jf] {
                    let target = at + 1 + usize::from(offset);
                    assert!(
                        target == at + 1 || returns.contains(&target),
                        "instruction {at} jumps to {target}"
                    );
                }
            }
        }
        assert_eq!(
            DHCP_FILTER[DHCP_FILTER.len() - 1].k,
            0,
            "the last return drops"
        );
    }
}
