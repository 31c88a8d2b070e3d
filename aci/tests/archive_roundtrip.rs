//! Reading, unpacking and writing ACIs: Image ID over the uncompressed stream for every
//! compression, metadata preserved on unpack, deterministic writing.

mod common;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use aci::archive::{self, Compression, ReadOptions, UnpackOptions, WriteOptions};
use common::RawTar;
use sha2::{Digest, Sha512};

fn expected_id(tar: &[u8]) -> String {
    format!("sha512-{}", hex::encode(Sha512::digest(tar)))
}

fn sample_tar() -> Vec<u8> {
    RawTar::aci()
        .dir("rootfs/etc/")
        .file("rootfs/etc/hostname", b"box\n")
        .symlink("rootfs/etc/link", "/etc/hostname")
        .hardlink("rootfs/etc/again", "rootfs/etc/hostname")
        .finish()
}

#[test]
fn image_id_is_sha512_of_uncompressed_tar_for_every_compression() {
    let tar = sample_tar();
    let want = expected_id(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    bz.write_all(&tar).unwrap();
    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
    xz.write_all(&tar).unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    let cases = [
        (tar.clone(), Compression::None),
        (gz.finish().unwrap(), Compression::Gzip),
        (bz.finish().unwrap(), Compression::Bzip2),
        (xz.finish().unwrap(), Compression::Xz),
        (zst, Compression::Zstd),
    ];
    for (bytes, kind) in cases {
        let s = archive::read_aci(&bytes[..], &ReadOptions::default()).unwrap();
        assert_eq!(s.compression, kind);
        assert_eq!(s.id.as_str(), want, "{kind:?}");
        assert_eq!(s.tar_size, tar.len() as u64);
    }
}

#[test]
fn image_id_covers_trailing_padding_after_end_marker() {
    let mut tar = sample_tar();
    let short = archive::read_aci(&tar[..], &ReadOptions::default())
        .unwrap()
        .id;
    tar.extend(std::iter::repeat_n(0u8, 10 * 512));
    let long = archive::read_aci(&tar[..], &ReadOptions::default())
        .unwrap()
        .id;
    assert_ne!(short, long);
    assert_eq!(long.as_str(), expected_id(&tar));
}

#[test]
fn rejects_unknown_format() {
    let err = archive::read_aci(&b"PK\x03\x04 not a tar"[..], &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, archive::ArchiveError::UnknownFormat), "{err}");
}

#[test]
fn unpack_keeps_modes_mtimes_links_and_xattrs() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("rootfs/bin")).unwrap();
    std::fs::write(src.join("manifest"), common::MANIFEST).unwrap();
    std::fs::write(src.join("rootfs/bin/tool"), b"#!/bin/sh\n").unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(src.join("rootfs/bin/tool"))
            .unwrap()
            .permissions(),
        0o755,
    );
    std::fs::set_permissions(
        src.join("rootfs/bin/tool"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4751),
    )
    .unwrap();
    std::fs::hard_link(src.join("rootfs/bin/tool"), src.join("rootfs/bin/tool2")).unwrap();
    std::os::unix::fs::symlink("tool", src.join("rootfs/bin/sh")).unwrap();
    rustix::fs::setxattr(
        src.join("rootfs/bin/tool"),
        "user.aci-test",
        b"kept",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    std::fs::set_permissions(
        src.join("rootfs/bin"),
        std::os::unix::fs::PermissionsExt::from_mode(0o555),
    )
    .unwrap();

    let mut aci = Vec::new();
    let opts = WriteOptions {
        mtime: 1_234_567_890,
        preserve_owners: true,
        ..WriteOptions::default()
    };
    archive::write_aci(&src, &mut aci, &opts).unwrap();
    let out = dir.path().join("out");
    archive::unpack(&aci[..], &out, &UnpackOptions::extract()).unwrap();

    let tool = std::fs::symlink_metadata(out.join("rootfs/bin/tool")).unwrap();
    assert_eq!(tool.mode() & 0o7777, 0o4751);
    assert_eq!(tool.mtime(), 1_234_567_890);
    let tool2 = std::fs::symlink_metadata(out.join("rootfs/bin/tool2")).unwrap();
    assert_eq!(tool.ino(), tool2.ino(), "hard link not kept");
    assert_eq!(
        std::fs::read_link(out.join("rootfs/bin/sh")).unwrap(),
        Path::new("tool")
    );
    let bin = std::fs::symlink_metadata(out.join("rootfs/bin")).unwrap();
    assert_eq!(bin.mode() & 0o7777, 0o555);
    assert_eq!(
        bin.mtime(),
        1_234_567_890,
        "directory mtime must be set after its children"
    );
    let mut buf = [0u8; 16];
    let n =
        rustix::fs::getxattr(out.join("rootfs/bin/tool"), "user.aci-test", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"kept");
    assert_eq!(
        std::fs::read(out.join("manifest")).unwrap(),
        common::MANIFEST.as_bytes()
    );
    std::fs::set_permissions(
        src.join("rootfs/bin"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(
        out.join("rootfs/bin"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
}

#[test]
fn unpack_preserves_owners_when_root() {
    // Never a silent pass: without root this test cannot check anything, so it says so.
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (chown); the suite runs as root in CI"
    );
    // RawTar writes uid/gid 0; build this one with the tar crate to set other owners.
    let mut b = tar::Builder::new(Vec::new());
    let new = || {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h
    };
    let mut h = new();
    h.set_size(common::MANIFEST.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "manifest", common::MANIFEST.as_bytes())
        .unwrap();
    let mut h = new();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "rootfs/", &b""[..]).unwrap();
    let mut h = new();
    h.set_size(1);
    h.set_mode(0o640);
    h.set_uid(1234);
    h.set_gid(4321);
    b.append_data(&mut h, "rootfs/owned", &b"x"[..]).unwrap();
    let owned = b.into_inner().unwrap();
    let dir = tempfile::tempdir().unwrap();
    archive::unpack(&owned[..], dir.path(), &UnpackOptions::extract()).unwrap();
    let md = std::fs::metadata(dir.path().join("rootfs/owned")).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o777), (1234, 4321, 0o640));
}

fn build_tree(root: &Path) {
    std::fs::create_dir_all(root.join("rootfs/usr/bin")).unwrap();
    std::fs::create_dir_all(root.join("rootfs/etc")).unwrap();
    std::fs::write(root.join("manifest"), common::MANIFEST).unwrap();
    for i in 0..20 {
        std::fs::write(
            root.join(format!("rootfs/usr/bin/f{i}")),
            format!("file {i}"),
        )
        .unwrap();
    }
    std::fs::write(root.join("rootfs/etc/a-b"), b"sorted between etc and etc/").unwrap();
    std::os::unix::fs::symlink("../usr/bin/f1", root.join("rootfs/etc/link")).unwrap();
    let long = "d".repeat(120);
    std::fs::create_dir_all(root.join(format!("rootfs/{long}"))).unwrap();
    std::fs::write(root.join(format!("rootfs/{long}/{long}")), b"long names").unwrap();
}

#[test]
fn writing_is_deterministic_across_builds_and_mtimes() {
    for kind in [Compression::Zstd, Compression::Gzip, Compression::None] {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        build_tree(a.path());
        std::thread::sleep(std::time::Duration::from_millis(20));
        build_tree(b.path());
        let opts = WriteOptions {
            compression: kind,
            ..WriteOptions::default()
        };
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let id1 = archive::write_aci(a.path(), &mut x, &opts).unwrap();
        let id2 = archive::write_aci(b.path(), &mut y, &opts).unwrap();
        assert_eq!(id1, id2);
        assert!(x == y, "{kind:?}: same tree gave different bytes");
        let s = archive::read_aci(&x[..], &ReadOptions::default()).unwrap();
        assert_eq!(s.id, id1, "writer's ID must equal the reader's");
        assert_eq!(s.compression, kind);
    }
}

#[test]
fn written_entries_are_sorted_with_numeric_owners_and_no_names() {
    let a = tempfile::tempdir().unwrap();
    build_tree(a.path());
    let mut x = Vec::new();
    archive::write_aci(
        a.path(),
        &mut x,
        &WriteOptions {
            compression: Compression::None,
            ..WriteOptions::default()
        },
    )
    .unwrap();
    let mut ar = tar::Archive::new(&x[..]);
    let mut names = Vec::new();
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        assert_eq!(h.mtime().unwrap(), 0);
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
        assert_eq!(h.username_bytes().unwrap_or_default(), b"");
        assert_eq!(h.groupname_bytes().unwrap_or_default(), b"");
        names.push(e.path_bytes().into_owned());
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(names[0], b"manifest");
}

#[test]
fn writer_refuses_invalid_manifest_before_writing() {
    let a = tempfile::tempdir().unwrap();
    build_tree(a.path());
    std::fs::write(
        a.path().join("manifest"),
        br#"{"acKind":"ImageManifest","name":"BAD NAME"}"#,
    )
    .unwrap();
    let mut x = Vec::new();
    let err = archive::write_aci(a.path(), &mut x, &WriteOptions::default()).unwrap_err();
    assert!(
        matches!(err, archive::ArchiveError::InvalidManifest(_)),
        "{err}"
    );
    assert!(x.is_empty(), "bytes were written before validation");
}
