//! The codec against recorded-style responses in `test_data/dns/`.

use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/test_data/dns/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .flat_map(|line| {
            line.split('#')
                .next()
                .unwrap_or_default()
                .split_whitespace()
        })
        .map(|byte| u8::from_str_radix(byte, 16).unwrap_or_else(|e| panic!("{path}: {byte}: {e}")))
        .collect()
}

fn query(name: &str, qtype: RecordType, id: u16) -> Query {
    Query::new(name, qtype, id).unwrap()
}

fn addresses(answer: Answer) -> Vec<(IpAddr, u32)> {
    match answer {
        Answer::Addresses(a) => a.into_iter().map(|a| (a.ip, a.ttl)).collect(),
        other => panic!("expected addresses, got {other:?}"),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn query_bytes_are_one_recursive_question_with_our_id() {
    let q = query("Example.com.", RecordType::Aaaa, 0xabcd);
    let mut expected = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    expected.extend_from_slice(b"\x07Example\x03com\x00\x00\x1c\x00\x01");
    assert_eq!(q.bytes(), expected.as_slice());
    assert_eq!(q.name(), "Example.com");
}

#[test]
fn refuses_to_build_a_query_for_a_name_that_is_not_a_host_name() {
    for bad in ["", ".", "a..b", "has space", "back\\slash", &"x".repeat(64)] {
        assert!(
            matches!(
                Query::new(bad, RecordType::A, 1),
                Err(QueryError::InvalidName { .. })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn reads_an_a_record_behind_a_compressed_name() {
    let answer = query("example.com", RecordType::A, 0x1a2b)
        .check_response(&fixture("slirp_a.hex"))
        .unwrap();
    assert_eq!(addresses(answer), vec![(ip("93.184.215.14"), 3600)]);
}

#[test]
fn accepts_the_question_echoed_in_another_case() {
    // Resolvers using 0x20 case randomisation echo the case they sent upstream.
    let answer = query("EXAMPLE.Com", RecordType::A, 0x1a2b)
        .check_response(&fixture("slirp_a.hex"))
        .unwrap();
    assert_eq!(addresses(answer), vec![(ip("93.184.215.14"), 3600)]);
}

#[test]
fn follows_a_cname_to_the_address_of_its_target() {
    let answer = query("www.github.com", RecordType::A, 0x4d2e)
        .check_response(&fixture("unbound_cname_a.hex"))
        .unwrap();
    assert_eq!(addresses(answer), vec![(ip("140.82.121.4"), 60)]);
}

#[test]
fn an_address_behind_a_cname_lives_no_longer_than_the_cname() {
    let mut bytes = fixture("unbound_cname_a.hex");
    // The CNAME's TTL (@38..42): 3600 -> 10.
    bytes[40] = 0;
    bytes[41] = 10;
    let answer = query("www.github.com", RecordType::A, 0x4d2e)
        .check_response(&bytes)
        .unwrap();
    assert_eq!(addresses(answer), vec![(ip("140.82.121.4"), 10)]);
}

#[test]
fn reads_every_aaaa_record_with_its_ttl() {
    let answer = query("example.com", RecordType::Aaaa, 0x0777)
        .check_response(&fixture("dnsmasq_aaaa.hex"))
        .unwrap();
    assert_eq!(
        addresses(answer),
        vec![
            (ip("2606:2800:21f:cb07:6820:80da:af6b:8b2c"), 300),
            (ip("2606:2800:220:1:248:1893:25c8:1946"), 180)
        ]
    );
}

#[test]
fn ignores_records_for_other_names_and_types() {
    let answer = query("api.example.com", RecordType::A, 0x2222)
        .check_response(&fixture("unrelated_records.hex"))
        .unwrap();
    assert_eq!(addresses(answer), vec![(ip("10.1.2.3"), 120)]);
}

#[test]
fn noerror_without_a_record_of_the_asked_type_is_no_data() {
    // The SERVFAIL fixture with its rcode cleared: the question echoed, no answers, which is
    // how a server says "the name exists, but has no A record".
    let mut bytes = fixture("servfail.hex");
    bytes[3] = 0x80;
    let answer = query("example.com", RecordType::A, 0x5555)
        .check_response(&bytes)
        .unwrap();
    assert_eq!(answer, Answer::NoData);
    // And a CNAME whose target's A record is absent from the answer.
    let mut bytes = fixture("unbound_cname_a.hex");
    bytes[7] = 1; // ANCOUNT 2 -> 1: only the CNAME
    bytes.truncate(bytes.len() - 16);
    let answer = query("www.github.com", RecordType::A, 0x4d2e)
        .check_response(&bytes)
        .unwrap();
    assert_eq!(answer, Answer::NoData);
}

#[test]
fn nxdomain_with_an_soa_in_authority_is_no_such_name() {
    let answer = query("nosuch.example.com", RecordType::A, 0xbeef)
        .check_response(&fixture("nxdomain_soa.hex"))
        .unwrap();
    assert_eq!(answer, Answer::NoSuchName);
}

#[test]
fn a_truncated_answer_is_reported_not_half_read() {
    let err = query("big.example", RecordType::A, 0x3333)
        .check_response(&fixture("truncated.hex"))
        .unwrap_err();
    assert!(matches!(err, ResponseError::Truncated { .. }), "{err}");
}

#[test]
fn servfail_is_a_server_failure() {
    let err = query("example.com", RecordType::A, 0x5555)
        .check_response(&fixture("servfail.hex"))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ResponseError::ServerFailure {
                rcode: Rcode(2),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("SERVFAIL"), "{err}");
}

#[test]
fn refused_without_the_question_is_still_a_server_failure() {
    let err = query("example.com", RecordType::A, 0x5555)
        .check_response(&fixture("refused_no_question.hex"))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ResponseError::ServerFailure {
                rcode: Rcode(5),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn another_id_is_not_ours() {
    let err = query("example.com", RecordType::A, 0x1a2c)
        .check_response(&fixture("slirp_a.hex"))
        .unwrap_err();
    assert!(matches!(err, ResponseError::NotOurs { .. }), "{err}");
}

#[test]
fn another_question_with_our_id_is_not_ours() {
    for q in [
        query("example.org", RecordType::A, 0x1a2b),
        query("example.com", RecordType::Aaaa, 0x1a2b),
    ] {
        let err = q.check_response(&fixture("slirp_a.hex")).unwrap_err();
        assert!(matches!(err, ResponseError::NotOurs { .. }), "{err}");
    }
}

#[test]
fn our_own_query_reflected_back_is_not_an_answer() {
    let q = query("example.com", RecordType::A, 7);
    let err = q.check_response(q.bytes()).unwrap_err();
    assert!(matches!(err, ResponseError::NotOurs { .. }), "{err}");
}

#[test]
fn an_rdlength_past_the_end_is_malformed() {
    let err = query("example.com", RecordType::A, 0x1a2b)
        .check_response(&fixture("bad_rdlength.hex"))
        .unwrap_err();
    assert!(matches!(err, ResponseError::Malformed { .. }), "{err}");
}

#[test]
fn compression_pointer_loops_are_malformed_not_endless() {
    for name in ["pointer_self.hex", "pointer_label_loop.hex"] {
        let err = query("loop.test", RecordType::A, 0x6666)
            .check_response(&fixture(name))
            .unwrap_err();
        assert!(
            matches!(err, ResponseError::Malformed { .. }),
            "{name}: {err}"
        );
    }
}

#[test]
fn a_cname_loop_is_malformed() {
    let err = query("a.test", RecordType::A, 0x7777)
        .check_response(&fixture("cname_loop.hex"))
        .unwrap_err();
    assert!(
        matches!(&err, ResponseError::Malformed { reason, .. } if reason.contains("loops")),
        "{err}"
    );
}

#[test]
fn header_counts_larger_than_the_datagram_are_malformed() {
    // 65535 questions and records claimed by a bare header.
    let mut bytes = vec![0x1a, 0x2b, 0x81, 0x80];
    bytes.extend_from_slice(&[0xff; 8]);
    let err = query("example.com", RecordType::A, 0x1a2b)
        .check_response(&bytes)
        .unwrap_err();
    assert!(matches!(err, ResponseError::Malformed { .. }), "{err}");
}

#[test]
fn every_prefix_of_a_good_answer_is_rejected_without_panicking() {
    let bytes = fixture("unbound_cname_a.hex");
    let q = query("www.github.com", RecordType::A, 0x4d2e);
    for len in 0..bytes.len() {
        assert!(
            q.check_response(&bytes[..len]).is_err(),
            "prefix of {len} bytes"
        );
    }
}
