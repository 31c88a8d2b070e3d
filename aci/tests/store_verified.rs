//! `Store::insert_verified`: an image from a signed source is stored only after its signature
//! verified over the raw bytes, and only under a name the signing key is trusted for; a
//! refusal leaves nothing in the store, and a bomb under a copied signature is refused before
//! anything decompresses it.

mod common;

use aci::sign::SecretKey;
use aci::store::{InsertVerifiedError, Store};
use aci::trust::{InsecureOptions, TrustError, TrustScope, TrustStore, Verified};
use common::RawTar;

fn image() -> Vec<u8> {
    let mut t = RawTar::aci();
    t.dir("rootfs/etc/").file("rootfs/etc/hello", b"hello\n");
    t.finish()
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    trust: TrustStore,
    key: SecretKey,
}

fn fixture(scope: TrustScope) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let trust = TrustStore::new(dir.path().join("trust"));
    let key = SecretKey::generate().unwrap();
    trust.add(&scope, &key.public_key()).unwrap();
    Fixture {
        _dir: dir,
        store,
        trust,
        key,
    }
}

/// Every entry under the store's images/ and trees/, temp files included.
fn entries(store: &Store) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["images", "trees"] {
        for e in std::fs::read_dir(store.root().join(sub)).unwrap() {
            out.push(e.unwrap().file_name().to_string_lossy().into_owned());
        }
    }
    out
}

fn insert(
    f: &Fixture,
    data: &[u8],
    sig: Option<&[u8]>,
    name: Option<&str>,
) -> Result<aci::store::InsertedVerified, InsertVerifiedError> {
    f.store.insert_verified(
        data,
        "test.aci",
        sig,
        &f.trust,
        name,
        InsecureOptions::default(),
    )
}

#[test]
fn stores_an_image_whose_signature_verifies_with_and_without_a_name() {
    let f = fixture(TrustScope::Prefix("example.com".into()));
    let aci = image();
    for legacy in [false, true] {
        let sig = if legacy {
            f.key.sign_legacy(&aci, "t").unwrap()
        } else {
            f.key.sign(&aci, "t").unwrap()
        };
        let sig = sig.to_minisign();
        for name in [None, Some("example.com/test")] {
            let got = insert(&f, &aci, Some(sig.as_bytes()), name).unwrap();
            assert_eq!(got.record.name, "example.com/test");
            assert!(
                matches!(got.verified, Verified::Signed { key, .. } if key == f.key.id()),
                "{:?}",
                got.verified
            );
            assert_eq!(
                std::fs::read(f.store.blob_path(&got.record.id)).unwrap(),
                aci
            );
        }
    }
}

#[test]
fn refuses_a_bomb_under_a_copied_signature_before_decompressing_it() {
    let f = fixture(TrustScope::Root);
    let bomb = common::bomb::zstd_zeros_aci(3 << 30);
    common::bomb::assert_is_a_real_bomb(&bomb);
    let sig = f.key.sign(&image(), "t").unwrap().to_minisign();
    let started = std::time::Instant::now();
    let err = insert(&f, &bomb, Some(sig.as_bytes()), None).unwrap_err();
    assert!(
        matches!(
            err,
            InsertVerifiedError::Trust(TrustError::BadSignature { .. })
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    assert_eq!(entries(&f.store), Vec::<String>::new());
}

#[test]
fn refuses_a_manifest_name_outside_the_keys_prefix_and_stores_nothing() {
    let f = fixture(TrustScope::Prefix("other.org".into()));
    let aci = image();
    let sig = f.key.sign(&aci, "t").unwrap().to_minisign();
    let err = insert(&f, &aci, Some(sig.as_bytes()), None).unwrap_err();
    assert!(
        matches!(
            &err,
            InsertVerifiedError::Trust(TrustError::KeyNotTrustedForImage { image, .. })
                if image == "example.com/test"
        ),
        "{err:?}"
    );
    // Named, the key is refused before a byte is read.
    let err = insert(&f, &aci, Some(sig.as_bytes()), Some("example.com/test")).unwrap_err();
    assert!(
        matches!(
            err,
            InsertVerifiedError::Trust(TrustError::KeyNotTrustedForImage { .. })
        ),
        "{err:?}"
    );
    assert_eq!(entries(&f.store), Vec::<String>::new());
}

#[test]
fn refuses_a_manifest_that_names_another_image_than_asked() {
    let f = fixture(TrustScope::Prefix("example.com".into()));
    let aci = image();
    let sig = f.key.sign(&aci, "t").unwrap().to_minisign();
    let err = insert(&f, &aci, Some(sig.as_bytes()), Some("example.com/other")).unwrap_err();
    assert!(
        matches!(
            err,
            InsertVerifiedError::Trust(TrustError::NameMismatch { .. })
        ),
        "{err:?}"
    );
    assert_eq!(entries(&f.store), Vec::<String>::new());
}

#[test]
fn refuses_unsigned_images_unless_allowed() {
    let f = fixture(TrustScope::Root);
    let aci = image();
    let err = insert(&f, &aci, None, None).unwrap_err();
    assert!(
        matches!(err, InsertVerifiedError::Trust(TrustError::Unsigned { .. })),
        "{err:?}"
    );
    assert_eq!(entries(&f.store), Vec::<String>::new());
    let got = f
        .store
        .insert_verified(
            &aci[..],
            "test.aci",
            None,
            &f.trust,
            None,
            InsecureOptions {
                allow_unsigned: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(got.verified, Verified::UnsignedAllowed);
}
