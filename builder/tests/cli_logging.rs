//! What `aci` logs reaches the user: warnings on stderr by default, info with `-v`, nothing
//! but errors with `-q`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn builder(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_builder"))
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = builder(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// A tree holding an Image Manifest for `example.com/x` and an empty rootfs.
fn tree(dir: &Path) -> PathBuf {
    let src = dir.join("img");
    std::fs::create_dir_all(src.join("rootfs")).unwrap();
    std::fs::write(
        src.join("manifest"),
        r#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/x"}"#,
    )
    .unwrap();
    src
}

fn key_id(generated: &str) -> String {
    generated
        .lines()
        .find_map(|l| l.strip_prefix("key id: "))
        .unwrap()
        .to_string()
}

#[test]
fn trust_store_warning_about_a_misnamed_key_reaches_stderr_unless_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let aci = d.join("x.aci");
    ok(&["aci", "build", p(&tree(d)), "-o", p(&aci)]);
    let release = key_id(&ok(&["key", "generate", "-o", p(&d.join("release"))]));
    let other = key_id(&ok(&["key", "generate", "-o", p(&d.join("other"))]));
    ok(&["aci", "sign", p(&aci), "--key", p(&d.join("release.key"))]);
    let trust = d.join("trust");
    ok(&[
        "aci",
        "trust",
        "--trust",
        p(&trust),
        "--root",
        p(&d.join("release.pub")),
    ]);
    // The release key, stored under another key's id: `aci` skips it and says so.
    let misnamed = trust.join(format!("root.d/{other}.pub"));
    std::fs::rename(trust.join(format!("root.d/{release}.pub")), &misnamed).unwrap();
    let verify = |flags: &[&str]| {
        let mut args = flags.to_vec();
        args.extend(["aci", "verify", p(&aci), "--trust", p(&trust)]);
        args.extend(["--name", "example.com/x"]);
        builder(&args)
    };

    let out = verify(&[]);
    assert!(!out.status.success(), "accepted: {}", text(&out.stdout));
    let err = text(&out.stderr);
    let warning = format!("warning: trust store: ignoring {}", misnamed.display());
    assert!(err.contains(&warning), "{err}");
    assert!(err.contains(&release), "{err}");

    let out = verify(&["-q"]);
    assert!(!out.status.success(), "accepted: {}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(!err.contains("warning:"), "{err}");
    assert!(err.contains("error:"), "{err}");
}

#[test]
fn verbose_flag_shows_info_records_and_the_default_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let aci = dir.path().join("x.aci");
    let out = builder(&["aci", "build", p(&src), "-o", p(&aci)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("info:"),
        "{}",
        text(&out.stderr)
    );

    // Global: accepted after the subcommand too.
    let out = builder(&["aci", "build", p(&src), "-o", p(&aci), "-v"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let info = format!("info: {}: gzip compression", aci.display());
    assert!(err.contains(&info), "{err}");
}
