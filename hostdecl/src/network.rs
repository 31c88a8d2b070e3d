//! `[network]` and `[fetch]` as the declaration writes them, and their checks: the host's
//! interfaces (DHCP by default, or a static IPv4 address), static `/etc/hosts` entries, which
//! image names may be fetched over plain HTTP, and extra CA certificates. `net_plan` turns
//! them into the [`crate::NetworkPlan`] init reads. `docs/host-toml.md` documents every field.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::{DeclError, HostDecl};

/// `[network]`. Left out: one DHCP interface on the first Ethernet device.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkDecl {
    /// `[[network.interface]]`. `None` (not written): the default, one DHCP interface
    /// [`InterfaceDecl::AUTO`]; `interface = []`: no network at all.
    #[serde(default, rename = "interface")]
    pub interfaces: Option<Vec<InterfaceDecl>>,
    /// `[[network.host]]`: static `/etc/hosts` entries.
    #[serde(default, rename = "host")]
    pub hosts: Vec<HostEntryDecl>,
}

/// `[[network.interface]]`: one network device and how it gets its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceDecl {
    /// A kernel interface name (`eth0`), or [`InterfaceDecl::AUTO`] (the default): the first
    /// Ethernet device that appears.
    #[serde(default = "auto_name")]
    pub name: String,
    /// DHCPv4 (the default). `false`: the static `address` (and `gateway`).
    #[serde(default)]
    pub dhcp: Option<bool>,
    /// Static only: `a.b.c.d/prefix`.
    #[serde(default)]
    pub address: Option<String>,
    /// Static only: the default route's next hop. May lie outside the address's subnet (then
    /// init adds an on-link route to it first, as /32 cloud addresses need).
    #[serde(default)]
    pub gateway: Option<String>,
    /// The link's MTU; default: the lease's (DHCP option 26), else the device's.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// IPv4 DNS servers. Given, they replace the lease's; left out, a DHCP interface uses the
    /// lease's and a static one has none.
    #[serde(default)]
    pub dns: Option<Vec<String>>,
}

fn auto_name() -> String {
    InterfaceDecl::AUTO.to_string()
}

impl InterfaceDecl {
    /// The name that means "the first Ethernet device that appears".
    pub const AUTO: &'static str = "auto";

    /// DHCP unless `dhcp = false`.
    pub fn is_dhcp(&self) -> bool {
        self.dhcp.unwrap_or(true)
    }
}

/// `[[network.host]]`: one static `/etc/hosts` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntryDecl {
    pub name: String,
    /// IPv4 or IPv6.
    pub address: String,
}

/// `[fetch]`: how init may fetch the images it does not find embedded or in its store.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchDecl {
    /// Image-name prefixes (`images.test/`) that may be discovered and fetched over `http://`;
    /// every other name is HTTPS only.
    #[serde(default)]
    pub allow_http: Vec<String>,
    /// Extra CA certificates (PEM files) HTTPS trusts beside the built-in web roots.
    #[serde(default)]
    pub ca: Vec<String>,
}

/// The smallest MTU an IPv4 link may have (RFC 791) and the largest the kernel takes.
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

/// A static address: `a.b.c.d/prefix`.
pub(crate) fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let Some((addr, prefix)) = s.split_once('/') else {
        return Err(format!(
            "{s:?} has no prefix length: write it as address/prefix, e.g. \"10.0.2.15/24\""
        ));
    };
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv4 address (static addresses are IPv4)"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| format!("prefix length {prefix:?} is not a number from 0 to 32"))?;
    usable_host(addr)?;
    Ok((addr, prefix))
}

/// An address a host can have as its own or route through.
fn usable_host(a: Ipv4Addr) -> Result<Ipv4Addr, String> {
    let why = if a.is_unspecified() {
        "is unspecified"
    } else if a.is_loopback() {
        "is a loopback address"
    } else if a.is_multicast() {
        "is a multicast address"
    } else if a.is_broadcast() {
        "is the broadcast address"
    } else {
        return Ok(a);
    };
    Err(format!("{a} {why}"))
}

/// A host name for `/etc/hosts`: dot-separated labels of letters, digits and `-`, none
/// starting or ending with `-`, at most 253 characters.
pub(crate) fn is_host_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// A kernel interface name: 1-15 bytes (IFNAMSIZ - 1), no `/`, `:` or whitespace, not `.`
/// or `..`.
fn is_interface_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// An image-name prefix as `[[trust]] prefix` takes it: an AC identifier, with or without a
/// trailing `/`. Returns it without the `/`.
pub(crate) fn name_prefix(p: &str) -> Option<&str> {
    let bare = p.strip_suffix('/').unwrap_or(p);
    aci::manifest::AcIdentifier::new(bare)
        .is_ok()
        .then_some(bare)
}

impl HostDecl {
    fn net_bad(&self, field: &str, reason: impl Into<String>) -> DeclError {
        DeclError::Invalid {
            at: self.site(field),
            reason: reason.into(),
        }
    }

    pub(crate) fn validate_network(&self) -> Result<(), DeclError> {
        let ifaces = self.network.interfaces.as_deref().unwrap_or_default();
        for (i, iface) in ifaces.iter().enumerate() {
            self.validate_interface(i, iface, ifaces)?;
        }
        for (i, h) in self.network.hosts.iter().enumerate() {
            let at = |f: &str| format!("network.host[{i}].{f}");
            if !is_host_name(&h.name) {
                return Err(self.net_bad(
                    &at("name"),
                    format!(
                        "{:?} is not a host name (dot-separated labels of letters, digits and '-', at most 253 characters)",
                        h.name
                    ),
                ));
            }
            if let Some(k) = self.network.hosts[..i]
                .iter()
                .position(|o| o.name.eq_ignore_ascii_case(&h.name))
            {
                return Err(self.net_bad(
                    &at("name"),
                    format!("{:?} is already network.host[{k}]", h.name),
                ));
            }
            h.address.parse::<IpAddr>().map_err(|_| {
                self.net_bad(
                    &at("address"),
                    format!("{:?} is not an IPv4 or IPv6 address", h.address),
                )
            })?;
        }
        Ok(())
    }

    fn validate_interface(
        &self,
        i: usize,
        iface: &InterfaceDecl,
        all: &[InterfaceDecl],
    ) -> Result<(), DeclError> {
        let at = |f: &str| format!("network.interface[{i}].{f}");
        if iface.name != InterfaceDecl::AUTO && !is_interface_name(&iface.name) {
            return Err(self.net_bad(
                &at("name"),
                format!(
                    "{:?} is not an interface name (1-15 characters, no '/', ':' or spaces), nor \"auto\" (the first Ethernet device)",
                    iface.name
                ),
            ));
        }
        if let Some(k) = all[..i].iter().position(|o| o.name == iface.name) {
            return Err(self.net_bad(
                &at("name"),
                format!(
                    "interface {:?} is already network.interface[{k}]",
                    iface.name
                ),
            ));
        }
        match (iface.dhcp, &iface.address) {
            (Some(false), None) => {
                return Err(DeclError::Missing {
                    at: self.site(&at("address")),
                });
            }
            (Some(true), Some(_)) => {
                return Err(self.net_bad(
                    &at("address"),
                    "is a static address, but dhcp = true: set dhcp = false to use it, or leave it out",
                ));
            }
            (None, Some(_)) => {
                return Err(self.net_bad(
                    &at("address"),
                    "is a static address, but the interface uses DHCP (the default): set dhcp = false",
                ));
            }
            _ => {}
        }
        if let Some(address) = &iface.address {
            let (own, _) = parse_cidr(address).map_err(|why| self.net_bad(&at("address"), why))?;
            if let Some(g) = &iface.gateway {
                let gw: Ipv4Addr = g.parse().map_err(|_| {
                    self.net_bad(&at("gateway"), format!("{g:?} is not an IPv4 address"))
                })?;
                usable_host(gw).map_err(|why| self.net_bad(&at("gateway"), why))?;
                if gw == own {
                    return Err(self.net_bad(
                        &at("gateway"),
                        format!("{gw} is the interface's own address"),
                    ));
                }
            }
        } else if iface.gateway.is_some() {
            return Err(self.net_bad(
                &at("gateway"),
                "comes from the DHCP lease; a gateway is declared only with a static address (dhcp = false)",
            ));
        }
        if let Some(mtu) = iface.mtu
            && !MTU_RANGE.contains(&mtu)
        {
            return Err(self.net_bad(
                &at("mtu"),
                format!(
                    "{mtu} is not an MTU from {} to {}",
                    MTU_RANGE.start(),
                    MTU_RANGE.end()
                ),
            ));
        }
        for (k, d) in iface.dns.iter().flatten().enumerate() {
            let field = format!("network.interface[{i}].dns[{k}]");
            let addr: IpAddr = d
                .parse()
                .map_err(|_| self.net_bad(&field, format!("{d:?} is not an IP address")))?;
            let IpAddr::V4(v4) = addr else {
                return Err(self.net_bad(
                    &field,
                    format!(
                        "{d} is an IPv6 address; init configures IPv4 only, so DNS servers are IPv4"
                    ),
                ));
            };
            usable_host(v4).map_err(|why| self.net_bad(&field, why))?;
            if iface.dns.iter().flatten().take(k).any(|o| o == d) {
                return Err(self.net_bad(&field, format!("{d} is listed twice")));
            }
        }
        Ok(())
    }

    pub(crate) fn validate_fetch(&self) -> Result<(), DeclError> {
        for (i, p) in self.fetch.allow_http.iter().enumerate() {
            let field = format!("fetch.allow_http[{i}]");
            if name_prefix(p).is_none() {
                return Err(self.net_bad(
                    &field,
                    format!(
                        "{p:?} is not an image-name prefix such as \"images.test/\" (an AC identifier, matched along '/' like [[trust]] prefix)"
                    ),
                ));
            }
            if self.fetch.allow_http[..i].contains(p) {
                return Err(self.net_bad(&field, format!("{p} is listed twice")));
            }
        }
        for (i, c) in self.fetch.ca.iter().enumerate() {
            let field = format!("fetch.ca[{i}]");
            if c.is_empty() {
                return Err(self.net_bad(&field, "is empty (name a PEM certificate file)"));
            }
            if self.fetch.ca[..i].contains(c) {
                return Err(self.net_bad(&field, format!("{c} is listed twice")));
            }
        }
        Ok(())
    }

    /// True when `[fetch] allow_http` lets image `name` be fetched over plain HTTP.
    pub fn http_allowed_for(&self, name: &str) -> bool {
        self.fetch
            .allow_http
            .iter()
            .filter_map(|p| name_prefix(p))
            .any(|p| aci::trust::TrustScope::Prefix(p.to_string()).covers(name))
    }
}
