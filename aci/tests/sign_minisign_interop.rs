//! Interop with Debian's `minisign` (0.11): it verifies what we sign and we verify what it
//! signs, with both signature algorithms and with each other's key files.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use aci::sign::{KdfLimits, PublicKey, SecretKey, Signature};

fn minisign() -> &'static str {
    let found = Command::new("minisign")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "the `minisign` binary is missing: install the Debian package `minisign` (apt-get install minisign)"
    );
    "minisign"
}

fn run(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(minisign())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str], stdin: Option<&str>) {
    let out = run(args, stdin);
    assert!(
        out.status.success(),
        "minisign {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        let d = Dir(tempfile::tempdir().unwrap());
        // Bytes that are not text, with an image-like size.
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(d.p("x.aci"), data).unwrap();
        d
    }
    fn p(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    fn s(&self, name: &str) -> String {
        self.p(name).to_str().unwrap().to_string()
    }
    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.p(name)).unwrap()
    }
    fn data(&self) -> Vec<u8> {
        std::fs::read(self.p("x.aci")).unwrap()
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// minisign signs `x.aci` with `k.key` (checked against `k.pub`, reading the password from
/// `stdin` if given), and our code verifies the result with `key`.
fn minisign_signs_x_aci(d: &Dir, key: &SecretKey, stdin: Option<&str>) {
    // -p makes minisign check the secret key matches our public key file before signing.
    ok(
        &[
            "-S",
            "-s",
            &d.s("k.key"),
            "-p",
            &d.s("k.pub"),
            "-m",
            &d.s("x.aci"),
        ],
        stdin,
    );
    let sig = Signature::from_minisign(&d.read("x.aci.minisig")).unwrap();
    key.public_key().verify(&d.data(), &sig).unwrap();
}

/// minisign verifies `x.aci` against `k.pub`, with the signature in `sig` (default
/// `x.aci.minisig`).
fn minisign_verifies_x_aci(d: &Dir, sig: Option<&str>) {
    let (pk, file) = (d.s("k.pub"), d.s("x.aci"));
    let mut args = vec!["-V", "-p", &pk, "-m", &file];
    let sig = sig.map(|s| d.s(s));
    if let Some(sig) = &sig {
        args.extend(["-x", sig.as_str()]);
    }
    ok(&args, None);
}

#[test]
fn minisign_verifies_our_prehashed_and_legacy_signatures() {
    let d = Dir::new();
    let key = SecretKey::generate().unwrap();
    write(&d.p("k.pub"), &key.public_key().to_minisign());
    let data = d.data();
    write(
        &d.p("x.aci.minisig"),
        &key.sign(&data, "timestamp:1\tfile:x.aci\thashed")
            .unwrap()
            .to_minisign(),
    );
    write(
        &d.p("x.legacy"),
        &key.sign_legacy(&data, "legacy").unwrap().to_minisign(),
    );
    minisign_verifies_x_aci(&d, None);
    minisign_verifies_x_aci(&d, Some("x.legacy"));
    // And it refuses them for other bytes, so the checks above mean something.
    std::fs::write(d.p("x.aci"), b"other").unwrap();
    assert!(
        !run(&["-V", "-p", &d.s("k.pub"), "-m", &d.s("x.aci")], None)
            .status
            .success()
    );
}

#[test]
fn we_verify_minisign_signatures_made_with_its_own_keys() {
    let d = Dir::new();
    ok(
        &["-G", "-W", "-p", &d.s("m.pub"), "-s", &d.s("m.key")],
        None,
    );
    ok(&["-S", "-s", &d.s("m.key"), "-m", &d.s("x.aci")], None);
    ok(
        &[
            "-S",
            "-l",
            "-s",
            &d.s("m.key"),
            "-m",
            &d.s("x.aci"),
            "-x",
            &d.s("x.legacy"),
            "-t",
            "legacy one",
        ],
        None,
    );
    let pk = PublicKey::from_minisign(&d.read("m.pub")).unwrap();
    let data = d.data();
    let prehashed = Signature::from_minisign(&d.read("x.aci.minisig")).unwrap();
    assert_eq!(prehashed.algorithm, aci::sign::Algorithm::Prehashed);
    pk.verify(&data, &prehashed).unwrap();
    let legacy = Signature::from_minisign(&d.read("x.legacy")).unwrap();
    assert_eq!(legacy.algorithm, aci::sign::Algorithm::Legacy);
    assert_eq!(legacy.trusted_comment, "legacy one");
    pk.verify(&data, &legacy).unwrap();
    let mut tampered = data.clone();
    tampered[1000] ^= 1;
    assert!(pk.verify(&tampered, &prehashed).is_err());
}

#[test]
fn we_sign_with_a_secret_key_made_by_minisign() {
    let d = Dir::new();
    ok(
        &["-G", "-W", "-p", &d.s("m.pub"), "-s", &d.s("m.key")],
        None,
    );
    let sk = SecretKey::from_minisign(&d.read("m.key"), None).unwrap();
    assert_eq!(
        sk.public_key(),
        PublicKey::from_minisign(&d.read("m.pub")).unwrap()
    );
    write(
        &d.p("x.aci.minisig"),
        &sk.sign(&d.data(), "ours").unwrap().to_minisign(),
    );
    ok(&["-V", "-p", &d.s("m.pub"), "-m", &d.s("x.aci")], None);
}

#[test]
fn minisign_signs_with_our_unencrypted_secret_key() {
    let d = Dir::new();
    let key = SecretKey::generate().unwrap();
    write(&d.p("k.key"), &key.to_minisign_unencrypted());
    write(&d.p("k.pub"), &key.public_key().to_minisign());
    minisign_signs_x_aci(&d, &key, None);
    // minisign derives the same public key file from our secret key.
    ok(&["-R", "-s", &d.s("k.key"), "-p", &d.s("r.pub")], None);
    assert_eq!(d.read("r.pub"), key.public_key().to_minisign());
}

#[test]
fn minisign_decrypts_our_password_protected_secret_key() {
    let d = Dir::new();
    let key = SecretKey::generate().unwrap();
    // The minimum scrypt cost keeps the test fast; the format is the same as minisign's default.
    write(
        &d.p("k.key"),
        &key.to_minisign_encrypted("correct horse", KdfLimits::MINIMUM)
            .unwrap(),
    );
    write(&d.p("k.pub"), &key.public_key().to_minisign());
    minisign_signs_x_aci(&d, &key, Some("correct horse\n"));
    let wrong = run(
        &["-S", "-s", &d.s("k.key"), "-m", &d.s("x.aci")],
        Some("wrong\n"),
    );
    assert!(!wrong.status.success());
}
