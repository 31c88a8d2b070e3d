//! Fuzz target: Image and Pod Manifest parsing and validation on arbitrary bytes, through the
//! full `aci::manifest` validator and the archive code's manifest view.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = aci::manifest::detect_kind(data);
    let _ = aci::manifest::ImageManifest::from_json(data);
    let _ = aci::manifest::PodManifest::from_json(data);
    let _ = aci::archive::manifest_view::parse_image_manifest(data);
});
