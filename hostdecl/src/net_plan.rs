//! The network plan: `[network]` and `[fetch]` as init acts on them, written as JSON into the
//! initramfs at [`hostimg::NETWORK_PLAN_PATH`] (inside the signed UKI, so trusted like the
//! trust keys). Which interfaces to bring up and how, the static `/etc/hosts` entries, and
//! the fetch policy every fetch at boot follows (apps' images and their dependencies): the
//! image-name prefixes allowed over plain HTTP and the extra CA certificates, read from their
//! PEM files at build time and carried as DER.

use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr};

use base64::Engine as _;
use rustls_pki_types::pem::{self, SectionKind};
use serde::{Deserialize, Serialize};

use crate::network::{InterfaceDecl, name_prefix, parse_cidr};
use crate::{DeclError, FileProblem, FileRef, HostDecl, Inputs};

/// The whole plan (`/etc/hostos/network.json`). Every field defaults, so an older plan (or
/// `{}`) reads as "no network".
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkPlan {
    /// Brought up in this order.
    #[serde(default)]
    pub interfaces: Vec<InterfacePlan>,
    /// Static `/etc/hosts` entries, in declared order, before the lease's or DNS answers.
    #[serde(default)]
    pub hosts: Vec<HostEntry>,
    #[serde(default)]
    pub fetch: FetchPolicy,
}

/// One interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfacePlan {
    pub device: Device,
    pub addressing: Addressing,
    /// Declared MTU; `None`: the lease's (DHCP option 26), else the device's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// Declared DNS servers, which replace the lease's. `None`: the lease's (DHCP), none
    /// (static).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Vec<Ipv4Addr>>,
}

/// Which device an interface is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Device {
    /// The first Ethernet device that appears (`"auto"` in the declaration).
    FirstEthernet,
    /// The kernel interface of this name.
    Name(String),
}

/// How an interface gets its IPv4 address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub enum Addressing {
    /// DHCPv4: address, prefix, router, DNS servers (unless declared), MTU from the lease.
    /// (A struct variant, so that `deny_unknown_fields` holds for it too.)
    Dhcp {},
    Static {
        address: Ipv4Addr,
        /// 0 to 32.
        prefix: u8,
        /// The default route's next hop. Outside `address/prefix` it gets an on-link route.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gateway: Option<Ipv4Addr>,
    },
}

impl Addressing {
    /// True when `gateway` is outside the address's subnet, so it needs an on-link route
    /// before the default route can go through it.
    pub fn gateway_off_subnet(&self) -> bool {
        match self {
            Addressing::Static {
                address,
                prefix,
                gateway: Some(gw),
            } => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
                u32::from(*address) & mask != u32::from(*gw) & mask
            }
            _ => false,
        }
    }
}

/// One static `/etc/hosts` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    pub name: String,
    pub address: IpAddr,
}

/// What every fetch at boot follows.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchPolicy {
    /// Image-name prefixes (without a trailing `/`) that may be discovered and fetched over
    /// plain HTTP, matched along `/` components as trust prefixes are. Dependencies are
    /// checked against it by their own names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_http: Vec<String>,
    /// CA certificates HTTPS trusts beside the built-in web roots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca: Vec<CaCertificate>,
}

impl FetchPolicy {
    /// True when image `name` may be discovered and fetched over `http://`.
    pub fn allows_http(&self, name: &str) -> bool {
        self.allow_http
            .iter()
            .any(|p| aci::trust::TrustScope::Prefix(p.clone()).covers(name))
    }
}

/// One extra CA certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaCertificate {
    /// The file as the declaration names it, and the certificate's place in it (for init's
    /// messages): `certs/test-ca.pem#0`.
    pub source: String,
    /// The certificate's DER bytes, standard base64.
    pub der: String,
}

impl CaCertificate {
    /// The DER bytes (what `aci::discovery::RootCertificates` takes).
    pub fn der_bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(&self.der)
    }
}

impl NetworkPlan {
    pub fn from_json(json: &[u8]) -> Result<NetworkPlan, serde_json::Error> {
        serde_json::from_slice(json)
    }

    pub fn to_json_pretty(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec_pretty(self)
    }
}

/// The certificates of a PEM file; refuses a file with none, with broken PEM, or with a
/// private key (a secret that must not go into an image).
pub fn read_ca_file(f: &FileRef, declared: &str) -> Result<Vec<CaCertificate>, DeclError> {
    let fail = |problem| DeclError::File {
        at: f.site.clone(),
        what: "CA certificate file",
        path: f.value.clone(),
        problem,
    };
    let bytes = std::fs::read(&f.value).map_err(|e| fail(FileProblem::Unreadable(e)))?;
    let mut rest: &[u8] = &bytes;
    let mut out = Vec::new();
    loop {
        let reader: &mut dyn BufRead = &mut rest;
        match pem::from_buf(reader) {
            Ok(None) => break,
            Ok(Some((SectionKind::Certificate, der))) => out.push(CaCertificate {
                source: format!("{declared}#{}", out.len()),
                der: base64::engine::general_purpose::STANDARD.encode(der),
            }),
            Ok(Some((
                SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey,
                _,
            ))) => return Err(fail(FileProblem::PrivateKey)),
            // Public keys, CRLs, requests: not certificates, and nothing HTTPS uses here.
            Ok(Some(_)) => {}
            Err(e) => return Err(fail(FileProblem::BadPem(e.to_string()))),
        }
    }
    if out.is_empty() {
        return Err(fail(FileProblem::NoCertificates));
    }
    Ok(out)
}

impl HostDecl {
    /// The network plan init reads. `inputs` (from [`HostDecl::resolve_paths`]) gives the CA
    /// files, which are read here.
    pub fn network_plan(&self, inputs: &Inputs) -> Result<NetworkPlan, DeclError> {
        let default = [InterfaceDecl {
            name: InterfaceDecl::AUTO.to_string(),
            dhcp: None,
            address: None,
            gateway: None,
            mtu: None,
            dns: None,
        }];
        let declared = self.network.interfaces.as_deref().unwrap_or(&default);
        let mut interfaces = Vec::new();
        for (i, d) in declared.iter().enumerate() {
            interfaces.push(self.interface_plan(i, d)?);
        }
        let mut hosts = Vec::new();
        for (i, h) in self.network.hosts.iter().enumerate() {
            hosts.push(HostEntry {
                name: h.name.clone(),
                address: h.address.parse().map_err(|_| {
                    self.plan_bad(&format!("network.host[{i}].address"), "is not an address")
                })?,
            });
        }
        let mut ca = Vec::new();
        for (f, declared) in inputs.ca.iter().zip(&self.fetch.ca) {
            ca.extend(read_ca_file(f, declared)?);
        }
        Ok(NetworkPlan {
            interfaces,
            hosts,
            fetch: FetchPolicy {
                allow_http: self
                    .fetch
                    .allow_http
                    .iter()
                    .filter_map(|p| name_prefix(p).map(str::to_string))
                    .collect(),
                ca,
            },
        })
    }

    fn plan_bad(&self, field: &str, reason: &str) -> DeclError {
        DeclError::Invalid {
            at: self.site(field),
            reason: reason.to_string(),
        }
    }

    /// Interface `i` (validated already; the conversions only repeat the checks' parsing).
    fn interface_plan(&self, i: usize, d: &InterfaceDecl) -> Result<InterfacePlan, DeclError> {
        let at = |f: &str| format!("network.interface[{i}].{f}");
        let device = if d.name == InterfaceDecl::AUTO {
            Device::FirstEthernet
        } else {
            Device::Name(d.name.clone())
        };
        let addressing = match &d.address {
            None => Addressing::Dhcp {},
            Some(a) => {
                let (address, prefix) =
                    parse_cidr(a).map_err(|why| self.plan_bad(&at("address"), &why))?;
                let gateway = d
                    .gateway
                    .as_deref()
                    .map(str::parse)
                    .transpose()
                    .map_err(|_| self.plan_bad(&at("gateway"), "is not an IPv4 address"))?;
                Addressing::Static {
                    address,
                    prefix,
                    gateway,
                }
            }
        };
        let mtu = d
            .mtu
            .map(u16::try_from)
            .transpose()
            .map_err(|_| self.plan_bad(&at("mtu"), "is too large"))?;
        let dns = d
            .dns
            .as_ref()
            .map(|list| {
                list.iter()
                    .map(|s| s.parse())
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(|_| self.plan_bad(&at("dns"), "is not a list of IPv4 addresses"))?;
        Ok(InterfacePlan {
            device,
            addressing,
            mtu,
            dns,
        })
    }
}
