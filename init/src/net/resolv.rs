//! The files the network service generates under /run: `resolv.conf` from the DNS servers in
//! force, and `hosts` from the host name and the static entries. Each is replaced atomically
//! (a temporary file in the same directory, then rename), so a pod or the resolver reading it
//! sees the old file or the new one, never half of one.

use std::fs;
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use hostnet::dns::{HostsEntry, MAX_NAMESERVERS, RenderHostsError, ResolvConf, render_hosts};

#[derive(Debug, thiserror::Error)]
pub enum RunFileError {
    #[error("creating the directory {path} failed")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {path} failed")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("renaming {from} to {to} failed")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("rendering the hosts file failed")]
    RenderHosts(#[source] RenderHostsError),
}

/// The servers in order of preference, each once, at most [`MAX_NAMESERVERS`] (glibc reads no
/// more; the resolver asks them in this order).
pub fn merge_servers(groups: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::with_capacity(MAX_NAMESERVERS);
    for ip in groups {
        if out.len() == MAX_NAMESERVERS {
            break;
        }
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// resolv.conf for these servers and, when a lease named one, its domain as `search` (for
/// pods' C libraries; init's own resolver asks names as given).
pub fn render_resolv_conf(servers: &[IpAddr], domain: Option<&str>) -> String {
    let mut conf = ResolvConf::with_nameservers(servers);
    conf.search.extend(domain.map(str::to_owned));
    conf.render()
}

/// The hosts file: localhost, the host name, then one line per static entry.
pub fn render_hosts_file(
    hostname: &str,
    entries: &[(String, IpAddr)],
) -> Result<String, RunFileError> {
    let entries: Vec<HostsEntry> = entries
        .iter()
        .map(|(name, ip)| HostsEntry {
            ip: *ip,
            names: vec![name.clone()],
        })
        .collect();
    render_hosts(hostname, &entries).map_err(RunFileError::RenderHosts)
}

/// Replaces `path` with `text`: written to `<path>.tmp` beside it, then renamed over it.
/// The directory is created if missing (`/run/hostos` on the first write).
pub fn write_atomically(path: &Path, text: &str) -> Result<(), RunFileError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|source| RunFileError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = |source| RunFileError::Write {
        path: tmp.clone(),
        source,
    };
    // World-readable: pods bind-mount these files and read them as any user.
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(write)?;
    file.write_all(text.as_bytes()).map_err(write)?;
    drop(file);
    fs::rename(&tmp, path).map_err(|source| RunFileError::Rename {
        from: tmp.clone(),
        to: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn merged_servers_keep_the_first_of_each_and_stop_at_three() {
        let got = merge_servers(
            ["10.0.2.3", "1.1.1.1", "10.0.2.3", "8.8.8.8", "9.9.9.9"]
                .into_iter()
                .map(ip),
        );
        assert_eq!(got, vec![ip("10.0.2.3"), ip("1.1.1.1"), ip("8.8.8.8")]);
    }

    #[test]
    fn resolv_conf_lists_the_servers_and_the_lease_domain() {
        let text = render_resolv_conf(&[ip("10.0.2.3"), ip("fd00::3")], Some("example.test"));
        assert_eq!(
            text,
            "nameserver 10.0.2.3\nnameserver fd00::3\nsearch example.test\n"
        );
        assert_eq!(render_resolv_conf(&[], None), "");
    }

    #[test]
    fn hosts_file_has_the_hostname_and_each_static_entry() {
        let text =
            render_hosts_file("box", &[("registry.lan".into(), ip("192.168.1.10"))]).unwrap();
        assert!(text.contains("127.0.1.1\tbox\n"), "{text}");
        assert!(text.ends_with("192.168.1.10\tregistry.lan\n"), "{text}");
        let err = render_hosts_file("bad name", &[]).unwrap_err();
        assert!(matches!(err, RunFileError::RenderHosts(_)), "{err:?}");
    }

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hostos/resolv.conf");
        write_atomically(&path, "nameserver 10.0.2.3\n").unwrap();
        write_atomically(&path, "nameserver 1.1.1.1\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "nameserver 1.1.1.1\n");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["resolv.conf"]);
    }
}
