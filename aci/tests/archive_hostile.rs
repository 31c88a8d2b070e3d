//! Hostile archives that aim at memory and time rather than at the filesystem: huge GNU
//! long-name / long-link and PAX records, deep paths. Each is refused by a limit, quickly, and
//! the reader's peak memory is measured in a child process (its own `VmHWM`), so nothing else
//! running in this test binary is counted.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use aci::archive::{ArchiveError, ReadOptions, read_aci};
use common::RawTar;
use common::hostile::{huge_record, long_name};

const MIB: u64 = 1 << 20;
/// The target for the reader on hostile input.
const PEAK_LIMIT_KIB: u64 = 64 * 1024;
const CASE_VAR: &str = "ACI_HOSTILE_CASE";

fn deep_name(depth: usize) -> String {
    format!("rootfs/{}f", "a/".repeat(depth))
}

/// The hostile stream for `case`, generated as it is read.
fn stream(case: &str) -> Box<dyn Read> {
    match case {
        "pax-256MiB" => Box::new(huge_record(b'x', 256 * MIB, b'a')),
        "pax-global-256MiB" => Box::new(huge_record(b'g', 256 * MIB, b'a')),
        "long-name-512MiB" => Box::new(huge_record(b'L', 512 * MIB, b'a')),
        "long-link-256MiB" => Box::new(huge_record(b'K', 256 * MIB, b'a')),
        "depth-20000" => {
            let mut t = RawTar::aci();
            long_name(&mut t, &deep_name(20_000));
            t.file("rootfs/placeholder", b"x");
            Box::new(std::io::Cursor::new(t.finish()))
        }
        "paths-at-the-limit" => {
            // Distinct 250-deep paths until `max_paths` refuses them: the most memory the path
            // tree can be made to hold.
            let deep = "a/".repeat(248);
            let mut t = RawTar::aci();
            let entries = ReadOptions::default().limits.max_paths / 249 + 10;
            for i in 0..entries {
                common::hostile::pax(
                    &mut t,
                    &[("path", format!("rootfs/{i}/{deep}f").as_bytes())],
                );
                t.file("rootfs/placeholder", b"");
            }
            Box::new(std::io::Cursor::new(t.finish()))
        }
        other => panic!("unknown case {other}"),
    }
}

const CASES: [&str; 6] = [
    "pax-256MiB",
    "pax-global-256MiB",
    "long-name-512MiB",
    "long-link-256MiB",
    "depth-20000",
    "paths-at-the-limit",
];

fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Run by `reader_peak_memory_on_hostile_archives_is_bounded` in a child process: reads one
/// hostile archive and prints the error and its own peak RSS.
#[test]
#[ignore = "run as a child by reader_peak_memory_on_hostile_archives_is_bounded"]
fn hostile_child() {
    let Ok(case) = std::env::var(CASE_VAR) else {
        return;
    };
    let start = Instant::now();
    let res = read_aci(stream(&case), &ReadOptions::default());
    let elapsed = start.elapsed();
    let err = match res {
        Ok(_) => "accepted".to_string(),
        Err(e) => format!("{e:?}"),
    };
    let shown: String = err.chars().take(300).collect();
    println!(
        "HOSTILE case={case} peak_kib={} ms={} err_len={} err={shown}",
        peak_kib(),
        elapsed.as_millis(),
        err.len()
    );
}

#[test]
fn reader_peak_memory_on_hostile_archives_is_bounded() {
    let exe = std::env::current_exe().unwrap();
    let mut report = Vec::new();
    for case in CASES {
        let out = std::process::Command::new(&exe)
            .args(["--exact", "hostile_child", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CASE_VAR, case)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.find("HOSTILE ").map(|at| &l[at..]))
            .unwrap_or_else(|| panic!("{case}: child printed no result: {stdout}"))
            .to_string();
        eprintln!("{line}");
        let field = |name: &str| -> u64 {
            line.split(' ')
                .find_map(|w| w.strip_prefix(name))
                .and_then(|v| v.parse().ok())
                .unwrap()
        };
        report.push((
            case,
            field("peak_kib="),
            field("ms="),
            field("err_len="),
            line.contains("accepted"),
        ));
    }
    for (case, peak, ms, err_len, accepted) in report {
        assert!(!accepted, "{case}: the hostile archive was accepted");
        assert!(
            peak <= PEAK_LIMIT_KIB,
            "{case}: the reader peaked at {peak} KiB, over {PEAK_LIMIT_KIB} KiB"
        );
        assert!(
            Duration::from_millis(ms) < Duration::from_secs(5),
            "{case}: took {ms} ms"
        );
        assert!(err_len < 1000, "{case}: the error is {err_len} bytes long");
    }
}

#[test]
fn huge_metadata_records_are_refused_before_they_are_read() {
    for (typ, kind) in [
        (b'x', "PAX extended header"),
        (b'g', "PAX global header"),
        (b'L', "GNU long name"),
        (b'K', "GNU long link"),
    ] {
        let err = read_aci(huge_record(typ, 4 * MIB, b'a'), &ReadOptions::default())
            .expect_err("accepted");
        assert!(
            matches!(&err, ArchiveError::MetadataTooLarge { kind: k, size, .. }
                if *k == kind && *size == 4 * MIB),
            "{err}"
        );
    }
}

#[test]
fn long_names_within_the_record_limit_are_still_refused_and_shown_short() {
    // 4000 bytes of name fit a GNU record but not max_path_size once `rootfs/` and the rest
    // are added; the message quotes at most 200 characters of it.
    let name = format!("rootfs/{}", "n".repeat(5000));
    let mut t = RawTar::aci();
    long_name(&mut t, &name);
    t.file("rootfs/placeholder", b"x");
    let mut opts = ReadOptions::default();
    opts.limits.max_path_size = 8192;
    let bytes = t.finish();
    read_aci(&bytes[..], &opts).expect("a 5 KB name is fine under an 8 KiB limit");
    let err = read_aci(&bytes[..], &ReadOptions::default()).expect_err("accepted");
    let ArchiveError::MetadataTooLarge { .. } = err else {
        panic!("{err}");
    };

    let mut t = RawTar::aci();
    common::hostile::pax(&mut t, &[("path", name.as_bytes())]);
    t.file("rootfs/placeholder", b"x");
    let err = read_aci(&t.finish()[..], &ReadOptions::default()).expect_err("accepted");
    assert!(
        matches!(&err, ArchiveError::NameTooLong { entry, limit: 4096 }
            if entry.chars().count() == 201 && entry.ends_with('…')),
        "{err}"
    );
}

#[test]
fn rejects_paths_deeper_than_the_limit_quickly() {
    for depth in [300, 2000] {
        let mut t = RawTar::aci();
        long_name(&mut t, &deep_name(depth));
        t.file("rootfs/placeholder", b"x");
        let start = Instant::now();
        let err = read_aci(&t.finish()[..], &ReadOptions::default()).expect_err("accepted");
        assert!(
            matches!(err, ArchiveError::PathTooDeep { limit: 256, .. }),
            "{depth}: {err}"
        );
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}

/// 1000 entries of `depth` components (about 16 bytes each), all below one directory, beside
/// one symlink (a check against an empty set of links costs nothing); the best of 3 reads.
fn read_time_at_depth(depth: usize) -> Duration {
    let dir = format!("{}/", "d".repeat(15)).repeat(depth - 1);
    let mut t = RawTar::aci();
    t.symlink("rootfs/l", "d");
    for i in 0..1000 {
        common::hostile::pax(&mut t, &[("path", format!("rootfs/{dir}{i}").as_bytes())]);
        t.file("rootfs/placeholder", b"");
    }
    let bytes = t.finish();
    (0..3)
        .map(|_| {
            let start = Instant::now();
            read_aci(&bytes[..], &ReadOptions::default()).unwrap();
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

#[test]
fn many_entries_at_the_depth_limit_are_checked_in_linear_time() {
    // Hashing every prefix of every path, as the reader once did, costs depth squared per
    // entry; one lookup per component costs depth. So doubling the depth (to the limit, 250)
    // must about double the time, not quadruple it. A ratio, not a wall-clock bound, so a
    // loaded machine or a debug build does not decide the test.
    let half = read_time_at_depth(125);
    let full = read_time_at_depth(250);
    let ratio = full.as_secs_f64() / half.as_secs_f64().max(1e-6);
    eprintln!("depth 125: {half:?}, depth 250: {full:?} (x{ratio:.2})");
    assert!(
        ratio < 3.0,
        "depth 125: {half:?}, depth 250: {full:?} (x{ratio:.2}; linear is about x2, quadratic x4)"
    );
}

#[test]
fn a_pax_size_override_is_refused() {
    let mut t = RawTar::aci();
    common::hostile::pax(&mut t, &[("size", b"0")]);
    t.file("rootfs/f", b"hidden header");
    let err = read_aci(&t.finish()[..], &ReadOptions::default()).expect_err("accepted");
    assert!(matches!(err, ArchiveError::PaxSizeOverride), "{err}");
}
