//! Round trips without a VM: lay out and write a small disk from fake contents, seal it with
//! a signed manifest, then check it with outside tools (sgdisk, minisign), reopen it, rebuild
//! it, and tamper with each covered part.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use aci::sign::{PublicKey, SecretKey};
use hostimg::{ALIGN, Guid, Role};

use super::*;
use crate::manifest::{self, ImageFacts};
use crate::verify_cmd::{VerifyError, verify};

const MIB: u64 = ALIGN;

fn guid(n: u8) -> Guid {
    Guid::from_hash(&[n; 16])
}

/// Fails (never skips) when a tool is missing, naming its Debian package.
fn tool(program: &str, package: &str) -> Command {
    assert!(
        crate::tools::find(program).is_some(),
        "`{program}` not found: install the Debian package {package}"
    );
    Command::new(program)
}

/// Content with zero blocks in it (to exercise the sparse writer) and a recognisable pattern.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            if (i / 4096) % 3 == 1 {
                0
            } else {
                (i as u8).wrapping_mul(31).wrapping_add(seed) | 1
            }
        })
        .collect()
}

fn spec(dir: &Path) -> DiskSpec {
    let payload = dir.join("payload.erofs");
    std::fs::write(&payload, pattern(1_500_000, 7)).unwrap();
    let part = |role, size, n, content, read_only| PartitionSpec {
        role,
        size,
        guid: guid(n),
        content,
        read_only,
    };
    DiskSpec {
        disk_guid: guid(1),
        partitions: vec![
            part(
                Role::Esp,
                2 * MIB,
                2,
                Content::Bytes(pattern(300_000, 3)),
                false,
            ),
            part(Role::PayloadA, 2 * MIB, 3, Content::File(payload), true),
            part(Role::PayloadB, 2 * MIB, 4, Content::Zeros, true),
            part(Role::Manifest, MIB, 5, Content::Zeros, false),
            part(
                Role::Data,
                2 * MIB,
                6,
                Content::Bytes(b"ext4 stand-in".to_vec()),
                false,
            ),
        ],
        total_size: None,
    }
}

fn facts() -> ImageFacts {
    ImageFacts {
        name: "hello".into(),
        version: "0.1.0".into(),
        arch: "x86_64".into(),
        uki_sha256: "00".repeat(32),
        verity_root_hash: "11".repeat(32),
        cmdline: "console=ttyS0".into(),
        ..ImageFacts::default()
    }
}

/// Builds `dir/hello-x86_64.img` sealed with `key`, and its manifest copies beside it.
fn build(dir: &Path, key: &SecretKey) -> PathBuf {
    let spec = spec(dir);
    let layout = plan(&spec).unwrap();
    let out = dir.join("hello-x86_64.img");
    let staged = stage(&spec, &layout, &out).unwrap();
    let signed = manifest::seal(&staged, facts(), key, "hello-x86_64.manifest.json", 1).unwrap();
    staged.persist().unwrap();
    signed.write_beside(&out).unwrap();
    out
}

fn flip(image: &Path, at: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x20], at).unwrap();
}

#[test]
fn plan_places_partitions_on_mib_boundaries_in_role_order_with_a_free_mib_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let l = plan(&spec(dir.path())).unwrap();
    let offsets: Vec<u64> = l.partitions.iter().map(|p| p.offset / MIB).collect();
    assert_eq!(offsets, [1, 3, 5, 7, 8]);
    assert_eq!(l.disk_size, 11 * MIB);
    assert_eq!(l.partitions.last().map(|p| p.role), Some(Role::Data));
    let attrs = |r| l.partition(r).unwrap().attributes;
    assert_eq!(attrs(Role::PayloadA), ATTR_READ_ONLY);
    assert_eq!(attrs(Role::Data), ATTR_GROW_FS);
    assert_eq!(attrs(Role::Esp), 0);

    let mut s = spec(dir.path());
    s.total_size = Some(16 * MIB);
    assert_eq!(plan(&s).unwrap().disk_size, 16 * MIB);
}

#[test]
fn regions_cut_the_whole_disk_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let l = plan(&spec(dir.path())).unwrap();
    let regions = l.regions();
    let mut at = 0;
    for r in &regions {
        assert_eq!(r.offset, at, "{}", r.name);
        at += r.size;
    }
    assert_eq!(at, l.disk_size);
    let names: Vec<&str> = regions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "protective-mbr",
            "primary-gpt-header",
            "primary-gpt-table",
            "gap-after-primary-gpt-table",
            "esp",
            "payload-a",
            "payload-b",
            "manifest",
            "data",
            "gap-after-data",
            "backup-gpt-table",
            "backup-gpt-header",
        ]
    );
}

#[test]
fn plan_refuses_bad_specs_naming_the_partition() {
    let dir = tempfile::tempdir().unwrap();
    let err = |f: &dyn Fn(&mut DiskSpec)| {
        let mut s = spec(dir.path());
        f(&mut s);
        plan(&s).unwrap_err().to_string()
    };
    let e = err(&|s| s.partitions.swap(1, 2));
    assert!(
        e.contains("esp, payload-a, payload-b, manifest, data"),
        "{e}"
    );
    let e = err(&|s| s.partitions[0].size = MIB + 512);
    assert!(e.starts_with("esp: size"), "{e}");
    let e = err(&|s| s.partitions[0].content = Content::Bytes(vec![1; 3 << 20]));
    assert!(e.starts_with("esp: its content"), "{e}");
    let e = err(&|s| s.partitions[1].size = 4 * MIB);
    assert!(e.contains("payload-b must be the same size"), "{e}");
    let e = err(&|s| s.partitions[3].guid = Guid::from_be_bytes([0; 16]));
    assert!(e.starts_with("manifest: the GUID is nil"), "{e}");
    let e = err(&|s| s.partitions[4].guid = s.disk_guid);
    assert!(e.contains("the disk and data have the same GUID"), "{e}");
    let e = err(&|s| s.total_size = Some(10 * MIB));
    assert!(e.contains("smaller than"), "{e}");
    let e = err(&|s| s.total_size = Some(20 * MIB + 512));
    assert!(e.contains("whole number of MiB"), "{e}");
}

#[test]
fn written_image_is_clean_for_sgdisk_reopens_to_its_layout_and_is_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let image = build(dir.path(), &key);
    let out = tool("sgdisk", "gdisk")
        .arg("-v")
        .arg(&image)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("No problems found"),
        "{text}"
    );
    let printed = tool("sgdisk", "gdisk")
        .arg("-p")
        .arg(&image)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(
        printed.contains("payload-a") && printed.contains(&guid(1).to_string().to_uppercase()),
        "{printed}"
    );

    assert_eq!(
        read_layout(&image).unwrap(),
        plan(&spec(dir.path())).unwrap()
    );
    let meta = std::fs::metadata(&image).unwrap();
    assert_eq!(meta.len(), 11 * MIB);
    assert!(
        meta.blocks() * 512 < 4 * MIB,
        "{} blocks allocated",
        meta.blocks()
    );
    let mut content = vec![0u8; 300_000];
    std::fs::File::open(&image)
        .unwrap()
        .read_exact_at(&mut content, MIB)
        .unwrap();
    assert_eq!(content, pattern(300_000, 3));
}

#[test]
fn a_larger_total_size_leaves_free_space_after_data_and_stays_clean() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path());
    s.total_size = Some(64 * MIB);
    let layout = plan(&s).unwrap();
    let image = dir.path().join("big.img");
    write(&s, &layout, &image).unwrap();
    let out = tool("sgdisk", "gdisk")
        .arg("-v")
        .arg(&image)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("No problems found"), "{text}");
    assert_eq!(read_layout(&image).unwrap(), layout);
    let regions = layout.regions();
    let gap = regions.iter().find(|r| r.name == "gap-after-data").unwrap();
    assert_eq!(gap.offset, 10 * MIB);
}

#[test]
fn two_builds_in_different_directories_are_bit_identical() {
    let key = SecretKey::generate().unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ia, ib) = (build(a.path(), &key), build(b.path(), &key));
    assert!(std::fs::read(&ia).unwrap() == std::fs::read(&ib).unwrap());
    let (ja, sa) = manifest::detached_paths(&ia);
    let (jb, sb) = manifest::detached_paths(&ib);
    assert_eq!(std::fs::read(ja).unwrap(), std::fs::read(jb).unwrap());
    assert_eq!(std::fs::read(sa).unwrap(), std::fs::read(sb).unwrap());
}

#[test]
fn minisign_verifies_the_manifest_written_beside_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let image = build(dir.path(), &key);
    let public = dir.path().join("key.pub");
    std::fs::write(&public, key.public_key().to_minisign()).unwrap();
    let (json, _) = manifest::detached_paths(&image);
    assert_eq!(json, dir.path().join("hello-x86_64.manifest.json"));
    let out = tool("minisign", "minisign")
        .arg("-Vm")
        .arg(&json)
        .arg("-p")
        .arg(&public)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(
        text.contains("\"uki_sha256\"") && text.contains("\"gap-after-data\""),
        "{text}"
    );
}

#[test]
fn verify_accepts_the_image_and_a_flipped_byte_inside_the_data_contents() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let image = build(dir.path(), &key);
    let v = verify(&image, &key.public_key()).unwrap();
    assert_eq!(v.manifest.name, "hello");
    assert_eq!(v.key_id, key.id());
    flip(&image, 8 * MIB + 5);
    flip(&image, 10 * MIB - 1);
    verify(&image, &key.public_key()).unwrap();
}

#[test]
fn verify_names_the_first_part_that_differs_for_a_flipped_byte_in_each_covered_part() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let pristine = build(dir.path(), &key);
    let layout = read_layout(&pristine).unwrap();
    let mut cases: Vec<(String, u64)> = layout
        .regions()
        .iter()
        .filter(|r| r.kind != RegionKind::Partition(Role::Data))
        .map(|r| (r.name.clone(), r.offset + r.size / 2))
        .collect();
    // Inside the structures' fields too, not only their padding: a header's first usable
    // LBA, the manifest partition's entry in each table.
    let backup_table = layout.backup_table_offset();
    cases.extend([
        ("primary-gpt-header".into(), 512 + 40),
        ("backup-gpt-header".into(), 11 * MIB - 512 + 40),
        ("primary-gpt-table".into(), 1024 + 3 * 128 + 20),
        ("backup-gpt-table".into(), backup_table + 3 * 128 + 20),
        ("protective-mbr".into(), 446 + 4),
        ("esp".into(), MIB),
    ]);
    for (name, at) in cases {
        let image = dir.path().join("tampered.img");
        std::fs::copy(&pristine, &image).unwrap();
        flip(&image, at);
        let e = verify(&image, &key.public_key()).unwrap_err();
        let msg = e.to_string();
        match &e {
            VerifyError::Differs { region, .. } => assert_eq!(region, &name, "{msg}"),
            _ => panic!("flipping byte {at} ({name}): {msg}"),
        }
        assert!(msg.contains(&format!("{name}: ")), "{msg}");
    }
}

#[test]
fn tampered_manifest_wrong_key_and_unsigned_images_fail_distinctly() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let pristine = build(dir.path(), &key);
    let layout = read_layout(&pristine).unwrap();
    let m = layout.partition(Role::Manifest).unwrap().offset;
    let part = manifest::read_from_image(&pristine).unwrap().1;
    let find = |needle: &[u8]| {
        m + part
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap() as u64
    };
    let copy = || {
        let image = dir.path().join("t.img");
        std::fs::copy(&pristine, &image).unwrap();
        image
    };

    let other = SecretKey::generate().unwrap();
    let e = verify(&pristine, &other.public_key()).unwrap_err();
    assert!(matches!(e, VerifyError::WrongKey { .. }), "{e}");
    assert!(e.to_string().contains("wrong key"), "{e}");

    let image = copy();
    flip(&image, find(b"\"hello\""));
    let e = verify(&image, &key.public_key()).unwrap_err();
    assert!(matches!(e, VerifyError::BadSignature { .. }), "{e}");
    assert!(e.to_string().contains("manifest: "), "{e}");

    let image = copy();
    flip(&image, find(b"untrusted comment: signature") + 20);
    let e = verify(&image, &key.public_key()).unwrap_err();
    assert!(matches!(e, VerifyError::SignatureForm { .. }), "{e}");

    let image = copy();
    flip(&image, find(b"trusted comment: timestamp") + 20);
    let e = verify(&image, &key.public_key()).unwrap_err();
    assert!(matches!(e, VerifyError::BadTrustedComment { .. }), "{e}");

    let image = copy();
    flip(&image, m + 2);
    let e = verify(&image, &key.public_key()).unwrap_err();
    assert!(matches!(e, VerifyError::Frame { .. }), "{e}");

    let image = copy();
    write_partition(&image, &layout, Role::Manifest, &[]).unwrap();
    let e = verify(&image, &key.public_key()).unwrap_err();
    assert!(matches!(e, VerifyError::Unsigned { .. }), "{e}");
    assert!(e.to_string().contains("unsigned"), "{e}");

    let public: PublicKey = key.public_key();
    let unsigned = manifest::SignedManifest {
        json: b"{}".to_vec(),
        minisig: None,
    };
    write_partition(&image, &layout, Role::Manifest, &unsigned.frame()).unwrap();
    let e = verify(&image, &public).unwrap_err();
    assert!(matches!(e, VerifyError::Unsigned { .. }), "{e}");
}

#[test]
fn content_larger_than_its_partition_fails_when_writing_too_naming_the_role() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path());
    let layout = plan(&s).unwrap();
    // The payload file grows between planning and writing.
    std::fs::write(dir.path().join("payload.erofs"), vec![1u8; 3 << 20]).unwrap();
    let e = write(&s, &layout, &dir.path().join("x.img"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("payload-a: its content"), "{e}");
    assert!(!dir.path().join("x.img").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".disk-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn verify_command_reads_the_key_file_and_checks_the_copies_beside_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let image = build(dir.path(), &key);
    let public = dir.path().join("key.pub");
    std::fs::write(&public, key.public_key().to_minisign()).unwrap();
    crate::verify_cmd::run(&image, &public).unwrap();

    let (json, _) = manifest::detached_paths(&image);
    std::fs::write(&json, b"{}\n").unwrap();
    let e = crate::verify_cmd::run(&image, &public).unwrap_err();
    assert!(
        format!("{e:#}").contains("differs from the manifest inside it"),
        "{e:#}"
    );

    std::fs::write(&public, "not a key\n").unwrap();
    let e = crate::verify_cmd::run(&image, &public).unwrap_err();
    assert!(format!("{e:#}").contains("reading the public key"), "{e:#}");
}

#[test]
fn an_enlarged_image_fails_verify_on_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let image = build(dir.path(), &key);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap();
    f.set_len(16 * MIB).unwrap();
    let e = verify(&image, &key.public_key()).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::Disk {
                what: "disk size",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn a_flipped_byte_deep_in_the_free_space_of_a_large_sparse_disk_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let mut s = spec(dir.path());
    s.total_size = Some(4 << 30);
    let layout = plan(&s).unwrap();
    let image = dir.path().join("big.img");
    let staged = stage(&s, &layout, &image).unwrap();
    manifest::seal(&staged, facts(), &key, "big.manifest.json", 1).unwrap();
    staged.persist().unwrap();
    let started = std::time::Instant::now();
    verify(&image, &key.public_key()).unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "holes are read: {:?}",
        started.elapsed()
    );
    flip(&image, 3 << 30);
    let e = verify(&image, &key.public_key()).unwrap_err();
    assert!(
        matches!(&e, VerifyError::Differs { region, .. } if region == "gap-after-data"),
        "{e}"
    );
}

#[test]
fn inspect_reads_what_the_image_carries_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let image = build(dir.path(), &key);
    let e = manifest::read_embedded(&image).unwrap();
    assert_eq!(e.layout, plan(&spec(dir.path())).unwrap());
    assert_eq!(e.manifest.cmdline, "console=ttyS0");
    let labels: Vec<&str> = e
        .manifest
        .partitions()
        .map(|(_, p)| p.label.as_str())
        .collect();
    assert_eq!(
        labels,
        ["esp", "payload-a", "payload-b", "manifest", "data"]
    );
    let sig = e.signed.signature().unwrap().unwrap();
    assert_eq!(sig.key_id, key.id());
}

/// Rewrites the GPT header at `lba` with `edit` applied and a valid checksum.
fn forge_header(image: &Path, lba: u64, edit: impl Fn(&mut [u8])) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .unwrap();
    let mut h = [0u8; 92];
    f.read_exact_at(&mut h, lba * 512).unwrap();
    edit(&mut h);
    h[16..20].fill(0);
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&h);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    f.write_all_at(&h, lba * 512).unwrap();
}

#[test]
fn reading_a_hostile_or_foreign_gpt_is_an_error_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("x.img");
    let s = spec(dir.path());
    write(&s, &plan(&s).unwrap(), &image).unwrap();
    let last = 11 * MIB / 512 - 1;
    let copy = |name: &str| {
        let p = dir.path().join(name);
        std::fs::copy(&image, &p).unwrap();
        p
    };

    // Entry sizes the gpt crate asserts on, and a table size it would allocate whole.
    let p = copy("entry-size.img");
    for lba in [1, last] {
        forge_header(&p, lba, |h| {
            h[84..88].copy_from_slice(&256u32.to_le_bytes())
        });
    }
    let e = read_layout(&p).unwrap_err().to_string();
    assert!(e.contains("entries of 256 bytes"), "{e}");
    let p = copy("entries.img");
    for lba in [1, last] {
        forge_header(&p, lba, |h| {
            h[80..84].copy_from_slice(&u32::MAX.to_le_bytes())
        });
    }
    let e = read_layout(&p).unwrap_err().to_string();
    assert!(e.contains("a table of 4294967295 entries"), "{e}");

    // One damaged header: the other one is used.
    let p = copy("one.img");
    forge_header(&p, 1, |h| h[84..88].copy_from_slice(&8u32.to_le_bytes()));
    assert_eq!(read_layout(&p).unwrap(), plan(&s).unwrap());

    // Not a GPT at all, and too small.
    let p = dir.path().join("zeros.img");
    std::fs::write(&p, vec![0u8; 4 << 20]).unwrap();
    let e = read_layout(&p).unwrap_err().to_string();
    assert!(e.contains("no \"EFI PART\" signature"), "{e}");
    std::fs::write(&p, b"tiny").unwrap();
    assert!(read_layout(&p).is_err());
}

#[test]
fn a_gpt_of_someone_elses_partitions_is_refused_naming_the_partition() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("foreign.img");
    std::fs::write(&image, vec![0u8; 8 << 20]).unwrap();
    let out = tool("sgdisk", "gdisk")
        .args(["-n", "1:2048:+2M", "-c", "1:root", "-t", "1:8300"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = read_layout(&image).unwrap_err().to_string();
    assert!(e.contains("partition 1 is named \"root\""), "{e}");
}
