//! Entry-name normalization: where a raw tar name belongs in the ACI layout, and how names are
//! shown in messages.

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

/// Longest name an error message quotes, in characters: a hostile name can be megabytes.
const SHOWN_CHARS: usize = 200;

/// A raw name for messages: lossy UTF-8, cut to `SHOWN_CHARS` with an ellipsis.
pub(crate) fn shown(raw: &[u8]) -> String {
    let head = raw.get(..SHOWN_CHARS * 4).unwrap_or(raw);
    let text = String::from_utf8_lossy(head);
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(SHOWN_CHARS).collect();
    if chars.next().is_some() || head.len() < raw.len() {
        out.push('…');
    }
    out
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
}
