//! `/etc/hosts`: parsing it into a table the resolver consults before DNS, and rendering the
//! host's own file (localhost, the host's name, the declared static entries).

use std::fmt::Write as _;
use std::net::IpAddr;

use thiserror::Error;

/// The address table of a hosts file. Names are kept lower-case: host names compare without
/// regard to ASCII case (RFC 4343), and so does glibc's `files` lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hosts {
    entries: Vec<(String, IpAddr)>,
    warnings: Vec<HostsWarning>,
}

/// A line of a hosts file that was skipped. A bad line does not fail the whole file: the file
/// may come from an image or a user, and the good lines still serve (glibc does the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsWarning {
    /// 1-based.
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for HostsWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "hosts line {}: {}", self.line, self.reason)
    }
}

impl Hosts {
    /// Parses the text of a hosts file: `address name [alias...]`, `#` starts a comment.
    /// Lines that do not parse are skipped and recorded in [`Hosts::warnings`].
    pub fn parse(text: &str) -> Hosts {
        let mut hosts = Hosts::default();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.split_once('#').map_or(raw, |(before, _)| before);
            let mut fields = line.split_ascii_whitespace();
            let Some(addr) = fields.next() else { continue };
            let warn = |reason: String| HostsWarning {
                line: index + 1,
                reason,
            };
            // A zone index (`fe80::1%eth0`) cannot be carried in an IpAddr; such a line is
            // skipped rather than silently bound to no interface.
            let ip = match addr.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => {
                    hosts
                        .warnings
                        .push(warn(format!("{addr:?} is not an IP address")));
                    continue;
                }
            };
            let mut any = false;
            for name in fields {
                match check_name(name) {
                    Ok(()) => {
                        hosts.entries.push((canonical(name), ip));
                        any = true;
                    }
                    Err(e) => hosts.warnings.push(warn(e.to_string())),
                }
            }
            if !any {
                hosts
                    .warnings
                    .push(warn(format!("no host name after {addr}")));
            }
        }
        hosts
    }

    /// The addresses of `name`, IPv4 first, each family in file order, without duplicates.
    /// Empty when the file does not mention the name.
    pub fn lookup(&self, name: &str) -> Vec<IpAddr> {
        let name = canonical(name);
        let mut found: Vec<IpAddr> = Vec::new();
        for (_, ip) in self.entries.iter().filter(|(n, _)| *n == name) {
            if !found.contains(ip) {
                found.push(*ip);
            }
        }
        // A stable sort keeps file order within each family.
        found.sort_by_key(|ip| ip.is_ipv6());
        found
    }

    /// The lines skipped while parsing, for init to log.
    pub fn warnings(&self) -> &[HostsWarning] {
        &self.warnings
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Why a hosts file could not be rendered.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RenderHostsError {
    #[error("cannot write host name {name:?} into /etc/hosts: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("cannot write a static hosts entry for {ip}: it has no names")]
    NoNames { ip: IpAddr },
}

/// One declared line of the host's hosts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsEntry {
    pub ip: IpAddr,
    pub names: Vec<String>,
}

/// The host's `/etc/hosts`: localhost for both families, the host's name on 127.0.1.1 (the
/// Debian convention, so the name resolves without a network and without claiming an address
/// the host may not hold), then the declared static entries in order.
pub fn render_hosts(hostname: &str, entries: &[HostsEntry]) -> Result<String, RenderHostsError> {
    let invalid = |name: &str, reason| RenderHostsError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    check_name(hostname).map_err(|e| invalid(hostname, e.0))?;
    let mut out = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    );
    for entry in entries {
        if entry.names.is_empty() {
            return Err(RenderHostsError::NoNames { ip: entry.ip });
        }
        for name in &entry.names {
            check_name(name).map_err(|e| invalid(name, e.0))?;
        }
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{}\t{}", entry.ip, entry.names.join(" "));
    }
    Ok(out)
}

#[derive(Debug)]
pub(super) struct NameProblem(&'static str);

impl std::fmt::Display for NameProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// The host-name rule for both directions: what a resolver could be asked for and what
/// survives a round trip through the file (no whitespace, no `#`).
pub(super) fn check_name(name: &str) -> Result<(), NameProblem> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(NameProblem("the name is empty"));
    }
    if name.len() > 253 {
        return Err(NameProblem("the name is longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(NameProblem("the name has an empty label"));
        }
        if label.len() > 63 {
            return Err(NameProblem("a label is longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(NameProblem(
                "only letters, digits, '-' and '_' may appear in a label",
            ));
        }
    }
    Ok(())
}

/// Lower-case without the trailing dot: `Example.COM.` and `example.com` are one name.
fn canonical(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = "\
127.0.0.1\tlocalhost
127.0.1.1\tbuildbox.example.net buildbox   # the host itself

# The following lines are desirable for IPv6 capable hosts
::1     localhost ip6-localhost ip6-loopback
ff02::1 ip6-allnodes
10.0.0.5 Registry.Internal registry
10.0.0.6 registry.internal
fd00::5 registry.internal
";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn finds_every_name_on_a_line_including_aliases_after_a_comment_free_prefix() {
        let hosts = Hosts::parse(DEBIAN);
        assert_eq!(hosts.lookup("buildbox"), vec![ip("127.0.1.1")]);
        assert_eq!(hosts.lookup("buildbox.example.net"), vec![ip("127.0.1.1")]);
        assert_eq!(hosts.lookup("ip6-loopback"), vec![ip("::1")]);
        assert!(hosts.warnings().is_empty(), "{:?}", hosts.warnings());
    }

    #[test]
    fn names_match_without_regard_to_case_or_a_trailing_dot() {
        let hosts = Hosts::parse(DEBIAN);
        assert_eq!(hosts.lookup("REGISTRY"), vec![ip("10.0.0.5")]);
        assert_eq!(hosts.lookup("Buildbox.Example.Net."), vec![ip("127.0.1.1")]);
    }

    #[test]
    fn collects_all_lines_for_a_name_ipv4_first_in_file_order() {
        let text = "fd00::5 svc\n10.0.0.5 svc\n10.0.0.6 svc\n10.0.0.5 svc\n";
        assert_eq!(
            Hosts::parse(text).lookup("svc"),
            vec![ip("10.0.0.5"), ip("10.0.0.6"), ip("fd00::5")]
        );
    }

    #[test]
    fn localhost_has_both_families() {
        let hosts = Hosts::parse(DEBIAN);
        assert_eq!(hosts.lookup("localhost"), vec![ip("127.0.0.1"), ip("::1")]);
    }

    #[test]
    fn an_unknown_name_finds_nothing() {
        assert!(Hosts::parse(DEBIAN).lookup("example.com").is_empty());
    }

    #[test]
    fn skips_bad_lines_with_a_warning_and_keeps_the_good_ones() {
        let text = "10.0.0.1 good\n10.0.0.300 bad-address\nfe80::1%eth0 zoned\n10.0.0.2\n10.0.0.3 ok bad!name\n";
        let hosts = Hosts::parse(text);
        assert_eq!(hosts.lookup("good"), vec![ip("10.0.0.1")]);
        assert_eq!(hosts.lookup("ok"), vec![ip("10.0.0.3")]);
        let lines: Vec<usize> = hosts.warnings().iter().map(|w| w.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5]);
        assert!(hosts.lookup("bad-address").is_empty());
        assert!(hosts.lookup("zoned").is_empty());
    }

    #[test]
    fn a_comment_only_or_blank_file_is_empty_without_warnings() {
        let hosts = Hosts::parse("# nothing\n\n   \t\n");
        assert!(hosts.is_empty());
        assert!(hosts.warnings().is_empty());
    }

    #[test]
    fn renders_localhost_the_hostname_and_static_entries_that_parse_back() {
        let text = render_hosts(
            "node1",
            &[
                HostsEntry {
                    ip: ip("10.0.0.5"),
                    names: vec!["registry.internal".into(), "registry".into()],
                },
                HostsEntry {
                    ip: ip("fd00::5"),
                    names: vec!["registry.internal".into()],
                },
            ],
        )
        .unwrap();
        assert!(text.starts_with(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tnode1\n"
        ));
        let hosts = Hosts::parse(&text);
        assert!(hosts.warnings().is_empty());
        assert_eq!(hosts.lookup("node1"), vec![ip("127.0.1.1")]);
        assert_eq!(
            hosts.lookup("registry.internal"),
            vec![ip("10.0.0.5"), ip("fd00::5")]
        );
    }

    #[test]
    fn refuses_to_render_a_name_that_would_not_parse_back() {
        let bad = render_hosts(
            "node1",
            &[HostsEntry {
                ip: ip("10.0.0.5"),
                names: vec!["two words".into()],
            }],
        );
        assert!(matches!(bad, Err(RenderHostsError::InvalidName { .. })));
        assert!(matches!(
            render_hosts("node#1", &[]),
            Err(RenderHostsError::InvalidName { .. })
        ));
        assert_eq!(
            render_hosts(
                "node1",
                &[HostsEntry {
                    ip: ip("10.0.0.5"),
                    names: vec![]
                }]
            ),
            Err(RenderHostsError::NoNames { ip: ip("10.0.0.5") })
        );
    }
}
