//! Where things live: the cache.

use std::path::PathBuf;

/// The cache root: `$HOSTOS_CACHE`, else `$XDG_CACHE_HOME/hostos`, else `~/.cache/hostos`.
/// Kept outside the repository so fresh clones (CI) reuse kernel builds.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("HOSTOS_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("hostos");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache").join("hostos")
}
