//! Tests of the unpacker's internals: layered renders through `unpack_layer`/`finish_layers`
//! (what the store calls) and metadata calls that must not follow symlinks.

use super::*;
use crate::archive::ArchiveError;
use crate::archive::fs_sink::chmod_nofollow;
use rustix::fs::{AtFlags, FileType};
use std::fs::File;

const MANIFEST: &str = r#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/layer","labels":[{"name":"os","value":"linux"}]}"#;

enum E<'a> {
    File(&'a str),
    Symlink(&'a str, &'a str),
}

fn header(mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_000_000);
    h.set_size(0);
    h
}

fn layer(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(0o644);
    h.set_size(MANIFEST.len() as u64);
    b.append_data(&mut h, "manifest", MANIFEST.as_bytes())
        .unwrap();
    let mut h = header(0o755);
    h.set_entry_type(tar::EntryType::Directory);
    b.append_data(&mut h, "rootfs", &b""[..]).unwrap();
    for e in entries {
        let mut h = header(0o644);
        match e {
            E::File(p) => b.append_data(&mut h, p, &b""[..]).unwrap(),
            E::Symlink(p, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, p, t).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn layer_opts() -> UnpackOptions {
    UnpackOptions {
        overwrite: true,
        ..UnpackOptions::extract()
    }
}

#[test]
fn a_lower_layer_symlink_replaced_by_a_directory_is_forgotten() {
    // Layer 1 leaves `s -> x/y/z`. Layer 2 writes `s/f`, which turns `s` into a directory,
    // so `t -> s/../../..` climbs two levels above the rootfs, while the old link map still
    // read it as `x/y/z/../../..`, the rootfs itself.
    let sb = tempfile::tempdir().unwrap();
    let root_path = sb.path().join("tree");
    std::fs::create_dir(&root_path).unwrap();
    let root = File::open(&root_path).unwrap();
    let opts = layer_opts();
    let mut layers = Layers::default();
    let lower = layer(&[E::Symlink("rootfs/s", "x/y/z")]);
    unpack_layer(&lower[..], root.as_fd(), &opts, &mut layers).unwrap();
    let upper = layer(&[E::File("rootfs/s/f"), E::Symlink("rootfs/t", "s/../../..")]);
    let err = unpack_layer(&upper[..], root.as_fd(), &opts, &mut layers).expect_err("accepted");
    assert!(
        matches!(&err, ArchiveError::SymlinkEscape { entry, .. } if entry == "rootfs/t"),
        "{err}"
    );
    assert!(root_path.join("t").symlink_metadata().is_err());
}

#[test]
fn layers_that_stay_inside_still_render() {
    let sb = tempfile::tempdir().unwrap();
    let root = File::open(sb.path()).unwrap();
    let opts = layer_opts();
    let mut layers = Layers::default();
    let lower = layer(&[E::Symlink("rootfs/s", "x/y/z")]);
    unpack_layer(&lower[..], root.as_fd(), &opts, &mut layers).unwrap();
    let upper = layer(&[E::File("rootfs/s/f"), E::Symlink("rootfs/t", "s/..")]);
    unpack_layer(&upper[..], root.as_fd(), &opts, &mut layers).unwrap();
    finish_layers(root.as_fd(), &opts, layers).unwrap();
    assert!(sb.path().join("s/f").is_file());
    assert_eq!(
        std::fs::read_link(sb.path().join("t")).unwrap().to_str(),
        Some("s/..")
    );
}

#[test]
fn chmod_of_a_special_file_never_follows_a_symlink_at_its_place() {
    // The unpacker once set a device's or fifo's mode with `fchmodat(.., 0)`, which follows a
    // symlink that replaced the node.
    let sb = tempfile::tempdir().unwrap();
    let victim = sb.path().join("victim");
    std::fs::write(&victim, b"x").unwrap();
    std::fs::set_permissions(&victim, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&victim, sb.path().join("node")).unwrap();
    let dir = File::open(sb.path()).unwrap();
    let res = chmod_nofollow(dir.as_fd(), b"node", Mode::from_raw_mode(0o4777));
    assert!(res.is_err());
    let mode = std::fs::metadata(&victim).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o7777,
        0o644
    );

    rustix::fs::mknodat(&dir, "fifo", FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
    chmod_nofollow(dir.as_fd(), b"fifo", Mode::from_raw_mode(0o640)).unwrap();
    let st = rustix::fs::statat(&dir, "fifo", AtFlags::SYMLINK_NOFOLLOW).unwrap();
    assert_eq!(st.st_mode & 0o7777, 0o640);
}
