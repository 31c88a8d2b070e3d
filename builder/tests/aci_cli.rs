//! `builder aci ...` as a user runs it: the shared appc examples validate, and a broken
//! manifest is refused with an error naming the file and the field path.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn builder(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_builder"))
        .args(args)
        .output()
        .unwrap()
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../aci/test_data/appc-examples")
        .join(name)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn validate_accepts_every_shared_appc_example() {
    for (file, says) in [
        (
            "image.json",
            "valid Image Manifest for example.com/reduce-worker",
        ),
        ("pod_runtime.json", "valid Pod Manifest with 3 app(s)"),
        (
            "pod_template.json",
            "valid Pod Manifest template with 3 app(s) (not runnable: apps[1].image.id:",
        ),
    ] {
        let path = example(file);
        let out = builder(&["aci", "validate", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{file}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains(says),
            "{file}: {}",
            text(&out.stdout)
        );
    }
}

#[test]
fn validate_names_the_file_and_the_field_of_an_invalid_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/x",
            "app":{"exec":["/bin/x"],"user":"0","group":"0",
                   "ports":[{"name":"http","protocol":"tcp","port":80},
                            {"name":"bad","protocol":"tcp","port":70000}]}}"#,
    )
    .unwrap();
    let out = builder(&["aci", "validate", bad.to_str().unwrap()]);
    assert!(!out.status.success(), "accepted: {}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains(bad.to_str().unwrap()), "{err}");
    assert!(err.contains("app.ports[1].port"), "{err}");
}

#[test]
fn build_refuses_a_tree_our_reader_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("img");
    std::fs::create_dir_all(src.join("rootfs")).unwrap();
    std::fs::copy(example("image.json"), src.join("manifest")).unwrap();
    std::os::unix::fs::symlink("../../../etc/passwd", src.join("rootfs/esc")).unwrap();
    let out_file = dir.path().join("img.aci");
    let out = builder(&[
        "aci",
        "build",
        src.to_str().unwrap(),
        "-o",
        out_file.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "built: {}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("rootfs/esc"), "{err}");
    assert!(err.contains(src.to_str().unwrap()), "{err}");
    assert!(!out_file.exists(), "a refused image was published");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "temp files left behind: {left:?}");
}
