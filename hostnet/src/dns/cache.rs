//! A small positive cache of resolved names, honouring the answers' TTLs, so a burst of
//! fetches from one registry asks DNS once.

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Enough for the handful of registries and endpoints a host talks to; the oldest entry goes
/// first when full.
const MAX_ENTRIES: usize = 64;

/// A TTL of days would pin an address across a DHCP renewal or a registry's move; an hour is
/// the longest we trust an answer.
const MAX_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, Default)]
pub(super) struct Cache {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    name: String,
    addrs: Vec<IpAddr>,
    expires: Instant,
}

impl Cache {
    /// `name` must already be canonical (lower-case, no trailing dot).
    pub(super) fn get(&mut self, name: &str, now: Instant) -> Option<Vec<IpAddr>> {
        self.entries.retain(|e| e.expires > now);
        self.entries
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.addrs.clone())
    }

    /// A TTL of 0 means "do not cache" (RFC 1035 3.2.1).
    pub(super) fn insert(&mut self, name: &str, addrs: &[IpAddr], ttl: u32, now: Instant) {
        if ttl == 0 || addrs.is_empty() {
            return;
        }
        self.entries.retain(|e| e.name != name && e.expires > now);
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.remove(0);
        }
        self.entries.push(Entry {
            name: name.to_owned(),
            addrs: addrs.to_vec(),
            expires: now + Duration::from_secs(u64::from(ttl)).min(MAX_TTL),
        });
    }

    pub(super) fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips() -> Vec<IpAddr> {
        vec!["10.0.0.1".parse().unwrap()]
    }

    #[test]
    fn an_entry_is_served_until_its_ttl_runs_out() {
        let mut cache = Cache::default();
        let t0 = Instant::now();
        cache.insert("registry", &ips(), 30, t0);
        assert_eq!(
            cache.get("registry", t0 + Duration::from_secs(29)),
            Some(ips())
        );
        assert_eq!(cache.get("registry", t0 + Duration::from_secs(30)), None);
    }

    #[test]
    fn a_zero_ttl_is_not_cached() {
        let mut cache = Cache::default();
        let t0 = Instant::now();
        cache.insert("registry", &ips(), 0, t0);
        assert_eq!(cache.get("registry", t0), None);
    }

    #[test]
    fn a_huge_ttl_is_capped_at_an_hour() {
        let mut cache = Cache::default();
        let t0 = Instant::now();
        cache.insert("registry", &ips(), u32::MAX, t0);
        assert_eq!(cache.get("registry", t0 + MAX_TTL), None);
    }

    #[test]
    fn the_oldest_entry_makes_room_when_full() {
        let mut cache = Cache::default();
        let t0 = Instant::now();
        for i in 0..=MAX_ENTRIES {
            cache.insert(&format!("host{i}"), &ips(), 60, t0);
        }
        assert_eq!(cache.get("host0", t0), None);
        assert_eq!(cache.get("host1", t0), Some(ips()));
        assert_eq!(cache.get(&format!("host{MAX_ENTRIES}"), t0), Some(ips()));
    }
}
