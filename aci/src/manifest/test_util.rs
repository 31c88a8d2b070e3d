//! Test helpers for the manifest tests: the appc example fixtures and error assertions.

use super::ManifestError;

/// A file of `aci/test_data/appc-examples/` (copied from appc/spec's `examples/`).
pub(crate) fn example(name: &str) -> Vec<u8> {
    fixture(&format!("appc-examples/{name}"))
}

/// A file under `aci/test_data/`.
pub(crate) fn fixture(rel: &str) -> Vec<u8> {
    let path = format!("{}/test_data/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading fixture {path}: {e}"))
}

/// Asserts a decode error at exactly `path` whose reason contains `reason`.
#[track_caller]
pub(crate) fn assert_decode_error<T: std::fmt::Debug>(
    r: Result<T, ManifestError>,
    path: &str,
    reason: &str,
) {
    match r {
        Err(ManifestError::Decode(e)) => {
            assert_eq!(e.path, path, "error path of {e}");
            assert!(e.reason.contains(reason), "{e:?} should contain {reason:?}");
        }
        other => panic!("expected a decode error at {path:?}, got {other:?}"),
    }
}

/// Asserts validation failed with exactly these `(path, reason substring)` errors, in order.
#[track_caller]
pub(crate) fn assert_invalid<T: std::fmt::Debug>(
    r: Result<T, ManifestError>,
    want: &[(&str, &str)],
) {
    match r {
        Err(ManifestError::Invalid(errs)) => {
            let got: Vec<String> = errs.iter().map(ToString::to_string).collect();
            assert_eq!(errs.len(), want.len(), "got {got:#?}");
            for (e, (path, reason)) in errs.iter().zip(want) {
                assert_eq!(e.path, *path, "got {got:#?}");
                assert!(
                    e.reason.contains(reason),
                    "{e} should contain {reason:?}; all: {got:#?}"
                );
            }
        }
        other => panic!("expected validation errors {want:?}, got {other:?}"),
    }
}
