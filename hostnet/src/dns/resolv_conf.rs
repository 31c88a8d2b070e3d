//! `resolv.conf`: rendering the host's from its DNS servers (DHCP or declared) for pods, and
//! parsing one back into a typed configuration (a pod's file, tests).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// glibc reads at most this many `nameserver` lines (MAXNS) and ignores the rest; more in the
/// file would only mislead a reader about which servers are used.
pub const MAX_NAMESERVERS: usize = 3;

/// The parts of resolv.conf a stub resolver acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// In order of preference, at most [`MAX_NAMESERVERS`].
    pub nameservers: Vec<IpAddr>,
    /// Domains tried for names with fewer than `ndots` dots (our own resolver does not use
    /// them; pods' C libraries do).
    pub search: Vec<String>,
    pub options: ResolvOptions,
    /// Lines skipped while parsing, with their 1-based number.
    pub warnings: Vec<(usize, String)>,
}

/// The `options` line. Unset fields mean the C library's default (ndots 1, timeout 5 s,
/// attempts 2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvOptions {
    pub ndots: Option<u8>,
    /// Seconds per try.
    pub timeout: Option<u8>,
    /// Rounds over all servers.
    pub attempts: Option<u8>,
    /// Options kept verbatim (`rotate`, `edns0`, `single-request`, ...).
    pub other: Vec<String>,
}

impl ResolvOptions {
    fn is_empty(&self) -> bool {
        *self == ResolvOptions::default()
    }
}

impl ResolvConf {
    /// A configuration of these servers only, truncated to [`MAX_NAMESERVERS`].
    pub fn with_nameservers(servers: &[IpAddr]) -> ResolvConf {
        ResolvConf {
            nameservers: servers.iter().copied().take(MAX_NAMESERVERS).collect(),
            ..ResolvConf::default()
        }
    }

    /// Parses resolv.conf text the way glibc reads it: `#` or `;` at a line's start is a
    /// comment, the last `search` or `domain` line wins, `nameserver` lines past the third are
    /// dropped. Bad lines are skipped and recorded in `warnings`.
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let mut words = line.split_ascii_whitespace();
            let keyword = words.next().unwrap_or_default();
            let mut warn = |reason: String| conf.warnings.push((index + 1, reason));
            match keyword {
                "nameserver" => match words.next().map(str::parse::<IpAddr>) {
                    Some(Ok(ip)) if conf.nameservers.len() < MAX_NAMESERVERS => {
                        conf.nameservers.push(ip)
                    }
                    Some(Ok(ip)) => warn(format!(
                        "nameserver {ip} ignored: only the first {MAX_NAMESERVERS} are used"
                    )),
                    _ => warn("nameserver needs an IP address".into()),
                },
                "search" | "domain" => conf.search = words.map(str::to_owned).collect(),
                "options" => {
                    for word in words {
                        if let Err(reason) = conf.options.set(word) {
                            conf.warnings.push((index + 1, reason));
                        }
                    }
                }
                // sortlist and friends do not concern a stub resolver.
                _ => {}
            }
        }
        conf
    }

    /// The file text. Empty when there is nothing to say, which a C library reads as "use
    /// 127.0.0.1", the same as a missing file.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        for ip in self.nameservers.iter().take(MAX_NAMESERVERS) {
            let _ = writeln!(out, "nameserver {ip}");
        }
        if !self.search.is_empty() {
            let _ = writeln!(out, "search {}", self.search.join(" "));
        }
        if !self.options.is_empty() {
            let o = &self.options;
            let mut words: Vec<String> = Vec::new();
            words.extend(o.ndots.map(|n| format!("ndots:{n}")));
            words.extend(o.timeout.map(|n| format!("timeout:{n}")));
            words.extend(o.attempts.map(|n| format!("attempts:{n}")));
            words.extend(o.other.iter().cloned());
            let _ = writeln!(out, "options {}", words.join(" "));
        }
        out
    }

    /// The servers as UDP socket addresses on port 53, for [`super::ResolverConfig`].
    pub fn server_addrs(&self) -> Vec<SocketAddr> {
        self.nameservers
            .iter()
            .map(|ip| SocketAddr::new(*ip, 53))
            .collect()
    }

    /// The per-try timeout, glibc's default (5 s) when unset.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.options.timeout.unwrap_or(5).max(1)))
    }

    /// Rounds over all servers, glibc's default (2) when unset.
    pub fn attempts(&self) -> u32 {
        u32::from(self.options.attempts.unwrap_or(2).max(1))
    }
}

impl ResolvOptions {
    fn set(&mut self, word: &str) -> Result<(), String> {
        let numeric = |value: &str, max: u8| {
            value
                .parse::<u32>()
                // glibc clamps rather than rejects: ndots to 15, timeout to 30, attempts to 5.
                .map(|n| u8::try_from(n).map_or(max, |n| n.min(max)))
                .map_err(|_| format!("option {word:?} needs a number"))
        };
        match word.split_once(':') {
            Some(("ndots", v)) => self.ndots = Some(numeric(v, 15)?),
            Some(("timeout", v)) => self.timeout = Some(numeric(v, 30)?),
            Some(("attempts", v)) => self.attempts = Some(numeric(v, 5)?),
            _ => self.other.push(word.to_owned()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn renders_at_most_three_nameservers_like_glibc_reads() {
        let servers = [
            ip("10.0.2.3"),
            ip("1.1.1.1"),
            ip("2606:4700::1111"),
            ip("8.8.8.8"),
        ];
        let text = ResolvConf::with_nameservers(&servers).render();
        assert_eq!(
            text,
            "nameserver 10.0.2.3\nnameserver 1.1.1.1\nnameserver 2606:4700::1111\n"
        );
    }

    #[test]
    fn renders_search_and_options_only_when_set() {
        let conf = ResolvConf {
            nameservers: vec![ip("10.0.2.3")],
            search: vec!["corp.example".into(), "example".into()],
            options: ResolvOptions {
                ndots: Some(2),
                timeout: Some(1),
                attempts: None,
                other: vec!["rotate".into()],
            },
            warnings: vec![],
        };
        assert_eq!(
            conf.render(),
            "nameserver 10.0.2.3\nsearch corp.example example\noptions ndots:2 timeout:1 rotate\n"
        );
        assert_eq!(ResolvConf::default().render(), "");
    }

    #[test]
    fn a_rendered_file_parses_back_to_the_same_config() {
        let conf = ResolvConf {
            nameservers: vec![ip("10.0.2.3"), ip("fd00::53")],
            search: vec!["example".into()],
            options: ResolvOptions {
                ndots: Some(5),
                timeout: Some(2),
                attempts: Some(3),
                other: vec!["edns0".into()],
            },
            warnings: vec![],
        };
        assert_eq!(ResolvConf::parse(&conf.render()), conf);
    }

    #[test]
    fn parses_a_systemd_style_file_with_comments_and_unknown_lines() {
        let text = "\
# This is /run/systemd/resolve/resolv.conf managed by man:systemd-resolved(8).
; old-style comment
nameserver 192.168.1.1
nameserver   fe80::1
domain lan
search home.arpa lan
sortlist 130.155.160.0/255.255.240.0
options edns0 trust-ad timeout:40
";
        let conf = ResolvConf::parse(text);
        assert_eq!(conf.nameservers, vec![ip("192.168.1.1"), ip("fe80::1")]);
        assert_eq!(
            conf.search,
            vec!["home.arpa", "lan"],
            "the last search line wins"
        );
        assert_eq!(conf.options.timeout, Some(30), "clamped like glibc");
        assert_eq!(conf.options.other, vec!["edns0", "trust-ad"]);
        assert!(conf.warnings.is_empty(), "{:?}", conf.warnings);
        assert_eq!(conf.timeout(), Duration::from_secs(30));
        assert_eq!(conf.attempts(), 2);
    }

    #[test]
    fn skips_a_fourth_nameserver_and_bad_lines_with_warnings() {
        let text = "nameserver 1.1.1.1\nnameserver dns.example\nnameserver 1.0.0.1\n\
                    nameserver 8.8.8.8\nnameserver 8.8.4.4\noptions ndots:x\n";
        let conf = ResolvConf::parse(text);
        assert_eq!(
            conf.nameservers,
            vec![ip("1.1.1.1"), ip("1.0.0.1"), ip("8.8.8.8")]
        );
        let lines: Vec<usize> = conf.warnings.iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, vec![2, 5, 6]);
    }

    #[test]
    fn server_addrs_use_port_53() {
        let conf = ResolvConf::with_nameservers(&[ip("10.0.2.3"), ip("fd00::3")]);
        assert_eq!(
            conf.server_addrs(),
            vec![
                "10.0.2.3:53".parse::<SocketAddr>().unwrap(),
                "[fd00::3]:53".parse().unwrap()
            ]
        );
    }
}
