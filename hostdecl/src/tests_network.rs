//! `[network]` and `[fetch]`: defaults, every refusal at its line, column and field, the CA
//! files read at build time, and the network plan's JSON.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use super::*;

fn decl(text: &str) -> HostDecl {
    HostDecl::from_toml_str(text, "h.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> DeclError {
    HostDecl::from_toml_str(text, "h.toml").expect_err("declaration should be refused")
}

/// `(line, column, field)` of the error, and asserts its text contains `words`.
fn at(e: &DeclError, words: &str) -> (usize, usize, String) {
    assert!(e.to_string().contains(words), "{words:?} not in: {e}");
    let s = e.site().expect("error has a site");
    (s.line, s.column, s.field.clone())
}

/// The plan of a declaration that names no files.
fn plan(text: &str) -> NetworkPlan {
    let d = decl(text);
    let inputs = d.resolve_paths(Path::new("/nonexistent"), None).unwrap();
    d.network_plan(&inputs).unwrap()
}

const HEAD: &str = "name = \"n\"\n";

#[test]
fn no_network_section_plans_dhcp_on_the_first_ethernet_device() {
    let p = plan(HEAD);
    assert_eq!(
        p.interfaces,
        vec![InterfacePlan {
            device: Device::FirstEthernet,
            addressing: Addressing::Dhcp {},
            mtu: None,
            dns: None,
        }]
    );
    assert!(p.hosts.is_empty());
    assert_eq!(p.fetch, FetchPolicy::default());
}

#[test]
fn interface_name_defaults_to_auto_and_addressing_to_dhcp() {
    let p = plan(&format!("{HEAD}[[network.interface]]\nmtu = 1400\n"));
    assert_eq!(p.interfaces.len(), 1);
    assert_eq!(p.interfaces[0].device, Device::FirstEthernet);
    assert_eq!(p.interfaces[0].addressing, Addressing::Dhcp {});
    assert_eq!(p.interfaces[0].mtu, Some(1400));
}

#[test]
fn empty_interface_list_plans_no_network() {
    let p = plan(&format!("{HEAD}[network]\ninterface = []\n"));
    assert!(p.interfaces.is_empty());
}

#[test]
fn declared_dns_servers_are_planned_to_replace_the_leases() {
    let p = plan(&format!(
        "{HEAD}[[network.interface]]\nname = \"eth0\"\ndns = [\"10.0.2.3\", \"1.1.1.1\"]\n"
    ));
    assert_eq!(p.interfaces[0].device, Device::Name("eth0".into()));
    assert_eq!(
        p.interfaces[0].dns,
        Some(vec![Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)])
    );
}

#[test]
fn static_interface_plans_address_prefix_and_gateway() {
    let p = plan(&format!(
        "{HEAD}[[network.interface]]\ndhcp = false\naddress = \"10.0.2.15/24\"\ngateway = \"10.0.2.2\"\n"
    ));
    let a = &p.interfaces[0].addressing;
    assert_eq!(
        a,
        &Addressing::Static {
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix: 24,
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
        }
    );
    assert!(!a.gateway_off_subnet());
}

#[test]
fn gateway_outside_the_subnet_is_allowed_and_marked_for_an_on_link_route() {
    let p = plan(&format!(
        "{HEAD}[[network.interface]]\ndhcp = false\naddress = \"10.128.0.5/32\"\ngateway = \"10.128.0.1\"\n"
    ));
    assert!(p.interfaces[0].addressing.gateway_off_subnet());
    let p = plan(&format!(
        "{HEAD}[[network.interface]]\ndhcp = false\naddress = \"10.0.0.5/0\"\ngateway = \"192.168.1.1\"\n"
    ));
    assert!(!p.interfaces[0].addressing.gateway_off_subnet());
}

#[test]
fn static_interface_without_an_address_is_missing_it() {
    let e = err(&format!("{HEAD}[[network.interface]]\ndhcp = false\n"));
    assert!(matches!(e, DeclError::Missing { .. }), "{e:?}");
    assert_eq!(at(&e, "required").2, "network.interface[0].address");
    assert_eq!(at(&e, "required").0, 2);
}

#[test]
fn address_with_dhcp_is_refused_at_the_address() {
    let e = err(&format!(
        "{HEAD}[[network.interface]]\ndhcp = true\naddress = \"10.0.2.15/24\"\n"
    ));
    assert_eq!(
        at(&e, "set dhcp = false"),
        (4, 11, "network.interface[0].address".into())
    );
    let e = err(&format!(
        "{HEAD}[[network.interface]]\naddress = \"10.0.2.15/24\"\n"
    ));
    assert_eq!(
        at(&e, "DHCP (the default)"),
        (3, 11, "network.interface[0].address".into())
    );
}

#[test]
fn static_addresses_must_be_ipv4_with_a_prefix_up_to_32() {
    for (address, words) in [
        ("10.0.2.15", "has no prefix length"),
        ("10.0.2.15/33", "not a number from 0 to 32"),
        ("10.0.2.15/x", "not a number from 0 to 32"),
        ("fd00::5/64", "not an IPv4 address"),
        ("10.0.2/24", "not an IPv4 address"),
        ("0.0.0.0/0", "unspecified"),
        ("127.0.0.1/8", "loopback"),
        ("224.0.0.1/4", "multicast"),
    ] {
        let e = err(&format!(
            "{HEAD}[[network.interface]]\ndhcp = false\naddress = \"{address}\"\n"
        ));
        assert_eq!(
            at(&e, words),
            (4, 11, "network.interface[0].address".into()),
            "{address}"
        );
    }
}

#[test]
fn gateway_is_refused_with_dhcp_and_when_not_a_usable_ipv4_address() {
    let e = err(&format!(
        "{HEAD}[[network.interface]]\ngateway = \"10.0.2.2\"\n"
    ));
    assert_eq!(
        at(&e, "comes from the DHCP lease"),
        (3, 11, "network.interface[0].gateway".into())
    );
    for (gw, words) in [
        ("10.0.2", "not an IPv4 address"),
        ("fd00::1", "not an IPv4 address"),
        ("10.0.2.15", "the interface's own address"),
        ("255.255.255.255", "broadcast"),
    ] {
        let e = err(&format!(
            "{HEAD}[[network.interface]]\ndhcp = false\naddress = \"10.0.2.15/24\"\ngateway = \"{gw}\"\n"
        ));
        assert_eq!(
            at(&e, words),
            (5, 11, "network.interface[0].gateway".into()),
            "{gw}"
        );
    }
}

#[test]
fn mtu_outside_what_ipv4_and_the_kernel_allow_is_refused() {
    for mtu in [0, 67, 65536] {
        let e = err(&format!("{HEAD}[[network.interface]]\nmtu = {mtu}\n"));
        assert_eq!(
            at(&e, "is not an MTU from 68 to 65535"),
            (3, 7, "network.interface[0].mtu".into())
        );
    }
}

#[test]
fn dns_servers_must_be_distinct_ipv4_addresses() {
    let text = |list: &str| format!("{HEAD}[[network.interface]]\ndns = [{list}]\n");
    let e = err(&text("\"10.0.2.3\", \"fd00::3\""));
    assert_eq!(
        at(&e, "IPv4 only"),
        (3, 20, "network.interface[0].dns[1]".into())
    );
    let e = err(&text("\"dns.example\""));
    assert_eq!(
        at(&e, "not an IP address"),
        (3, 8, "network.interface[0].dns[0]".into())
    );
    let e = err(&text("\"10.0.2.3\", \"10.0.2.3\""));
    assert_eq!(
        at(&e, "listed twice"),
        (3, 20, "network.interface[0].dns[1]".into())
    );
}

#[test]
fn interface_names_are_kernel_names_or_auto_and_unique() {
    let e = err(&format!(
        "{HEAD}[[network.interface]]\nname = \"a-name-longer-than-15\"\n"
    ));
    assert_eq!(
        at(&e, "not an interface name"),
        (3, 8, "network.interface[0].name".into())
    );
    let e = err(&format!("{HEAD}[[network.interface]]\nname = \"eth/0\"\n"));
    assert_eq!(
        at(&e, "not an interface name").2,
        "network.interface[0].name"
    );
    let e = err(&format!(
        "{HEAD}[[network.interface]]\n[[network.interface]]\nname = \"auto\"\n"
    ));
    assert_eq!(
        at(&e, "is already network.interface[0]"),
        (4, 8, "network.interface[1].name".into())
    );
}

#[test]
fn misspelt_interface_key_gets_did_you_mean() {
    let e = err(&format!(
        "{HEAD}[[network.interface]]\ngatway = \"10.0.2.2\"\n"
    ));
    assert!(matches!(e, DeclError::UnknownKey { .. }), "{e:?}");
    assert_eq!(
        at(&e, "did you mean `gateway`?"),
        (3, 1, "network.interface[0].gatway".into())
    );
}

#[test]
fn static_hosts_take_ipv4_and_ipv6_addresses() {
    let p = plan(&format!(
        "{HEAD}[[network.host]]\nname = \"images.test\"\naddress = \"10.0.2.2\"\n[[network.host]]\nname = \"v6.test\"\naddress = \"fd00::2\"\n"
    ));
    assert_eq!(
        p.hosts,
        vec![
            HostEntry {
                name: "images.test".into(),
                address: IpAddr::V4(Ipv4Addr::new(10, 0, 2, 2)),
            },
            HostEntry {
                name: "v6.test".into(),
                address: "fd00::2".parse().unwrap(),
            },
        ]
    );
}

#[test]
fn static_hosts_need_valid_unique_names_and_an_address() {
    let host = |name: &str, addr: &str| {
        format!("[[network.host]]\nname = \"{name}\"\naddress = \"{addr}\"\n")
    };
    let e = err(&format!("{HEAD}{}", host("bad_name.test", "10.0.2.2")));
    assert_eq!(
        at(&e, "is not a host name"),
        (3, 8, "network.host[0].name".into())
    );
    let e = err(&format!("{HEAD}{}", host("-x.test", "10.0.2.2")));
    assert_eq!(at(&e, "is not a host name").2, "network.host[0].name");
    let e = err(&format!(
        "{HEAD}{}{}",
        host("images.test", "10.0.2.2"),
        host("Images.Test", "10.0.2.3")
    ));
    assert_eq!(
        at(&e, "is already network.host[0]"),
        (6, 8, "network.host[1].name".into())
    );
    let e = err(&format!("{HEAD}{}", host("images.test", "10.0.2")));
    assert_eq!(
        at(&e, "not an IPv4 or IPv6 address"),
        (4, 11, "network.host[0].address".into())
    );
    let e = err(&format!("{HEAD}[[network.host]]\nname = \"a.test\"\n"));
    assert!(matches!(e, DeclError::Missing { .. }), "{e:?}");
    assert_eq!(at(&e, "required").2, "network.host[0].address");
}

#[test]
fn allow_http_takes_distinct_image_name_prefixes() {
    let p = plan(&format!(
        "{HEAD}[fetch]\nallow_http = [\"images.test/\", \"example.com/dev\"]\n"
    ));
    assert_eq!(p.fetch.allow_http, vec!["images.test", "example.com/dev"]);
    assert!(p.fetch.allows_http("images.test/busybox"));
    assert!(p.fetch.allows_http("example.com/dev/tool"));
    assert!(!p.fetch.allows_http("example.com/devil"));
    assert!(!p.fetch.allows_http("images.testing/x"));

    let e = err(&format!("{HEAD}[fetch]\nallow_http = [\"\"]\n"));
    assert_eq!(
        at(&e, "is not an image-name prefix"),
        (3, 15, "fetch.allow_http[0]".into())
    );
    let e = err(&format!("{HEAD}[fetch]\nallow_http = [\"http://x/\"]\n"));
    assert_eq!(
        at(&e, "is not an image-name prefix").2,
        "fetch.allow_http[0]"
    );
    let e = err(&format!(
        "{HEAD}[fetch]\nallow_http = [\"a.test/\", \"a.test/\"]\n"
    ));
    assert_eq!(
        at(&e, "listed twice"),
        (3, 26, "fetch.allow_http[1]".into())
    );
}

#[test]
fn ca_paths_must_be_given_once_each() {
    let e = err(&format!("{HEAD}[fetch]\nca = [\"\"]\n"));
    assert_eq!(at(&e, "is empty"), (3, 7, "fetch.ca[0]".into()));
    let e = err(&format!("{HEAD}[fetch]\nca = [\"a.pem\", \"a.pem\"]\n"));
    assert_eq!(at(&e, "listed twice"), (3, 16, "fetch.ca[1]".into()));
}

const CERT_A: &str = "-----BEGIN CERTIFICATE-----\nAAECAwQ=\n-----END CERTIFICATE-----\n";
const CERT_B: &str = "-----BEGIN CERTIFICATE-----\nBQYH\n-----END CERTIFICATE-----\n";

/// A declaration with `[fetch] ca = [files...]` in a temp dir holding `contents`.
fn with_ca(files: &[(&str, &str)]) -> (tempfile::TempDir, HostDecl) {
    let dir = tempfile::tempdir().unwrap();
    let mut list = Vec::new();
    for (name, contents) in files {
        std::fs::create_dir_all(dir.path().join(name).parent().unwrap()).unwrap();
        std::fs::write(dir.path().join(name), contents).unwrap();
        list.push(format!("\"{name}\""));
    }
    let d = decl(&format!("{HEAD}[fetch]\nca = [{}]\n", list.join(", ")));
    (dir, d)
}

#[test]
fn ca_files_are_read_at_build_time_into_der_certificates() {
    let (dir, d) = with_ca(&[
        ("certs/a.pem", &format!("a comment\n{CERT_A}{CERT_B}")),
        ("b.pem", CERT_B),
    ]);
    let inputs = d.resolve_paths(dir.path(), None).unwrap();
    assert_eq!(inputs.ca[0].value, dir.path().join("certs/a.pem"));
    let p = d.network_plan(&inputs).unwrap();
    let sources: Vec<&str> = p.fetch.ca.iter().map(|c| c.source.as_str()).collect();
    assert_eq!(sources, ["certs/a.pem#0", "certs/a.pem#1", "b.pem#0"]);
    assert_eq!(p.fetch.ca[0].der_bytes().unwrap(), [0, 1, 2, 3, 4]);
    assert_eq!(p.fetch.ca[1].der_bytes().unwrap(), [5, 6, 7]);
}

#[test]
fn missing_ca_file_is_named_with_its_field_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = decl(&format!("{HEAD}[fetch]\nca = [\"certs/test-ca.pem\"]\n"));
    let e = d.resolve_paths(dir.path(), None).unwrap_err();
    assert_eq!(at(&e, "does not exist"), (3, 7, "fetch.ca[0]".into()));
    assert!(e.to_string().contains("CA certificate file"), "{e}");
    assert!(e.to_string().contains("certs/test-ca.pem"), "{e}");
}

#[test]
fn ca_file_without_certificates_is_refused_naming_it() {
    for contents in [
        "not pem at all\n",
        "-----BEGIN PUBLIC KEY-----\nAAEC\n-----END PUBLIC KEY-----\n",
    ] {
        let (dir, d) = with_ca(&[("ca.pem", contents)]);
        let inputs = d.resolve_paths(dir.path(), None).unwrap();
        let e = d.network_plan(&inputs).unwrap_err();
        assert!(
            matches!(
                &e,
                DeclError::File {
                    problem: FileProblem::NoCertificates,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            at(&e, "holds no PEM certificate"),
            (3, 7, "fetch.ca[0]".into())
        );
        assert!(e.to_string().contains("ca.pem"), "{e}");
    }
}

#[test]
fn ca_file_with_broken_pem_or_a_private_key_is_refused() {
    let (dir, d) = with_ca(&[("ca.pem", "-----BEGIN CERTIFICATE-----\nAAEC\n")]);
    let inputs = d.resolve_paths(dir.path(), None).unwrap();
    let e = d.network_plan(&inputs).unwrap_err();
    assert_eq!(at(&e, "is not valid PEM").2, "fetch.ca[0]");

    let key = "-----BEGIN PRIVATE KEY-----\nAAEC\n-----END PRIVATE KEY-----\n";
    let (dir, d) = with_ca(&[("ca.pem", &format!("{CERT_A}{key}"))]);
    let inputs = d.resolve_paths(dir.path(), None).unwrap();
    let e = d.network_plan(&inputs).unwrap_err();
    assert_eq!(at(&e, "holds a private key").2, "fetch.ca[0]");
}

#[test]
fn network_plan_json_reads_back_equal() {
    let (dir, d) = with_ca(&[("ca.pem", CERT_A)]);
    let mut d = d;
    d.network = decl(&format!(
        "{HEAD}[[network.interface]]\n[[network.interface]]\nname = \"eth1\"\ndhcp = false\naddress = \"192.168.7.2/24\"\ngateway = \"192.168.7.1\"\nmtu = 9000\ndns = [\"192.168.7.1\"]\n[[network.host]]\nname = \"images.test\"\naddress = \"10.0.2.2\"\n"
    ))
    .network;
    d.fetch.allow_http = vec!["images.test/".into()];
    let p = d
        .network_plan(&d.resolve_paths(dir.path(), None).unwrap())
        .unwrap();
    assert_eq!(p.interfaces.len(), 2);
    let json = p.to_json_pretty().unwrap();
    assert_eq!(NetworkPlan::from_json(&json).unwrap(), p);
    let text = String::from_utf8(json).unwrap();
    for want in [
        "\"first-ethernet\"",
        "\"method\": \"static\"",
        "\"name\": \"eth1\"",
    ] {
        assert!(text.contains(want), "{want} not in {text}");
    }
}

#[test]
fn network_plan_json_defaults_every_field_and_refuses_unknown_ones() {
    assert_eq!(
        NetworkPlan::from_json(b"{}").unwrap(),
        NetworkPlan::default()
    );
    let dhcp = br#"{"interfaces":[{"device":"first-ethernet","addressing":{"method":"dhcp"}}]}"#;
    assert_eq!(NetworkPlan::from_json(dhcp).unwrap().interfaces.len(), 1);
    assert!(NetworkPlan::from_json(br#"{"interfaces":[],"bogus":1}"#).is_err());
    let extra = br#"{"interfaces":[{"device":"first-ethernet","addressing":{"method":"dhcp","address":"1.2.3.4"}}]}"#;
    assert!(NetworkPlan::from_json(extra).is_err());
}

#[test]
fn network_and_fetch_are_not_rendered_for_init_in_host_toml() {
    let d = decl(&format!(
        "{HEAD}[[network.host]]\nname = \"images.test\"\naddress = \"10.0.2.2\"\n[fetch]\nallow_http = [\"images.test/\"]\n"
    ));
    let rendered = d.to_toml_string().unwrap();
    assert!(
        !rendered.contains("network") && !rendered.contains("fetch"),
        "{rendered}"
    );
}
