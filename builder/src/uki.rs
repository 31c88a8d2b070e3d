//! The Unified Kernel Image: Debian's systemd-stub with the kernel, initramfs, command line and
//! os-release appended as PE sections, written deterministically by the same code for both
//! arches (no objcopy: it stamps the wall-clock time into the header and keeps the x86 stub's
//! COFF symbol table).
//!
//! Layout, as systemd's `ukify` lays it out: the new sections follow the stub's last one, in the
//! order `.osrel`, `.cmdline`, `.uname`, `.initrd`, `.linux`, each at the next
//! SectionAlignment-aligned virtual address (`.linux` on a 64 KiB boundary) and the next
//! FileAlignment-aligned file offset. `.linux` comes last so the kernel has room above it to
//! decompress in place when the stub hands it over without copying. The stub's headers are
//! patched: section count, SizeOfImage, SizeOfInitializedData, TimeDateStamp (given by the
//! caller), the COFF symbol table pointer (cleared) and the checksum (recomputed).

// The coordinator wires `assemble` into `builder build` and `section` into `builder inspect`.

mod pe;

use std::path::PathBuf;

use hostdecl::Arch;

use pe::{Headers, PeError, Section};

pub const OSREL: &str = ".osrel";
pub const CMDLINE: &str = ".cmdline";
pub const UNAME: &str = ".uname";
pub const INITRD: &str = ".initrd";
pub const LINUX: &str = ".linux";

/// `.linux`'s virtual address is a multiple of this. arm64 kernels run from a 64 KiB-aligned
/// address and newer ones warn when a stub leaves them elsewhere (systemd/systemd#42443). The
/// 252 stub hands the kernel to the firmware's LoadImage, which copies it, so this is a
/// precaution; it costs address space, not file bytes, and is the same on both arches.
pub const LINUX_ALIGNMENT: u32 = 0x1_0000;

/// Read-only initialized data, which is what every part is to the stub: it finds them by
/// name and copies or hands them on (the kernel is started through LoadImage, so `.linux`
/// is never executed where it lies).
const DATA_CHARACTERISTICS: u32 = 0x4000_0040; // IMAGE_SCN_MEM_READ | IMAGE_SCN_CNT_INITIALIZED_DATA

/// What goes into a UKI besides the stub.
#[derive(Debug, Clone, Copy)]
pub struct UkiParts<'a> {
    /// The kernel as an EFI PE image: x86_64 bzImage, or the uncompressed arm64 `Image`.
    pub linux: &'a [u8],
    /// The initramfs; left out of the image when empty.
    pub initrd: &'a [u8],
    /// The kernel command line; the section carries it NUL-terminated, as stubs before 254
    /// expect.
    pub cmdline: &'a str,
    /// os-release text; left out when empty.
    pub osrel: &'a str,
    /// The kernel release (`uname -r`), which boot loaders show; left out when `None`.
    pub uname: Option<&'a str>,
}

/// Why a UKI cannot be assembled or read.
#[derive(Debug, thiserror::Error)]
pub enum UkiError {
    #[error("the systemd-stub is not a PE image that can be extended")]
    StubNotPe(#[source] PeError),
    #[error(
        "the kernel is not an EFI PE image (on aarch64 give the uncompressed arch/arm64/boot/Image, \
         not Image.gz; on x86_64 a bzImage built with CONFIG_EFI_STUB)"
    )]
    KernelNotPe(#[source] PeError),
    #[error("the kernel is built for {} but the stub for {}", machine_name(*.kernel), machine_name(*.stub))]
    KernelMachineMismatch { stub: u16, kernel: u16 },
    #[error(
        "the stub is signed (a {size}-byte certificate table); appending sections would break \
         the signature: use the unsigned stub and sign the assembled UKI"
    )]
    StubSigned { size: u32 },
    #[error("the stub already has a {0} section: is it a UKI rather than systemd-stub?")]
    StubHasSection(&'static str),
    #[error(
        "the stub's headers have room for {free} more section headers (from the end of the \
         section table at {table_end:#x} to the first section data or SizeOfHeaders at \
         {limit:#x}), but {needed} are needed"
    )]
    NoRoomForSections {
        needed: usize,
        free: usize,
        table_end: usize,
        limit: usize,
    },
    #[error(
        "the stub's data directory {index} (RVA {rva:#x}, {size} bytes) lies in the header \
         space the new section headers need"
    )]
    HeaderSpaceInUse { index: usize, rva: u32, size: u32 },
    #[error(
        "the stub's COFF symbol table at {offset:#x} lies inside its section data (which ends \
         at {data_end:#x})"
    )]
    SymbolTableInsideSections { offset: u32, data_end: u64 },
    #[error("the stub's section data ends at {data_end:#x}, past the end of the {len}-byte file")]
    StubTruncated { data_end: u64, len: usize },
    #[error("the command line contains a NUL byte, which would end it early for the stub")]
    NulInCmdline,
    #[error("the {section} section ({len} bytes) would take the image past 4 GiB, the PE limit")]
    TooLarge { section: &'static str, len: usize },
    #[error("the file is not a PE image that can be read")]
    Read(#[source] PeError),
}

/// Where Debian's systemd-boot-efi package installs the stub for `arch`.
pub fn stub_path(arch: Arch) -> PathBuf {
    PathBuf::from(stub_file(arch).path)
}

/// The stub for `arch` with the package that installs it, for `tools::require`.
pub fn stub_file(arch: Arch) -> crate::tools::DataFile {
    match arch {
        Arch::X86_64 => crate::tools::DataFile {
            path: "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
            package: "systemd-boot-efi",
        },
        Arch::Aarch64 => crate::tools::DataFile {
            path: "/usr/lib/systemd/boot/efi/linuxaa64.efi.stub",
            package: "systemd-boot-efi:arm64 (after `dpkg --add-architecture arm64`)",
        },
    }
}

/// Appends `parts` to `stub` and returns the UKI. The output depends only on the inputs:
/// `timestamp` becomes the COFF TimeDateStamp and nothing else varies.
///
/// What the stub's file holds after its last section's data (the x86 stub's COFF symbol and
/// string tables; the arm64 stub's unmapped copy of its SBAT text) is dropped: no loader
/// maps it, and bytes between sections would be outside what an Authenticode signature
/// covers. SizeOfHeaders stays as it is: the new section headers must fit in the stub's
/// existing header space, since moving section data would break the stub's own addresses.
pub fn assemble(stub: &[u8], parts: &UkiParts, timestamp: u32) -> Result<Vec<u8>, UkiError> {
    let h = Headers::parse(stub).map_err(UkiError::StubNotPe)?;
    check_kernel(&h, parts.linux)?;
    if parts.cmdline.contains('\0') {
        return Err(UkiError::NulInCmdline);
    }
    let new = parts.sections();
    for (name, _) in &new {
        if h.sections.iter().any(|s| s.name_str() == *name) {
            return Err(UkiError::StubHasSection(name));
        }
    }
    if let Some((_, size)) = h.certificate_table
        && size != 0
    {
        return Err(UkiError::StubSigned { size });
    }

    let data_end = h
        .sections
        .iter()
        .map(Section::file_end)
        .max()
        .unwrap_or(0)
        .max(u64::from(h.size_of_headers));
    let keep = usize::try_from(data_end)
        .ok()
        .filter(|&k| k <= stub.len())
        .ok_or(UkiError::StubTruncated {
            data_end,
            len: stub.len(),
        })?;
    if h.pointer_to_symbol_table != 0 && u64::from(h.pointer_to_symbol_table) < data_end {
        return Err(UkiError::SymbolTableInsideSections {
            offset: h.pointer_to_symbol_table,
            data_end,
        });
    }
    let slots = check_header_room(&h, new.len())?;

    let mut out = stub[..keep].to_vec();
    let mut va = h
        .sections
        .iter()
        .map(Section::virtual_end)
        .max()
        .unwrap_or(0)
        .max(u64::from(h.size_of_image));
    let mut initialized = u64::from(h.size_of_initialized_data);
    let mut added = Vec::with_capacity(new.len());
    for (name, data) in &new {
        let too_large = || UkiError::TooLarge {
            section: name,
            len: data.len(),
        };
        let align = if *name == LINUX {
            h.section_alignment.max(LINUX_ALIGNMENT)
        } else {
            h.section_alignment
        };
        let at = pe::align_up(va, align);
        let ptr = pe::align_up(out.len() as u64, h.file_alignment);
        let raw = pe::align_up(data.len() as u64, h.file_alignment);
        let section = Section {
            name: name8(name),
            virtual_size: u32::try_from(data.len()).map_err(|_| too_large())?,
            virtual_address: u32::try_from(at).map_err(|_| too_large())?,
            size_of_raw_data: u32::try_from(raw).map_err(|_| too_large())?,
            pointer_to_raw_data: u32::try_from(ptr).map_err(|_| too_large())?,
            characteristics: DATA_CHARACTERISTICS,
        };
        let file_end = usize::try_from(ptr + raw).map_err(|_| too_large())?;
        out.resize(section.pointer_to_raw_data as usize, 0);
        out.extend_from_slice(data);
        out.resize(file_end, 0);
        va = at + data.len() as u64;
        initialized += raw;
        added.push(section);
    }
    let last = new.last().map_or(LINUX, |(n, _)| n);
    let too_large = || UkiError::TooLarge {
        section: last,
        len: parts.linux.len(),
    };
    let size_of_image =
        u32::try_from(pe::align_up(va, h.section_alignment)).map_err(|_| too_large())?;
    let initialized = u32::try_from(initialized).map_err(|_| too_large())?;
    u32::try_from(out.len()).map_err(|_| too_large())?;
    let count = u16::try_from(h.sections.len() + added.len()).map_err(|_| too_large())?;

    write_headers(
        &mut out,
        &h,
        &added,
        slots,
        count,
        size_of_image,
        initialized,
        timestamp,
    )
    .map_err(UkiError::StubNotPe)?;
    Ok(out)
}

/// The bytes of section `name` in the PE image `pe` as the stub reads them (VirtualSize
/// bytes), or `None` when there is no such section. For `.cmdline` the NUL terminator that
/// [`assemble`] adds is not part of the command line and is not returned.
pub fn section<'a>(pe: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, UkiError> {
    let h = Headers::parse(pe).map_err(UkiError::Read)?;
    let Some(s) = h.sections.iter().find(|s| s.name_str() == name) else {
        return Ok(None);
    };
    let data = h.data(pe, s).map_err(UkiError::Read)?;
    if name == CMDLINE {
        return Ok(Some(data.strip_suffix(&[0]).unwrap_or(data)));
    }
    Ok(Some(data))
}

impl UkiParts<'_> {
    /// The sections to add, in their order, without the empty optional ones.
    fn sections(&self) -> Vec<(&'static str, Vec<u8>)> {
        let mut cmdline = self.cmdline.as_bytes().to_vec();
        cmdline.push(0);
        let mut v = Vec::with_capacity(5);
        if !self.osrel.is_empty() {
            v.push((OSREL, self.osrel.as_bytes().to_vec()));
        }
        v.push((CMDLINE, cmdline));
        if let Some(u) = self.uname.filter(|u| !u.is_empty()) {
            v.push((UNAME, u.as_bytes().to_vec()));
        }
        if !self.initrd.is_empty() {
            v.push((INITRD, self.initrd.to_vec()));
        }
        v.push((LINUX, self.linux.to_vec()));
        v
    }
}

/// The stub starts the kernel through the firmware's LoadImage, so the kernel must be a PE
/// image for the stub's machine. Checking here turns an Image.gz or a kernel of the other arch
/// into an error at build time instead of a hang at boot.
fn check_kernel(stub: &Headers, linux: &[u8]) -> Result<(), UkiError> {
    let k = Headers::parse(linux).map_err(UkiError::KernelNotPe)?;
    if k.machine != stub.machine {
        return Err(UkiError::KernelMachineMismatch {
            stub: stub.machine,
            kernel: k.machine,
        });
    }
    Ok(())
}

/// Checks that `n` section headers fit after the section table, before the first section's
/// data and within SizeOfHeaders (the header bytes the loader maps, where the stub looks its
/// sections up at run time). Returns the file offset where they go.
///
/// The space is not required to be zero: the arm64 stub's is filled with NOP instructions,
/// alignment padding nothing refers to. What could refer to it is a data directory (header
/// RVAs equal file offsets), and that is checked.
fn check_header_room(h: &Headers, n: usize) -> Result<usize, UkiError> {
    let table_end = h.section_table_end();
    let first_data = h
        .sections
        .iter()
        .filter(|s| s.size_of_raw_data != 0)
        .map(|s| s.pointer_to_raw_data)
        .min()
        .unwrap_or(u32::MAX);
    let limit = h.size_of_headers.min(first_data) as usize;
    let free = limit.saturating_sub(table_end) / pe::SECTION_HEADER_LEN;
    if free < n {
        return Err(UkiError::NoRoomForSections {
            needed: n,
            free,
            table_end,
            limit,
        });
    }
    let slots = table_end as u64..(table_end + n * pe::SECTION_HEADER_LEN) as u64;
    for (index, &(rva, size)) in h.directories.iter().enumerate() {
        let dir = u64::from(rva)..u64::from(rva) + u64::from(size);
        if size != 0 && dir.start < slots.end && slots.start < dir.end {
            return Err(UkiError::HeaderSpaceInUse { index, rva, size });
        }
    }
    Ok(table_end)
}

#[allow(clippy::too_many_arguments)]
fn write_headers(
    out: &mut [u8],
    h: &Headers,
    added: &[Section],
    slots: usize,
    count: u16,
    size_of_image: u32,
    initialized: u32,
    timestamp: u32,
) -> Result<(), PeError> {
    for (i, s) in added.iter().enumerate() {
        let at = slots + i * pe::SECTION_HEADER_LEN;
        pe::put(out, at, &s.encode(), "section table")?;
    }
    let coff = h.coff;
    pe::put16(
        out,
        coff + pe::COFF_NUMBER_OF_SECTIONS,
        count,
        "COFF header",
    )?;
    pe::put32(
        out,
        coff + pe::COFF_TIME_DATE_STAMP,
        timestamp,
        "COFF header",
    )?;
    pe::put32(
        out,
        coff + pe::COFF_POINTER_TO_SYMBOL_TABLE,
        0,
        "COFF header",
    )?;
    pe::put32(out, coff + pe::COFF_NUMBER_OF_SYMBOLS, 0, "COFF header")?;
    let opt = h.optional;
    pe::put32(
        out,
        opt + pe::OPT_SIZE_OF_INITIALIZED_DATA,
        initialized,
        "optional header",
    )?;
    pe::put32(
        out,
        opt + pe::OPT_SIZE_OF_IMAGE,
        size_of_image,
        "optional header",
    )?;
    // The firmware does not check the checksum and Authenticode skips it, but a correct one
    // costs one pass over the file and keeps tools that verify it quiet.
    let sum = pe::checksum(out, opt + pe::OPT_CHECKSUM);
    pe::put32(out, opt + pe::OPT_CHECKSUM, sum, "optional header")
}

fn name8(name: &str) -> [u8; 8] {
    let mut n = [0u8; 8];
    for (d, s) in n.iter_mut().zip(name.bytes()) {
        *d = s;
    }
    n
}

fn machine_name(m: u16) -> String {
    match m {
        pe::IMAGE_FILE_MACHINE_AMD64 => "x86_64 (machine 0x8664)".to_string(),
        pe::IMAGE_FILE_MACHINE_ARM64 => "aarch64 (machine 0xaa64)".to_string(),
        m => format!("machine {m:#06x}"),
    }
}

#[cfg(test)]
mod tests;
