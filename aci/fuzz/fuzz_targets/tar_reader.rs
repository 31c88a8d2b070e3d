//! Fuzz target: ACI reading and validation (compression detection, tar header guard, tar
//! parsing, layout and link checks, manifest) on arbitrary bytes, with the production limits:
//! looser ones would hide what a real image can make the reader do, tighter ones what it can
//! allocate. It must return an error, never panic, hang or exhaust memory.
#![no_main]

use aci::archive::{ReadOptions, read_aci};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = read_aci(data, &ReadOptions::default());
});
