//! The disk image without a VM: `builder build` writes a signed GPT image (with a stand-in
//! prebuilt kernel, so no kernel build is needed); tools nobody here wrote agree with every
//! part of it; two builds in different directories at different times are bit-identical;
//! `builder verify` passes it and names the part of a tampered copy that differs; `builder
//! inspect` shows what is inside.

mod common;

use common::{builder, fake_bzimage, tool};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Output;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output, what: &str) -> String {
    assert!(o.status.success(), "{what} failed: {}", text(&o));
    text(&o)
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    toml: PathBuf,
    key: PathBuf,
    public: PathBuf,
}

/// A declaration with an embedded image and a trust key, a signing key, in a fresh directory.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    fs::write(root.join("bzImage"), fake_bzimage()).unwrap();
    ok(
        builder()
            .args(["key", "generate", "-o"])
            .arg(root.join("signing"))
            .output()
            .unwrap(),
        "key generate",
    );
    // A small signed ACI to embed.
    let app = root.join("app");
    fs::create_dir_all(app.join("rootfs/bin")).unwrap();
    fs::write(app.join("rootfs/bin/hello"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::write(
        app.join("manifest"),
        r#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/hello","labels":[{"name":"version","value":"1.0.0"},{"name":"arch","value":"amd64"},{"name":"os","value":"linux"}],"app":{"exec":["/bin/hello"],"user":"0","group":"0"}}"#,
    )
    .unwrap();
    ok(
        builder()
            .args(["aci", "build"])
            .arg(&app)
            .arg("-o")
            .arg(root.join("hello.aci"))
            .output()
            .unwrap(),
        "aci build",
    );
    ok(
        builder()
            .args(["aci", "sign"])
            .arg(root.join("hello.aci"))
            .arg("--key")
            .arg(root.join("signing.key"))
            .output()
            .unwrap(),
        "aci sign",
    );
    let toml = root.join("host.toml");
    fs::write(
        &toml,
        r#"name = "rt"
arch = ["x86_64"]
formats = ["raw", "qcow2", "vhd", "gce", "zst"]
[kernel]
prebuilt = { x86_64 = "bzImage" }
[signing]
key = "signing.key"
[[image]]
path = "hello.aci"
[[trust]]
key = "signing.pub"
prefix = "example.com/"
"#,
    )
    .unwrap();
    Fixture {
        _dir: dir,
        key: root.join("signing.key"),
        public: root.join("signing.pub"),
        root,
        toml,
    }
}

fn build(f: &Fixture, out: &Path, epoch: &str) -> String {
    ok(
        builder()
            .arg("build")
            .arg(&f.toml)
            .arg("-o")
            .arg(out)
            .env("SOURCE_DATE_EPOCH", epoch)
            .output()
            .unwrap(),
        "builder build",
    )
}

/// Offset and size of a region the signed manifest lists.
fn region(image: &Path, name: &str) -> (u64, u64) {
    let manifest = image.with_extension("manifest.json");
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&manifest).unwrap()).unwrap();
    let r = json["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no region {name} in {}", manifest.display()))
        .clone();
    (r["offset"].as_u64().unwrap(), r["size"].as_u64().unwrap())
}

/// Copies `size` bytes at `offset` of `image` into their own file.
fn extract(image: &Path, offset: u64, size: u64, to: &Path) {
    let f = fs::File::open(image).unwrap();
    let mut buf = vec![0u8; size as usize];
    f.read_exact_at(&mut buf, offset).unwrap();
    fs::write(to, buf).unwrap();
}

#[test]
fn outside_tools_agree_with_every_part_of_the_image() {
    let f = fixture();
    let out = f.root.join("out");
    build(&f, &out, "1700000000");
    let img = out.join("rt-x86_64.img");
    assert!(img.is_file(), "no {}", img.display());

    let sg = ok(
        tool("sgdisk", "gdisk")
            .arg("-v")
            .arg(&img)
            .output()
            .unwrap(),
        "sgdisk -v",
    );
    assert!(sg.contains("No problems found"), "{sg}");

    let part = f.root.join("part");
    let (o, s) = region(&img, "esp");
    extract(&img, o, s, &part);
    ok(
        tool("fsck.vfat", "dosfstools")
            .arg("-n")
            .arg(&part)
            .output()
            .unwrap(),
        "fsck.vfat -n",
    );

    let (o, s) = region(&img, "data");
    extract(&img, o, s, &part);
    ok(
        tool("e2fsck", "e2fsprogs")
            .arg("-fn")
            .arg(&part)
            .output()
            .unwrap(),
        "e2fsck -fn",
    );

    // Payload: erofs, then the dm-verity superblock and tree, as the command line says.
    let (o, s) = region(&img, "payload-a");
    extract(&img, o, s, &part);
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(img.with_extension("manifest.json")).unwrap())
            .unwrap();
    let cmdline = manifest["cmdline"].as_str().unwrap().to_string();
    let verity = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("hostos.verity="))
        .unwrap_or_else(|| panic!("no hostos.verity= in {cmdline}"));
    let mut fields = verity.split(':');
    let blocks: u64 = fields.next().unwrap().parse().unwrap();
    let root = fields.next().unwrap();
    assert_eq!(manifest["verity_root_hash"].as_str(), Some(root));
    let erofs = f.root.join("erofs");
    extract(&img, o, blocks * 4096, &erofs);
    ok(
        tool("fsck.erofs", "erofs-utils")
            .arg(&erofs)
            .output()
            .unwrap(),
        "fsck.erofs",
    );
    ok(
        tool("veritysetup", "cryptsetup-bin")
            .arg("verify")
            .arg(&part)
            .arg(&part)
            .arg(root)
            .arg(format!("--hash-offset={}", blocks * 4096))
            .output()
            .unwrap(),
        "veritysetup verify",
    );

    let qcow = out.join("rt-x86_64.qcow2");
    ok(
        tool("qemu-img", "qemu-utils")
            .arg("check")
            .arg(&qcow)
            .output()
            .unwrap(),
        "qemu-img check",
    );
    let info = ok(
        tool("qemu-img", "qemu-utils")
            .args(["info", "--output=json", "-f", "vpc"])
            .arg(out.join("rt-x86_64.vhd"))
            .output()
            .unwrap(),
        "qemu-img info vhd",
    );
    let info: serde_json::Value =
        serde_json::from_str(info.trim_start_matches(|c| c != '{')).unwrap();
    assert_eq!(info["format"], "vpc", "{info}");
    assert_eq!(
        info["virtual-size"].as_u64(),
        Some(fs::metadata(&img).unwrap().len()),
        "{info}"
    );

    let listing = ok(
        tool("tar", "tar")
            .arg("-tzf")
            .arg(out.join("rt-x86_64.tar.gz"))
            .output()
            .unwrap(),
        "tar -tzf",
    );
    assert_eq!(listing.trim(), "disk.raw");
    let unzstd = f.root.join("unzstd.img");
    ok(
        tool("zstd", "zstd")
            .args(["-d", "-q", "-f", "-o"])
            .arg(&unzstd)
            .arg(out.join("rt-x86_64.img.zst"))
            .output()
            .unwrap(),
        "zstd -d",
    );
    assert!(
        fs::read(&unzstd).unwrap() == fs::read(&img).unwrap(),
        ".img.zst differs from .img"
    );

    ok(
        tool("minisign", "minisign")
            .arg("-Vm")
            .arg(img.with_extension("manifest.json"))
            .arg("-p")
            .arg(&f.public)
            .output()
            .unwrap(),
        "minisign -V",
    );
}

#[test]
fn two_builds_in_different_directories_at_different_times_are_bit_identical() {
    let a = fixture();
    let b = fixture();
    // Same inputs: b uses a's key and aci (key generation is random).
    for name in [
        "signing.key",
        "signing.pub",
        "hello.aci",
        "hello.aci.minisig",
    ] {
        fs::copy(a.root.join(name), b.root.join(name)).unwrap();
    }
    let out_a = a.root.join("out");
    let out_b = b.root.join("elsewhere");
    build(&a, &out_a, "1700000000");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    build(&b, &out_b, "1700000000");
    for name in [
        "rt-x86_64.img",
        "rt-x86_64.qcow2",
        "rt-x86_64.vhd",
        "rt-x86_64.tar.gz",
        "rt-x86_64.img.zst",
        "rt-x86_64.manifest.json",
        "rt-x86_64.manifest.json.minisig",
    ] {
        let (x, y) = (
            fs::read(out_a.join(name)).unwrap(),
            fs::read(out_b.join(name)).unwrap(),
        );
        assert!(x == y, "{name} differs between the two builds");
    }
    // SOURCE_DATE_EPOCH is an input: another value gives another image.
    let out_c = a.root.join("later");
    build(&a, &out_c, "1800000000");
    assert!(
        fs::read(out_a.join("rt-x86_64.img")).unwrap()
            != fs::read(out_c.join("rt-x86_64.img")).unwrap(),
        "SOURCE_DATE_EPOCH did not reach the image"
    );
}

fn verify(img: &Path, public: &Path) -> Output {
    builder()
        .arg("verify")
        .arg(img)
        .arg("--key")
        .arg(public)
        .output()
        .unwrap()
}

#[test]
fn verify_passes_the_image_and_names_the_part_of_a_tampered_copy_that_differs() {
    let f = fixture();
    let out = f.root.join("out");
    build(&f, &out, "1700000000");
    let img = out.join("rt-x86_64.img");
    ok(verify(&img, &f.public), "builder verify");

    // One flipped byte in each covered part; each copy fails naming that part.
    let copy = f.root.join("tampered.img");
    for name in [
        "protective-mbr",
        "primary-gpt-header",
        "primary-gpt-table",
        "esp",
        "payload-a",
        "payload-b",
        "backup-gpt-table",
        "backup-gpt-header",
    ] {
        let (o, s) = region(&img, name);
        fs::copy(&img, &copy).unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&copy)
            .unwrap();
        let at = o + s / 2;
        let mut b = [0u8; 1];
        file.read_exact_at(&mut b, at).unwrap();
        file.write_all_at(&[b[0] ^ 0x40], at).unwrap();
        drop(file);
        let v = verify(&copy, &f.public);
        assert!(
            !v.status.success(),
            "a flipped byte in {name} passed verify"
        );
        assert!(
            text(&v).contains(name),
            "verify of a tampered {name} said: {}",
            text(&v)
        );
    }

    // The data partition's contents are the running system's: a change there still verifies.
    let (o, s) = region(&img, "data");
    fs::copy(&img, &copy).unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&copy)
        .unwrap();
    file.write_all_at(b"written by the guest", o + s / 2)
        .unwrap();
    drop(file);
    ok(verify(&copy, &f.public), "verify after a write inside data");

    // Another key is refused.
    ok(
        builder()
            .args(["key", "generate", "-o"])
            .arg(f.root.join("other"))
            .output()
            .unwrap(),
        "key generate",
    );
    let v = verify(&img, &f.root.join("other.pub"));
    assert!(!v.status.success(), "verify accepted another key");
    let _ = &f.key;
}

#[test]
fn inspect_shows_partitions_manifest_cmdline_images_and_trust_keys() {
    let f = fixture();
    let out = f.root.join("out");
    build(&f, &out, "1700000000");
    let img = out.join("rt-x86_64.img");
    let human = ok(
        builder().arg("inspect").arg(&img).output().unwrap(),
        "inspect",
    );
    for want in [
        "esp",
        "payload-a",
        "payload-b",
        "data",
        "hostos.verity=",
        "example.com/hello",
        "sha512-",
        "example.com/",
    ] {
        assert!(human.contains(want), "inspect lacks {want:?}:\n{human}");
    }
    let json = ok(
        builder()
            .arg("inspect")
            .arg(&img)
            .arg("--json")
            .output()
            .unwrap(),
        "inspect --json",
    );
    let v: serde_json::Value = serde_json::from_str(json.trim_start_matches(|c| c != '{')).unwrap();
    assert!(
        v["partitions"].as_array().is_some_and(|p| p.len() == 5),
        "{v}"
    );
    assert!(
        v["cmdline"]
            .as_str()
            .is_some_and(|c| c.contains("hostos.payload=")),
        "{v}"
    );
    assert_eq!(v["embedded_images"][0]["name"], "example.com/hello", "{v}");
    assert_eq!(v["trust_keys"][0]["prefix"], "example.com/", "{v}");
}
