//! The pod test images themselves, before any test boots them: every ACI the fixture made is
//! valid for `builder aci validate` with the ID the fixture reports, the standard `minisign`
//! accepts the good signatures with the test key, and refuses the tampered image and the image
//! signed by the untrusted key.

use std::path::Path;
use std::process::{Command, Output};

use qemu_tests::pods::{IMAGE_NAME, PodImages, TestAci, pod_images};

fn images() -> PodImages {
    pod_images().unwrap_or_else(|e| panic!("{}", e.chain()))
}

fn run(program: &Path, args: &[&std::ffi::OsStr]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()))
}

/// `minisign -Vm ACI -p KEY -x SIG`; whether it accepted the signature.
fn minisign_accepts(aci: &TestAci, public_key: &Path) -> bool {
    let out = Command::new("minisign")
        .arg("-Vm")
        .arg(&aci.aci)
        .arg("-p")
        .arg(public_key)
        .arg("-x")
        .arg(&aci.signature)
        .output()
        .unwrap_or_else(|e| panic!("running minisign ({e}): install the Debian package minisign"));
    out.status.success()
}

fn all(images: &PodImages) -> Vec<(&'static str, &TestAci)> {
    let mut out = Vec::new();
    for (arch, set) in [("amd64", &images.amd64), ("arm64", &images.arm64)] {
        out.push((arch, &set.good));
        out.push((arch, &set.untrusted));
        out.push((arch, &set.tampered));
    }
    out
}

#[test]
fn every_fixture_image_is_a_valid_aci_with_the_reported_id() {
    let images = images();
    let builder = qemu_tests::builder_bin().unwrap_or_else(|e| panic!("{}", e.chain()));
    for (arch, aci) in all(&images) {
        let out = run(
            &builder,
            &["aci".as_ref(), "validate".as_ref(), aci.aci.as_os_str()],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{} ({arch}): {stdout}{}",
            aci.aci.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(IMAGE_NAME), "{stdout}");
        assert!(
            stdout.contains(&aci.id),
            "{} has not the ID {}: {stdout}",
            aci.aci.display(),
            aci.id
        );
        let inspect = run(
            &builder,
            &["aci".as_ref(), "inspect".as_ref(), aci.aci.as_os_str()],
        );
        let text = String::from_utf8_lossy(&inspect.stdout);
        let label = if arch == "amd64" { "amd64" } else { "aarch64" };
        assert!(text.contains(&format!("\"value\": \"{label}\"")), "{text}");
    }
}

#[test]
fn each_refusal_case_has_its_own_image_id_and_file_name() {
    let images = images();
    let mut ids: Vec<&str> = all(&images).iter().map(|(_, a)| a.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "{ids:?}");
    let mut names: Vec<_> = all(&images)
        .iter()
        .map(|(_, a)| a.aci.file_name().map(ToOwned::to_owned))
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 6, "{names:?}");
}

#[test]
fn minisign_accepts_the_good_signatures_and_refuses_tampered_and_untrusted() {
    let images = images();
    for set in [&images.amd64, &images.arm64] {
        assert!(
            minisign_accepts(&set.good, &images.key.public),
            "{}",
            set.good.aci.display()
        );
        assert!(
            !minisign_accepts(&set.tampered, &images.key.public),
            "tampered {} verified",
            set.tampered.aci.display()
        );
        assert!(
            !minisign_accepts(&set.untrusted, &images.key.public),
            "{} verified with the test key",
            set.untrusted.aci.display()
        );
        // It is a real signature, only by a key nobody trusts.
        assert!(minisign_accepts(
            &set.untrusted,
            &images.untrusted_key.public
        ));
    }
}
