//! Tests of the UKI assembler against Debian's real systemd-stubs, cross-checked with binutils.

use std::path::Path;
use std::process::Command;

use super::pe::{self, Headers};
use super::*;
use crate::tools::{self, Tool};

const OBJDUMP: Tool = Tool {
    program: "objdump",
    package: "binutils",
};
const OBJCOPY: Tool = Tool {
    program: "objcopy",
    package: "binutils",
};
const AARCH64_OBJDUMP: Tool = Tool {
    program: "aarch64-linux-gnu-objdump",
    package: "binutils-aarch64-linux-gnu",
};
const AARCH64_OBJCOPY: Tool = Tool {
    program: "aarch64-linux-gnu-objcopy",
    package: "binutils-aarch64-linux-gnu",
};

fn stub(arch: Arch) -> Vec<u8> {
    tools::require(&[], &[stub_file(arch)]).unwrap();
    std::fs::read(stub_path(arch)).unwrap()
}

fn machine(arch: Arch) -> u16 {
    match arch {
        Arch::X86_64 => pe::IMAGE_FILE_MACHINE_AMD64,
        Arch::Aarch64 => pe::IMAGE_FILE_MACHINE_ARM64,
    }
}

/// Bytes that differ from offset to offset, so a misplaced copy cannot compare equal.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A minimal PE32+ image: DOS header, COFF header, an optional header with 16 directories,
/// `nsections` `.text` sections of 0x200 bytes each, and `SizeOfHeaders` = `size_of_headers`.
fn fake_pe(machine: u16, nsections: u16, size_of_headers: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; size_of_headers as usize];
    f[..2].copy_from_slice(b"MZ");
    pe::put32(&mut f, 0x3c, 0x40, "").unwrap();
    pe::put(&mut f, 0x40, b"PE\0\0", "").unwrap();
    let coff = 0x44;
    pe::put16(&mut f, coff, machine, "").unwrap();
    pe::put16(&mut f, coff + 2, nsections, "").unwrap();
    pe::put16(&mut f, coff + 16, 240, "").unwrap();
    pe::put16(&mut f, coff + 18, 0x206, "").unwrap();
    let opt = coff + 20;
    pe::put16(&mut f, opt, 0x20b, "").unwrap();
    pe::put32(&mut f, opt + 32, 0x1000, "").unwrap();
    pe::put32(&mut f, opt + 36, 0x200, "").unwrap();
    pe::put32(&mut f, opt + 60, size_of_headers, "").unwrap();
    pe::put32(&mut f, opt + 108, 16, "").unwrap();
    let table = opt + 240;
    let data_len = payload.len().max(0x200).div_ceil(0x200) * 0x200;
    for i in 0..usize::from(nsections) {
        let s = pe::Section {
            name: *b".text\0\0\0",
            virtual_size: data_len as u32,
            virtual_address: (0x1000 * (i + 1)) as u32,
            size_of_raw_data: data_len as u32,
            pointer_to_raw_data: size_of_headers + (i * data_len) as u32,
            characteristics: 0x6000_0020,
        };
        pe::put(&mut f, table + 40 * i, &s.encode(), "").unwrap();
        let mut d = payload.to_vec();
        d.resize(data_len, 0);
        f.extend_from_slice(&d);
    }
    let image = 0x1000 * (usize::from(nsections) + 1) as u32;
    pe::put32(&mut f, opt + 56, image, "").unwrap();
    f
}

/// A stand-in kernel: a PE image for `arch`, with an odd length so padding is exercised.
fn kernel(arch: Arch) -> Vec<u8> {
    let mut k = fake_pe(machine(arch), 1, 0x200, &pattern(1 << 20, 7));
    k.extend_from_slice(&pattern(17, 8));
    k
}

const OSREL_TEXT: &str = "ID=hostos\nNAME=\"hostos\"\nVERSION_ID=0.1\n";
const CMDLINE_TEXT: &str = "console=ttyS0 panic=-1 hostos.payload=0123abcd";

fn parts<'a>(linux: &'a [u8], initrd: &'a [u8]) -> UkiParts<'a> {
    UkiParts {
        linux,
        initrd,
        cmdline: CMDLINE_TEXT,
        osrel: OSREL_TEXT,
        uname: Some("6.1.0-hostos"),
    }
}

#[test]
fn both_debian_stubs_assemble_and_every_part_reads_back() {
    for arch in Arch::ALL {
        let (linux, initrd) = (kernel(arch), pattern(700_001, 3));
        let uki = assemble(&stub(arch), &parts(&linux, &initrd), 0).unwrap();
        let get = |n| section(&uki, n).unwrap().unwrap();
        assert_eq!(get(OSREL), OSREL_TEXT.as_bytes(), "{arch}");
        assert_eq!(get(CMDLINE), CMDLINE_TEXT.as_bytes(), "{arch}");
        assert_eq!(get(UNAME), b"6.1.0-hostos", "{arch}");
        assert_eq!(get(INITRD), &initrd[..], "{arch}");
        assert_eq!(get(LINUX), &linux[..], "{arch}");
        assert!(
            get(".text").len() > 0x1000,
            "{arch}: the stub's code is kept"
        );
    }
}

#[test]
fn stub_sections_are_kept_byte_for_byte() {
    for arch in Arch::ALL {
        let s = stub(arch);
        let linux = kernel(arch);
        let uki = assemble(&s, &parts(&linux, b"initrd"), 0).unwrap();
        let (hs, hu) = (Headers::parse(&s).unwrap(), Headers::parse(&uki).unwrap());
        for (a, b) in hs.sections.iter().zip(&hu.sections) {
            assert_eq!(a, b, "{arch}");
            assert_eq!(hs.data(&s, a).unwrap(), hu.data(&uki, b).unwrap(), "{arch}");
        }
        let names: Vec<String> = hu.sections[hs.sections.len()..]
            .iter()
            .map(pe::Section::name_str)
            .collect();
        assert_eq!(names, [OSREL, CMDLINE, UNAME, INITRD, LINUX], "{arch}");
    }
}

#[test]
fn new_sections_follow_the_stub_aligned_and_without_overlap() {
    for arch in Arch::ALL {
        let s = stub(arch);
        let linux = kernel(arch);
        let uki = assemble(&s, &parts(&linux, &pattern(12345, 1)), 0).unwrap();
        let (hs, h) = (Headers::parse(&s).unwrap(), Headers::parse(&uki).unwrap());
        let mut prev_va = u64::from(hs.size_of_image);
        let mut prev_file = hs.sections.iter().map(pe::Section::file_end).max().unwrap();
        for sec in &h.sections[hs.sections.len()..] {
            let name = sec.name_str();
            assert_eq!(
                sec.virtual_address % h.section_alignment,
                0,
                "{arch} {name}"
            );
            assert_eq!(
                sec.pointer_to_raw_data % h.file_alignment,
                0,
                "{arch} {name}"
            );
            assert_eq!(sec.size_of_raw_data % h.file_alignment, 0, "{arch} {name}");
            assert!(u64::from(sec.virtual_address) >= prev_va, "{arch} {name}");
            assert!(
                u64::from(sec.pointer_to_raw_data) >= prev_file,
                "{arch} {name}"
            );
            assert_eq!(sec.characteristics, 0x4000_0040, "{arch} {name}");
            prev_va = u64::from(sec.virtual_address) + u64::from(sec.virtual_size);
            prev_file = sec.file_end();
        }
        let linux_sec = h.sections.last().unwrap();
        assert_eq!(linux_sec.name_str(), LINUX, "{arch}: .linux comes last");
        assert_eq!(linux_sec.virtual_address % LINUX_ALIGNMENT, 0, "{arch}");
        assert_eq!(prev_file, uki.len() as u64, "{arch}: file ends with .linux");
        assert_eq!(
            u64::from(h.size_of_image),
            pe::align_up(prev_va, h.section_alignment),
            "{arch}"
        );
        let raw_added: u32 = h.sections[hs.sections.len()..]
            .iter()
            .map(|s| s.size_of_raw_data)
            .sum();
        assert_eq!(
            h.size_of_initialized_data,
            hs.size_of_initialized_data + raw_added,
            "{arch}"
        );
    }
}

#[test]
fn cmdline_section_is_nul_terminated_for_old_stubs() {
    let linux = kernel(Arch::X86_64);
    let uki = assemble(&stub(Arch::X86_64), &parts(&linux, b""), 0).unwrap();
    let h = Headers::parse(&uki).unwrap();
    let s = h.sections.iter().find(|s| s.name_str() == CMDLINE).unwrap();
    let raw = h.data(&uki, s).unwrap();
    assert_eq!(
        raw.len(),
        CMDLINE_TEXT.len() + 1,
        "VirtualSize counts the NUL"
    );
    assert_eq!(raw.last(), Some(&0));
}

#[test]
fn empty_optional_parts_are_left_out() {
    let linux = kernel(Arch::Aarch64);
    let p = UkiParts {
        linux: &linux,
        initrd: b"",
        cmdline: "",
        osrel: "",
        uname: None,
    };
    let uki = assemble(&stub(Arch::Aarch64), &p, 0).unwrap();
    for absent in [OSREL, UNAME, INITRD] {
        assert_eq!(section(&uki, absent).unwrap(), None, "{absent}");
    }
    assert_eq!(section(&uki, CMDLINE).unwrap(), Some(&b""[..]));
    assert_eq!(section(&uki, LINUX).unwrap(), Some(&linux[..]));
}

#[test]
fn two_assemblies_are_identical() {
    for arch in Arch::ALL {
        let (s, linux, initrd) = (stub(arch), kernel(arch), pattern(4097, 9));
        let a = assemble(&s, &parts(&linux, &initrd), 1_700_000_000).unwrap();
        let b = assemble(
            &s.clone(),
            &parts(&linux.clone(), &initrd.clone()),
            1_700_000_000,
        );
        assert!(a == b.unwrap(), "{arch}: two runs differ");
    }
}

#[test]
fn timestamp_is_the_one_given() {
    for arch in Arch::ALL {
        let (s, linux) = (stub(arch), kernel(arch));
        for ts in [0, 1, 1_700_000_000, u32::MAX] {
            let uki = assemble(&s, &parts(&linux, b"x"), ts).unwrap();
            let h = Headers::parse(&uki).unwrap();
            let got = pe::le32(&uki, h.coff + pe::COFF_TIME_DATE_STAMP, "").unwrap();
            assert_eq!(got, ts, "{arch}");
        }
    }
}

#[test]
fn x86_stub_loses_its_coff_symbol_table() {
    let s = stub(Arch::X86_64);
    let hs = Headers::parse(&s).unwrap();
    assert_ne!(
        hs.pointer_to_symbol_table, 0,
        "the Debian 252 x86 stub has one"
    );
    let linux = kernel(Arch::X86_64);
    let uki = assemble(&s, &parts(&linux, b"i"), 0).unwrap();
    let h = Headers::parse(&uki).unwrap();
    assert_eq!(h.pointer_to_symbol_table, 0);
    assert_eq!(
        pe::le32(&uki, h.coff + pe::COFF_NUMBER_OF_SYMBOLS, "").unwrap(),
        0
    );
    let first_new = &h.sections[hs.sections.len()];
    assert_eq!(
        u64::from(first_new.pointer_to_raw_data),
        pe::align_up(u64::from(hs.pointer_to_symbol_table), h.file_alignment),
        "the symbol and string tables are gone, not skipped over"
    );
}

#[test]
fn checksum_matches_the_one_the_linker_wrote() {
    // The x86 stub's CheckSum was computed by GNU ld; ours must agree on the same bytes.
    let s = stub(Arch::X86_64);
    let h = Headers::parse(&s).unwrap();
    let stored = pe::le32(&s, h.optional + pe::OPT_CHECKSUM, "").unwrap();
    assert_eq!(stored, 0x0001_aa6c, "Debian 252.39's stub");
    assert_eq!(pe::checksum(&s, h.optional + pe::OPT_CHECKSUM), stored);
}

#[test]
fn assembled_checksum_is_recomputed() {
    for arch in Arch::ALL {
        let linux = kernel(arch);
        let uki = assemble(&stub(arch), &parts(&linux, b"i"), 5).unwrap();
        let h = Headers::parse(&uki).unwrap();
        let stored = pe::le32(&uki, h.optional + pe::OPT_CHECKSUM, "").unwrap();
        assert_eq!(
            stored,
            pe::checksum(&uki, h.optional + pe::OPT_CHECKSUM),
            "{arch}"
        );
    }
}

/// `objdump -h` rows: (name, size, vma, file offset).
fn objdump_sections(tool: Tool, file: &Path) -> Vec<(String, u64, u64, u64)> {
    let out = Command::new(tool.program)
        .arg("-h")
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 7 && f[0].parse::<u32>().is_ok()).then(|| {
                let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
                (f[1].to_string(), hex(f[2]), hex(f[3]), hex(f[5]))
            })
        })
        .collect()
}

fn objdump_private(tool: Tool, file: &Path) -> String {
    let out = Command::new(tool.program)
        .arg("-p")
        .arg(file)
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn binutils_reads_the_same_sections_and_headers() {
    for (arch, objdump, objcopy) in [
        (Arch::X86_64, OBJDUMP, OBJCOPY),
        (Arch::Aarch64, AARCH64_OBJDUMP, AARCH64_OBJCOPY),
    ] {
        tools::require(&[objdump, objcopy], &[]).unwrap();
        let (linux, initrd) = (kernel(arch), pattern(100_003, 5));
        let uki = assemble(&stub(arch), &parts(&linux, &initrd), 1_700_000_000).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("uki.efi");
        std::fs::write(&file, &uki).unwrap();

        let h = Headers::parse(&uki).unwrap();
        let ours: Vec<(String, u64, u64, u64)> = h
            .sections
            .iter()
            .map(|s| {
                let (va, ptr) = (s.virtual_address, s.pointer_to_raw_data);
                (s.name_str(), s.virtual_size.into(), va.into(), ptr.into())
            })
            .collect();
        assert_eq!(
            objdump_sections(objdump, &file),
            ours,
            "{arch}: objdump -h disagrees"
        );

        let p = objdump_private(objdump, &file);
        assert!(
            p.contains("Time/Date\t\tTue Nov 14 22:13:20 2023"),
            "{arch}: {p}"
        );
        assert!(
            p.contains(&format!("SizeOfImage\t\t{:08x}", h.size_of_image)),
            "{arch}: {p}"
        );
        let sum = pe::le32(&uki, h.optional + pe::OPT_CHECKSUM, "").unwrap();
        assert!(p.contains(&format!("CheckSum\t\t{sum:08x}")), "{arch}: {p}");

        for (name, want) in [
            (OSREL, OSREL_TEXT.as_bytes().to_vec()),
            (CMDLINE, format!("{CMDLINE_TEXT}\0").into_bytes()),
            (INITRD, initrd.clone()),
            (LINUX, linux.clone()),
        ] {
            let dumped = dir.path().join(name.trim_start_matches('.'));
            let out = Command::new(objcopy.program)
                .arg(format!("--dump-section={name}={}", dumped.display()))
                .arg(&file)
                .arg(dir.path().join("scratch"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let got = std::fs::read(&dumped).unwrap();
            assert_eq!(got.len(), want.len(), "{arch} {name}: objcopy's length");
            assert!(got == want, "{arch} {name}: objcopy reads other bytes");
        }
    }
}

#[test]
fn refuses_input_that_is_not_pe() {
    let linux = kernel(Arch::X86_64);
    let p = parts(&linux, b"");
    let s = stub(Arch::X86_64);
    let mut no_pe_sig = s.clone();
    no_pe_sig[0x80..0x84].copy_from_slice(b"XX\0\0");
    let mut bad_magic = s.clone();
    bad_magic[0x98..0x9a].copy_from_slice(&[0x07, 0x01]);
    let cases: [(&[u8], &str); 7] = [
        (b"", "starts with []"),
        (b"MZ", "ends inside the DOS header"),
        (
            b"#!/bin/sh\necho hello, this is not an EFI program at all, no MZ",
            "\"MZ\"",
        ),
        (&no_pe_sig, "no \"PE\\0\\0\" signature at offset 0x80"),
        (&bad_magic, "magic is 0x107"),
        (&s[..0x100], "ends inside the optional header"),
        (&s[..0x200], "ends inside the section table"),
    ];
    for (bytes, why) in cases {
        let e = assemble(bytes, &p, 0).unwrap_err();
        assert!(matches!(e, UkiError::StubNotPe(_)), "{e:?}");
        let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
        assert!(chain.contains("systemd-stub is not a PE image"), "{chain}");
        assert!(chain.contains(why), "{chain}");
        let e = section(bytes, LINUX).unwrap_err();
        assert!(matches!(e, UkiError::Read(_)), "{e:?}");
    }
}

#[test]
fn refuses_a_kernel_that_is_not_pe_naming_image_gz() {
    let gz = [0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0, 3];
    let e = assemble(&stub(Arch::Aarch64), &parts(&gz, b""), 0).unwrap_err();
    assert!(matches!(e, UkiError::KernelNotPe(_)), "{e:?}");
    assert!(e.to_string().contains("not Image.gz"), "{e}");
}

#[test]
fn refuses_a_kernel_for_the_other_arch() {
    let linux = kernel(Arch::Aarch64);
    let e = assemble(&stub(Arch::X86_64), &parts(&linux, b""), 0).unwrap_err();
    assert!(
        matches!(
            e,
            UkiError::KernelMachineMismatch {
                stub: 0x8664,
                kernel: 0xaa64
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "the kernel is built for aarch64 (machine 0xaa64) but the stub for x86_64 (machine 0x8664)"
    );
}

#[test]
fn refuses_a_stub_without_room_for_the_section_headers() {
    // The section table ends at 0x148 + 40 = 0x170; SizeOfHeaders 0x200 leaves 3 free slots.
    let tight = fake_pe(pe::IMAGE_FILE_MACHINE_AMD64, 1, 0x200, b"stub code");
    let linux = kernel(Arch::X86_64);
    let e = assemble(&tight, &parts(&linux, b"initrd"), 0).unwrap_err();
    assert!(
        matches!(
            e,
            UkiError::NoRoomForSections {
                needed: 5,
                free: 3,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("room for 3 more section headers"),
        "{e}"
    );
    // Three fit once the optional parts are dropped.
    let p = UkiParts {
        uname: None,
        osrel: "",
        ..parts(&linux, b"initrd")
    };
    let uki = assemble(&tight, &p, 0).unwrap();
    assert_eq!(section(&uki, INITRD).unwrap(), Some(&b"initrd"[..]));
}

#[test]
fn refuses_a_signed_stub() {
    let mut s = stub(Arch::X86_64);
    let h = Headers::parse(&s).unwrap();
    // Directory 4 of a PE32+ optional header: 112 + 4 * 8.
    pe::put32(&mut s, h.optional + 112 + 32, 0x11400, "").unwrap();
    pe::put32(&mut s, h.optional + 112 + 36, 0x800, "").unwrap();
    let linux = kernel(Arch::X86_64);
    let e = assemble(&s, &parts(&linux, b""), 0).unwrap_err();
    assert!(matches!(e, UkiError::StubSigned { size: 0x800 }), "{e:?}");
}

#[test]
fn refuses_a_uki_as_the_stub() {
    let linux = kernel(Arch::X86_64);
    let uki = assemble(&stub(Arch::X86_64), &parts(&linux, b""), 0).unwrap();
    let e = assemble(&uki, &parts(&linux, b""), 0).unwrap_err();
    assert!(matches!(e, UkiError::StubHasSection(".osrel")), "{e:?}");
}

#[test]
fn refuses_a_cmdline_with_a_nul() {
    let linux = kernel(Arch::X86_64);
    let p = UkiParts {
        cmdline: "console=ttyS0\0init=/bin/sh",
        ..parts(&linux, b"")
    };
    let e = assemble(&stub(Arch::X86_64), &p, 0).unwrap_err();
    assert!(matches!(e, UkiError::NulInCmdline), "{e:?}");
}

#[test]
fn section_of_a_missing_name_is_none() {
    assert_eq!(section(&stub(Arch::Aarch64), CMDLINE).unwrap(), None);
    assert_eq!(section(&stub(Arch::Aarch64), ".toolongname").unwrap(), None);
}

#[test]
fn refuses_a_stub_cut_short_inside_its_sections() {
    let s = stub(Arch::X86_64);
    let linux = kernel(Arch::X86_64);
    let e = assemble(&s[..0x11000], &parts(&linux, b""), 0).unwrap_err();
    assert!(
        matches!(
            e,
            UkiError::StubTruncated {
                data_end: 0x11400,
                len: 0x11000
            }
        ),
        "{e:?}"
    );
}

#[test]
fn reading_a_section_past_the_end_of_the_file_is_an_error() {
    let linux = kernel(Arch::Aarch64);
    let uki = assemble(&stub(Arch::Aarch64), &parts(&linux, b"i"), 0).unwrap();
    let cut = &uki[..uki.len() - 1000];
    let e = section(cut, LINUX).unwrap_err();
    let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(
        chain.contains("section .linux claims file bytes"),
        "{chain}"
    );
    assert_eq!(
        section(cut, CMDLINE).unwrap(),
        Some(CMDLINE_TEXT.as_bytes())
    );
}
