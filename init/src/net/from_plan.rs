//! The build's network plan (`/etc/hostos/network.json`, [`hostdecl::NetworkPlan`]) as the
//! network service's [`NetConfig`], and the DNS resolver init's fetches use, fed from the
//! same static hosts and, as leases come and go, from the service's server list.

use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use hostdecl::{Addressing, Device, NetworkPlan};
use hostnet::dns::{Hosts, Resolver, ResolverConfig};

use super::{IfaceConfig, IfaceMode, IfaceName, Ipv4Cidr, NetConfig};

/// Reads the plan; `Ok(None)` when the image has none (an older build): no network then.
pub fn load(path: &Path) -> Result<Option<NetworkPlan>, String> {
    match fs::read(path) {
        Ok(bytes) => NetworkPlan::from_json(&bytes)
            .map(Some)
            .map_err(|e| format!("the network plan {} is malformed: {e}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!(
            "cannot read the network plan {}: {e}",
            path.display()
        )),
    }
}

/// The service's configuration for `plan`.
pub fn net_config(plan: &NetworkPlan) -> Result<NetConfig, String> {
    let mut interfaces = Vec::with_capacity(plan.interfaces.len());
    for iface in &plan.interfaces {
        let name = match &iface.device {
            Device::FirstEthernet => IfaceName::Auto,
            Device::Name(n) => IfaceName::Named(n.clone()),
        };
        let mode = match &iface.addressing {
            Addressing::Dhcp {} => IfaceMode::Dhcp,
            Addressing::Static {
                address,
                prefix,
                gateway,
            } => IfaceMode::Static {
                address: Ipv4Cidr::new(*address, *prefix)
                    .map_err(|e| format!("network plan: {address}/{prefix}: {e}"))?,
                gateway: *gateway,
                mtu: iface.mtu.map(u32::from),
            },
        };
        interfaces.push(IfaceConfig {
            name,
            mode,
            dns: iface
                .dns
                .iter()
                .flatten()
                .copied()
                .map(IpAddr::V4)
                .collect(),
        });
    }
    Ok(NetConfig {
        interfaces,
        hosts: plan
            .hosts
            .iter()
            .map(|h| (h.name.clone(), h.address))
            .collect(),
        ..NetConfig::default()
    })
}

/// The resolver for init's own lookups: the plan's static hosts first, then the servers the
/// network service reports (none until a lease or a static interface gives some).
pub fn resolver(plan: &NetworkPlan) -> Arc<Resolver> {
    let mut hosts_text = String::new();
    for h in &plan.hosts {
        hosts_text.push_str(&format!("{} {}\n", h.address, h.name));
    }
    Arc::new(Resolver::new(ResolverConfig {
        hosts: Hosts::parse(&hosts_text),
        ..ResolverConfig::default()
    }))
}

/// Port 53 on each server.
pub fn dns_socket_addrs(servers: &[IpAddr]) -> Vec<SocketAddr> {
    servers.iter().map(|ip| SocketAddr::new(*ip, 53)).collect()
}

/// aci's name-resolution seam over init's resolver (static glibc has no NSS).
pub struct DnsSeam(pub Arc<Resolver>);

impl aci::discovery::Resolver for DnsSeam {
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        self.0.resolve_socket_addrs(host, port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_plan_is_dhcp_on_the_first_ethernet_and_static_maps_its_fields() {
        let plan: NetworkPlan = serde_json::from_str(
            r#"{
                "interfaces": [
                    {"device": "first-ethernet", "addressing": {"method": "dhcp"},
                     "dns": ["10.0.2.3"]},
                    {"device": {"name": "eth1"},
                     "addressing": {"method": "static", "address": "192.168.7.2", "prefix": 24,
                                    "gateway": "192.168.7.1"},
                     "mtu": 1400}
                ],
                "hosts": [{"name": "images.test", "address": "10.0.2.100"}]
            }"#,
        )
        .unwrap();
        let c = net_config(&plan).unwrap();
        assert_eq!(c.interfaces.len(), 2);
        assert_eq!(c.interfaces[0].name, IfaceName::Auto);
        assert_eq!(c.interfaces[0].mode, IfaceMode::Dhcp);
        assert_eq!(c.interfaces[0].dns, [IpAddr::from([10, 0, 2, 3])]);
        assert_eq!(c.interfaces[1].name, IfaceName::Named("eth1".into()));
        assert_eq!(
            c.interfaces[1].mode,
            IfaceMode::Static {
                address: Ipv4Cidr::new([192, 168, 7, 2].into(), 24).unwrap(),
                gateway: Some([192, 168, 7, 1].into()),
                mtu: Some(1400),
            }
        );
        assert_eq!(
            c.hosts,
            [("images.test".to_string(), IpAddr::from([10, 0, 2, 100]))]
        );
        // The static host resolves without any server.
        let r = resolver(&plan);
        assert_eq!(
            r.resolve("images.test").unwrap(),
            [IpAddr::from([10, 0, 2, 100])]
        );
    }
}
