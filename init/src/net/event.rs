//! What the network service reports to init: link and lease changes for console markers, and
//! warnings (a failure applying a lease is reported, never fatal).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use hostnet::dhcp::LossReason;

use super::Ipv4Cidr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// The interface has carrier (again).
    LinkUp {
        iface: String,
    },
    LinkDown {
        iface: String,
    },
    /// `dns` is the host's whole server list after the change, for `Resolver::set_servers`.
    LeaseAcquired {
        iface: String,
        address: Ipv4Cidr,
        gateway: Option<Ipv4Addr>,
        dns: Vec<IpAddr>,
        lease_secs: u64,
    },
    LeaseRenewed {
        iface: String,
        address: Ipv4Cidr,
        gateway: Option<Ipv4Addr>,
        dns: Vec<IpAddr>,
        lease_secs: u64,
    },
    /// The address and its routes are gone; `dns` as in `LeaseAcquired`.
    LeaseLost {
        iface: String,
        address: Ipv4Cidr,
        reason: LossReason,
        dns: Vec<IpAddr>,
    },
    StaticConfigured {
        iface: String,
        address: Ipv4Cidr,
        gateway: Option<Ipv4Addr>,
    },
    /// Something failed and the service carried on: the error chain, naming the interface.
    Warning(String),
}

impl NetEvent {
    /// The host's DNS servers after this event, when it changed them.
    pub fn dns(&self) -> Option<&[IpAddr]> {
        match self {
            NetEvent::LeaseAcquired { dns, .. }
            | NetEvent::LeaseRenewed { dns, .. }
            | NetEvent::LeaseLost { dns, .. } => Some(dns),
            _ => None,
        }
    }
}

struct List<'a, T>(&'a [T]);

impl<T: fmt::Display> fmt::Display for List<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}

struct Gateway(Option<Ipv4Addr>);

impl fmt::Display for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(gateway) => write!(f, "gateway {gateway}"),
            None => f.write_str("no gateway"),
        }
    }
}

/// One line for the console, after init's `init: ` prefix:
/// `net <iface>: link up`, `net <iface>: link down`,
/// `net <iface>: lease <cidr>, gateway <ip>, dns <ip> <ip>, <secs> s`,
/// `net <iface>: lease renewed <cidr>, ...`, `net <iface>: lease <cidr> lost (<reason>)`,
/// `net <iface>: static <cidr>, gateway <ip>`, `net: <warning>`.
impl fmt::Display for NetEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetEvent::LinkUp { iface } => write!(f, "net {iface}: link up"),
            NetEvent::LinkDown { iface } => write!(f, "net {iface}: link down"),
            NetEvent::LeaseAcquired {
                iface,
                address,
                gateway,
                dns,
                lease_secs,
            } => write!(
                f,
                "net {iface}: lease {address}, {}, dns {}, {lease_secs} s",
                Gateway(*gateway),
                List(dns)
            ),
            NetEvent::LeaseRenewed {
                iface,
                address,
                gateway,
                dns,
                lease_secs,
            } => write!(
                f,
                "net {iface}: lease renewed {address}, {}, dns {}, {lease_secs} s",
                Gateway(*gateway),
                List(dns)
            ),
            NetEvent::LeaseLost {
                iface,
                address,
                reason,
                ..
            } => {
                let why = match reason {
                    LossReason::Nak => "the server said no",
                    LossReason::Expired => "expired",
                    LossReason::Released => "released",
                };
                write!(f, "net {iface}: lease {address} lost ({why})")
            }
            NetEvent::StaticConfigured {
                iface,
                address,
                gateway,
            } => write!(f, "net {iface}: static {address}, {}", Gateway(*gateway)),
            NetEvent::Warning(message) => write!(f, "net: {message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_line_names_interface_address_gateway_dns_and_time() {
        let event = NetEvent::LeaseAcquired {
            iface: "eth0".into(),
            address: Ipv4Cidr::new(Ipv4Addr::new(10, 0, 2, 15), 24).unwrap(),
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            dns: vec![IpAddr::from([10, 0, 2, 3])],
            lease_secs: 86400,
        };
        assert_eq!(
            event.to_string(),
            "net eth0: lease 10.0.2.15/24, gateway 10.0.2.2, dns 10.0.2.3, 86400 s"
        );
        assert_eq!(event.dns(), Some(&[IpAddr::from([10, 0, 2, 3])][..]));
    }

    #[test]
    fn lost_and_static_lines_say_why_and_what() {
        let address = Ipv4Cidr::new(Ipv4Addr::new(10, 0, 2, 15), 24).unwrap();
        let lost = NetEvent::LeaseLost {
            iface: "eth0".into(),
            address,
            reason: LossReason::Nak,
            dns: vec![],
        };
        assert_eq!(
            lost.to_string(),
            "net eth0: lease 10.0.2.15/24 lost (the server said no)"
        );
        let fixed = NetEvent::StaticConfigured {
            iface: "eth1".into(),
            address,
            gateway: None,
        };
        assert_eq!(
            fixed.to_string(),
            "net eth1: static 10.0.2.15/24, no gateway"
        );
    }
}
