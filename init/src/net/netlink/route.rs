//! IPv4 routes in the main table: add, replace, delete, the RTM_GETROUTE dump, and the
//! default route through a gateway (with an on-link route to a gateway outside the subnet).

use std::fmt;
use std::net::Ipv4Addr;

use super::abi::{
    AF_INET, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, RT_SCOPE_LINK,
    RT_SCOPE_NOWHERE, RT_SCOPE_UNIVERSE, RT_TABLE_MAIN, RTA_DST, RTA_GATEWAY, RTA_OIF, RTA_PREFSRC,
    RTA_PRIORITY, RTA_TABLE, RTM_DELROUTE, RTM_GETROUTE, RTM_NEWROUTE, RTN_UNICAST, RTPROT_BOOT,
    RTPROT_DHCP, RTPROT_STATIC, RtMsg,
};
use super::message::{Message, MessageError, Request, attrs};
use super::{Iface, NetlinkError, Rtnl};
use crate::net::cidr::Ipv4Cidr;

/// Who installed a route (`rtm_protocol`), so that a DHCP client can tell its own routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteProtocol {
    /// Configured at boot (from the host declaration).
    Boot,
    Static,
    /// From a DHCP lease.
    Dhcp,
}

impl RouteProtocol {
    pub fn raw(self) -> u8 {
        match self {
            RouteProtocol::Boot => RTPROT_BOOT,
            RouteProtocol::Static => RTPROT_STATIC,
            RouteProtocol::Dhcp => RTPROT_DHCP,
        }
    }
}

/// A route to add, replace or delete on an interface, in the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    pub dst: Ipv4Cidr,
    /// `None`: the destination is on the link (scope link).
    pub gateway: Option<Ipv4Addr>,
    pub protocol: RouteProtocol,
    /// `RTA_PRIORITY`; lower wins. `None` is the kernel's 0.
    pub metric: Option<u32>,
}

impl RouteSpec {
    /// `default via <gateway>`.
    pub fn default_via(gateway: Ipv4Addr, protocol: RouteProtocol) -> Self {
        RouteSpec {
            dst: Ipv4Cidr::any(),
            gateway: Some(gateway),
            protocol,
            metric: None,
        }
    }

    /// `<dst> scope link`: reachable on the interface without a router.
    pub fn on_link(dst: Ipv4Cidr, protocol: RouteProtocol) -> Self {
        RouteSpec {
            dst,
            gateway: None,
            protocol,
            metric: None,
        }
    }

    pub fn with_metric(mut self, metric: u32) -> Self {
        self.metric = Some(metric);
        self
    }

    fn request(&self, iface: &Iface, kind: u16, flags: u16) -> Request {
        let deleting = kind == RTM_DELROUTE;
        let head = RtMsg {
            family: AF_INET,
            dst_len: self.dst.prefix(),
            table: RT_TABLE_MAIN,
            // A delete matches any protocol, scope and type: the route is named by
            // destination, gateway, interface and metric.
            protocol: if deleting { 0 } else { self.protocol.raw() },
            scope: match (deleting, self.gateway) {
                (true, _) => RT_SCOPE_NOWHERE,
                (false, Some(_)) => RT_SCOPE_UNIVERSE,
                (false, None) => RT_SCOPE_LINK,
            },
            kind: if deleting { 0 } else { RTN_UNICAST },
            ..RtMsg::default()
        };
        let mut req = Request::new(kind, NLM_F_ACK | flags)
            .header(|out| head.encode(out))
            .attr_u32(RTA_OIF, iface.index);
        if self.dst.prefix() > 0 {
            req = req.attr_ipv4(RTA_DST, self.dst.network());
        }
        if let Some(gw) = self.gateway {
            req = req.attr_ipv4(RTA_GATEWAY, gw);
        }
        if let Some(metric) = self.metric {
            req = req.attr_u32(RTA_PRIORITY, metric);
        }
        req
    }
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dst.prefix() == 0 {
            f.write_str("default")?;
        } else {
            write!(f, "{}/{}", self.dst.network(), self.dst.prefix())?;
        }
        match self.gateway {
            Some(gw) => write!(f, " via {gw}")?,
            None => f.write_str(" on-link")?,
        }
        if let Some(m) = self.metric {
            write!(f, " metric {m}")?;
        }
        Ok(())
    }
}

/// An IPv4 route as the kernel reports it (any table: main, local, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub table: u32,
    /// `rtm_protocol` (RTPROT_*: 2 kernel, 3 boot, 4 static, 16 dhcp).
    pub protocol: u8,
    /// `rtm_scope` (0 universe, 253 link, 254 host).
    pub scope: u8,
    /// `rtm_type` (1 unicast, 2 local, 3 broadcast, ...).
    pub route_type: u8,
    pub dst: Ipv4Cidr,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub metric: Option<u32>,
    pub prefsrc: Option<Ipv4Addr>,
}

impl Route {
    pub fn is_default(&self) -> bool {
        self.dst.prefix() == 0
    }
}

/// An RTM_NEWROUTE as an IPv4 [`Route`]; other messages and families are `None`.
pub(crate) fn parse_route(m: &Message<'_>) -> Result<Option<Route>, MessageError> {
    if m.header.kind != RTM_NEWROUTE {
        return Ok(None);
    }
    let head = RtMsg::decode(m.payload)?;
    if head.family != AF_INET {
        return Ok(None);
    }
    let mut route = Route {
        table: u32::from(head.table),
        protocol: head.protocol,
        scope: head.scope,
        route_type: head.kind,
        dst: Ipv4Cidr::any(),
        gateway: None,
        oif: None,
        metric: None,
        prefsrc: None,
    };
    let mut dst = Ipv4Addr::UNSPECIFIED;
    for attr in attrs(m.payload, RtMsg::LEN) {
        let attr = attr?;
        match attr.kind {
            RTA_DST => dst = attr.ipv4()?,
            RTA_GATEWAY => route.gateway = Some(attr.ipv4()?),
            RTA_OIF => route.oif = Some(attr.u32()?),
            RTA_PRIORITY => route.metric = Some(attr.u32()?),
            RTA_PREFSRC => route.prefsrc = Some(attr.ipv4()?),
            // Tables past 255 only fit here; rtm_table then says RT_TABLE_COMPAT.
            RTA_TABLE => route.table = attr.u32()?,
            _ => {}
        }
    }
    let Ok(dst) = Ipv4Cidr::new(dst, head.dst_len) else {
        return Ok(None);
    };
    route.dst = dst;
    Ok(Some(route))
}

impl Rtnl {
    /// Every IPv4 route of every table.
    pub fn routes(&mut self) -> Result<Vec<Route>, NetlinkError> {
        let req = Request::new(RTM_GETROUTE, NLM_F_DUMP).header(|out| {
            RtMsg {
                family: AF_INET,
                ..RtMsg::default()
            }
            .encode(out)
        });
        self.sock
            .dump(req, parse_route)
            .map_err(NetlinkError::ListRoutes)
    }

    /// Adds a route; fails with EEXIST if the same one is there.
    pub fn add_route(&mut self, iface: &Iface, route: &RouteSpec) -> Result<(), NetlinkError> {
        self.sock
            .request(route.request(iface, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL))
            .map_err(|source| NetlinkError::AddRoute {
                iface: iface.clone(),
                route: *route,
                source,
            })
    }

    /// Adds a route, or replaces the one with the same destination and metric.
    pub fn replace_route(&mut self, iface: &Iface, route: &RouteSpec) -> Result<(), NetlinkError> {
        self.sock
            .request(route.request(iface, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE))
            .map_err(|source| NetlinkError::ReplaceRoute {
                iface: iface.clone(),
                route: *route,
                source,
            })
    }

    pub fn delete_route(&mut self, iface: &Iface, route: &RouteSpec) -> Result<(), NetlinkError> {
        self.sock
            .request(route.request(iface, RTM_DELROUTE, 0))
            .map_err(|source| NetlinkError::DeleteRoute {
                iface: iface.clone(),
                route: *route,
                source,
            })
    }

    /// Sets (adds or replaces) the default route via `gateway` on the interface whose address
    /// is `addr`. A gateway outside `addr`'s subnet (a cloud's /32 lease) first gets an on-link
    /// /32 route, without which the kernel refuses the default route (ENETUNREACH).
    pub fn replace_default_route(
        &mut self,
        iface: &Iface,
        addr: Ipv4Cidr,
        gateway: Ipv4Addr,
        protocol: RouteProtocol,
        metric: Option<u32>,
    ) -> Result<(), NetlinkError> {
        let with_metric = |spec: RouteSpec| match metric {
            Some(m) => spec.with_metric(m),
            None => spec,
        };
        if !addr.contains(gateway) {
            let on_link = with_metric(RouteSpec::on_link(Ipv4Cidr::host(gateway), protocol));
            self.replace_route(iface, &on_link)?;
        }
        self.replace_route(
            iface,
            &with_metric(RouteSpec::default_via(gateway, protocol)),
        )
    }
}
