//! Builder round trips without a VM: build an image from a declaration (with a stand-in
//! prebuilt kernel file, so no kernel build is needed), reopen the artifacts with tools nobody
//! here wrote (zstd, GNU cpio, file) and check what is inside.

mod common;

use common::{builder, fake_bzimage, tool};
use std::path::Path;

/// Runs `builder build TOML --format raw,kernel -o OUT`; returns whether it succeeded and its stderr.
fn build(toml: &Path, out: &Path) -> (bool, String) {
    let run = builder()
        .arg("build")
        .arg(toml)
        .args(["--format", "raw,kernel"])
        .arg("-o")
        .arg(out)
        .output()
        .unwrap();
    (
        run.status.success(),
        String::from_utf8_lossy(&run.stderr).into_owned(),
    )
}

fn write_decl(dir: &Path, extra: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("fake-bzImage"), fake_bzimage()).unwrap();
    let toml = dir.join("host.toml");
    std::fs::write(
        &toml,
        format!(
            "name = \"roundtrip\"\nhostname = \"rt-1\"\narch = [\"x86_64\"]\n[kernel]\ncmdline = \"quiet\"\nprebuilt = {{ x86_64 = \"fake-bzImage\" }}\n{extra}"
        ),
    )
    .unwrap();
    toml
}

#[test]
fn build_writes_kernel_initramfs_and_cmdline_that_standard_tools_read() {
    let dir = tempfile::tempdir().unwrap();
    let toml = write_decl(dir.path(), "");
    let out = dir.path().join("out");
    let (ok, err) = build(&toml, &out);
    assert!(ok, "{err}");
    let a = out.join("x86_64");

    // The prebuilt kernel is copied verbatim.
    assert_eq!(std::fs::read(a.join("vmlinuz")).unwrap(), fake_bzimage());
    // Our console and panic policy come first, then the declaration's additions, then the
    // parameters that pin the disk image (the same line the UKI carries).
    let cmdline = std::fs::read_to_string(a.join("cmdline")).unwrap();
    assert!(
        cmdline.starts_with("console=ttyS0 panic=-1 quiet hostos.payload="),
        "{cmdline}"
    );
    assert!(
        cmdline.contains(" hostos.verity=") && cmdline.ends_with('\n'),
        "{cmdline}"
    );

    let cpio = tool("zstd", "zstd")
        .arg("-dc")
        .arg(a.join("initramfs.cpio.zst"))
        .output()
        .unwrap();
    assert!(cpio.status.success());
    let cpio_path = dir.path().join("initramfs.cpio");
    std::fs::write(&cpio_path, &cpio.stdout).unwrap();

    let list = tool("cpio", "cpio")
        .args(["-itv", "--quiet", "-F"])
        .arg(&cpio_path)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&list.stdout);
    for want in [
        " init",
        " dev/console",
        " proc",
        " sys",
        " etc/hostos/host.toml",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(want)),
            "missing {want:?} in:\n{listing}"
        );
    }

    let x = dir.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let ex = tool("cpio", "cpio")
        .args(["-idm", "--quiet", "-F"])
        .arg(&cpio_path)
        .arg("-D")
        .arg(&x)
        .args(["init", "etc/hostos/host.toml"])
        .output()
        .unwrap();
    assert!(
        ex.status.success(),
        "{}",
        String::from_utf8_lossy(&ex.stderr)
    );
    let decl = std::fs::read_to_string(x.join("etc/hostos/host.toml")).unwrap();
    assert!(decl.contains("hostname = \"rt-1\""), "{decl}");
    let parsed = hostdecl::HostDecl::from_toml_str(&decl, "rendered").unwrap();
    assert_eq!(parsed.name, "roundtrip");

    let file = tool("file", "file").arg(x.join("init")).output().unwrap();
    let desc = String::from_utf8_lossy(&file.stdout);
    assert!(desc.contains("x86-64") && desc.contains("static"), "{desc}");
}

#[test]
fn same_declaration_builds_identical_initramfs() {
    let dir = tempfile::tempdir().unwrap();
    let toml = write_decl(dir.path(), "");
    let mut images = Vec::new();
    for o in ["o1", "o2"] {
        let out = dir.path().join(o);
        let (ok, err) = build(&toml, &out);
        assert!(ok, "{err}");
        images.push(std::fs::read(out.join("x86_64/initramfs.cpio.zst")).unwrap());
    }
    assert_eq!(images[0], images[1]);
}

#[test]
fn bad_declaration_is_refused_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let toml = write_decl(dir.path(), "[init]\non_fatal = \"explode\"\n");
    let (ok, err) = build(&toml, &dir.path().join("o"));
    assert!(!ok);
    assert!(
        err.contains("host.toml") && err.contains("on_fatal"),
        "{err}"
    );
    assert!(
        !dir.path().join("o").exists(),
        "a refused build must not write output"
    );
}

#[test]
fn missing_prebuilt_kernel_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let toml = write_decl(dir.path(), "");
    std::fs::remove_file(dir.path().join("fake-bzImage")).unwrap();
    let (ok, err) = build(&toml, &dir.path().join("o"));
    assert!(!ok);
    assert!(
        err.contains("prebuilt kernel") && err.contains("fake-bzImage"),
        "{err}"
    );
}

#[test]
fn help_shows_examples() {
    for sub in [
        &["build"][..],
        &["run"],
        &["kernel"],
        &["key", "generate"],
        &["aci", "build"],
    ] {
        let out = builder().args(sub).arg("--help").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("Example"),
            "builder {sub:?} --help:\n{text}"
        );
    }
}
