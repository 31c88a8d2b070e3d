//! Link-state events: a socket bound to RTMGRP_LINK for init's poll loop, read without
//! blocking. The watcher remembers the indices it has seen, so an RTM_NEWLINK for a new index
//! is an [`LinkEventKind::Added`] interface (a NIC that probes after init started).

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, BorrowedFd};

use super::abi::{RTM_DELLINK, RTMGRP_LINK};
use super::link::{Link, LinkType, parse_link};
use super::message::messages;
use super::socket::{Socket, invalid};
use super::{Iface, NetlinkError, Rtnl};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEventKind {
    /// An index the watcher had not seen.
    Added,
    /// A known interface changed (flags, carrier, MTU, name, ...).
    Changed,
    Removed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEvent {
    pub kind: LinkEventKind,
    pub iface: Iface,
    pub link_type: LinkType,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Up with a link partner (IFF_LOWER_UP); false whenever `up` is false.
    pub carrier: bool,
}

/// The subscription. Poll its fd for `POLLIN`, then call [`LinkWatcher::read_events`].
#[derive(Debug)]
pub struct LinkWatcher {
    sock: Socket,
    /// Index to name, of every interface seen and not yet removed.
    known: BTreeMap<u32, String>,
}

impl LinkWatcher {
    /// Subscribes, then lists the interfaces already there (in that order, so that one
    /// appearing in between is seen at least once, as a list entry or an event).
    pub fn open() -> Result<Self, NetlinkError> {
        let sock = Socket::open(RTMGRP_LINK).map_err(NetlinkError::Subscribe)?;
        let known = Rtnl::open()?
            .links()?
            .iter()
            .map(|l| (l.iface.index, l.iface.name.clone()))
            .collect();
        Ok(LinkWatcher { sock, known })
    }

    /// The events waiting on the socket, oldest first; empty when there are none. If the
    /// kernel dropped events because the socket's buffer overflowed (ENOBUFS), the current
    /// interfaces are listed instead and reported as the difference to what was known.
    pub fn read_events(&mut self) -> Result<Vec<LinkEvent>, NetlinkError> {
        let mut events = Vec::new();
        let mut lost = false;
        loop {
            let datagram = match self.sock.try_recv() {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    lost = true;
                    continue;
                }
                Err(e) => return Err(NetlinkError::ReadEvents(e)),
            };
            for m in messages(datagram) {
                let m = m.map_err(|e| NetlinkError::ReadEvents(invalid(e)))?;
                let Some(link) =
                    parse_link(&m).map_err(|e| NetlinkError::ReadEvents(invalid(e)))?
                else {
                    continue;
                };
                let kind = if m.header.kind == RTM_DELLINK {
                    self.known.remove(&link.iface.index);
                    LinkEventKind::Removed
                } else if self
                    .known
                    .insert(link.iface.index, link.iface.name.clone())
                    .is_none()
                {
                    LinkEventKind::Added
                } else {
                    LinkEventKind::Changed
                };
                events.push(event(kind, link));
            }
        }
        if lost {
            events.extend(self.resync()?);
        }
        Ok(events)
    }

    fn resync(&mut self) -> Result<Vec<LinkEvent>, NetlinkError> {
        let links = Rtnl::open()?.links()?;
        let now: BTreeSet<u32> = links.iter().map(|l| l.iface.index).collect();
        let now_names = links
            .iter()
            .map(|l| (l.iface.index, l.iface.name.clone()))
            .collect();
        let mut events = Vec::new();
        for (&index, name) in self.known.iter().filter(|(i, _)| !now.contains(i)) {
            events.push(LinkEvent {
                kind: LinkEventKind::Removed,
                iface: Iface {
                    index,
                    name: name.clone(),
                },
                link_type: LinkType::Other(0),
                up: false,
                carrier: false,
            });
        }
        for link in links {
            let kind = if self.known.contains_key(&link.iface.index) {
                LinkEventKind::Changed
            } else {
                LinkEventKind::Added
            };
            events.push(event(kind, link));
        }
        self.known = now_names;
        Ok(events)
    }
}

fn event(kind: LinkEventKind, link: Link) -> LinkEvent {
    LinkEvent {
        kind,
        up: link.is_up(),
        carrier: link.is_lower_up(),
        link_type: link.link_type,
        iface: link.iface,
    }
}

impl AsFd for LinkWatcher {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}
