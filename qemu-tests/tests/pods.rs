//! The pods issue end to end: a declaration with pods, built by `builder build` with the signed
//! busybox test ACIs (`qemu_tests::pods`), booted through the firmware (OVMF on x86_64, AAVMF on
//! aarch64). One boot per arch runs every case at once and then takes the power button; a second
//! boot of the same disk checks that a `host` volume kept its data. init's console lines are the
//! contract (init/src/console.rs); app output arrives as `<pod>/<app>: <line>`.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use qemu_tests::pods::{PodImages, pod_images};
use qemu_tests::{Arch, BuiltImage, DiskFormat, Firmware, QemuConfig, Vm, build_image_with};

const BOOT: Duration = Duration::from_secs(300);
const STEP: Duration = Duration::from_secs(90);

fn fail(e: qemu_tests::HarnessError) -> ! {
    panic!("{}", e.chain())
}

fn expect(vm: &mut Vm, marker: &str) -> String {
    vm.expect(marker, STEP).unwrap_or_else(|e| fail(e))
}

/// The test declaration for `arch`: every case is a pod.
fn declaration(arch: Arch, images: &PodImages) -> String {
    let a = images.arch(arch);
    let p = |p: &PathBuf| p.display().to_string();
    format!(
        r#"name = "pods-test"
arch = ["{arch}"]

[init]
shutdown_grace_secs = 5

[[trust]]
key = "{key}"

[[image]]
path = "{good}"
[[image]]
path = "{untrusted}"
[[image]]
path = "{tampered}"

# (1) prints a marker and exits 0, after a pre-start handler in the same fresh root
[[pod]]
name = "hello"
[[pod.app]]
name = "main"
image = "example.com/busybox:1.0"
id = "{good_id}"
pre_start = ["/bin/sh", "-c", "echo pre-start-ran > /tmp/pre-start"]
exec = ["/bin/sh", "-c", "echo hello-marker-42 $(cat /tmp/pre-start)"]

# (2) two apps share an empty volume
[[pod]]
name = "share"
[[pod.volume]]
name = "scratch"
kind = "empty"
[[pod.app]]
name = "writer"
image = "example.com/busybox:1.0"
id = "{good_id}"
exec = ["/bin/sh", "-c", "echo shared-payload > /scratch/msg"]
mounts = [{{ volume = "scratch", path = "/scratch" }}]
[[pod.app]]
name = "reader"
image = "example.com/busybox:1.0"
id = "{good_id}"
exec = ["/bin/sh", "-c", "while [ ! -s /scratch/msg ]; do sleep 1; done; echo read: $(cat /scratch/msg)"]
mounts = [{{ volume = "scratch", path = "/scratch" }}]

# (3) refused images
[[pod]]
name = "untrusted"
[[pod.app]]
name = "main"
image = "example.com/busybox:1.0"
id = "{untrusted_id}"
exec = ["/bin/sh", "-c", "echo must-not-run"]

[[pod]]
name = "tampered"
[[pod.app]]
name = "main"
image = "example.com/busybox:1.0"
id = "{tampered_id}"
exec = ["/bin/sh", "-c", "echo must-not-run"]

# (4) restarted with growing delays; never restarted
[[pod]]
name = "crashy"
[[pod.app]]
name = "main"
image = "example.com/busybox:1.0"
id = "{good_id}"
restart = "on-failure"
exec = ["/bin/sh", "-c", "echo crashing; exit 3"]

[[pod]]
name = "once"
[[pod.app]]
name = "main"
image = "example.com/busybox:1.0"
id = "{good_id}"
restart = "never"
exec = ["/bin/sh", "-c", "exit 4"]

# (5) over its memory limit
[[pod]]
name = "hog"
[[pod.app]]
name = "main"
image = "example.com/busybox:1.0"
id = "{good_id}"
restart = "never"
memory = "16M"
exec = ["/bin/sh", "-c", "echo hogging; exec tail /dev/zero"]

# (6) a host volume keeps data across boots
[[pod]]
name = "keeper"
[[pod.volume]]
name = "persist"
kind = "host"
source = "keeper-data"
[[pod.app]]
name = "main"
image = "example.com/busybox:1.0"
id = "{good_id}"
exec = ["/bin/sh", "-c", "echo boot >> /data/boots; echo boots: $(wc -l < /data/boots)"]
mounts = [{{ volume = "persist", path = "/data" }}]

# (7) SIGTERM at shutdown, then post-stop
[[pod]]
name = "term"
[[pod.app]]
name = "main"
image = "example.com/busybox:1.0"
id = "{good_id}"
restart = "never"
exec = ["/bin/sh", "-c", "trap 'echo got-sigterm; exit 0' TERM; echo term-ready; while true; do sleep 1; done"]
post_stop = ["/bin/sh", "-c", "echo post-stop-ran"]

# (8) what an app sees of itself
[[pod]]
name = "inspect"
[[pod.app]]
name = "main"
image = "example.com/busybox:1.0"
id = "{good_id}"
user = "app"
group = "app"
restart = "never"
no_new_privileges = true
capabilities_retain = ["CAP_NET_BIND_SERVICE", "CAP_KILL"]
exec = ["/bin/sh", "-c", "grep -E '^(Uid|Gid|Groups|NoNewPrivs|CapBnd|CapEff):' /proc/self/status; echo pid1: $(cat /proc/1/comm); echo payload-mounts: $(grep -c ' /payload' /proc/self/mountinfo); touch /sys/probe 2>/dev/null || echo sys-read-only; echo done-inspect"]
"#,
        key = p(&images.key.public),
        good = p(&a.good.aci),
        untrusted = p(&a.untrusted.aci),
        tampered = p(&a.tampered.aci),
        good_id = a.good.id,
        untrusted_id = a.untrusted.id,
        tampered_id = a.tampered.id,
    )
}

fn build(arch: Arch) -> BuiltImage {
    let images = pod_images().unwrap_or_else(|e| fail(e));
    let dir = images.dir.join(format!("decl-{arch}"));
    fs::create_dir_all(&dir).expect("declaration directory");
    let toml = dir.join("pods-test.toml");
    fs::write(&toml, declaration(arch, &images)).expect("write declaration");
    build_image_with(&toml, arch, &["--skip-image-checks"]).unwrap_or_else(|e| fail(e))
}

/// A private writable copy of the built disk, so two boots share their data partition.
fn private_disk(image: &BuiltImage) -> PathBuf {
    let copy = image.dir.join(format!("{}-private.img", image.arch));
    // A copy left by an earlier, failed run.
    let _ = fs::remove_file(&copy);
    qemu_tests::disk::sparse_copy(&image.disk, &copy, None).unwrap_or_else(|e| fail(e));
    copy
}

fn boot(image: &BuiltImage, disk: &PathBuf, name: &str) -> Vm {
    QemuConfig::new(image.arch)
        .firmware(Firmware::Uefi)
        .disk(disk, DiskFormat::Raw)
        .user_network()
        .cpus(2)
        .name(name)
        .start()
        .unwrap_or_else(|e| fail(e))
}

fn runs_every_pod_case(arch: Arch) {
    let image = build(arch);
    let disk = private_disk(&image);
    let mut vm = boot(&image, &disk, "pods-first");
    vm.expect("init: ready", BOOT).unwrap_or_else(|e| fail(e));

    let console = qemu_tests::wait_for_all(
        &vm,
        &[
            "hello/main: hello-marker-42", // (1)
            "init: pod hello/main: exited with status 0",
            "share/reader: read: shared-payload",   // (2)
            "init: pod untrusted: refused: image ", // (3)
            "init: pod tampered: refused: image ",
            "init: pod crashy/main: exited with status 3", // (4)
            "init: pod once/main: exited with status 4",
            "init: pod hog/main: OOM-killed", // (5)
            "keeper/main: boots: 1",          // (6)
            "inspect/main: done-inspect",     // (8)
            "term/main: term-ready",          // (7)
        ],
        STEP,
    );
    let delays: Vec<u64> = console
        .lines()
        .filter_map(|l| l.split("init: pod crashy/main: restarting in ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .collect();
    assert!(
        delays.len() >= 2 && delays.windows(2).all(|w| w[1] > w[0]),
        "restart delays do not grow: {delays:?}\n{console}"
    );
    let line_of = |prefix: &str| -> String {
        console
            .lines()
            .find(|l| l.contains(prefix))
            .unwrap_or_else(|| panic!("no line with {prefix:?} in:\n{console}"))
            .to_string()
    };
    let untrusted = line_of("init: pod untrusted: refused: image ");
    assert!(
        untrusted.contains("which the trust store does not hold"),
        "{untrusted}"
    );
    let tampered = line_of("init: pod tampered: refused: image ");
    assert!(tampered.contains("does not match the file"), "{tampered}");
    assert!(
        !console.contains("must-not-run"),
        "a refused pod ran:\n{console}"
    );
    assert!(
        !console.contains("init: pod once/main: restarting"),
        "a `never` app was restarted:\n{console}"
    );
    assert!(line_of("inspect/main: Uid:").contains("1000\t1000\t1000\t1000"));
    assert!(line_of("inspect/main: Gid:").contains("1000\t1000\t1000\t1000"));
    assert!(line_of("inspect/main: NoNewPrivs:").ends_with("1"));
    // CAP_KILL is bit 5, CAP_NET_BIND_SERVICE bit 10.
    assert!(line_of("inspect/main: CapBnd:").ends_with("0000000000000420"));
    assert!(line_of("inspect/main: CapEff:").ends_with("0000000000000000"));
    assert!(
        line_of("inspect/main: pid1:").ends_with("init"),
        "pod-init is PID 1"
    );
    assert!(line_of("inspect/main: payload-mounts:").ends_with(": 0"));
    assert!(console.contains("inspect/main: sys-read-only"));

    vm.powerdown().unwrap_or_else(|e| fail(e));
    expect(&mut vm, "init: shutdown requested by power button");
    expect(&mut vm, "term/main: got-sigterm");
    expect(&mut vm, "term/main: post-stop-ran");
    expect(&mut vm, "init: powering off");
    let status = vm.wait_exit(STEP).unwrap_or_else(|e| fail(e));
    assert!(status.success(), "QEMU exited with {status}");
    assert!(!vm.console().contains("init: fatal"), "{}", vm.console());

    // (6), second boot of the same disk.
    let mut vm = boot(&image, &disk, "pods-second");
    vm.expect("keeper/main: boots: 2", BOOT)
        .unwrap_or_else(|e| fail(e));
    let console = vm.console();
    assert!(
        console.contains("found in the store"),
        "second boot re-imported:\n{console}"
    );
    qemu_tests::power_off_in_order(&mut vm, STEP);
    let _ = fs::remove_file(&disk);
}

#[test]
fn x86_64_pods_run_supervised_refused_limited_and_stopped_through_ovmf() {
    runs_every_pod_case(Arch::X86_64);
}

#[test]
fn aarch64_pods_run_supervised_refused_limited_and_stopped_through_aavmf() {
    runs_every_pod_case(Arch::Aarch64);
}
