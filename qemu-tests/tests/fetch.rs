//! Pods whose images init fetches at boot, booted from the disk image through the firmware:
//! DHCP on QEMU's user network, `images.test` from the declaration's static hosts entry
//! (10.0.2.100, forwarded to this test's HTTPS server), appc discovery over HTTPS trusting the
//! test's CA from `[fetch] ca`, the minisign signature checked against the declaration's keys
//! and prefixes. Cases: a fetched pod runs while an untrusted key, a key for another prefix and
//! a tampered image are each refused with their own reason; the second boot of the same disk
//! with the server gone starts the pod from the store; a server that answers only after some
//! seconds is retried with growing delays; QEMU killed in the middle of a large download
//! leaves a store the next boot checks and fetches into again.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use qemu_tests::fetch_images::{
    FOREIGN_NAME, FetchImages, LARGE_NAME, NAME, TAMPERED_NAME, UNTRUSTED_NAME, fetch_images,
};
use qemu_tests::image_server::{ImageServer, ServerOptions, image_path};
use qemu_tests::{Arch, BuiltImage, DiskFormat, Firmware, QemuConfig, Vm, build_image_with};

const BOOT: Duration = Duration::from_secs(300);
const STEP: Duration = Duration::from_secs(120);
/// Where the guest finds the image server: the hosts entry's address, port 443.
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);

fn fail(e: impl std::fmt::Display) -> ! {
    panic!("{e}")
}

fn expect(vm: &mut Vm, marker: &str, timeout: Duration) -> String {
    vm.expect(marker, timeout)
        .unwrap_or_else(|e| fail(e.chain()))
}

fn pod(name: &str, image: &str, exec: &str) -> String {
    format!(
        r#"
[[pod]]
name = "{name}"
[[pod.app]]
name = "main"
image = "{image}:1.0"
restart = "never"
exec = ["/bin/sh", "-c", "{exec}"]
"#
    )
}

fn declaration(arch: Arch, images: &FetchImages, ca: &Path, pods: &str) -> String {
    format!(
        r#"name = "fetch-test"
arch = ["{arch}"]

[init]
shutdown_grace_secs = 2

[[network.host]]
name = "images.test"
address = "{SERVER_IP}"

[fetch]
ca = ["{ca}"]

[[trust]]
key = "{key}"
prefix = "images.test/"

# Trusted, but only for names under other.test/.
[[trust]]
key = "{foreign}"
prefix = "other.test/"
{pods}"#,
        ca = ca.display(),
        key = images.key.public.display(),
        foreign = images.foreign_key.public.display(),
    )
}

/// Builds `pods` for `arch` into its own directory (`tag`), and a writable copy of its disk.
fn build(
    arch: Arch,
    tag: &str,
    images: &FetchImages,
    server: &ImageServer,
    pods: &str,
) -> (BuiltImage, PathBuf) {
    let dir = images.dir.join(format!("decl-{tag}-{arch}"));
    fs::create_dir_all(&dir).expect("declaration directory");
    let toml = dir.join(format!("fetch-{tag}.toml"));
    fs::write(&toml, declaration(arch, images, server.ca_pem_path(), pods))
        .expect("write declaration");
    let image = build_image_with(&toml, arch, &[]).unwrap_or_else(|e| fail(e.chain()));
    let disk = dir.join("disk.img");
    let _ = fs::remove_file(&disk);
    // Room on the data partition (it grows to the disk on first boot) for the large image.
    qemu_tests::disk::sparse_copy(&image.disk, &disk, Some(256 << 20))
        .unwrap_or_else(|e| fail(e.chain()));
    (image, disk)
}

fn start(arch: Arch, disk: &Path, server: &ImageServer, name: &str) -> Vm {
    QemuConfig::new(arch)
        .firmware(Firmware::Uefi)
        .disk(disk, DiskFormat::Raw)
        .user_network()
        .guest_forward(SERVER_IP, 443, server.addr())
        .cpus(2)
        .name(name)
        .start()
        .unwrap_or_else(|e| fail(e.chain()))
}

fn server() -> ImageServer {
    ImageServer::start(ServerOptions::default()).unwrap_or_else(|e| fail(e))
}

fn fetched_pod_runs_refusals_are_distinct_and_the_second_boot_needs_no_server(arch: Arch) {
    let images = fetch_images().unwrap_or_else(|e| fail(e.chain()));
    let server = server();
    images.serve(&server, arch);
    images.serve_refusals(&server, arch);
    let pods = [
        pod("good", NAME, "echo fetched-pod-marker"),
        pod("untrusted", UNTRUSTED_NAME, "echo must-not-run"),
        pod("foreign", FOREIGN_NAME, "echo must-not-run"),
        pod("tampered", TAMPERED_NAME, "echo must-not-run"),
    ]
    .concat();
    let (_image, disk) = build(arch, "refusals", &images, &server, &pods);

    let mut vm = start(arch, &disk, &server, "fetch-first");
    expect(
        &mut vm,
        "init: pod good/main: waiting for image images.test/busybox,",
        BOOT,
    );
    let console = qemu_tests::wait_for_all(
        &vm,
        &[
            "init: net eth0: lease 10.0.2.15/24",
            "good/main: fetched-pod-marker",
            "init: pod untrusted: refused",
            "init: pod foreign: refused",
            "init: pod tampered: refused",
        ],
        STEP,
    );
    let line_of = |prefix: &str| -> String {
        console
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| fail(format!("no line starting {prefix:?}:\n{console}")))
            .to_string()
    };
    assert!(
        line_of("init: pod good/main: image sha512-").contains(" fetched and verified ("),
        "{console}"
    );
    // Each refusal with its own reason, naming the key where it is about one.
    let untrusted = line_of("init: pod untrusted/main: image images.test/untrusted,");
    let foreign = line_of("init: pod foreign/main: image images.test/foreign,");
    let tampered = line_of("init: pod tampered/main: image images.test/tampered,");
    let untrusted_id = key_id(&images.untrusted_key.public);
    let foreign_id = key_id(&images.foreign_key.public);
    assert!(
        untrusted.contains(&format!("refused (untrusted key, key {untrusted_id})")),
        "{untrusted}"
    );
    assert!(
        foreign.contains(&format!(
            "refused (key not trusted for this name, key {foreign_id})"
        )),
        "{foreign}"
    );
    assert!(
        tampered.contains("refused (bad signature, key "),
        "{tampered}"
    );
    // The refused images were never fetched whole, and their pods never ran.
    assert!(!vm.console().contains("must-not-run"), "a refused pod ran");
    for name in [UNTRUSTED_NAME, FOREIGN_NAME] {
        let aci = image_path(name, "1.0", images.arch(arch).arch_label, "aci");
        assert!(
            server
                .requests()
                .iter()
                .all(|r| r.path != aci || !r.complete),
            "{aci} was downloaded although its signature was refused"
        );
    }
    qemu_tests::power_off_in_order(&mut vm, STEP);

    // Second boot, same disk, no server: the fetched image starts from the store.
    server.stop();
    let mut vm = start(arch, &disk, &server, "fetch-second");
    expect(&mut vm, "init: pod good: image sha512-", BOOT);
    let line = expect(&mut vm, "good/main: fetched-pod-marker", STEP);
    assert!(!line.is_empty());
    assert!(
        vm.console().contains("init: pod good: image sha512-")
            && vm.console().contains("found in the store"),
        "the second boot did not start the pod from the store"
    );
    assert!(
        !vm.console()
            .contains("init: pod good/main: waiting for image"),
        "the second boot waited for a fetch"
    );
    qemu_tests::power_off_in_order(&mut vm, STEP);
}

/// The key ID in a minisign public key file's comment line (as `builder key generate` writes
/// it: `untrusted comment: minisign public key <16 hex digits>`).
fn key_id(public: &Path) -> String {
    let text = fs::read_to_string(public).unwrap_or_else(|e| fail(e));
    text.lines()
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .map(str::to_owned)
        .unwrap_or_else(|| fail(format!("no key ID in {}", public.display())))
}

#[test]
fn x86_64_fetches_a_pod_over_https_refuses_bad_ones_and_boots_again_offline() {
    fetched_pod_runs_refusals_are_distinct_and_the_second_boot_needs_no_server(Arch::X86_64);
}

#[test]
fn aarch64_fetches_a_pod_over_https_refuses_bad_ones_and_boots_again_offline() {
    fetched_pod_runs_refusals_are_distinct_and_the_second_boot_needs_no_server(Arch::Aarch64);
}

#[test]
fn a_server_that_answers_late_is_retried_with_growing_delays() {
    let arch = Arch::X86_64;
    let images = fetch_images().unwrap_or_else(|e| fail(e.chain()));
    let server = server();
    images.serve(&server, arch);
    server.answer_after(Duration::from_secs(600));
    let (_image, disk) = build(
        arch,
        "late",
        &images,
        &server,
        &pod("late", NAME, "echo late-pod-marker"),
    );
    let mut vm = start(arch, &disk, &server, "fetch-late");
    let first = expect(&mut vm, "failed (attempt 1, ", BOOT);
    let second = expect(&mut vm, "failed (attempt 2, ", STEP);
    assert!(
        first.starts_with("init: pod late/main: fetching images.test/busybox,"),
        "{first}"
    );
    let (d1, d2) = (retry_ms(&first), retry_ms(&second));
    assert!(d2 > d1, "the delay did not grow: {d1} ms then {d2} ms");
    server.answer_after(Duration::ZERO);
    expect(&mut vm, "late/main: late-pod-marker", STEP);
    qemu_tests::power_off_in_order(&mut vm, STEP);
}

/// The `<ms>` of "retrying in <ms> ms".
fn retry_ms(line: &str) -> u64 {
    line.split("retrying in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| fail(format!("no delay in {line:?}")))
}

#[test]
fn a_power_cut_during_a_large_download_leaves_a_store_the_next_boot_fetches_into() {
    let arch = Arch::X86_64;
    let images = fetch_images().unwrap_or_else(|e| fail(e.chain()));
    let server = server();
    images.serve(&server, arch);
    // 24 MiB at 1 MiB/s: the cut comes well inside the download.
    server.throttle(1 << 20);
    let (_image, disk) = build(
        arch,
        "cut",
        &images,
        &server,
        &pod(
            "large",
            LARGE_NAME,
            "echo large-pod-marker $(wc -c < /var/filler)",
        ),
    );
    let mut vm = start(arch, &disk, &server, "fetch-cut");
    let aci = image_path(LARGE_NAME, "1.0", images.arch(arch).arch_label, "aci");
    server
        .wait_for_request(|r| r.path == aci && r.bytes_sent > 4 << 20, BOOT)
        .unwrap_or_else(|e| fail(e));
    vm.kill();
    drop(vm);

    server.unthrottle();
    let mut vm = start(arch, &disk, &server, "fetch-after-cut");
    // The store opened cleanly (leftovers of the cut removed) and the image came again.
    expect(
        &mut vm,
        "init: pod large/main: waiting for image images.test/large,",
        BOOT,
    );
    expect(&mut vm, "init: pod large/main: image sha512-", STEP);
    let marker = expect(&mut vm, "large/main: large-pod-marker", STEP);
    assert!(marker.ends_with(&format!(" {}", 24 << 20)), "{marker}");
    assert!(
        !vm.console().contains("init: warning"),
        "warnings after the cut:\n{}",
        vm.console()
    );
    qemu_tests::power_off_in_order(&mut vm, STEP);
}
