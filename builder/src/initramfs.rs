//! The initramfs: a deterministic newc cpio archive (sorted entries, fixed mtimes and inode
//! numbers, root-owned), compressed with zstd. It carries init, the rendered declaration and,
//! later, the trust keys.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, Result, bail};

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    /// A character device node (major, minor). Writing these needs no privileges: they are
    /// only bytes in the archive until the kernel unpacks it.
    CharDev(u32, u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: Kind,
    mode: u32,
}

/// An initramfs being assembled. Paths are relative (`etc/hostos/host.toml`); parents are
/// added automatically as 0755 directories.
#[derive(Debug, Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

impl Initramfs {
    pub fn new() -> Initramfs {
        Initramfs::default()
    }

    /// The skeleton every image has: mount points init uses and /dev/console, so the kernel can
    /// give init its stdio before devtmpfs is mounted.
    pub fn with_skeleton() -> Result<Initramfs> {
        let mut i = Initramfs::new();
        for d in ["dev", "proc", "sys", "run", "tmp", "etc", "var"] {
            i.add(d, Kind::Dir, 0o755)?;
        }
        i.add("dev/console", Kind::CharDev(5, 1), 0o600)?;
        Ok(i)
    }

    pub fn add(&mut self, path: &str, kind: Kind, mode: u32) -> Result<()> {
        let path = path.trim_start_matches('/');
        if path.is_empty()
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            bail!("initramfs path {path:?} is not a clean relative path");
        }
        let mut parent = String::new();
        let comps: Vec<&str> = path.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(c);
            match self.entries.get(&parent) {
                Some(e) if e.kind != Kind::Dir => bail!("initramfs: {parent} is not a directory"),
                Some(_) => {}
                None => {
                    self.entries.insert(
                        parent.clone(),
                        Entry {
                            kind: Kind::Dir,
                            mode: 0o755,
                        },
                    );
                }
            }
        }
        if let Some(old) = self.entries.get(path)
            && !(old.kind == Kind::Dir && kind == Kind::Dir)
        {
            bail!("initramfs: {path} added twice");
        }
        self.entries.insert(
            path.to_string(),
            Entry {
                kind,
                mode: mode & 0o7777,
            },
        );
        Ok(())
    }

    /// The uncompressed newc archive.
    pub fn to_cpio(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // BTreeMap order sorts parents before children ("a" < "a/b"), as the kernel needs.
        for (ino, (path, e)) in self.entries.iter().enumerate() {
            let (type_bits, data, rdev): (u32, &[u8], (u32, u32)) = match &e.kind {
                Kind::Dir => (S_IFDIR, &[], (0, 0)),
                Kind::File(d) => (S_IFREG, d, (0, 0)),
                Kind::CharDev(ma, mi) => (S_IFCHR, &[], (*ma, *mi)),
            };
            let nlink = if e.kind == Kind::Dir { 2 } else { 1 };
            write_entry(
                &mut out,
                ino as u32 + 1,
                type_bits | e.mode,
                nlink,
                rdev,
                path,
                data,
            );
        }
        write_entry(&mut out, 0, 0, 1, (0, 0), "TRAILER!!!", &[]);
        // Pad to a 512-byte multiple like GNU cpio does; harmless and friendlier to tools.
        while !out.len().is_multiple_of(512) {
            out.push(0);
        }
        out
    }

    /// The zstd-compressed archive the kernel unpacks (CONFIG_RD_ZSTD).
    pub fn to_cpio_zstd(&self) -> Result<Vec<u8>> {
        let cpio = self.to_cpio();
        let mut enc = zstd::Encoder::new(Vec::new(), 19).context("starting zstd")?;
        // The kernel's decompressor needs the content size or a bounded window; keep the
        // window small so it can decompress in early boot memory.
        enc.include_contentsize(true).context("zstd parameters")?;
        enc.set_pledged_src_size(Some(cpio.len() as u64))
            .context("zstd parameters")?;
        enc.window_log(21).context("zstd parameters")?;
        enc.write_all(&cpio).context("compressing initramfs")?;
        enc.finish().context("compressing initramfs")
    }
}

fn write_entry(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    name: &str,
    data: &[u8],
) {
    let namesize = name.len() + 1;
    let header = format!(
        "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{size:08x}{dmaj:08x}{dmin:08x}{rmaj:08x}{rmin:08x}{namesize:08x}{check:08x}",
        uid = 0,
        gid = 0,
        mtime = 0,
        size = data.len(),
        dmaj = 0,
        dmin = 0,
        rmaj = rdev.0,
        rmin = rdev.1,
        check = 0,
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sample() -> Initramfs {
        let mut i = Initramfs::with_skeleton().unwrap();
        i.add("init", Kind::File(b"#!/bin/sh\necho hi\n".to_vec()), 0o755)
            .unwrap();
        i.add(
            "etc/hostos/host.toml",
            Kind::File(b"name = \"x\"\n".to_vec()),
            0o644,
        )
        .unwrap();
        i
    }

    #[test]
    fn output_is_deterministic() {
        assert_eq!(
            sample().to_cpio_zstd().unwrap(),
            sample().to_cpio_zstd().unwrap()
        );
    }

    #[test]
    fn parents_come_before_children_and_are_created() {
        let cpio = sample().to_cpio();
        let text = String::from_utf8_lossy(&cpio);
        let etc = text.find("etc\0").unwrap();
        let hostos = text.find("etc/hostos\0").unwrap();
        let file = text.find("etc/hostos/host.toml\0").unwrap();
        assert!(etc < hostos && hostos < file);
    }

    #[test]
    fn rejects_escaping_and_duplicate_paths() {
        let mut i = Initramfs::new();
        assert!(i.add("../x", Kind::Dir, 0o755).is_err());
        assert!(i.add("a//b", Kind::Dir, 0o755).is_err());
        i.add("a", Kind::File(vec![1]), 0o644).unwrap();
        assert!(i.add("a", Kind::File(vec![2]), 0o644).is_err());
        assert!(i.add("a/b", Kind::File(vec![2]), 0o644).is_err());
    }

    /// GNU cpio, which nobody here wrote, lists what we wrote with the right types and modes.
    #[test]
    fn gnu_cpio_reads_our_archive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.cpio");
        std::fs::write(&path, sample().to_cpio()).unwrap();
        let out = Command::new("cpio")
            .args(["-itv", "--quiet", "-F"])
            .arg(&path)
            .output()
            .expect("GNU cpio not found: install the Debian package cpio");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            listing.lines().any(|l| l.starts_with("crw-------")
                && l.contains("5,")
                && l.ends_with("dev/console")),
            "{listing}"
        );
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with(" init")),
            "{listing}"
        );
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with("drwxr-xr-x") && l.ends_with(" etc/hostos")),
            "{listing}"
        );
    }

    /// The zstd stream is a standard frame the `zstd` tool decodes back to the cpio bytes.
    #[test]
    fn zstd_tool_decodes_to_the_cpio() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.cpio.zst");
        std::fs::write(&path, sample().to_cpio_zstd().unwrap()).unwrap();
        let out = Command::new("zstd")
            .args(["-dc"])
            .arg(&path)
            .output()
            .expect("zstd not found: install the Debian package zstd");
        assert!(out.status.success());
        assert_eq!(out.stdout, sample().to_cpio());
    }
}
