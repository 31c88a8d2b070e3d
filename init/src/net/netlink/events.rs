//! Link-state events: a socket bound to RTMGRP_LINK for init's poll loop, read without
//! blocking. The watcher remembers the indices it has seen, so an RTM_NEWLINK for a new index
//! is an [`LinkEventKind::Added`] interface (a NIC that probes after init started).

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd};

use super::abi::{RTM_DELLINK, RTMGRP_LINK};
use super::link::{Link, LinkType, parse_link};
use super::message::messages;
use super::socket::Socket;
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
    /// The last state of every interface seen and not yet removed, by index.
    known: BTreeMap<u32, LinkEvent>,
}

impl LinkWatcher {
    /// Subscribes, then lists the interfaces already there (in that order, so that one
    /// appearing in between is seen at least once, as a list entry or an event).
    pub fn open() -> Result<Self, NetlinkError> {
        let sock = Socket::open(RTMGRP_LINK).map_err(NetlinkError::Subscribe)?;
        let known = current()?;
        Ok(LinkWatcher { sock, known })
    }

    /// The events waiting on the socket, oldest first; empty when there are none. If the
    /// kernel dropped events because the socket's buffer overflowed (ENOBUFS), or sent one
    /// that does not parse, the interfaces are listed afresh and the difference to what was
    /// known is reported instead, so a caller never misses an interface coming or going.
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
                match m.and_then(|m| Ok((m.header.kind == RTM_DELLINK, parse_link(&m)?))) {
                    Ok((deleted, Some(link))) => events.push(note(&mut self.known, deleted, link)),
                    Ok((_, None)) => {}
                    Err(_) => {
                        lost = true;
                        break;
                    }
                }
            }
        }
        if lost {
            events.extend(self.resync()?);
        }
        Ok(events)
    }

    fn resync(&mut self) -> Result<Vec<LinkEvent>, NetlinkError> {
        let now = current()?;
        let mut events: Vec<LinkEvent> = self
            .known
            .iter()
            .filter(|(index, _)| !now.contains_key(index))
            .map(|(_, last)| LinkEvent {
                kind: LinkEventKind::Removed,
                up: false,
                carrier: false,
                ..last.clone()
            })
            .collect();
        for (index, ev) in &now {
            let kind = if self.known.contains_key(index) {
                LinkEventKind::Changed
            } else {
                LinkEventKind::Added
            };
            events.push(LinkEvent { kind, ..ev.clone() });
        }
        self.known = now;
        Ok(events)
    }
}

/// Records a link message in `known` and returns it as an event.
fn note(known: &mut BTreeMap<u32, LinkEvent>, deleted: bool, link: Link) -> LinkEvent {
    let index = link.iface.index;
    if deleted {
        known.remove(&index);
        return event(LinkEventKind::Removed, link);
    }
    let kind = if known.contains_key(&index) {
        LinkEventKind::Changed
    } else {
        LinkEventKind::Added
    };
    let ev = event(kind, link);
    known.insert(index, ev.clone());
    ev
}

/// Every interface now, as events of kind `Changed`.
fn current() -> Result<BTreeMap<u32, LinkEvent>, NetlinkError> {
    Ok(Rtnl::open()?
        .links()?
        .into_iter()
        .map(|l| (l.iface.index, event(LinkEventKind::Changed, l)))
        .collect())
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
