//! Where things live: the repository (for kernel-config/ and the init crate) and the cache.

use std::path::PathBuf;

/// The workspace root this builder was compiled from. Used to find `kernel-config/` and the
/// `init` crate when the user does not point elsewhere.
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

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
