//! Hostile archives: each escape kind is refused with an error naming the entry, and nothing is
//! created or changed outside the unpack target.

mod common;

use aci::archive::{self, ArchiveError, Limits, ReadOptions, UnpackOptions};
use common::{RawTar, assert_nothing_outside, sandbox};

/// Unpacks a hostile archive into a fresh target, then into an existing empty one; both must
/// be refused with the same error, leave nothing of the archive (no target, or the empty one
/// unchanged) and touch nothing outside.
fn unpack_err(bytes: &[u8], opts: &UnpackOptions) -> (ArchiveError, tempfile::TempDir) {
    let (sb, target) = sandbox();
    let err = archive::unpack(bytes, &target, opts).expect_err("hostile archive was accepted");
    assert!(
        !target.exists(),
        "a refused archive left {:?}",
        common::tree(&target)
    );
    assert_nothing_outside(sb.path());

    std::fs::create_dir(&target).unwrap();
    let again = archive::unpack(bytes, &target, opts).expect_err("hostile archive was accepted");
    assert_eq!(again.to_string(), err.to_string());
    assert_eq!(
        common::tree(&target),
        Vec::<String>::new(),
        "a refused archive left entries in the empty target"
    );
    assert_nothing_outside(sb.path());
    (err, sb)
}

fn defaults() -> UnpackOptions {
    UnpackOptions::extract()
}

/// The archive is refused because the symlink `entry` leaves the rootfs.
fn refused_as_symlink_escape(bytes: &[u8], entry: &str) {
    let (err, _sb) = unpack_err(bytes, &defaults());
    assert!(
        matches!(&err, ArchiveError::SymlinkEscape { entry: e, .. } if e == entry),
        "{err}"
    );
}

#[test]
fn rejects_absolute_entry_path() {
    let bytes = RawTar::aci().file("/tmp/evil", b"x").finish();
    let (err, _sb) = unpack_err(&bytes, &defaults());
    assert!(
        matches!(&err, ArchiveError::AbsolutePath { entry } if entry == "/tmp/evil"),
        "{err}"
    );
}

#[test]
fn rejects_parent_dir_component() {
    let bytes = RawTar::aci().file("rootfs/../../decoy", b"pwned").finish();
    let (err, _sb) = unpack_err(&bytes, &defaults());
    assert!(
        matches!(&err, ArchiveError::ParentComponent { entry } if entry == "rootfs/../../decoy"),
        "{err}"
    );
}

#[test]
fn rejects_symlink_escaping_rootfs() {
    let bytes = RawTar::aci().symlink("rootfs/esc", "../../decoy").finish();
    refused_as_symlink_escape(&bytes, "rootfs/esc");
}

#[test]
fn rejects_symlink_chain_escaping_through_earlier_link() {
    // `self -> .` is harmless alone; `up -> self/..` resolves (from the host) to the parent.
    let bytes = RawTar::aci()
        .symlink("rootfs/self", ".")
        .symlink("rootfs/up", "self/..")
        .finish();
    refused_as_symlink_escape(&bytes, "rootfs/up");
}

#[test]
fn rejects_symlink_redirected_by_a_later_link() {
    // `up` is checked before `self` exists; the final pass catches it.
    let bytes = RawTar::aci()
        .symlink("rootfs/up", "self/..")
        .symlink("rootfs/self", ".")
        .finish();
    refused_as_symlink_escape(&bytes, "rootfs/up");
}

#[test]
fn refused_link_chain_leaves_no_link_even_in_a_non_empty_target() {
    // Unpacking in place (into a target that already holds something) cannot stage; links are
    // still created only after the final pass, so the escaping `up` never exists.
    let (sb, target) = sandbox();
    std::fs::create_dir_all(target.join("keep")).unwrap();
    let bytes = RawTar::aci()
        .symlink("rootfs/up", "self/..")
        .symlink("rootfs/self", ".")
        .finish();
    let err = archive::unpack(&bytes[..], &target, &defaults()).expect_err("accepted");
    assert!(matches!(err, ArchiveError::SymlinkEscape { .. }), "{err}");
    let links: Vec<String> = common::tree(&target)
        .into_iter()
        .filter(|p| target.join(p).symlink_metadata().unwrap().is_symlink())
        .collect();
    assert!(links.is_empty(), "links left behind: {links:?}");
    assert_nothing_outside(sb.path());
}

#[test]
fn accepted_archive_is_placed_into_an_empty_target() {
    let (sb, target) = sandbox();
    std::fs::create_dir(&target).unwrap();
    let bytes = RawTar::aci()
        .file("rootfs/a", b"x")
        .symlink("rootfs/l", "a")
        .finish();
    archive::unpack(&bytes[..], &target, &defaults()).unwrap();
    assert_eq!(
        common::tree(&target),
        ["manifest", "rootfs", "rootfs/a", "rootfs/l"]
    );
    assert_nothing_outside(sb.path());
}

#[test]
fn rejects_file_written_through_archive_symlink_dir() {
    // The link itself stays inside (absolute targets are rootfs-relative), but writing through
    // it would follow it; a link to `/` outside a chroot is the host's root.
    let bytes = RawTar::aci()
        .symlink("rootfs/d", "/")
        .file("rootfs/d/evil", b"x")
        .finish();
    let (err, _sb) = unpack_err(&bytes, &defaults());
    assert!(
        matches!(&err, ArchiveError::PathThroughSymlink { entry } if entry == "rootfs/d/evil"),
        "{err}"
    );
}

#[test]
fn never_follows_symlink_already_in_target() {
    let (sb, target) = sandbox();
    std::fs::create_dir_all(target.join("rootfs")).unwrap();
    std::os::unix::fs::symlink(sb.path(), target.join("rootfs/d")).unwrap();
    let bytes = RawTar::aci().file("rootfs/d/decoy", b"pwned").finish();
    let err =
        archive::unpack(&bytes[..], &target, &defaults()).expect_err("wrote through a symlink");
    assert!(
        matches!(&err, ArchiveError::PathThroughSymlink { entry } if entry == "rootfs/d/decoy"),
        "{err}"
    );
    assert_nothing_outside(sb.path());
}

#[test]
fn never_replaces_existing_symlink_file() {
    let (sb, target) = sandbox();
    std::fs::create_dir_all(target.join("rootfs")).unwrap();
    std::os::unix::fs::symlink(sb.path().join("decoy"), target.join("rootfs/f")).unwrap();
    let bytes = RawTar::aci().file("rootfs/f", b"pwned").finish();
    let err =
        archive::unpack(&bytes[..], &target, &defaults()).expect_err("wrote through a symlink");
    assert!(
        matches!(&err, ArchiveError::EntryExists { entry } if entry == "rootfs/f"),
        "{err}"
    );
    assert_nothing_outside(sb.path());
}

#[test]
fn rejects_hardlink_escaping_rootfs() {
    for target in ["/etc/passwd", "rootfs/../../decoy", "../decoy", "manifest"] {
        let bytes = RawTar::aci().hardlink("rootfs/h", target).finish();
        let (err, _sb) = unpack_err(&bytes, &defaults());
        assert!(
            matches!(&err, ArchiveError::HardlinkEscape { entry, .. } if entry == "rootfs/h"),
            "{target}: {err}"
        );
    }
}

#[test]
fn rejects_hardlink_to_entry_not_yet_in_archive() {
    let bytes = RawTar::aci()
        .hardlink("rootfs/h", "rootfs/later")
        .file("rootfs/later", b"x")
        .finish();
    let (err, _sb) = unpack_err(&bytes, &defaults());
    assert!(
        matches!(&err, ArchiveError::HardlinkEscape { entry, .. } if entry == "rootfs/h"),
        "{err}"
    );
}

#[test]
fn rejects_device_node_unless_allowed() {
    let bytes = RawTar::aci().chardev("rootfs/mem").finish();
    let (err, _sb) = unpack_err(&bytes, &defaults());
    assert!(
        matches!(&err, ArchiveError::DeviceNode { entry } if entry == "rootfs/mem"),
        "{err}"
    );
    assert!(matches!(
        archive::read_aci(&bytes[..], &ReadOptions::default()),
        Err(ArchiveError::DeviceNode { .. })
    ));
}

#[test]
fn creates_device_node_when_allowed_as_root() {
    // Never a silent pass: mknod needs CAP_MKNOD, so without root this test says so.
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (mknod); the suite runs as root in CI"
    );
    let bytes = RawTar::aci().chardev("rootfs/null").finish();
    let (sb, target) = sandbox();
    let mut opts = defaults();
    opts.read.allow_devices = true;
    archive::unpack(&bytes[..], &target, &opts).unwrap();
    use std::os::unix::fs::FileTypeExt;
    let md = std::fs::symlink_metadata(target.join("rootfs/null")).unwrap();
    assert!(md.file_type().is_char_device());
    assert_nothing_outside(sb.path());
}

#[test]
fn rejects_duplicate_entries() {
    let bytes = RawTar::aci()
        .file("rootfs/a", b"1")
        .file("rootfs/./a", b"2")
        .finish();
    let (err, _sb) = unpack_err(&bytes, &defaults());
    assert!(
        matches!(&err, ArchiveError::Duplicate { entry } if entry == "rootfs/./a"),
        "{err}"
    );
    let bytes = RawTar::aci()
        .file("manifest", common::MANIFEST.as_bytes())
        .finish();
    let (err, _sb) = unpack_err(&bytes, &defaults());
    assert!(
        matches!(&err, ArchiveError::Duplicate { entry } if entry == "manifest"),
        "{err}"
    );
}

#[test]
fn rejects_oversize_entry_and_total() {
    let mut opts = defaults();
    opts.read.limits = Limits {
        max_entry_size: 10,
        max_total_size: 15,
        ..Limits::default()
    };
    let bytes = RawTar::aci().file("rootfs/big", &[0u8; 11]).finish();
    let (err, _sb) = unpack_err(&bytes, &opts);
    assert!(
        matches!(&err, ArchiveError::EntryTooLarge { entry, size: 11, limit: 10 } if entry == "rootfs/big"),
        "{err}"
    );
    let bytes = RawTar::aci()
        .file("rootfs/a", &[0u8; 10])
        .file("rootfs/b", &[0u8; 10])
        .finish();
    let (err, _sb) = unpack_err(&bytes, &opts);
    assert!(
        matches!(&err, ArchiveError::TotalSizeExceeded { entry, .. } if entry == "rootfs/b"),
        "{err}"
    );
    opts.read.limits = Limits {
        max_entries: 3,
        ..Limits::default()
    };
    let bytes = RawTar::aci()
        .file("rootfs/a", b"")
        .file("rootfs/b", b"")
        .finish();
    let (err, _sb) = unpack_err(&bytes, &opts);
    assert!(
        matches!(err, ArchiveError::TooManyEntries { limit: 3 }),
        "{err}"
    );
}

#[test]
fn rejects_entries_outside_layout_and_missing_parts() {
    let bytes = RawTar::aci().file("rootfsx/a", b"").finish();
    assert!(matches!(
        archive::read_aci(&bytes[..], &ReadOptions::default()),
        Err(ArchiveError::OutsideLayout { entry }) if entry == "rootfsx/a"
    ));
    let bytes = RawTar::new().dir("rootfs/").finish();
    assert!(matches!(
        archive::read_aci(&bytes[..], &ReadOptions::default()),
        Err(ArchiveError::MissingManifest)
    ));
    let bytes = RawTar::new()
        .file("manifest", common::MANIFEST.as_bytes())
        .file("rootfs/a", b"")
        .finish();
    assert!(matches!(
        archive::read_aci(&bytes[..], &ReadOptions::default()),
        Err(ArchiveError::MissingRootfs)
    ));
    let bytes = RawTar::new().file("manifest", b"{}").dir("rootfs").finish();
    assert!(matches!(
        archive::read_aci(&bytes[..], &ReadOptions::default()),
        Err(ArchiveError::InvalidManifest(_))
    ));
}

#[test]
fn accepts_dot_slash_names_like_go() {
    let bytes = RawTar::new()
        .file("./manifest", common::MANIFEST.as_bytes())
        .dir("./rootfs/")
        .file("./rootfs/a", b"x")
        .finish();
    let s = archive::read_aci(&bytes[..], &ReadOptions::default()).unwrap();
    assert_eq!(s.manifest.name, "example.com/test");
}

#[test]
fn rejects_a_small_stream_that_expands_far_past_the_end_marker() {
    // A valid ACI, then 8 MiB of zeros: a few hundred bytes of zstd that would otherwise all
    // be read and hashed.
    let mut tar = RawTar::aci().file("rootfs/a", b"x").finish();
    tar.resize(tar.len() + (8 << 20), 0);
    let small = zstd::encode_all(&tar[..], 19).unwrap();
    assert!(small.len() < 4096, "{} bytes", small.len());
    let (err, _sb) = unpack_err(&small, &defaults());
    assert!(
        matches!(err, ArchiveError::TrailingData { limit } if limit == archive::MAX_TRAILING_BYTES),
        "{err}"
    );
}

#[test]
fn rejects_a_tar_stream_over_max_tar_size() {
    let tar = RawTar::aci().file("rootfs/a", &[1u8; 8192]).finish();
    let small = zstd::encode_all(&tar[..], 3).unwrap();
    let mut opts = defaults();
    opts.read.limits.max_tar_size = 4096;
    let (err, _sb) = unpack_err(&small, &opts);
    assert!(
        matches!(err, ArchiveError::TarTooLarge { limit: 4096 }),
        "{err}"
    );
    // The same limit counts the bytes after the end marker too.
    opts.read.limits.max_tar_size = tar.len() as u64 - 1;
    let (err, _sb) = unpack_err(&small, &opts);
    assert!(matches!(err, ArchiveError::TarTooLarge { .. }), "{err}");
    opts.read.limits.max_tar_size = tar.len() as u64;
    let (sb, target) = sandbox();
    archive::unpack(&small[..], &target, &opts).unwrap();
    assert_nothing_outside(sb.path());
}

#[test]
fn hardlink_to_a_symlink_is_checked_as_the_symlink_it_makes() {
    // `l` resolves inside from `a/b`; the hard link puts the same symlink at the top, where
    // `../../decoy` is the sandbox's decoy.
    let bytes = RawTar::aci()
        .symlink("rootfs/a/b/l", "../../decoy")
        .hardlink("rootfs/esc", "rootfs/a/b/l")
        .finish();
    refused_as_symlink_escape(&bytes, "rootfs/esc");
}

#[test]
fn hardlink_to_a_contained_symlink_is_still_unpacked() {
    let (sb, target) = sandbox();
    let bytes = RawTar::aci()
        .file("rootfs/a/x", b"x")
        .symlink("rootfs/a/l", "x")
        .hardlink("rootfs/a/h", "rootfs/a/l")
        .finish();
    archive::unpack(&bytes[..], &target, &defaults()).unwrap();
    let h = target.join("rootfs/a/h");
    assert_eq!(std::fs::read_link(&h).unwrap().to_str(), Some("x"));
    assert_nothing_outside(sb.path());
}

#[test]
fn refuses_xattrs_outside_user_and_capability() {
    for xattr in [
        "trusted.overlay.opaque",
        "trusted.overlay.redirect",
        "security.selinux",
    ] {
        let mut t = RawTar::aci();
        common::hostile::pax(&mut t, &[(&format!("SCHILY.xattr.{xattr}"), b"y")]);
        let bytes = t.dir("rootfs/d").finish();
        let (err, _sb) = unpack_err(&bytes, &defaults());
        assert!(
            matches!(&err, ArchiveError::XattrRefused { entry, xattr: x }
                if entry == "rootfs/d" && x == xattr),
            "{err}"
        );
    }
}

#[test]
fn sets_only_the_user_xattrs_an_archive_carries() {
    let (sb, target) = sandbox();
    let mut t = RawTar::aci();
    common::hostile::pax(&mut t, &[("SCHILY.xattr.user.note", b"hi")]);
    let bytes = t.file("rootfs/f", b"x").finish();
    archive::unpack(&bytes[..], &target, &defaults()).unwrap();
    let f = target.join("rootfs/f");
    let mut names = vec![0u8; 4096];
    let n = rustix::fs::listxattr(&f, &mut names[..]).unwrap();
    let names: Vec<&[u8]> = names[..n]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(names, [&b"user.note"[..]]);
    let mut value = [0u8; 16];
    let n = rustix::fs::getxattr(&f, "user.note", &mut value[..]).unwrap();
    assert_eq!(&value[..n], b"hi");
    assert_nothing_outside(sb.path());
}
