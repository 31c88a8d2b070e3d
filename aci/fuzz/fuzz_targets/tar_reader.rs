//! Fuzz target: ACI reading and validation (compression detection, tar parsing, layout and
//! link checks, manifest) on arbitrary bytes. It must return an error, never panic or hang.
#![no_main]

use aci::archive::{Limits, ReadOptions, read_aci};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Small limits keep decompression bombs from turning into slow inputs.
    let opts = ReadOptions {
        limits: Limits {
            max_entry_size: 1 << 20,
            max_total_size: 4 << 20,
            max_entries: 10_000,
            max_manifest_size: 64 << 10,
            max_tar_size: 8 << 20,
        },
        allow_devices: false,
    };
    let _ = read_aci(data, &opts);
});
