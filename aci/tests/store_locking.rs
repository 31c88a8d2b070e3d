//! `Store::remove` and `Store::gc` take the store lock exclusively: while a writer holds it
//! shared (as it does while creating a temp file or publishing), they wait, and delete
//! nothing until it is released.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use aci::store::Store;
use common::RawTar;
use rustix::fs::{FlockOperation, Mode, OFlags};

/// Holds the store's lock file shared, as a writer between its two renames does.
fn hold_shared(store: &Store) -> std::os::fd::OwnedFd {
    let fd = rustix::fs::open(
        store.root().join("lock"),
        OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    rustix::fs::flock(&fd, FlockOperation::LockShared).unwrap();
    fd
}

/// Runs `op` on a thread while a shared lock is held; checks it has not finished (and the
/// image is still stored) after a while, then releases the lock and waits for it.
fn waits_for_writers(op: impl FnOnce(&Store) + Send + 'static) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let record = store.insert(&RawTar::aci().finish()[..]).unwrap();
    // Opened before the writer locks: opening cleans up under the exclusive lock itself.
    let other = Store::open(dir.path()).unwrap();
    let writer = hold_shared(&store);
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        op(&other);
        tx.send(()).unwrap();
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "finished while a writer held the store lock"
    );
    assert!(
        store.blob_path(&record.id).exists(),
        "deleted under a writer"
    );
    drop(writer);
    rx.recv_timeout(Duration::from_secs(10))
        .expect("did not finish after the writer let go");
    worker.join().unwrap();
    assert!(!store.blob_path(&record.id).exists());
}

#[test]
fn gc_waits_for_writers_holding_the_store_lock() {
    waits_for_writers(|store| {
        let report = store.gc(&[]).unwrap();
        assert_eq!(report.removed_images.len(), 1);
    });
}

#[test]
fn remove_waits_for_writers_holding_the_store_lock() {
    waits_for_writers(|store| {
        let id = store.list().unwrap()[0].id.clone();
        store.remove(&id).unwrap();
    });
}
