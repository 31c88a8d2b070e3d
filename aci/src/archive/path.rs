//! Entry-name normalization and the lexical symlink resolver that decides whether a link target
//! stays inside the rootfs, following links the archive itself created (chains included).

use std::collections::{HashMap, VecDeque};

/// Path components of an entry below `rootfs/`, never containing `""`, `.` or `..`.
pub(crate) type Components = Vec<Vec<u8>>;

/// Where a normalized archive entry belongs in the ACI layout.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Place {
    Manifest,
    RootfsDir,
    Rootfs(Components),
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NameError {
    Absolute,
    Parent,
    OutsideLayout,
}

/// Splits a raw tar name like Go's `filepath.Clean` would (so `./manifest` and `rootfs//a/` are
/// accepted), but refuses absolute names and any `..` outright: a well-formed ACI never needs
/// them, and refusing is simpler to reason about than resolving.
pub(crate) fn classify(raw: &[u8]) -> Result<Place, NameError> {
    if raw.first() == Some(&b'/') {
        return Err(NameError::Absolute);
    }
    let comps = split(raw)?;
    match comps.split_first() {
        Some((first, rest)) if first.as_slice() == b"manifest" && rest.is_empty() => {
            Ok(Place::Manifest)
        }
        Some((first, rest)) if first.as_slice() == b"rootfs" => {
            if rest.is_empty() {
                Ok(Place::RootfsDir)
            } else {
                Ok(Place::Rootfs(rest.to_vec()))
            }
        }
        _ => Err(NameError::OutsideLayout),
    }
}

fn split(raw: &[u8]) -> Result<Components, NameError> {
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(NameError::Parent),
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

/// A hard link's target must be an archive member under `rootfs/`.
pub(crate) fn hardlink_target(raw: &[u8]) -> Option<Components> {
    match classify(raw) {
        Ok(Place::Rootfs(c)) => Some(c),
        _ => None,
    }
}

/// Displays components as a rootfs-absolute path (`/etc/passwd`), the form `pathWhitelist` uses.
pub(crate) fn rootfs_path(comps: &[Vec<u8>]) -> String {
    let mut s = String::new();
    for c in comps {
        s.push('/');
        s.push_str(&String::from_utf8_lossy(c));
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// Symlinks created so far (rootfs-relative components → raw target), used to resolve chains.
#[derive(Debug, Default)]
pub(crate) struct SymlinkMap {
    links: HashMap<Components, Vec<u8>>,
}

/// Following more links than this means a loop; the kernel would stop with ELOOP at 40 too, and
/// a loop cannot reach outside anything.
const MAX_HOPS: usize = 40;

impl SymlinkMap {
    pub(crate) fn insert(&mut self, at: Components, target: Vec<u8>) {
        self.links.insert(at, target);
    }

    pub(crate) fn remove(&mut self, at: &[Vec<u8>]) {
        self.links.remove(at);
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Components, &Vec<u8>)> {
        self.links.iter()
    }

    /// True when following the symlink at `at` (target `target`) stays inside the rootfs. An
    /// absolute target is rootfs-relative, as it is for the app in its chroot. `..` above the
    /// rootfs is an escape even though a chroot would clamp it, because tools outside the
    /// chroot (volume mounts, backups) follow links from the host's point of view.
    pub(crate) fn stays_inside(&self, at: &[Vec<u8>], target: &[u8]) -> bool {
        let mut stack: Vec<Vec<u8>> = if target.first() == Some(&b'/') {
            Vec::new()
        } else {
            at[..at.len().saturating_sub(1)].to_vec()
        };
        let mut queue: VecDeque<Vec<u8>> =
            target.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
        let mut hops = 0;
        while let Some(c) = queue.pop_front() {
            match c.as_slice() {
                b"" | b"." => {}
                b".." => {
                    if stack.pop().is_none() {
                        return false;
                    }
                }
                _ => {
                    stack.push(c);
                    if let Some(next) = self.links.get(&stack) {
                        hops += 1;
                        if hops > MAX_HOPS {
                            return true;
                        }
                        stack.pop();
                        if next.first() == Some(&b'/') {
                            stack.clear();
                        }
                        for part in next.split(|&b| b == b'/').rev() {
                            queue.push_front(part.to_vec());
                        }
                    }
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(s: &str) -> Components {
        s.split('/').map(|c| c.as_bytes().to_vec()).collect()
    }

    #[test]
    fn classify_accepts_dot_slash_manifest_like_go() {
        assert_eq!(classify(b"./manifest"), Ok(Place::Manifest));
        assert_eq!(classify(b"rootfs/"), Ok(Place::RootfsDir));
        assert_eq!(
            classify(b"./rootfs//a/./b"),
            Ok(Place::Rootfs(comps("a/b")))
        );
    }

    #[test]
    fn classify_refuses_absolute_parent_and_foreign_top_levels() {
        assert_eq!(classify(b"/rootfs/a"), Err(NameError::Absolute));
        assert_eq!(classify(b"rootfs/../etc"), Err(NameError::Parent));
        assert_eq!(classify(b"rootfsx/a"), Err(NameError::OutsideLayout));
        assert_eq!(classify(b"manifest/x"), Err(NameError::OutsideLayout));
        assert_eq!(classify(b"."), Err(NameError::OutsideLayout));
    }

    #[test]
    fn absolute_symlink_targets_are_rootfs_relative() {
        let m = SymlinkMap::default();
        assert!(m.stays_inside(&comps("bin/sh"), b"/bin/busybox"));
        assert!(m.stays_inside(&comps("a/b/c"), b"../../x"));
        assert!(!m.stays_inside(&comps("a/b/c"), b"../../../x"));
        assert!(!m.stays_inside(&comps("a"), b"/../etc"));
    }

    #[test]
    fn symlink_chains_through_earlier_links_are_followed() {
        let mut m = SymlinkMap::default();
        // `self -> .` looks harmless, but `x -> self/..` then names the rootfs's parent.
        m.insert(comps("self"), b".".to_vec());
        assert!(!m.stays_inside(&comps("x"), b"self/.."));
        m.insert(comps("deep"), b"a/b/c".to_vec());
        assert!(m.stays_inside(&comps("y"), b"deep/../.."));
    }

    #[test]
    fn symlink_loops_do_not_hang() {
        let mut m = SymlinkMap::default();
        m.insert(comps("a"), b"b".to_vec());
        m.insert(comps("b"), b"a".to_vec());
        assert!(m.stays_inside(&comps("c"), b"a"));
    }
}
