//! What the network service is asked to configure: interfaces (DHCP or static), static hosts
//! entries and extra DNS servers, and where the generated files go. init maps the host
//! declaration onto these; nothing here reads the declaration itself.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use super::Ipv4Cidr;

/// The whole network configuration. The default is what a VM needs: DHCP on the first
/// Ethernet device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub interfaces: Vec<IfaceConfig>,
    /// Static `/etc/hosts` lines after localhost and the host name, in order.
    pub hosts: Vec<(String, IpAddr)>,
    /// Servers after those of every interface (leases and `IfaceConfig::dns`).
    pub extra_dns: Vec<IpAddr>,
    pub dhcp: DhcpTiming,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            interfaces: vec![IfaceConfig::default()],
            hosts: Vec::new(),
            extra_dns: Vec::new(),
            dhcp: DhcpTiming::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IfaceConfig {
    pub name: IfaceName,
    pub mode: IfaceMode,
    /// Servers of this interface; given, they replace its lease's (as `[network]` says).
    pub dns: Vec<IpAddr>,
}

/// Which device an [`IfaceConfig`] is for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum IfaceName {
    /// The Ethernet device with the lowest index that no `Named` entry claims, also one that
    /// appears after init started (a NIC that probes late).
    #[default]
    Auto,
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum IfaceMode {
    #[default]
    Dhcp,
    Static {
        address: Ipv4Cidr,
        gateway: Option<Ipv4Addr>,
        mtu: Option<u32>,
    },
}

/// DHCP client timers that RFC 2131 fixes and tests need shorter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhcpTiming {
    /// The least time between renewal retransmits (60 s in RFC 2131 §4.4.5).
    pub renew_retransmit_floor: Duration,
    /// The pause after a NAK before starting over.
    pub nak_delay: Duration,
}

impl Default for DhcpTiming {
    fn default() -> Self {
        let client = hostnet::dhcp::ClientConfig::new([0; 6]);
        DhcpTiming {
            renew_retransmit_floor: client.renew_retransmit_floor,
            nak_delay: client.nak_delay,
        }
    }
}

/// Where the service writes the files it generates (init: `/run/hostos/resolv.conf` and
/// `/run/hostos/hosts`, which pods bind-mount; tests: a temporary directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPaths {
    pub resolv_conf: PathBuf,
    pub hosts: PathBuf,
}
