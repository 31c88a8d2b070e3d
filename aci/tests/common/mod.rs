//! Test helpers: a raw ustar writer that can produce hostile archives (the `tar` crate refuses
//! to write `..` or absolute names), manifests, and checks that nothing escaped a target.

#![allow(dead_code)]

pub mod tls;

use std::path::Path;

pub mod bomb;

pub const MANIFEST: &str = r#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/test","labels":[{"name":"version","value":"1.0.0"},{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}]}"#;

pub fn manifest_named(name: &str, labels: &[(&str, &str)], extra: &str) -> String {
    let labels: Vec<String> = labels
        .iter()
        .map(|(n, v)| format!(r#"{{"name":"{n}","value":"{v}"}}"#))
        .collect();
    format!(
        r#"{{"acKind":"ImageManifest","acVersion":"0.8.11","name":"{name}","labels":[{}]{extra}}}"#,
        labels.join(",")
    )
}

/// Builds a ustar stream entry by entry with exactly the names and types given.
#[derive(Default)]
pub struct RawTar {
    pub bytes: Vec<u8>,
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}", v, width = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
}

impl RawTar {
    pub fn new() -> Self {
        RawTar::default()
    }

    pub fn entry(&mut self, name: &str, typ: u8, link: &str, data: &[u8], mode: u32) -> &mut Self {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h[100..108], u64::from(mode));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], data.len() as u64);
        octal(&mut h[136..148], 1_000_000);
        h[148..156].copy_from_slice(b"        ");
        h[156] = typ;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        if typ == b'3' || typ == b'4' {
            octal(&mut h[329..337], 1);
            octal(&mut h[337..345], 3);
        }
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.bytes.extend_from_slice(&h);
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(name, b'0', "", data, 0o644)
    }
    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(name, b'5', "", b"", 0o755)
    }
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name, b'2', target, b"", 0o777)
    }
    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name, b'1', target, b"", 0o644)
    }
    pub fn chardev(&mut self, name: &str) -> &mut Self {
        self.entry(name, b'3', "", b"", 0o666)
    }
    /// A valid ACI prefix: manifest and the rootfs directory.
    pub fn aci() -> Self {
        let mut t = RawTar::new();
        t.file("manifest", MANIFEST.as_bytes()).dir("rootfs/");
        t
    }
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.bytes);
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }
}

/// Every path under `root`, relative, sorted.
pub fn tree(root: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// A sandbox holding `target/` and a decoy file; returns (sandbox, target).
pub fn sandbox() -> (tempfile::TempDir, std::path::PathBuf) {
    let sb = tempfile::tempdir().unwrap();
    std::fs::write(sb.path().join("decoy"), b"original").unwrap();
    let target = sb.path().join("target");
    (sb, target)
}

/// Asserts the sandbox holds nothing but `decoy` (unchanged) and `target/...`.
pub fn assert_nothing_outside(sb: &Path) {
    let outside: Vec<String> = tree(sb)
        .into_iter()
        .filter(|p| p != "decoy" && p != "target" && !p.starts_with("target/"))
        .collect();
    assert!(
        outside.is_empty(),
        "written outside the target: {outside:?}"
    );
    assert_eq!(std::fs::read(sb.join("decoy")).unwrap(), b"original");
}

/// Fails (never skips) when a tool is missing, naming the Debian package that provides it.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is missing: install the Debian package `{package}`"
    );
}
pub mod hostile;
