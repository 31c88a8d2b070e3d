//! init's network at boot, on QEMU's user network (slirp: DHCP server 10.0.2.2, DNS 10.0.2.3),
//! booted through the firmware from the disk image: a DHCP lease on the first Ethernet device
//! with the default route and DNS servers the lease said, seen from inside a pod (pods share
//! the host's network until pod networking exists); and a static configuration instead.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use qemu_tests::pods::{PodImages, pod_images};
use qemu_tests::{Arch, BuiltImage, Firmware, Vm, build_image_with};

const BOOT: Duration = Duration::from_secs(300);
const STEP: Duration = Duration::from_secs(90);

fn fail(e: qemu_tests::HarnessError) -> ! {
    panic!("{}", e.chain())
}

fn expect(vm: &mut Vm, marker: &str, timeout: Duration) -> String {
    vm.expect(marker, timeout).unwrap_or_else(|e| fail(e))
}

/// A pod that waits for a DNS server in its resolv.conf, then prints it and the kernel's IPv4
/// routes (`/proc/net/route`: interface, destination, gateway in little-endian hex).
const PROBE: &str = r#"until grep -q nameserver /etc/resolv.conf; do sleep 0.2; done; grep nameserver /etc/resolv.conf | sed 's/^/probe-dns: /'; tail -n +2 /proc/net/route | while read i d g r; do echo "probe-route: $i $d $g"; done; echo probe-done"#;

fn declaration(arch: Arch, images: &PodImages, network: &str) -> String {
    let a = images.arch(arch);
    format!(
        r#"name = "net-test"
arch = ["{arch}"]

[init]
shutdown_grace_secs = 2

{network}

[[trust]]
key = "{key}"

[[image]]
path = "{good}"

[[pod]]
name = "probe"
[[pod.app]]
name = "main"
image = "example.com/busybox:1.0"
id = "{good_id}"
restart = "never"
exec = ["/bin/sh", "-c", {probe:?}]
"#,
        key = images.key.public.display(),
        good = a.good.aci.display(),
        good_id = a.good.id,
        probe = PROBE,
    )
}

fn build(arch: Arch, tag: &str, network: &str) -> BuiltImage {
    let images = pod_images().unwrap_or_else(|e| fail(e));
    let dir = images.dir.join(format!("net-{tag}-{arch}"));
    fs::create_dir_all(&dir).expect("declaration directory");
    let toml: PathBuf = dir.join(format!("net-{tag}.toml"));
    fs::write(&toml, declaration(arch, &images, network)).expect("write declaration");
    build_image_with(&toml, arch, &[]).unwrap_or_else(|e| fail(e))
}

/// Boots `image` and returns its console from the banner to the probe's end.
fn boot_and_probe(image: &BuiltImage, name: &str) -> Vm {
    let mut vm = image
        .disk_boot(Firmware::Uefi)
        .cpus(2)
        .name(name)
        .start()
        .unwrap_or_else(|e| fail(e));
    expect(&mut vm, "init: ready", BOOT);
    vm
}

/// The probe's lines, once it is done.
fn probe_lines(vm: &mut Vm) -> Vec<String> {
    expect(vm, "probe/main: probe-done", STEP);
    vm.console()
        .lines()
        .filter_map(|l| l.strip_prefix("probe/main: probe-").map(str::to_owned))
        .collect()
}

fn dhcp_lease_gives_address_route_and_dns(arch: Arch) {
    let image = build(arch, "dhcp", "");
    let mut vm = boot_and_probe(&image, "net-dhcp");
    let lease = expect(&mut vm, "init: net eth0: lease 10.0.2.15/24, ", STEP);
    assert!(
        lease.contains("gateway 10.0.2.2, dns 10.0.2.3, 86400 s (")
            && lease.contains(" ms after init start)"),
        "{lease}"
    );
    let probe = probe_lines(&mut vm);
    assert!(
        probe.contains(&"dns: nameserver 10.0.2.3".to_string()),
        "{probe:?}"
    );
    // Default route via 10.0.2.2 (0202000A) and the lease's subnet on eth0.
    assert!(
        probe.contains(&"route: eth0 00000000 0202000A".to_string()),
        "{probe:?}"
    );
    assert!(
        probe.contains(&"route: eth0 0002000A 00000000".to_string()),
        "{probe:?}"
    );
    qemu_tests::power_off_in_order(&mut vm, STEP);
}

#[test]
fn x86_64_gets_a_dhcp_lease_with_its_route_and_dns_through_ovmf() {
    dhcp_lease_gives_address_route_and_dns(Arch::X86_64);
}

#[test]
fn aarch64_gets_a_dhcp_lease_with_its_route_and_dns_through_aavmf() {
    dhcp_lease_gives_address_route_and_dns(Arch::Aarch64);
}

#[test]
fn a_static_configuration_sets_address_route_and_dns_without_dhcp() {
    let arch = Arch::X86_64;
    let image = build(
        arch,
        "static",
        r#"[[network.interface]]
name = "auto"
dhcp = false
address = "10.0.2.77/24"
gateway = "10.0.2.2"
dns = ["10.0.2.3"]"#,
    );
    let mut vm = boot_and_probe(&image, "net-static");
    expect(
        &mut vm,
        "init: net eth0: static 10.0.2.77/24, gateway 10.0.2.2",
        STEP,
    );
    let probe = probe_lines(&mut vm);
    assert!(
        probe.contains(&"dns: nameserver 10.0.2.3".to_string()),
        "{probe:?}"
    );
    assert!(
        probe.contains(&"route: eth0 00000000 0202000A".to_string()),
        "{probe:?}"
    );
    assert!(
        !vm.console().contains("init: net eth0: lease "),
        "a static interface took a lease"
    );
    qemu_tests::power_off_in_order(&mut vm, STEP);
}
