//! `unpack_verified`: the signature is checked over the raw bytes before anything parses
//! them, then the archive is unpacked and its manifest's name admitted; the tree reaches its
//! target only when both accept; otherwise the target is as it was and nothing is left beside
//! it.

mod common;

use std::io::Cursor;

use aci::archive::{self, ArchiveError, UnpackOptions, VerifiedUnpackError};
use aci::sign::{KeyVerifier, SecretKey};
use aci::trust::{InsecureOptions, TrustError, TrustScope, TrustStore, Verified};
use common::{RawTar, assert_nothing_outside, sandbox};

fn image() -> Vec<u8> {
    let mut t = RawTar::aci();
    t.dir("rootfs/etc/").file("rootfs/etc/hello", b"hello\n");
    t.finish()
}

/// A trust directory outside the sandbox that trusts a new key for every image.
fn trusted() -> (tempfile::TempDir, TrustStore, SecretKey) {
    let dir = tempfile::tempdir().unwrap();
    let store = TrustStore::new(dir.path().join("trust"));
    let key = SecretKey::generate().unwrap();
    store.add(&TrustScope::Root, &key.public_key()).unwrap();
    (dir, store, key)
}

fn minisig(key: &SecretKey, data: &[u8], legacy: bool) -> Vec<u8> {
    let sig = if legacy {
        key.sign_legacy(data, "t").unwrap()
    } else {
        key.sign(data, "t").unwrap()
    };
    sig.to_minisign().into_bytes()
}

/// Checks `aci` against `store` (as image `name`, or unnamed) with the `.minisig` bytes `sig`,
/// unpacking it to `target` if it passes.
fn extract(
    store: &TrustStore,
    name: Option<&str>,
    sig: &[u8],
    aci: &[u8],
    target: &std::path::Path,
) -> Result<archive::VerifiedUnpack<Verified>, VerifiedUnpackError<TrustError>> {
    let verifier = store
        .stream_verifier(name, "test.aci", Some(sig), InsecureOptions::default())
        .map_err(VerifiedUnpackError::Verify)?;
    archive::unpack_verified(
        Cursor::new(aci),
        target,
        &UnpackOptions::extract(),
        verifier,
    )
}

#[test]
fn places_the_tree_once_the_trust_store_accepts_the_signature() {
    let (_t, store, key) = trusted();
    let (sb, target) = sandbox();
    for legacy in [false, true] {
        let aci = image();
        let sig = minisig(&key, &aci, legacy);
        let done = extract(&store, None, &sig, &aci, &target).unwrap();
        assert_eq!(done.summary.manifest.name, "example.com/test");
        assert!(matches!(done.verified, Verified::Signed { key: k, .. } if k == key.id()));
        assert_eq!(
            std::fs::read(target.join("rootfs/etc/hello")).unwrap(),
            b"hello\n"
        );
        assert_nothing_outside(sb.path());
        std::fs::remove_dir_all(&target).unwrap();
    }
}

#[test]
fn a_bad_signature_leaves_an_empty_target_empty() {
    let (_t, store, key) = trusted();
    let (sb, target) = sandbox();
    std::fs::create_dir(&target).unwrap();
    for legacy in [false, true] {
        let aci = image();
        let sig = minisig(&key, b"other bytes", legacy);
        let err = extract(&store, None, &sig, &aci, &target).unwrap_err();
        assert!(
            matches!(
                err,
                VerifiedUnpackError::Verify(TrustError::BadSignature { .. })
            ),
            "{err:?}"
        );
        assert_eq!(common::tree(&target), Vec::<String>::new());
        assert_nothing_outside(sb.path());
    }
}

#[test]
fn a_signed_hostile_archive_is_still_refused() {
    let (_t, store, key) = trusted();
    let (sb, target) = sandbox();
    let mut t = RawTar::aci();
    t.symlink("rootfs/esc", "../../decoy");
    let aci = t.finish();
    let sig = minisig(&key, &aci, false);
    let err = extract(&store, Some("example.com/test"), &sig, &aci, &target).unwrap_err();
    assert!(
        matches!(
            err,
            VerifiedUnpackError::Archive(ArchiveError::SymlinkEscape { .. })
        ),
        "{err:?}"
    );
    assert!(!target.exists());
    assert_nothing_outside(sb.path());
}

#[test]
fn with_the_name_given_an_untrusted_image_is_refused_before_it_is_read() {
    let (_t, store, _key) = trusted();
    let stranger = SecretKey::generate().unwrap();
    let sig = minisig(&stranger, &image(), false);
    let err = store
        .stream_verifier(
            Some("example.com/test"),
            "test.aci",
            Some(&sig),
            InsecureOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(err, TrustError::UntrustedKey { key, .. } if key == stranger.id()));
    let err = store
        .stream_verifier(
            Some("example.com/test"),
            "test.aci",
            None,
            InsecureOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(err, TrustError::Unsigned { .. }));
}

#[test]
fn one_key_check_refuses_a_changed_byte() {
    let key = SecretKey::generate().unwrap();
    let (sb, target) = sandbox();
    let aci = image();
    let sig = key.sign(&aci, "t").unwrap();
    let mut bad = aci.clone();
    // Inside the file's data, so the archive itself still reads.
    let at = bad.windows(6).position(|w| w == b"hello\n").unwrap();
    bad[at] = b'j';
    let err = archive::unpack_verified(
        Cursor::new(bad),
        &target,
        &UnpackOptions::extract(),
        KeyVerifier::new(key.public_key(), sig.clone()),
    )
    .unwrap_err();
    assert!(matches!(err, VerifiedUnpackError::Verify(_)), "{err:?}");
    assert!(!target.exists());
    assert_nothing_outside(sb.path());
    archive::unpack_verified(
        Cursor::new(aci),
        &target,
        &UnpackOptions::extract(),
        KeyVerifier::new(key.public_key(), sig),
    )
    .unwrap();
    assert!(target.join("rootfs/etc/hello").is_file());
}

#[test]
fn refuses_a_target_that_is_not_empty() {
    let (_t, store, key) = trusted();
    let (_sb, target) = sandbox();
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    let aci = image();
    let sig = minisig(&key, &aci, false);
    let err = extract(&store, None, &sig, &aci, &target).unwrap_err();
    assert!(
        matches!(
            err,
            VerifiedUnpackError::Archive(ArchiveError::TargetNotEmpty { .. })
        ),
        "{err:?}"
    );
    assert_eq!(common::tree(&target), ["keep"]);
}

/// 3 GiB of zeros in about 100 KB: under the 4 GiB entry limit, so only the order of the
/// checks can refuse it quickly.
const BOMB_ZEROS: u64 = 3 << 30;

#[test]
fn a_zstd_bomb_under_a_copied_signature_is_refused_before_anything_decompresses_it() {
    let (_t, store, key) = trusted();
    let (sb, target) = sandbox();
    let bomb = common::bomb::zstd_zeros_aci(BOMB_ZEROS);
    assert!(bomb.len() < 256 << 10, "{} bytes", bomb.len());
    common::bomb::assert_is_a_real_bomb(&bomb);
    for legacy in [false, true] {
        // A real signature by the trusted key, copied from another image.
        let sig = minisig(&key, &image(), legacy);
        for name in [None, Some("example.com/test")] {
            let started = std::time::Instant::now();
            let err = extract(&store, name, &sig, &bomb, &target).unwrap_err();
            let took = started.elapsed();
            assert!(
                matches!(
                    err,
                    VerifiedUnpackError::Verify(TrustError::BadSignature { .. })
                ),
                "{err:?}"
            );
            // Decompressing and hashing 3 GiB takes seconds even in release builds; the
            // signature over 100 KB takes milliseconds.
            assert!(
                took < std::time::Duration::from_secs(1),
                "legacy {legacy}, name {name:?}: {took:?}"
            );
            assert!(!target.exists());
            assert_nothing_outside(sb.path());
        }
    }
}

#[test]
fn one_key_check_refuses_a_bomb_under_a_copied_signature_at_once() {
    let key = SecretKey::generate().unwrap();
    let (sb, target) = sandbox();
    let bomb = common::bomb::zstd_zeros_aci(BOMB_ZEROS);
    let sig = key.sign(&image(), "t").unwrap();
    let started = std::time::Instant::now();
    let err = archive::unpack_verified(
        Cursor::new(&bomb),
        &target,
        &UnpackOptions::extract(),
        KeyVerifier::new(key.public_key(), sig),
    )
    .unwrap_err();
    assert!(matches!(err, VerifiedUnpackError::Verify(_)), "{err:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    assert!(!target.exists());
    assert_nothing_outside(sb.path());
}

/// A trust directory that trusts a new key only for names under `prefix`.
fn trusted_for(prefix: &str) -> (tempfile::TempDir, TrustStore, SecretKey) {
    let dir = tempfile::tempdir().unwrap();
    let store = TrustStore::new(dir.path().join("trust"));
    let key = SecretKey::generate().unwrap();
    store
        .add(&TrustScope::Prefix(prefix.into()), &key.public_key())
        .unwrap();
    (dir, store, key)
}

#[test]
fn without_a_name_the_key_is_found_under_its_prefix_and_must_cover_the_manifest_name() {
    let (sb, target) = sandbox();
    let aci = image();
    // Trusted for example.com: admits the manifest's example.com/test.
    let (_t, store, key) = trusted_for("example.com");
    let sig = minisig(&key, &aci, false);
    let verifier = store
        .stream_verifier(None, "test.aci", Some(&sig), InsecureOptions::default())
        .unwrap();
    let done = archive::unpack_verified(
        Cursor::new(aci.clone()),
        &target,
        &UnpackOptions::extract(),
        verifier,
    )
    .unwrap();
    assert!(matches!(
        done.verified,
        Verified::Signed { scope: TrustScope::Prefix(ref p), .. } if p == "example.com"
    ));
    std::fs::remove_dir_all(&target).unwrap();

    // Trusted only for other.org: the signature verifies, the name is refused, nothing placed.
    let (_t2, store, key) = trusted_for("other.org");
    let sig = minisig(&key, &aci, false);
    let err = extract(&store, None, &sig, &aci, &target).unwrap_err();
    match err {
        VerifiedUnpackError::Verify(TrustError::KeyNotTrustedForImage {
            image, prefixes, ..
        }) => {
            assert_eq!(image, "example.com/test");
            assert_eq!(prefixes, ["prefix other.org"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(!target.exists());
    assert_nothing_outside(sb.path());
}

#[test]
fn with_a_name_given_the_manifest_must_carry_that_name() {
    let (_t, store, key) = trusted_for("example.com");
    let (sb, target) = sandbox();
    let aci = image();
    let sig = minisig(&key, &aci, false);
    let err = extract(&store, Some("example.com/other"), &sig, &aci, &target).unwrap_err();
    assert!(
        matches!(
            &err,
            VerifiedUnpackError::Verify(TrustError::NameMismatch { expected, manifest })
                if expected == "example.com/other" && manifest == "example.com/test"
        ),
        "{err:?}"
    );
    assert!(!target.exists());
    assert_nothing_outside(sb.path());
}
