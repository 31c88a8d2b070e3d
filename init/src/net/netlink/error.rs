//! The errors of `net::netlink`: one variant per operation, naming the interface and what
//! was asked of it; the source is the kernel's errno (or `InvalidData` for a reply that did
//! not parse, `TimedOut` for none at all).

use std::io;

use super::Iface;
use super::route::RouteSpec;
use crate::net::cidr::Ipv4Cidr;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a NETLINK_ROUTE socket")]
    Open(#[source] io::Error),
    #[error("cannot subscribe to link events (RTMGRP_LINK)")]
    Subscribe(#[source] io::Error),
    #[error("reading link events failed")]
    ReadEvents(#[source] io::Error),
    #[error("listing the network interfaces failed")]
    ListLinks(#[source] io::Error),
    #[error("bringing {iface} up failed")]
    SetLinkUp {
        iface: Iface,
        #[source]
        source: io::Error,
    },
    #[error("bringing {iface} down failed")]
    SetLinkDown {
        iface: Iface,
        #[source]
        source: io::Error,
    },
    #[error("setting the MTU of {iface} to {mtu} failed")]
    SetMtu {
        iface: Iface,
        mtu: u32,
        #[source]
        source: io::Error,
    },
    #[error("listing the IPv4 addresses failed")]
    ListAddresses(#[source] io::Error),
    #[error("adding {addr} to {iface} failed")]
    AddAddress {
        iface: Iface,
        addr: Ipv4Cidr,
        #[source]
        source: io::Error,
    },
    #[error("setting {addr} on {iface} (add or update) failed")]
    ReplaceAddress {
        iface: Iface,
        addr: Ipv4Cidr,
        #[source]
        source: io::Error,
    },
    #[error("removing {addr} from {iface} failed")]
    DeleteAddress {
        iface: Iface,
        addr: Ipv4Cidr,
        #[source]
        source: io::Error,
    },
    #[error("listing the IPv4 addresses of {iface} to flush them failed")]
    FlushAddresses {
        iface: Iface,
        #[source]
        source: io::Error,
    },
    #[error("listing the IPv4 routes failed")]
    ListRoutes(#[source] io::Error),
    #[error("adding the route {route} on {iface} failed")]
    AddRoute {
        iface: Iface,
        route: RouteSpec,
        #[source]
        source: io::Error,
    },
    #[error("setting the route {route} on {iface} (add or update) failed")]
    ReplaceRoute {
        iface: Iface,
        route: RouteSpec,
        #[source]
        source: io::Error,
    },
    #[error("deleting the route {route} on {iface} failed")]
    DeleteRoute {
        iface: Iface,
        route: RouteSpec,
        #[source]
        source: io::Error,
    },
    #[error(
        "there is no loopback interface (ARPHRD_LOOPBACK); every kernel network namespace has one"
    )]
    NoLoopback,
}
