//! The formats checked by the tools their platforms' users run: qemu-img, GNU tar, zstd.

use std::os::unix::fs::MetadataExt;
use std::process::Stdio;

use super::*;
use crate::tools::Tool;

const TAR: Tool = tools::TAR;
const ZSTD: Tool = tools::ZSTD;
const CMP: Tool = Tool {
    program: "cmp",
    package: "diffutils",
};

fn need(t: Tool) {
    if let Err(e) = tools::require(&[t], &[]) {
        panic!("{e}");
    }
}

/// Deterministic bytes that do not compress to nothing.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The pieces of a fake disk: a "header" at the start, data in the middle, a short text, and a
/// "backup header" in the last 4 KiB, holes between.
fn pieces(size: u64) -> Vec<(u64, Vec<u8>)> {
    let text: Vec<u8> = b"hostos formats test ".repeat(3000);
    vec![
        (0, noise(1, 20_000)),
        (MIB + 4096, noise(2, 300_000)),
        (3 * MIB + 17, text),
        (size - 4096, noise(3, 4096)),
    ]
}

/// Writes the fake disk at `path`: sparse (only the pieces written) or with its first `dense`
/// bytes written, zeros included, which a filesystem reports with different holes.
fn make_raw(path: &Path, size: u64, dense: u64) {
    let f = File::create(path).unwrap();
    let zeros = vec![0u8; MIB as usize];
    let mut pos = 0;
    while pos < dense.min(size) {
        let n = (dense.min(size) - pos).min(MIB);
        f.write_all_at(&zeros[..n as usize], pos).unwrap();
        pos += n;
    }
    f.set_len(size).unwrap();
    for (off, data) in pieces(size) {
        f.write_all_at(&data, off).unwrap();
    }
    f.sync_all().unwrap();
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed: {}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

fn same_bytes(a: &Path, b: &Path) {
    need(CMP);
    let status = Command::new("cmp").arg(a).arg(b).status().unwrap();
    assert!(
        status.success(),
        "{} and {} differ",
        a.display(),
        b.display()
    );
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

const EPOCH: i64 = 1_700_000_000;
const SEED: &[u8] = b"hello x86_64 disk";

#[test]
fn format_names_round_trip_and_unknown_ones_are_refused() {
    for f in Format::ALL {
        assert_eq!(f.to_string().parse::<Format>(), Ok(f));
    }
    let err = "vhdx".parse::<Format>().unwrap_err().to_string();
    assert!(err.contains("\"vhdx\"") && err.contains("qcow2"), "{err}");
}

#[test]
fn output_names_carry_name_arch_and_suffix() {
    use hostdecl::Arch;
    let names: Vec<String> = Format::ALL
        .iter()
        .map(|&f| output_name("hello", Arch::Aarch64, f))
        .collect();
    assert_eq!(
        names,
        [
            "hello-aarch64.img",
            "hello-aarch64.qcow2",
            "hello-aarch64.vhd",
            "hello-aarch64.tar.gz",
            "hello-aarch64.img.zst",
        ]
    );
    assert_eq!(output_name("h", Arch::X86_64, Format::Raw), "h-x86_64.img");
}

#[test]
fn sparse_copy_keeps_the_bytes_and_allocates_only_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let size = 64 * MIB;
    let src = dir.path().join("dense.img");
    make_raw(&src, size, size);
    let dst = dir.path().join("copy.img");
    copy_sparse(&src, &dst).unwrap();
    same_bytes(&src, &dst);
    let data: u64 = pieces(size).iter().map(|(_, d)| d.len() as u64).sum();
    let (src_alloc, dst_alloc) = (
        src.metadata().unwrap().blocks() * 512,
        dst.metadata().unwrap().blocks() * 512,
    );
    assert!(
        src_alloc >= size,
        "the dense source is allocated: {src_alloc}"
    );
    // Each piece costs at most two extra partial blocks.
    assert!(
        dst_alloc <= data + 8 * 4096 * 2,
        "copy allocates {dst_alloc} bytes for {data} bytes of data"
    );
    assert_eq!(
        dst.metadata().unwrap().mode() & 0o777,
        0o644,
        "published world-readable"
    );
}

#[test]
fn raw_output_is_a_sparse_copy_even_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("in.img");
    make_raw(&raw, 16 * MIB, 16 * MIB);
    let out = dir.path().join("hello-x86_64.img");
    write(&raw, Format::Raw, &out, EPOCH, SEED).unwrap();
    same_bytes(&raw, &out);
    assert!(out.metadata().unwrap().blocks() * 512 < 2 * MIB);
    // In place: the raw image made sparse, its bytes kept.
    write(&raw, Format::Raw, &raw, EPOCH, SEED).unwrap();
    same_bytes(&raw, &out);
    assert!(raw.metadata().unwrap().blocks() * 512 < 2 * MIB);
}

#[test]
fn qcow2_passes_qemu_img_check_and_converts_back_to_the_raw_image() {
    need(QEMU_IMG);
    let dir = tempfile::tempdir().unwrap();
    let size = 32 * MIB;
    let raw = dir.path().join("in.img");
    make_raw(&raw, size, 0);
    let out = dir.path().join("hello-x86_64.qcow2");
    write(&raw, Format::Qcow2, &out, EPOCH, SEED).unwrap();
    run(Command::new("qemu-img").arg("check").arg(&out));
    let info = json(&run(Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&out)));
    assert_eq!(info["format"], "qcow2", "{info}");
    assert_eq!(info["virtual-size"], size, "{info}");
    let back = dir.path().join("back.img");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(&out)
        .arg(&back));
    same_bytes(&raw, &back);
}

#[test]
fn vhd_is_a_fixed_vpc_of_the_raw_size_that_reads_back_as_the_raw_image() {
    need(QEMU_IMG);
    let dir = tempfile::tempdir().unwrap();
    let size = 32 * MIB;
    let raw = dir.path().join("in.img");
    make_raw(&raw, size, 0);
    let out = dir.path().join("hello-x86_64.vhd");
    write(&raw, Format::Vhd, &out, EPOCH, SEED).unwrap();
    assert_eq!(
        out.metadata().unwrap().len(),
        size + 512,
        "N MiB + 512 bytes"
    );
    assert!(
        out.metadata().unwrap().blocks() * 512 < 2 * MIB,
        "written sparse"
    );
    // `-f vpc`: qemu probes only dynamic VHDs (cookie at offset 0), and takes a fixed one,
    // ours or its own, for raw unless told.
    let info = json(&run(Command::new("qemu-img")
        .args(["info", "--output=json", "-f", "vpc"])
        .arg(&out)));
    assert_eq!(info["format"], "vpc", "{info}");
    assert_eq!(info["virtual-size"], size, "{info}");
    // A fixed VHD is read straight from offset 0; a dynamic one goes through its block table.
    let back = dir.path().join("back.img");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "vpc", "-O", "raw"])
        .arg(&out)
        .arg(&back));
    same_bytes(&raw, &back);
}

#[test]
fn vhd_footer_matches_qemu_img_force_size_but_for_time_creator_id_and_checksum() {
    need(QEMU_IMG);
    let dir = tempfile::tempdir().unwrap();
    let size = 24 * MIB;
    let raw = dir.path().join("in.img");
    make_raw(&raw, size, 0);
    let ours = dir.path().join("ours.vhd");
    write(&raw, Format::Vhd, &ours, EPOCH, SEED).unwrap();
    let theirs = dir.path().join("qemu.vhd");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "vpc"])
        .args(["-o", "subformat=fixed,force_size"])
        .arg(&raw)
        .arg(&theirs));
    assert_eq!(
        theirs.metadata().unwrap().len(),
        ours.metadata().unwrap().len()
    );
    let footer = |p: &Path| {
        let mut b = [0u8; 512];
        File::open(p).unwrap().read_exact_at(&mut b, size).unwrap();
        b
    };
    let (a, b) = (footer(&ours), footer(&theirs));
    // timestamp 24..28, creator app 28..32, creator version 32..36, checksum 64..68,
    // unique id 68..84.
    let differs_by_design = |i: usize| (24..36).contains(&i) || (64..84).contains(&i);
    for i in (0..512).filter(|&i| !differs_by_design(i)) {
        assert_eq!(
            a[i], b[i],
            "footer byte {i:#x}: ours {:#x}, qemu's {:#x}",
            a[i], b[i]
        );
    }
    assert_eq!(
        vhd::checksum(&b).to_be_bytes(),
        b[64..68],
        "our checksum agrees with qemu's on qemu's footer"
    );
}

#[test]
fn vhd_refuses_a_raw_image_that_is_not_a_whole_mib() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("in.img");
    make_raw(&raw, 4 * MIB + 512, 0);
    let out = dir.path().join("x.vhd");
    let err = write(&raw, Format::Vhd, &out, EPOCH, SEED).unwrap_err();
    assert!(
        matches!(err, FormatError::Size { multiple: MIB, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("Azure"), "{err}");
    assert!(!out.exists());
}

#[test]
fn gce_tarball_holds_exactly_disk_raw_sparse_and_extracts_to_the_raw_image() {
    need(TAR);
    need(CMP);
    let dir = tempfile::tempdir().unwrap();
    let size = GIB;
    let raw = dir.path().join("in.img");
    make_raw(&raw, size, 0);
    let out = dir.path().join("hello-x86_64.tar.gz");
    write(&raw, Format::Gce, &out, EPOCH, SEED).unwrap();

    let listing = run(Command::new("tar")
        .args(["--numeric-owner", "--utc", "-tvzf"])
        .arg(&out));
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 1, "{listing}");
    let fields: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(fields[0], "-rw-r--r--", "{listing}");
    assert_eq!(fields[1], "0/0", "{listing}");
    assert_eq!(fields[2], size.to_string(), "{listing}");
    assert_eq!(
        fields[3..5],
        ["2023-11-14", "22:13"],
        "mtime is the epoch: {listing}"
    );
    assert_eq!(fields[5..], ["disk.raw"], "{listing}");

    let piped = format!(
        "tar -xOzf '{}' disk.raw | cmp - '{}'",
        out.display(),
        raw.display()
    );
    run(Command::new("sh").args(["-c", &piped]));

    // GNU tar recreates the holes of an old-GNU sparse entry.
    let x = dir.path().join("x");
    std::fs::create_dir(&x).unwrap();
    run(Command::new("tar").arg("-C").arg(&x).arg("-xzf").arg(&out));
    let extracted = x.join("disk.raw").metadata().unwrap();
    assert_eq!(extracted.len(), size);
    assert!(extracted.blocks() * 512 < 4 * MIB, "extracted sparse");

    // An old-GNU sparse entry: GNU magic, type 'S'.
    let mut tar_header = [0u8; 512];
    io::Read::read_exact(
        &mut flate2::read::GzDecoder::new(File::open(&out).unwrap()),
        &mut tar_header,
    )
    .unwrap();
    assert_eq!(&tar_header[257..265], b"ustar  \0", "old-GNU magic");
    assert_eq!(tar_header[156], b'S', "sparse entry type");

    // The gzip header: no time, no file name.
    let gz = std::fs::read(&out).unwrap();
    assert_eq!(
        gz[..4],
        [0x1f, 0x8b, 8, 0],
        "deflate, no FNAME/FCOMMENT/FEXTRA"
    );
    assert_eq!(gz[4..8], [0; 4], "gzip mtime 0");
    assert!(
        gz.len() < 2 * MIB as usize,
        "holes are not stored: {}",
        gz.len()
    );
}

#[test]
fn gce_refuses_a_raw_image_that_is_not_a_whole_gib() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("in.img");
    make_raw(&raw, 64 * MIB, 0);
    let err = write(&raw, Format::Gce, &dir.path().join("x.tar.gz"), EPOCH, SEED).unwrap_err();
    assert!(
        matches!(err, FormatError::Size { multiple: GIB, .. }),
        "{err}"
    );
}

#[test]
fn zst_round_trips_through_the_zstd_tool() {
    need(ZSTD);
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("in.img");
    make_raw(&raw, 48 * MIB, 0);
    let out = dir.path().join("hello-aarch64.img.zst");
    write(&raw, Format::Zst, &out, EPOCH, SEED).unwrap();
    let back = dir.path().join("back.img");
    run(Command::new("zstd")
        .args(["-q", "-d", "-o"])
        .arg(&back)
        .arg(&out));
    same_bytes(&raw, &back);
    // The frame carries the decompressed size, so `zstd -l` and flashing tools can show it.
    let list = run(Command::new("zstd").args(["-lv"]).arg(&out));
    assert!(list.contains("50331648"), "{list}");
}

/// Two builds: one raw written sparse, one written dense (its first 64 MiB, so different holes
/// for the filesystem), outputs in different directories; every format's bytes must agree.
#[test]
fn every_format_is_deterministic_across_runs_and_hole_layouts() {
    need(QEMU_IMG);
    need(CMP);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for f in Format::ALL {
        let size = if f == Format::Gce { GIB } else { 16 * MIB };
        let (ra, rb) = (a.path().join("in.img"), b.path().join("in.img"));
        make_raw(&ra, size, 0);
        make_raw(&rb, size, size.min(64 * MIB));
        let (oa, ob) = (
            a.path().join(output_name("h", hostdecl::Arch::X86_64, f)),
            b.path().join(output_name("h", hostdecl::Arch::X86_64, f)),
        );
        write(&ra, f, &oa, EPOCH, SEED).unwrap();
        write(&rb, f, &ob, EPOCH, SEED).unwrap();
        same_bytes(&oa, &ob);
    }
}

/// The measurement behind `ZSTD_LEVEL`, and each format's time on the same data:
/// `cargo test --release -p builder --bin builder formats::tests::timing -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, not a check"]
fn timing() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("in.img");
    // 100 MiB (1 GiB for GCE) holding ~8 MiB like a compressed kernel in a UKI or an erofs of
    // compressed ACIs, and ~8 MiB of something compressible, the rest holes.
    let make = |size: u64| {
        let f = File::create(&raw).unwrap();
        f.set_len(size).unwrap();
        f.write_all_at(&noise(9, 8 << 20), MIB).unwrap();
        let text: Vec<u8> = (0..8u32 << 20)
            .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
            .collect();
        f.write_all_at(&text, 40 * MIB).unwrap();
    };
    make(100 * MIB);
    let src = File::open(&raw).unwrap();
    let size = 100 * MIB;
    for level in [1, 3, 6, 9, 12, 15, 19] {
        let started = Instant::now();
        let runs = sparse::data_runs(&src, size).unwrap();
        let mut out = File::create(dir.path().join("o.zst")).unwrap();
        let mut enc = zstd::Encoder::new(&mut out, level).unwrap();
        let mut pos = 0;
        for run in &runs {
            sparse::write_zeros(&mut enc, run.offset - pos).unwrap();
            sparse::copy_range(&src, run, &mut enc).unwrap();
            pos = run.end();
        }
        sparse::write_zeros(&mut enc, size - pos).unwrap();
        enc.finish().unwrap();
        let len = dir.path().join("o.zst").metadata().unwrap().len();
        println!(
            "zstd level {level}: {:.2} s, {len} bytes",
            started.elapsed().as_secs_f64()
        );
    }
    // GCE last: it needs the raw image grown to a whole GiB.
    for f in [
        Format::Raw,
        Format::Qcow2,
        Format::Vhd,
        Format::Zst,
        Format::Gce,
    ] {
        if f == Format::Gce {
            make(GIB);
        }
        let out = dir.path().join(output_name("t", hostdecl::Arch::X86_64, f));
        let started = Instant::now();
        write(&raw, f, &out, EPOCH, SEED).unwrap();
        println!(
            "{f}: {:.2} s, {} bytes, {} allocated",
            started.elapsed().as_secs_f64(),
            out.metadata().unwrap().len(),
            out.metadata().unwrap().blocks() * 512
        );
    }
}

#[test]
fn qemu_img_version_is_reported_for_the_manifest() {
    need(QEMU_IMG);
    let v = qemu_img_version().unwrap();
    assert!(v.starts_with("qemu-img version "), "{v}");
}

#[test]
fn a_failed_write_leaves_neither_output_nor_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("in.img");
    make_raw(&raw, 2 * MIB + 512, 0);
    let out = dir.path().join("out").join("x.vhd");
    std::fs::create_dir(out.parent().unwrap()).unwrap();
    write(&raw, Format::Vhd, &out, EPOCH, SEED).unwrap_err();
    // qemu-img refuses a raw image that is not there; its temporary file goes too.
    let missing = dir.path().join("missing.img");
    let q = out.with_extension("qcow2");
    let err = write(&missing, Format::Qcow2, &q, EPOCH, SEED).unwrap_err();
    assert!(err.to_string().contains("missing.img"), "{err}");
    let left: Vec<_> = std::fs::read_dir(out.parent().unwrap()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn qemu_img_refuses_our_vhd_once_a_footer_byte_is_flipped() {
    need(QEMU_IMG);
    let dir = tempfile::tempdir().unwrap();
    let size = 4 * MIB;
    let raw = dir.path().join("in.img");
    make_raw(&raw, size, 0);
    let out = dir.path().join("x.vhd");
    write(&raw, Format::Vhd, &out, EPOCH, SEED).unwrap();
    let info = |p: &Path| {
        Command::new("qemu-img")
            .args(["info", "-f", "vpc"])
            .arg(p)
            .output()
            .unwrap()
    };
    assert!(info(&out).status.success(), "qemu-img takes our footer");
    // The original-size field: qemu checks the footer's checksum, so it read ours.
    let f = File::options().write(true).open(&out).unwrap();
    f.write_all_at(&[0x7f], size + 41).unwrap();
    drop(f);
    let refused = info(&out);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("checksum"), "{stderr}");
}
