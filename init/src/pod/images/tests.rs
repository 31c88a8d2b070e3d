//! `Images` against a real store in a temp directory, with real ACIs written by `aci`'s writer
//! and signed with keys made here: every refusal reason, the store hit on a later call, the
//! power-cut leftovers, and dependency rendering in appc order.

use std::fs;
use std::path::PathBuf;

use aci::archive::{ImageId, WriteOptions, write_aci};
use aci::sign::SecretKey;
use aci::trust::{TrustScope, TrustStore};
use hostdecl::plan::EmbeddedImage;

use super::*;

/// Who signs an embedded image.
enum By<'a> {
    /// The fixture's key, the one the trust store holds.
    Trusted,
    Key(&'a SecretKey),
    Nobody,
}

struct Fixture {
    _dir: tempfile::TempDir,
    paths: ImagePaths,
    key: SecretKey,
    embedded: Vec<EmbeddedImage>,
}

fn fixture(scope: TrustScope) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let paths = ImagePaths {
        store: dir.path().join("var/lib/hostos/store"),
        trust: dir.path().join("etc/hostos/trust"),
        payload: dir.path().join("payload"),
    };
    fs::create_dir_all(paths.payload.join("images")).unwrap();
    let key = SecretKey::generate().unwrap();
    TrustStore::new(&paths.trust)
        .add(&scope, &key.public_key())
        .unwrap();
    Fixture {
        _dir: dir,
        paths,
        key,
        embedded: Vec::new(),
    }
}

fn manifest(name: &str, version: &str, extra: &str) -> String {
    format!(
        r#"{{"acKind":"ImageManifest","acVersion":"0.8.11","name":"{name}","labels":[{{"name":"version","value":"{version}"}},{{"name":"os","value":"linux"}}]{extra}}}"#
    )
}

/// An ACI with `manifest` and these regular files under rootfs/, and its Image ID.
fn aci(manifest: &str, files: &[(&str, &str)]) -> (Vec<u8>, ImageId) {
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("manifest"), manifest).unwrap();
    let rootfs = src.path().join("rootfs");
    fs::create_dir(&rootfs).unwrap();
    for (path, content) in files {
        let p = rootfs.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    let mut out = Vec::new();
    let id = write_aci(src.path(), &mut out, &WriteOptions::default()).unwrap();
    (out, id)
}

impl Fixture {
    /// Puts `bytes` into the payload as `images/<file>`, signed by `signer` (none: no
    /// `.minisig`), and lists it in the plan as `name` with ID `id`.
    fn embed(&mut self, file: &str, bytes: &[u8], signer: By<'_>, name: &str, id: &str) {
        let rel = format!("images/{file}");
        fs::write(self.paths.payload.join(&rel), bytes).unwrap();
        let key = match signer {
            By::Trusted => Some(&self.key),
            By::Key(k) => Some(k),
            By::Nobody => None,
        };
        if let Some(key) = key {
            let sig = key.sign(bytes, "test").unwrap().to_minisign();
            fs::write(self.paths.payload.join(format!("{rel}.minisig")), sig).unwrap();
        }
        self.embedded.push(EmbeddedImage {
            file: rel.clone(),
            signature: format!("{rel}.minisig"),
            id: id.to_string(),
            name: name.to_string(),
        });
    }

    /// A signed `example.com/app` image with one file, embedded; returns its ID.
    fn embed_app(&mut self) -> ImageId {
        let (bytes, id) = aci(
            &manifest("example.com/app", "1.0", ""),
            &[("etc/hello", "hi\n")],
        );
        self.embed(
            "app.aci",
            &bytes,
            By::Trusted,
            "example.com/app",
            id.as_str(),
        );
        id
    }

    fn images(&self) -> Images {
        Images::open(&self.paths, self.embedded.clone()).unwrap()
    }

    fn file(&self, rel: &str) -> PathBuf {
        self.paths.payload.join(rel)
    }

    /// Every entry of the store's images/ and trees/ (temps included).
    fn store_entries(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["images", "trees"] {
            for e in fs::read_dir(self.paths.store.join(sub)).unwrap() {
                out.push(e.unwrap().file_name().to_string_lossy().into_owned());
            }
        }
        out
    }

    /// Prepares `id`, expecting a refusal that leaves the store empty.
    fn refused(&self, id: &ImageId) -> ImageError {
        let err = self.images().prepare(id).unwrap_err();
        assert_eq!(self.store_entries(), Vec::<String>::new(), "{err}");
        err
    }
}

fn chain(err: &ImageError) -> String {
    crate::fatal::chain(err)
}

#[test]
fn embedded_image_is_verified_imported_and_rendered() {
    let mut f = fixture(TrustScope::Prefix("example.com".into()));
    let id = f.embed_app();
    let ready = f.images().prepare(&id).unwrap();
    assert_eq!(ready.id, id);
    assert_eq!(ready.manifest.name.as_str(), "example.com/app");
    assert_eq!(
        fs::read_to_string(ready.rootfs.join("etc/hello")).unwrap(),
        "hi\n"
    );
    assert!(ready.rootfs.starts_with(&f.paths.store));
    assert_eq!(ready.layers, vec![id.clone()]);
    assert_eq!(ready.reports.len(), 1);
    assert_eq!(
        ready.reports[0].to_string(),
        format!(
            "image {} (example.com/app) verified with key {} from {}",
            id12(id.as_str()),
            f.key.id(),
            f.file("images/app.aci").display()
        )
    );
}

#[test]
fn a_later_call_finds_the_image_in_the_store_without_the_payload() {
    let mut f = fixture(TrustScope::Root);
    let id = f.embed_app();
    let first = f.images().prepare(&id).unwrap();
    // A later boot: the same store, the payload file gone (so it cannot have been re-read).
    fs::remove_file(f.file("images/app.aci")).unwrap();
    let again = f.images().prepare(&id).unwrap();
    assert_eq!(again.rootfs, first.rootfs);
    assert_eq!(
        again.reports[0].to_string(),
        format!(
            "image {} (example.com/app) found in the store",
            id12(id.as_str())
        )
    );
    assert_eq!(again.reports[0].source, ImageSource::InStore);
    assert_eq!(
        fs::read_to_string(again.rootfs.join("etc/hello")).unwrap(),
        "hi\n"
    );
}

#[test]
fn refuses_an_unsigned_image() {
    let mut f = fixture(TrustScope::Root);
    let (bytes, id) = aci(&manifest("example.com/app", "1.0", ""), &[]);
    f.embed(
        "app.aci",
        &bytes,
        By::Nobody,
        "example.com/app",
        id.as_str(),
    );
    let err = f.refused(&id);
    assert!(matches!(err, ImageError::Unsigned { .. }), "{err:?}");
    let text = chain(&err);
    assert!(
        text.starts_with(&format!(
            "image {}: not signed",
            f.file("images/app.aci").display()
        )),
        "{text}"
    );
    assert!(text.contains("app.aci.minisig"), "{text}");
}

#[test]
fn refuses_an_image_signed_by_a_key_the_trust_store_does_not_hold() {
    let mut f = fixture(TrustScope::Root);
    let other = SecretKey::generate().unwrap();
    let (bytes, id) = aci(&manifest("example.com/app", "1.0", ""), &[]);
    f.embed(
        "app.aci",
        &bytes,
        By::Key(&other),
        "example.com/app",
        id.as_str(),
    );
    let err = f.refused(&id);
    assert!(
        matches!(err, ImageError::UntrustedKey { key, .. } if key == other.id()),
        "{err:?}"
    );
    assert_eq!(err.key(), Some(other.id()));
    let text = chain(&err);
    assert!(
        text.contains(&other.id().to_string()) && text.contains("app.aci"),
        "{text}"
    );
}

#[test]
fn refuses_a_key_trusted_only_for_another_prefix() {
    let mut f = fixture(TrustScope::Prefix("example.org".into()));
    let id = f.embed_app();
    let err = f.refused(&id);
    match &err {
        ImageError::KeyNotTrustedForName {
            key,
            name,
            prefixes,
            ..
        } => {
            assert_eq!(*key, f.key.id());
            assert_eq!(name, "example.com/app");
            assert_eq!(prefixes, &["example.org".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    let text = chain(&err);
    assert!(
        text.contains("trusted only for example.org, not for example.com/app"),
        "{text}"
    );
}

#[test]
fn refuses_a_tampered_image_before_parsing_it() {
    let mut f = fixture(TrustScope::Root);
    let id = f.embed_app();
    let path = f.file("images/app.aci");
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&path, bytes).unwrap();
    let err = f.refused(&id);
    assert!(
        matches!(err, ImageError::BadSignature { key, .. } if key == f.key.id()),
        "{err:?}"
    );
    // One sentence: the signature error under it would only say the same again.
    assert_eq!(
        chain(&err),
        format!(
            "image {}: the signature by key {} does not match the file (tampered or corrupt)",
            path.display(),
            f.key.id()
        )
    );
}

#[test]
fn the_signature_decides_before_the_archive_is_parsed() {
    // Garbage that no decompressor accepts: refused for its signature, not as an invalid ACI.
    let mut f = fixture(TrustScope::Root);
    let id = ImageId::parse_full(&format!("sha512-{}", "0".repeat(128))).unwrap();
    let garbage = vec![0x1f, 0x8b, 0xff, 0xff, 0x00, 0x42];
    let other = SecretKey::generate().unwrap();
    f.embed(
        "bad.aci",
        &garbage,
        By::Key(&other),
        "example.com/app",
        id.as_str(),
    );
    assert!(matches!(f.refused(&id), ImageError::UntrustedKey { .. }));
    // Signed by the trusted key, the same garbage reaches the parser, which refuses it.
    f.embedded.clear();
    f.embed(
        "bad.aci",
        &garbage,
        By::Trusted,
        "example.com/app",
        id.as_str(),
    );
    let err = f.refused(&id);
    assert!(matches!(err, ImageError::Invalid { .. }), "{err:?}");
    assert!(chain(&err).contains("not a valid ACI"), "{}", chain(&err));
}

#[test]
fn refuses_an_image_whose_id_differs_from_the_pin() {
    let mut f = fixture(TrustScope::Root);
    let (bytes, actual) = aci(&manifest("example.com/app", "1.0", ""), &[]);
    let (_, pinned) = aci(&manifest("example.com/app", "2.0", ""), &[]);
    f.embed(
        "app.aci",
        &bytes,
        By::Trusted,
        "example.com/app",
        pinned.as_str(),
    );
    let err = f.refused(&pinned);
    match &err {
        ImageError::IdMismatch {
            found, pin, key: k, ..
        } => {
            assert_eq!(found, actual.as_str());
            assert_eq!(pin, pinned.as_str());
            assert_eq!(*k, f.key.id());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn refuses_an_image_whose_manifest_names_another_image() {
    let mut f = fixture(TrustScope::Root);
    let (bytes, id) = aci(&manifest("example.com/other", "1.0", ""), &[]);
    f.embed(
        "app.aci",
        &bytes,
        By::Trusted,
        "example.com/app",
        id.as_str(),
    );
    let err = f.refused(&id);
    match &err {
        ImageError::NameMismatch {
            expected,
            found,
            key: k,
            ..
        } => {
            assert_eq!(expected, "example.com/app");
            assert_eq!(found, "example.com/other");
            assert_eq!(*k, f.key.id());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn refuses_an_image_neither_stored_nor_embedded() {
    let f = fixture(TrustScope::Root);
    let id = ImageId::parse_full(&format!("sha512-{}", "ab".repeat(64))).unwrap();
    let err = f.refused(&id);
    assert!(matches!(err, ImageError::NotAvailable { .. }), "{err:?}");
    assert!(
        chain(&err).starts_with("image sha512-abababababab: not in the store and not embedded"),
        "{}",
        chain(&err)
    );
}

#[test]
fn open_creates_the_store_and_removes_what_a_power_cut_left() {
    let mut f = fixture(TrustScope::Root);
    let id = f.embed_app();
    assert!(!f.paths.store.exists());
    f.images().prepare(&id).unwrap();
    // A power cut mid-import of something else: unlocked temps in both directories, and a
    // record whose blob never made it.
    let images_dir = f.paths.store.join("images");
    fs::write(images_dir.join(".tmp-1-0-0.aci"), b"half a blob").unwrap();
    fs::create_dir_all(f.paths.store.join("trees/.tmp-1-1-0/rootfs")).unwrap();
    let orphan = format!("sha512-{}.json", "cd".repeat(64));
    fs::write(images_dir.join(&orphan), b"{}").unwrap();
    let images = f.images();
    let left: Vec<String> = f
        .store_entries()
        .into_iter()
        .filter(|n| n.starts_with(".tmp-") || *n == orphan)
        .collect();
    assert_eq!(left, Vec::<String>::new());
    let again = images.prepare(&id).unwrap();
    assert_eq!(again.reports[0].source, ImageSource::InStore);
}

/// A base image and an app depending on it by name and labels, both embedded.
fn with_dependency(f: &mut Fixture, base_signer: By<'_>) -> (ImageId, ImageId) {
    let (base, base_id) = aci(
        &manifest("example.com/base", "1.0", ""),
        &[("bin/tool", "base tool\n"), ("etc/motd", "from base\n")],
    );
    let deps = r#","dependencies":[{"imageName":"example.com/base","labels":[{"name":"version","value":"1.0"}]}]"#;
    let (app, app_id) = aci(
        &manifest("example.com/app", "1.0", deps),
        &[("etc/motd", "from app\n")],
    );
    f.embed(
        "base.aci",
        &base,
        base_signer,
        "example.com/base",
        base_id.as_str(),
    );
    f.embed(
        "app.aci",
        &app,
        By::Trusted,
        "example.com/app",
        app_id.as_str(),
    );
    (app_id, base_id)
}

#[test]
fn dependencies_are_imported_and_rendered_below_the_image() {
    let mut f = fixture(TrustScope::Prefix("example.com".into()));
    let (app_id, base_id) = with_dependency(&mut f, By::Trusted);
    let ready = f.images().prepare(&app_id).unwrap();
    assert_eq!(ready.layers, vec![base_id.clone(), app_id.clone()]);
    assert_eq!(
        fs::read_to_string(ready.rootfs.join("bin/tool")).unwrap(),
        "base tool\n"
    );
    assert_eq!(
        fs::read_to_string(ready.rootfs.join("etc/motd")).unwrap(),
        "from app\n"
    );
    let reports: Vec<String> = ready.reports.iter().map(ToString::to_string).collect();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert!(
        reports[0].contains("(example.com/app) verified"),
        "{reports:?}"
    );
    assert!(
        reports[1].starts_with(&format!(
            "image {} (example.com/base) verified",
            id12(base_id.as_str())
        )),
        "{reports:?}"
    );
    // Rendered once: the next call finds image and tree in the store.
    let again = f.images().prepare(&app_id).unwrap();
    assert_eq!(again.rootfs, ready.rootfs);
    assert_eq!(again.reports.len(), 1);
    assert_eq!(again.reports[0].source, ImageSource::InStore);
}

#[test]
fn a_refused_dependency_names_its_file_and_key() {
    let mut f = fixture(TrustScope::Root);
    let other = SecretKey::generate().unwrap();
    let (app_id, _) = with_dependency(&mut f, By::Key(&other));
    let err = f.images().prepare(&app_id).unwrap_err();
    assert!(
        matches!(err, ImageError::Dependency { ref dependency, .. } if dependency == "example.com/base"),
        "{err:?}"
    );
    assert_eq!(err.key(), Some(other.id()));
    let text = chain(&err);
    assert!(text.starts_with(&format!("image {} (example.com/app): its dependency example.com/base is refused: image {}: signed by key {}", id12(app_id.as_str()), f.file("images/base.aci").display(), other.id())), "{text}");
}

#[test]
fn a_dependency_neither_stored_nor_embedded_is_refused() {
    let mut f = fixture(TrustScope::Root);
    let deps = r#","dependencies":[{"imageName":"example.com/base"}]"#;
    let (app, app_id) = aci(&manifest("example.com/app", "1.0", deps), &[]);
    f.embed(
        "app.aci",
        &app,
        By::Trusted,
        "example.com/app",
        app_id.as_str(),
    );
    let err = f.images().prepare(&app_id).unwrap_err();
    let text = chain(&err);
    assert!(
        text.contains("image example.com/base: none with labels [] is in the store or embedded"),
        "{text}"
    );
}
