//! Fuzz target: the discovery `<meta>` tag parser on arbitrary (UTF-8) HTML.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(html) = std::str::from_utf8(data) {
        let _ = aci::discovery::parse_meta_tags(html);
    }
});
