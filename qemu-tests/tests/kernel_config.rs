//! `builder kernel` refuses a fragment whose options kconfig cannot set, naming each of them,
//! instead of silently building a kernel without them.

use std::process::Command;

use qemu_tests::{Arch, builder_bin};

fn rejects_unsettable_options(arch: Arch) {
    let dir = tempfile::tempdir().unwrap();
    let frag = dir.path().join("bad.config");
    // One symbol that does not exist, and one that exists but whose dependency (KVM, under
    // VIRTUALIZATION) our fragments leave off.
    std::fs::write(&frag, "CONFIG_HOSTOS_NO_SUCH_OPTION=y\nCONFIG_KVM=y\n").unwrap();
    let bin = builder_bin().unwrap_or_else(|e| panic!("{}", e.chain()));
    let out = Command::new(bin)
        .args(["kernel", "--arch", arch.as_str(), "--fragment"])
        .arg(&frag)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "builder kernel accepted a bad fragment:\n{stderr}"
    );
    assert!(
        stderr.contains("kconfig dropped 2 requested option(s)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("CONFIG_HOSTOS_NO_SUCH_OPTION=y"),
        "{stderr}"
    );
    assert!(stderr.contains("CONFIG_KVM=y"), "{stderr}");
    assert!(
        stderr.contains("bad.config:1") && stderr.contains("bad.config:2"),
        "{stderr}"
    );
}

#[test]
fn x86_64_kernel_build_names_options_kconfig_dropped() {
    rejects_unsettable_options(Arch::X86_64);
}

#[test]
fn aarch64_kernel_build_names_options_kconfig_dropped() {
    rejects_unsettable_options(Arch::Aarch64);
}
