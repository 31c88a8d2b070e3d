//! `Store::find` picks the highest `version` label by SemVer precedence: a release over its
//! release candidates, numbers as numbers.

mod common;

use aci::store::Store;
use common::{RawTar, manifest_named};

fn image(version: &str) -> Vec<u8> {
    let manifest = manifest_named(
        "example.com/app",
        &[("version", version), ("os", "linux"), ("arch", "amd64")],
        "",
    );
    let mut t = RawTar::new();
    t.file("manifest", manifest.as_bytes()).dir("rootfs/");
    t.finish()
}

fn found_version(versions: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for v in versions {
        store.insert(&image(v)[..]).unwrap();
    }
    let record = store.find("example.com/app", &[]).unwrap();
    record.label("version").unwrap().to_string()
}

#[test]
fn find_picks_the_release_over_its_release_candidate() {
    // Both insertion orders: the import time must not decide.
    assert_eq!(found_version(&["1.0.0", "1.0.0-rc1"]), "1.0.0");
    assert_eq!(found_version(&["1.0.0-rc1", "1.0.0"]), "1.0.0");
    assert_eq!(found_version(&["1.0.0-rc.2", "1.0.0-rc.10"]), "1.0.0-rc.10");
}

#[test]
fn find_compares_version_numbers_as_numbers() {
    assert_eq!(found_version(&["1.10.0", "1.9.0"]), "1.10.0");
    assert_eq!(found_version(&["1.9.0", "1.10.0", "1.2.0"]), "1.10.0");
}
