//! Interop with tools nobody here wrote: ACIs made by GNU tar and Python's tarfile read
//! correctly, and what we write GNU tar and Python's tarfile read back. A missing tool fails the
//! test with the Debian package to install.

mod common;

use std::path::Path;
use std::process::Command;

use aci::archive::{self, Compression, ReadOptions, UnpackOptions, WriteOptions};
use common::require_tool;
use sha2::{Digest, Sha512};

fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("rootfs/bin")).unwrap();
    std::fs::create_dir_all(root.join("rootfs/etc")).unwrap();
    std::fs::write(root.join("manifest"), common::MANIFEST).unwrap();
    std::fs::write(root.join("rootfs/etc/hostname"), b"interop\n").unwrap();
    std::fs::write(root.join("rootfs/bin/app"), vec![42u8; 100_000]).unwrap();
    std::fs::set_permissions(
        root.join("rootfs/bin/app"),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .unwrap();
    std::os::unix::fs::symlink("app", root.join("rootfs/bin/sh")).unwrap();
    let long = format!("rootfs/{}", "x".repeat(150));
    std::fs::write(root.join(&long), b"long name").unwrap();
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_same_content(extracted: &Path, src: &Path) {
    assert_eq!(common::tree(extracted), common::tree(src));
    for rel in ["manifest", "rootfs/etc/hostname", "rootfs/bin/app"] {
        assert_eq!(
            std::fs::read(extracted.join(rel)).unwrap(),
            std::fs::read(src.join(rel)).unwrap(),
            "{rel}"
        );
    }
    assert_eq!(
        std::fs::read_link(extracted.join("rootfs/bin/sh")).unwrap(),
        Path::new("app")
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(extracted.join("rootfs/bin/app"))
            .unwrap()
            .mode()
            & 0o777,
        0o750
    );
}

#[test]
fn reads_aci_written_by_gnu_tar() {
    require_tool("tar", "tar");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let aci = dir.path().join("gnu.aci");
    run(Command::new("tar")
        .arg("-C")
        .arg(&src)
        .arg("-cf")
        .arg(&aci)
        .args(["manifest", "rootfs"]));
    let bytes = std::fs::read(&aci).unwrap();
    let s = archive::read_aci(&bytes[..], &ReadOptions::default()).unwrap();
    assert_eq!(s.compression, Compression::None);
    assert_eq!(
        s.id.as_str(),
        format!("sha512-{}", hex::encode(Sha512::digest(&bytes)))
    );
    let out = dir.path().join("out");
    archive::unpack(&bytes[..], &out, &UnpackOptions::extract()).unwrap();
    assert_same_content(&out, &src);
}

#[test]
fn reads_gzip_aci_written_by_python_tarfile() {
    require_tool("python3", "python3");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let aci = dir.path().join("py.aci");
    // `./manifest` names, as `tar -C dir -c .` would produce, and PAX format for long names.
    let script = r#"
import sys, tarfile, os
src, out = sys.argv[1], sys.argv[2]
with tarfile.open(out, "w:gz", format=tarfile.PAX_FORMAT) as t:
    t.add(os.path.join(src, "manifest"), arcname="./manifest")
    t.add(os.path.join(src, "rootfs"), arcname="./rootfs")
"#;
    run(Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&src)
        .arg(&aci));
    let bytes = std::fs::read(&aci).unwrap();
    let s = archive::read_aci(&bytes[..], &ReadOptions::default()).unwrap();
    assert_eq!(s.compression, Compression::Gzip);
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut plain).unwrap();
    assert_eq!(
        s.id.as_str(),
        format!("sha512-{}", hex::encode(Sha512::digest(&plain)))
    );
    let out = dir.path().join("out");
    archive::unpack(&bytes[..], &out, &UnpackOptions::extract()).unwrap();
    assert_same_content(&out, &src);
}

fn write_ours(src: &Path, kind: Compression, out: &Path) {
    let mut f = std::fs::File::create(out).unwrap();
    archive::write_aci(
        src,
        &mut f,
        &WriteOptions {
            compression: kind,
            ..WriteOptions::default()
        },
    )
    .unwrap();
}

#[test]
fn gnu_tar_extracts_what_we_write() {
    require_tool("tar", "tar");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    for (kind, flag) in [(Compression::Gzip, "-z"), (Compression::None, "")] {
        let aci = dir.path().join(format!("ours-{}.aci", kind.name()));
        write_ours(&src, kind, &aci);
        let out = dir.path().join(format!("gnu-{}", kind.name()));
        std::fs::create_dir(&out).unwrap();
        let mut cmd = Command::new("tar");
        cmd.arg("-C").arg(&out).arg("-x");
        if !flag.is_empty() {
            cmd.arg(flag);
        }
        run(cmd.arg("-f").arg(&aci));
        assert_same_content(&out, &src);
    }
}

#[test]
fn gnu_tar_extracts_our_zstd() {
    require_tool("tar", "tar");
    require_tool("zstd", "zstd");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let aci = dir.path().join("ours.aci");
    write_ours(&src, Compression::Zstd, &aci);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    run(Command::new("tar")
        .arg("-C")
        .arg(&out)
        .arg("--zstd")
        .arg("-xf")
        .arg(&aci));
    assert_same_content(&out, &src);
}

#[test]
fn python_tarfile_reads_what_we_write() {
    require_tool("python3", "python3");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let aci = dir.path().join("ours.aci");
    write_ours(&src, Compression::Gzip, &aci);
    let out = dir.path().join("out");
    let script = r#"
import sys, tarfile
with tarfile.open(sys.argv[1], "r:*") as t:
    names = t.getnames()
    assert names[0] == "manifest", names
    assert all(n == "manifest" or n == "rootfs" or n.startswith("rootfs/") for n in names), names
    for m in t.getmembers():
        assert m.uname == "" and m.gname == "" and m.uid == 0 and m.mtime == 0, m
    t.extractall(sys.argv[2], filter="tar") if hasattr(tarfile, "data_filter") else t.extractall(sys.argv[2])
"#;
    run(Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&aci)
        .arg(&out));
    assert_same_content(&out, &src);
}
