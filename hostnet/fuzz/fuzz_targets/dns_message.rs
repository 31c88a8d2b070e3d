//! Arbitrary bytes as the answer to a fixed A and AAAA query: the codec must reject or read
//! them without panicking, and compression pointers must not loop.
#![no_main]

use hostnet::dns::{Answer, Query, RecordType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for qtype in [RecordType::A, RecordType::Aaaa] {
        let Ok(query) = Query::new("www.example.com", qtype, 0x1a2b) else {
            return;
        };
        if let Ok(Answer::Addresses(addrs)) = query.check_response(data) {
            // Every address read must be of the asked family.
            assert!(addrs.iter().all(|a| a.ip.is_ipv4() == (qtype == RecordType::A)));
        }
    }
    // The same bytes as text, through the file parsers the resolver reads.
    if let Ok(text) = std::str::from_utf8(data) {
        let hosts = hostnet::dns::Hosts::parse(text);
        let _ = hosts.lookup("www.example.com");
        let _ = hostnet::dns::ResolvConf::parse(text);
    }
});
