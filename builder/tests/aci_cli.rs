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

/// A signed gzip image `example.com/hello` in a temp dir, with a trust directory that trusts
/// its key for `example.com` and a second key that nobody trusts.
struct Signed {
    dir: tempfile::TempDir,
    aci: PathBuf,
    trust: PathBuf,
    key_id: String,
}

impl Signed {
    fn new(legacy: bool) -> Signed {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("img");
        std::fs::create_dir_all(src.join("rootfs/etc")).unwrap();
        std::fs::write(
            src.join("manifest"),
            r#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/hello"}"#,
        )
        .unwrap();
        // Enough varied bytes that a byte in the middle lies inside the deflate stream.
        let mut x: u32 = 1;
        let data: Vec<u8> = (0..200_000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (x >> 16) as u8
            })
            .collect();
        std::fs::write(src.join("rootfs/etc/data"), data).unwrap();
        let aci = dir.path().join("hello.aci");
        let p = |p: &Path| p.to_str().unwrap().to_string();
        let run = |args: &[&str]| {
            let out = builder(args);
            assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
            text(&out.stdout)
        };
        run(&[
            "aci",
            "build",
            &p(&src),
            "-o",
            &p(&aci),
            "--compression",
            "gzip",
        ]);
        let key = dir.path().join("release");
        let generated = run(&["key", "generate", "-o", &p(&key)]);
        let key_id = generated
            .lines()
            .find_map(|l| l.strip_prefix("key id: "))
            .unwrap()
            .to_string();
        run(&["key", "generate", "-o", &p(&dir.path().join("other"))]);
        let mut sign = vec!["aci", "sign", aci.to_str().unwrap(), "--key"];
        let secret = p(&dir.path().join("release.key"));
        sign.push(&secret);
        if legacy {
            sign.push("--legacy");
        }
        run(&sign);
        let trust = dir.path().join("trust");
        let public = p(&dir.path().join("release.pub"));
        run(&[
            "aci",
            "trust",
            "--trust",
            &p(&trust),
            "--prefix",
            "example.com",
            &public,
        ]);
        Signed {
            dir,
            aci,
            trust,
            key_id,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `builder aci extract ACI OUT --trust TRUST EXTRA...`; returns the output and OUT.
    fn extract(&self, aci: &Path, extra: &[&str]) -> (Output, PathBuf) {
        let out_dir = self.path("out");
        let mut args = vec![
            "aci",
            "extract",
            aci.to_str().unwrap(),
            out_dir.to_str().unwrap(),
            "--trust",
            self.trust.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        (builder(&args), out_dir)
    }

    /// A copy of the image (and its signature) with byte `at` flipped.
    fn tampered(&self, at: usize) -> PathBuf {
        let mut bytes = std::fs::read(&self.aci).unwrap();
        let at = at.min(bytes.len() - 1);
        bytes[at] ^= 0x01;
        let bad = self.path("tampered.aci");
        std::fs::write(&bad, bytes).unwrap();
        std::fs::copy(sig_of(&self.aci), sig_of(&bad)).unwrap();
        bad
    }

    /// Nothing at OUT and no hidden staging directory beside it.
    fn assert_nothing_left(&self, out_dir: &Path) {
        assert!(!out_dir.exists(), "{} was created", out_dir.display());
        let staged: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".out."))
            .collect();
        assert!(staged.is_empty(), "staging left behind: {staged:?}");
    }
}

fn sig_of(aci: &Path) -> PathBuf {
    let mut s = aci.as_os_str().to_owned();
    s.push(".minisig");
    PathBuf::from(s)
}

#[test]
fn verified_extract_places_the_tree_when_a_trusted_key_signed_it() {
    let s = Signed::new(false);
    let (out, dir) = s.extract(&s.aci, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains(&s.key_id) && said.contains("example.com"),
        "{said}"
    );
    assert_eq!(
        std::fs::read(dir.join("rootfs/etc/data")).unwrap().len(),
        200_000
    );
    assert!(dir.join("manifest").is_file());
}

#[test]
fn verified_extract_accepts_a_legacy_signature_by_reading_the_file_again() {
    let s = Signed::new(true);
    let (out, dir) = s.extract(&s.aci, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir.join("rootfs/etc/data").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
    let bad = s.tampered(4);
    let (out, dir) = s.extract(&bad, &[]);
    assert!(!out.status.success(), "accepted: {}", text(&out.stdout));
    s.assert_nothing_left(&dir);
}

#[test]
fn verified_extract_with_one_key_needs_that_key() {
    let s = Signed::new(false);
    let dir = s.path("out");
    let args = |key: &str| {
        builder(&[
            "aci",
            "extract",
            s.aci.to_str().unwrap(),
            dir.to_str().unwrap(),
            "--key",
            s.path(key).to_str().unwrap(),
        ])
    };
    let out = args("other.pub");
    assert!(!out.status.success(), "accepted: {}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains(&s.key_id),
        "{}",
        text(&out.stderr)
    );
    s.assert_nothing_left(&dir);
    let out = args("release.pub");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir.join("rootfs/etc/data").is_file());
}

#[test]
fn verified_extract_refuses_a_tampered_byte_and_leaves_no_directory() {
    let s = Signed::new(false);
    // In the gzip header (the archive still reads): only the signature can tell.
    let bad = s.tampered(4);
    let (out, dir) = s.extract(&bad, &[]);
    assert!(!out.status.success(), "accepted: {}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains(bad.to_str().unwrap()), "{err}");
    assert!(
        err.contains(&s.key_id) && err.contains("does not match"),
        "{err}"
    );
    s.assert_nothing_left(&dir);
    // In the middle of the deflate stream: the archive is refused too, and with the name
    // given the signature's verdict is the one reported.
    let len = std::fs::metadata(&s.aci).unwrap().len() as usize;
    let bad = s.tampered(len / 2);
    let (out, dir) = s.extract(&bad, &[]);
    assert!(!out.status.success(), "accepted: {}", text(&out.stdout));
    s.assert_nothing_left(&dir);
    let (out, dir) = s.extract(&bad, &["--name", "example.com/hello"]);
    assert!(!out.status.success(), "accepted: {}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("tampered") && err.contains(&s.key_id), "{err}");
    s.assert_nothing_left(&dir);
}

#[test]
fn verified_extract_refuses_an_untrusted_key_and_leaves_no_directory() {
    let s = Signed::new(false);
    let other = s.path("other.key");
    let resign = builder(&[
        "aci",
        "sign",
        s.aci.to_str().unwrap(),
        "--key",
        other.to_str().unwrap(),
    ]);
    assert!(resign.status.success(), "{}", text(&resign.stderr));
    let (out, dir) = s.extract(&s.aci, &[]);
    assert!(!out.status.success(), "accepted: {}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains(s.aci.to_str().unwrap()), "{err}");
    assert!(err.contains("not in the trust store"), "{err}");
    s.assert_nothing_left(&dir);
    // A key trusted only for another prefix is no better.
    let t = Signed::new(false);
    let (out, dir) = t.extract(&t.aci, &["--name", "example.org/hello"]);
    assert!(!out.status.success(), "accepted: {}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("trusted only for example.com"), "{err}");
    t.assert_nothing_left(&dir);
}

#[test]
fn verified_extract_refuses_an_unsigned_image_and_leaves_no_directory() {
    let s = Signed::new(false);
    std::fs::remove_file(sig_of(&s.aci)).unwrap();
    let (out, dir) = s.extract(&s.aci, &[]);
    assert!(!out.status.success(), "accepted: {}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("not signed") && err.contains(".minisig"),
        "{err}"
    );
    s.assert_nothing_left(&dir);
}

#[test]
fn extract_without_a_signature_check_is_refused_unless_insecure_is_asked_for() {
    let s = Signed::new(false);
    let out_dir = s.path("out");
    let extract = |extra: &[&str]| {
        let mut args = vec![
            "aci",
            "extract",
            s.aci.to_str().unwrap(),
            out_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        builder(&args)
    };
    let out = extract(&[]);
    assert!(!out.status.success(), "accepted: {}", text(&out.stdout));
    let err = text(&out.stderr);
    for flag in ["--trust", "--key", "--insecure-allow-unsigned"] {
        assert!(err.contains(flag), "{flag} not named: {err}");
    }
    assert!(!out_dir.exists(), "unpacked without a check");

    let out = extract(&["--insecure-allow-unsigned"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("warning: INSECURE"),
        "{}",
        text(&out.stderr)
    );
    assert!(out_dir.join("rootfs/etc/data").is_file());
}

#[test]
fn build_writes_gzip_unless_zstd_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("img");
    std::fs::create_dir_all(src.join("rootfs")).unwrap();
    std::fs::copy(example("image.json"), src.join("manifest")).unwrap();
    let magic = |extra: &[&str]| {
        let aci = dir.path().join("x.aci");
        let mut args = vec![
            "aci",
            "build",
            src.to_str().unwrap(),
            "-o",
            aci.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = builder(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        std::fs::read(&aci).unwrap()[..4].to_vec()
    };
    assert_eq!(magic(&[])[..2], [0x1f, 0x8b], "default is not gzip");
    assert_eq!(
        magic(&["--compression", "zstd"]),
        [0x28, 0xb5, 0x2f, 0xfd],
        "zstd on request"
    );
    let help = text(&builder(&["aci", "build", "--help"]).stdout);
    assert!(help.contains("zstd is an extension"), "{help}");
}
