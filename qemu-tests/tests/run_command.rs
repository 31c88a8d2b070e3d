//! `builder run`, the command the README's main job uses: it boots a disk image through its
//! firmware (or a `--format kernel` output directly) under QEMU with the console on stdout,
//! and `--powerdown-after` presses the power button once init is ready, so the guest powers
//! off in order and the command exits 0 (it exits 0 only for a guest power-off).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use qemu_tests::{Arch, build_image, builder_bin, wait_until};

/// What `builder run` is given: the disk image (booted through firmware) or the output
/// directory (booted directly).
#[derive(Clone, Copy)]
enum Target {
    Disk(&'static str),
    OutDir,
}

fn run_boots_and_powers_off(arch: Arch, target: Target) {
    let image = build_image(Path::new("images/hello.toml"), arch)
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    let mut args: Vec<std::ffi::OsString> = vec!["run".into()];
    match target {
        Target::Disk(firmware) => {
            args.push(image.disk.clone().into());
            args.extend(["--firmware".into(), firmware.into()]);
        }
        Target::OutDir => {
            args.push(image.dir.clone().into());
            args.extend(["--arch".into(), arch.as_str().into()]);
        }
    }
    let bin = builder_bin().unwrap_or_else(|e| panic!("{}", e.chain()));
    // Files, not pipes: a pipe nobody drains while we wait would fill with the boot log and
    // stall the guest's console.
    let logs = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let mut child = Command::new(bin)
        .args(&args)
        .args(["--powerdown-after", "1"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    // Bounded: a hung guest must fail the test, not the CI run.
    let deadline = Instant::now() + Duration::from_secs(300);
    let Some(status) = wait_until(deadline, Duration::from_millis(200), || {
        child.try_wait().unwrap()
    }) else {
        // Kill the whole process group: builder and its QEMU.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        panic!("builder run did not finish within 300 s");
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert!(
        status.success(),
        "builder run failed ({status}):\n{stderr}\n{stdout}"
    );
    let banner = format!(
        "init: hostos-init {} ({arch}) started",
        env!("CARGO_PKG_VERSION")
    );
    let order = [
        banner.as_str(),
        "init: payload verified (",
        "init: data mounted at /var (",
        "init: ready",
        "init: shutdown requested by power button",
        "init: powering off",
    ];
    let mut at = 0;
    for marker in order {
        let found = stdout[at..]
            .find(marker)
            .unwrap_or_else(|| panic!("{marker:?} missing (in order) from:\n{stdout}"));
        at += found + marker.len();
    }
}

#[test]
fn x86_64_builder_run_boots_the_disk_through_ovmf_and_powers_off_when_asked() {
    run_boots_and_powers_off(Arch::X86_64, Target::Disk("ovmf"));
}

#[test]
fn aarch64_builder_run_boots_the_disk_through_aavmf_and_powers_off_when_asked() {
    run_boots_and_powers_off(Arch::Aarch64, Target::Disk("aavmf"));
}

#[test]
fn aarch64_builder_run_boots_the_disk_through_u_boot_and_powers_off_when_asked() {
    run_boots_and_powers_off(Arch::Aarch64, Target::Disk("u-boot"));
}

#[test]
fn x86_64_builder_run_boots_an_output_directory_directly_with_its_disk() {
    run_boots_and_powers_off(Arch::X86_64, Target::OutDir);
}

#[test]
fn aarch64_builder_run_boots_an_output_directory_directly_with_its_disk() {
    run_boots_and_powers_off(Arch::Aarch64, Target::OutDir);
}
