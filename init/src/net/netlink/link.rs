//! Links (network interfaces): the RTM_GETLINK dump, up/down and MTU through RTM_NEWLINK.

use std::fmt;

use super::abi::{
    AF_UNSPEC, ARPHRD_ETHER, ARPHRD_LOOPBACK, IFF_LOWER_UP, IFF_RUNNING, IFF_UP, IFLA_ADDRESS,
    IFLA_CARRIER, IFLA_IFNAME, IFLA_MTU, IFLA_OPERSTATE, IfInfoMsg, NLM_F_ACK, NLM_F_DUMP,
    RTM_DELLINK, RTM_GETLINK, RTM_NEWLINK,
};
use super::message::{Message, MessageError, Request, attrs};
use super::{Iface, NetlinkError, Rtnl};

/// The hardware type (`ifi_type`, an ARPHRD_* value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    Ethernet,
    Loopback,
    Other(u16),
}

impl From<u16> for LinkType {
    fn from(raw: u16) -> Self {
        match raw {
            ARPHRD_ETHER => LinkType::Ethernet,
            ARPHRD_LOOPBACK => LinkType::Loopback,
            other => LinkType::Other(other),
        }
    }
}

/// RFC 2863 operational state (`IFLA_OPERSTATE`, IF_OPER_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperState {
    Unknown,
    NotPresent,
    Down,
    LowerLayerDown,
    Testing,
    Dormant,
    Up,
}

impl From<u8> for OperState {
    fn from(raw: u8) -> Self {
        match raw {
            1 => OperState::NotPresent,
            2 => OperState::Down,
            3 => OperState::LowerLayerDown,
            4 => OperState::Testing,
            5 => OperState::Dormant,
            6 => OperState::Up,
            _ => OperState::Unknown,
        }
    }
}

/// A hardware address, shown as `52:54:00:12:34:56`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// One interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub iface: Iface,
    pub link_type: LinkType,
    /// `ifi_flags` (IFF_*); see the accessors.
    pub flags: u32,
    /// The hardware address, when it is 6 bytes (Ethernet, loopback's zeros).
    pub mac: Option<MacAddr>,
    pub mtu: Option<u32>,
    pub operstate: OperState,
    /// `IFLA_CARRIER`: the device sees a link partner, whether or not it is up.
    pub carrier: Option<bool>,
}

impl Link {
    /// Administratively up (IFF_UP).
    pub fn is_up(&self) -> bool {
        self.flags & IFF_UP != 0
    }
    pub fn is_running(&self) -> bool {
        self.flags & IFF_RUNNING != 0
    }
    /// Up with carrier (IFF_LOWER_UP): what a DHCP client waits for before sending.
    pub fn is_lower_up(&self) -> bool {
        self.flags & IFF_LOWER_UP != 0
    }
}

/// A link message (RTM_NEWLINK or RTM_DELLINK) as a [`Link`]; other messages are `None`.
pub(crate) fn parse_link(m: &Message<'_>) -> Result<Option<Link>, MessageError> {
    if m.header.kind != RTM_NEWLINK && m.header.kind != RTM_DELLINK {
        return Ok(None);
    }
    let info = IfInfoMsg::decode(m.payload)?;
    let Ok(index) = u32::try_from(info.index) else {
        return Ok(None);
    };
    let mut link = Link {
        iface: Iface {
            index,
            name: String::new(),
        },
        link_type: LinkType::from(info.kind),
        flags: info.flags,
        mac: None,
        mtu: None,
        operstate: OperState::Unknown,
        carrier: None,
    };
    for attr in attrs(m.payload, IfInfoMsg::LEN) {
        let attr = attr?;
        match attr.kind {
            IFLA_IFNAME => link.iface.name = attr.string(),
            // Other lengths are other hardware (InfiniBand's 20 bytes): no MAC to offer.
            IFLA_ADDRESS => link.mac = attr.fixed::<6>().ok().map(MacAddr),
            IFLA_MTU => link.mtu = Some(attr.u32()?),
            IFLA_OPERSTATE => link.operstate = OperState::from(attr.u8()?),
            IFLA_CARRIER => link.carrier = Some(attr.u8()? != 0),
            _ => {}
        }
    }
    Ok(Some(link))
}

fn setlink(iface: &Iface, flags: u32, change: u32) -> Request {
    Request::new(RTM_NEWLINK, NLM_F_ACK).header(|out| {
        IfInfoMsg {
            family: AF_UNSPEC,
            index: iface.raw_index(),
            flags,
            change,
            ..IfInfoMsg::default()
        }
        .encode(out)
    })
}

impl Rtnl {
    /// Every interface, sorted by index.
    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let req =
            Request::new(RTM_GETLINK, NLM_F_DUMP).header(|out| IfInfoMsg::default().encode(out));
        let mut links = self
            .sock
            .dump(req, parse_link)
            .map_err(NetlinkError::ListLinks)?;
        links.sort_by_key(|l| l.iface.index);
        Ok(links)
    }

    /// The interface called `name`, if there is one.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NetlinkError> {
        Ok(self.links()?.into_iter().find(|l| l.iface.name == name))
    }

    pub fn set_link_up(&mut self, iface: &Iface) -> Result<(), NetlinkError> {
        self.sock
            .request(setlink(iface, IFF_UP, IFF_UP))
            .map_err(|source| NetlinkError::SetLinkUp {
                iface: iface.clone(),
                source,
            })
    }

    pub fn set_link_down(&mut self, iface: &Iface) -> Result<(), NetlinkError> {
        self.sock
            .request(setlink(iface, 0, IFF_UP))
            .map_err(|source| NetlinkError::SetLinkDown {
                iface: iface.clone(),
                source,
            })
    }

    /// Sets the MTU (a DHCP lease's option 26, or a cloud's 1460).
    pub fn set_mtu(&mut self, iface: &Iface, mtu: u32) -> Result<(), NetlinkError> {
        self.sock
            .request(setlink(iface, 0, 0).attr_u32(IFLA_MTU, mtu))
            .map_err(|source| NetlinkError::SetMtu {
                iface: iface.clone(),
                mtu,
                source,
            })
    }
}
