//! The tree of paths an unpack has seen, one node per path component: what each entry of the
//! current archive was (duplicates, hard link targets, writes below its own symlinks) and the
//! symlinks in the target across layers, with the lexical resolver that decides whether a link
//! target stays inside the rootfs.
//!
//! A node is found by (parent node, component), so every check costs one hash per component of
//! the path it walks: linear in the path's length, where hashing each prefix was quadratic.

use std::collections::{HashMap, VecDeque};

/// The rootfs itself.
const ROOT: u32 = 0;
const NONE: u32 = u32::MAX;

/// Following more links than this means a loop; the kernel would stop with ELOOP at 40 too, and
/// a loop cannot reach outside anything.
const MAX_HOPS: usize = 40;

/// What an entry of the current archive was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Hard links may not target directories.
    Dir,
    /// A non-directory that is written.
    Kept,
    /// A symlink that is written (also a hard link to one, which is the same symlink).
    Symlink,
    /// A non-directory the pathWhitelist filters out.
    Dropped,
}

/// Kept small (24 bytes): a hostile archive can make millions of them, up to `max_paths`.
#[derive(Debug)]
struct Node {
    parent: u32,
    first_child: u32,
    next_sibling: u32,
    /// The archive whose entry `seen` describes (0: none), and the last archive that cleared
    /// this node's subtree.
    seen_archive: u32,
    cleared: u32,
    seen: Seen,
}

impl Node {
    fn new(parent: u32) -> Self {
        Node {
            parent,
            first_child: NONE,
            next_sibling: NONE,
            seen_archive: 0,
            cleared: 0,
            seen: Seen::Dir,
        }
    }
}

/// Too many distinct paths for `Limits::max_paths`.
#[derive(Debug)]
pub(crate) struct TooManyPaths;

#[derive(Debug)]
pub(crate) struct PathTree {
    nodes: Vec<Node>,
    /// Key: the parent's index (4 bytes, little endian) followed by the component.
    children: HashMap<Box<[u8]>, u32>,
    /// Symlinks in the target tree: node → (raw target, the archive that wrote it).
    links: HashMap<u32, (Box<[u8]>, u32)>,
    /// Numbers the archives (layers) read into this tree; 0 is "none".
    archive: u32,
}

impl Default for PathTree {
    fn default() -> Self {
        PathTree {
            nodes: vec![Node::new(ROOT)],
            children: HashMap::new(),
            links: HashMap::new(),
            archive: 0,
        }
    }
}

fn key(buf: &mut Vec<u8>, parent: u32, comp: &[u8]) {
    buf.clear();
    buf.extend_from_slice(&parent.to_le_bytes());
    buf.extend_from_slice(comp);
}

impl PathTree {
    /// Starts a new archive: what the previous one's entries were is forgotten, its links stay.
    pub(crate) fn begin_archive(&mut self) {
        self.archive += 1;
    }

    fn node(&self, id: u32) -> Option<&Node> {
        self.nodes.get(id as usize)
    }

    fn node_mut(&mut self, id: u32) -> Option<&mut Node> {
        self.nodes.get_mut(id as usize)
    }

    fn child(&self, buf: &mut Vec<u8>, parent: u32, comp: &[u8]) -> Option<u32> {
        key(buf, parent, comp);
        self.children.get(buf.as_slice()).copied()
    }

    /// The node for `comps`, created with its parents as needed. Also says whether a proper
    /// prefix of it is a symlink the current archive wrote (writing there would follow it).
    pub(crate) fn intern(
        &mut self,
        comps: &[Vec<u8>],
        max_paths: u64,
    ) -> Result<(u32, bool), TooManyPaths> {
        let mut buf = Vec::new();
        let mut cur = ROOT;
        let mut through = false;
        for c in comps {
            if self.seen(cur) == Some(Seen::Symlink) {
                through = true;
            }
            cur = match self.child(&mut buf, cur, c) {
                Some(id) => id,
                None => {
                    let id = u32::try_from(self.nodes.len()).map_err(|_| TooManyPaths)?;
                    if u64::from(id) >= max_paths || id == NONE {
                        return Err(TooManyPaths);
                    }
                    let mut node = Node::new(cur);
                    if let Some(p) = self.node_mut(cur) {
                        node.next_sibling = p.first_child;
                        p.first_child = id;
                    }
                    self.nodes.push(node);
                    self.children.insert(buf.as_slice().into(), id);
                    id
                }
            };
        }
        Ok((cur, through))
    }

    /// The node for `comps` if the tree has it.
    pub(crate) fn find(&self, comps: &[Vec<u8>]) -> Option<u32> {
        let mut buf = Vec::new();
        comps
            .iter()
            .try_fold(ROOT, |cur, c| self.child(&mut buf, cur, c))
    }

    /// What the current archive's entry at `id` was, if it had one there.
    pub(crate) fn seen(&self, id: u32) -> Option<Seen> {
        let n = self.node(id)?;
        (n.seen_archive == self.archive && n.seen_archive != 0).then_some(n.seen)
    }

    pub(crate) fn set_seen(&mut self, id: u32, seen: Seen) {
        let archive = self.archive;
        if let Some(n) = self.node_mut(id) {
            n.seen_archive = archive;
            n.seen = seen;
        }
    }

    pub(crate) fn link(&self, id: u32) -> Option<&[u8]> {
        self.links.get(&id).map(|(t, _)| &**t)
    }

    pub(crate) fn set_link(&mut self, id: u32, target: Option<&[u8]>) {
        match target {
            Some(t) => {
                self.links.insert(id, (t.into(), self.archive));
            }
            None => {
                self.links.remove(&id);
            }
        }
    }

    /// An entry is written at `id`: every parent becomes a directory (in layer mode the unpacker
    /// replaces a lower layer's symlink or file there), so none of them is a link any more.
    /// A non-directory also replaces whatever tree was there, so the lower layers' links below
    /// it are gone; this archive's links below it are still created (after every entry).
    pub(crate) fn written(&mut self, id: u32, is_dir: bool) {
        let mut up = self.node(id).map_or(ROOT, |n| n.parent);
        while up != ROOT {
            self.links.remove(&up);
            up = self.node(up).map_or(ROOT, |n| n.parent);
        }
        if is_dir {
            return;
        }
        let archive = self.archive;
        let mut stack = vec![id];
        while let Some(at) = stack.pop() {
            let Some(n) = self.node_mut(at) else { continue };
            if n.cleared == archive {
                continue;
            }
            n.cleared = archive;
            let mut child = n.first_child;
            if self.links.get(&at).is_some_and(|(_, a)| *a != archive) {
                self.links.remove(&at);
            }
            while let Some(c) = self.node(child) {
                stack.push(child);
                child = c.next_sibling;
            }
        }
    }

    /// Every symlink in the tree, as (node, target).
    pub(crate) fn links(&self) -> impl Iterator<Item = (u32, &[u8])> {
        self.links.iter().map(|(id, (t, _))| (*id, &**t))
    }

    /// The rootfs path of `id` (`/a/b`), for messages. Nodes do not keep their names (that
    /// would double the tree's memory), so one pass over the child index finds them.
    pub(crate) fn display(&self, id: u32) -> String {
        let mut chain = Vec::new();
        let mut cur = id;
        while cur != ROOT && chain.len() < self.nodes.len() {
            chain.push(cur);
            cur = self.node(cur).map_or(ROOT, |n| n.parent);
        }
        let wanted: std::collections::HashSet<u32> = chain.iter().copied().collect();
        let names: HashMap<u32, &[u8]> = self
            .children
            .iter()
            .filter(|(_, v)| wanted.contains(v))
            .map(|(k, v)| (*v, k.get(4..).unwrap_or(b"?")))
            .collect();
        let mut s = String::new();
        for n in chain.iter().rev() {
            s.push('/');
            s.push_str(&String::from_utf8_lossy(
                names.get(n).copied().unwrap_or(b"?"),
            ));
        }
        if s.is_empty() {
            s.push('/');
        }
        s
    }

    /// True when following the symlink at node `at` (target `target`) stays inside the rootfs.
    /// An absolute target is rootfs-relative, as it is for the app in its chroot. `..` above
    /// the rootfs is an escape even though a chroot would clamp it, because tools outside the
    /// chroot (volume mounts, backups) follow links from the host's point of view.
    ///
    /// The walk holds a node and, past the paths the tree knows (where no link can be), only
    /// a depth: each component costs one lookup.
    pub(crate) fn stays_inside(&self, at: u32, target: &[u8]) -> bool {
        let mut buf = Vec::new();
        let mut cur = if target.first() == Some(&b'/') {
            ROOT
        } else {
            self.node(at).map_or(ROOT, |n| n.parent)
        };
        let mut beyond: usize = 0;
        let mut queue: VecDeque<&[u8]> = target.split(|&b| b == b'/').collect();
        let mut hops = 0;
        while let Some(c) = queue.pop_front() {
            match c {
                b"" | b"." => {}
                b".." => {
                    if beyond > 0 {
                        beyond -= 1;
                    } else if cur == ROOT {
                        return false;
                    } else {
                        cur = self.node(cur).map_or(ROOT, |n| n.parent);
                    }
                }
                _ if beyond > 0 => beyond += 1,
                _ => match self.child(&mut buf, cur, c) {
                    None => beyond = 1,
                    Some(next) => match self.link(next) {
                        None => cur = next,
                        Some(link) => {
                            hops += 1;
                            if hops > MAX_HOPS {
                                return true;
                            }
                            if link.first() == Some(&b'/') {
                                cur = ROOT;
                            }
                            for part in link.split(|&b| b == b'/').rev() {
                                queue.push_front(part);
                            }
                        }
                    },
                },
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(s: &str) -> Vec<Vec<u8>> {
        s.split('/').map(|c| c.as_bytes().to_vec()).collect()
    }

    fn link(t: &mut PathTree, at: &str, target: &str) -> u32 {
        let (id, _) = t.intern(&comps(at), u64::MAX).unwrap();
        t.set_link(id, Some(target.as_bytes()));
        id
    }

    fn inside(t: &mut PathTree, at: &str, target: &str) -> bool {
        let (id, _) = t.intern(&comps(at), u64::MAX).unwrap();
        t.stays_inside(id, target.as_bytes())
    }

    #[test]
    fn absolute_symlink_targets_are_rootfs_relative() {
        let mut t = PathTree::default();
        assert!(inside(&mut t, "bin/sh", "/bin/busybox"));
        assert!(inside(&mut t, "a/b/c", "../../x"));
        assert!(!inside(&mut t, "a/b/c", "../../../x"));
        assert!(!inside(&mut t, "a", "/../etc"));
        assert!(!inside(&mut t, "a", "nowhere/known/../../.."));
    }

    #[test]
    fn symlink_chains_through_earlier_links_are_followed() {
        let mut t = PathTree::default();
        // `self -> .` looks harmless, but `x -> self/..` then names the rootfs's parent.
        link(&mut t, "self", ".");
        assert!(!inside(&mut t, "x", "self/.."));
        link(&mut t, "deep", "a/b/c");
        assert!(inside(&mut t, "y", "deep/../.."));
    }

    #[test]
    fn symlink_loops_do_not_hang() {
        let mut t = PathTree::default();
        link(&mut t, "a", "b");
        link(&mut t, "b", "a");
        assert!(inside(&mut t, "c", "a"));
    }

    #[test]
    fn writing_below_a_lower_layer_link_forgets_it() {
        let mut t = PathTree::default();
        t.begin_archive();
        link(&mut t, "s", "x/y/z");
        t.begin_archive();
        let (f, _) = t.intern(&comps("s/f"), u64::MAX).unwrap();
        t.written(f, false);
        assert!(!inside(&mut t, "t", "s/../../.."));
    }

    #[test]
    fn a_file_over_a_lower_directory_forgets_the_links_below_it() {
        let mut t = PathTree::default();
        t.begin_archive();
        link(&mut t, "d/l", "x/y/z");
        t.begin_archive();
        let (d, _) = t.intern(&comps("d"), u64::MAX).unwrap();
        t.written(d, false);
        assert_eq!(t.links().count(), 0);
    }

    #[test]
    fn display_names_the_path() {
        let mut t = PathTree::default();
        let (id, _) = t.intern(&comps("a/b"), u64::MAX).unwrap();
        assert_eq!(t.display(id), "/a/b");
        assert!(t.intern(&comps("a/c/d"), 3).is_err());
    }
}
