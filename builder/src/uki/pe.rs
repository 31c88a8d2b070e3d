//! The few PE/COFF facts the UKI assembler needs, read by hand from the bytes: the COFF file
//! header, the optional header fields that describe layout, the section table, and the image
//! checksum. Offsets follow the PE format specification ("PE Format", Microsoft); PE32 and
//! PE32+ differ only where the data directories start, which is all we read past the
//! alignment fields.

/// Offsets inside the 20-byte COFF file header, relative to its start (just after `PE\0\0`).
pub const COFF_MACHINE: usize = 0;
pub const COFF_NUMBER_OF_SECTIONS: usize = 2;
pub const COFF_TIME_DATE_STAMP: usize = 4;
pub const COFF_POINTER_TO_SYMBOL_TABLE: usize = 8;
pub const COFF_NUMBER_OF_SYMBOLS: usize = 12;
const COFF_SIZE_OF_OPTIONAL_HEADER: usize = 16;
const COFF_HEADER_LEN: usize = 20;

/// Offsets inside the optional header, the same for PE32 and PE32+.
const OPT_MAGIC: usize = 0;
pub const OPT_SIZE_OF_INITIALIZED_DATA: usize = 8;
const OPT_SECTION_ALIGNMENT: usize = 32;
const OPT_FILE_ALIGNMENT: usize = 36;
pub const OPT_SIZE_OF_IMAGE: usize = 56;
const OPT_SIZE_OF_HEADERS: usize = 60;
pub const OPT_CHECKSUM: usize = 64;
/// Where NumberOfRvaAndSizes sits; the data directories follow it.
const OPT_NUMBER_OF_RVA_AND_SIZES_PE32: usize = 92;
const OPT_NUMBER_OF_RVA_AND_SIZES_PE32_PLUS: usize = 108;

const MAGIC_PE32: u16 = 0x10b;
const MAGIC_PE32_PLUS: u16 = 0x20b;

/// Index of the certificate table (Authenticode signatures) among the data directories.
const DIR_CERTIFICATE_TABLE: usize = 4;

pub const SECTION_HEADER_LEN: usize = 40;
pub const IMAGE_FILE_MACHINE_AMD64: u16 = 0x8664;
pub const IMAGE_FILE_MACHINE_ARM64: u16 = 0xaa64;

/// Why bytes are not a PE image we can read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeError {
    #[error("the file is {len} bytes long and ends inside the {what} (at offset {offset:#x})")]
    Truncated {
        what: &'static str,
        offset: usize,
        len: usize,
    },
    #[error("it does not start with the DOS signature \"MZ\" (starts with {found:02x?})")]
    NoDosSignature { found: Vec<u8> },
    #[error("there is no \"PE\\0\\0\" signature at offset {offset:#x}, where e_lfanew points")]
    NoPeSignature { offset: usize },
    #[error("the optional header's magic is {0:#x}, neither PE32 (0x10b) nor PE32+ (0x20b)")]
    BadMagic(u16),
    #[error("the optional header is {size} bytes, too short for the {what} field")]
    OptionalHeaderTooShort { size: usize, what: &'static str },
    #[error("{field} is {value:#x}, not a power of two")]
    BadAlignment { field: &'static str, value: u32 },
    #[error(
        "section {name} claims file bytes {start:#x}..{end:#x}, past the end of the {len}-byte file"
    )]
    SectionOutsideFile {
        name: String,
        start: u64,
        end: u64,
        len: usize,
    },
}

/// One entry of the section table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: [u8; 8],
    pub virtual_size: u32,
    pub virtual_address: u32,
    pub size_of_raw_data: u32,
    pub pointer_to_raw_data: u32,
    pub characteristics: u32,
}

impl Section {
    /// The name as text, for messages (`.text`; non-UTF-8 bytes replaced).
    pub fn name_str(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(8);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }

    /// The bytes a loader maps: VirtualSize of them (the rest of the raw data is file padding),
    /// or the whole raw data when a linker left VirtualSize 0.
    pub fn loaded_len(&self) -> u32 {
        if self.virtual_size == 0 {
            self.size_of_raw_data
        } else {
            self.virtual_size.min(self.size_of_raw_data)
        }
    }

    /// First virtual address after the section's memory.
    pub fn virtual_end(&self) -> u64 {
        u64::from(self.virtual_address) + u64::from(self.virtual_size.max(self.size_of_raw_data))
    }

    /// First file offset after the section's raw data (0 for a section without any).
    pub fn file_end(&self) -> u64 {
        if self.size_of_raw_data == 0 {
            0
        } else {
            u64::from(self.pointer_to_raw_data) + u64::from(self.size_of_raw_data)
        }
    }

    /// The 40-byte section header.
    pub fn encode(&self) -> [u8; SECTION_HEADER_LEN] {
        let mut h = [0u8; SECTION_HEADER_LEN];
        h[..8].copy_from_slice(&self.name);
        h[8..12].copy_from_slice(&self.virtual_size.to_le_bytes());
        h[12..16].copy_from_slice(&self.virtual_address.to_le_bytes());
        h[16..20].copy_from_slice(&self.size_of_raw_data.to_le_bytes());
        h[20..24].copy_from_slice(&self.pointer_to_raw_data.to_le_bytes());
        // PointerToRelocations, PointerToLinenumbers and their counts stay 0, as images have.
        h[36..40].copy_from_slice(&self.characteristics.to_le_bytes());
        h
    }
}

/// The headers of a PE image, with the offsets needed to rewrite them in place.
#[derive(Debug, Clone)]
pub struct Headers {
    /// File offset of the COFF file header (just after `PE\0\0`).
    pub coff: usize,
    /// File offset of the optional header.
    pub optional: usize,
    pub machine: u16,
    pub pointer_to_symbol_table: u32,
    pub section_alignment: u32,
    pub file_alignment: u32,
    pub size_of_initialized_data: u32,
    pub size_of_image: u32,
    pub size_of_headers: u32,
    /// The certificate table's (file offset, size), when the image has that directory.
    pub certificate_table: Option<(u32, u32)>,
    /// The data directories' (RVA, size) pairs, in order.
    pub directories: Vec<(u32, u32)>,
    /// File offset of the section table.
    pub section_table: usize,
    pub sections: Vec<Section>,
}

impl Headers {
    /// Reads the headers and section table of `pe`. Section data is not checked here; use
    /// [`Headers::data`] to get at it.
    pub fn parse(pe: &[u8]) -> Result<Headers, PeError> {
        if pe.get(..2) != Some(b"MZ") {
            return Err(PeError::NoDosSignature {
                found: pe.iter().take(2).copied().collect(),
            });
        }
        let sig = usize_from(le32(pe, 0x3c, "DOS header")?);
        if bytes(pe, sig, 4, "PE signature")? != b"PE\0\0" {
            return Err(PeError::NoPeSignature { offset: sig });
        }
        let coff = sig + 4;
        bytes(pe, coff, COFF_HEADER_LEN, "COFF file header")?;
        let machine = le16(pe, coff + COFF_MACHINE, "COFF file header")?;
        let nsections = le16(pe, coff + COFF_NUMBER_OF_SECTIONS, "COFF file header")?;
        let pointer_to_symbol_table =
            le32(pe, coff + COFF_POINTER_TO_SYMBOL_TABLE, "COFF file header")?;
        let opt_size = usize::from(le16(
            pe,
            coff + COFF_SIZE_OF_OPTIONAL_HEADER,
            "COFF file header",
        )?);
        let optional = coff + COFF_HEADER_LEN;
        let opt = bytes(pe, optional, opt_size, "optional header")?;
        let field = |off: usize, what: &'static str| -> Result<u32, PeError> {
            if off + 4 > opt.len() {
                return Err(PeError::OptionalHeaderTooShort {
                    size: opt.len(),
                    what,
                });
            }
            le32(opt, off, "optional header")
        };
        if opt.len() < 2 {
            return Err(PeError::OptionalHeaderTooShort {
                size: opt.len(),
                what: "Magic",
            });
        }
        let magic = le16(opt, OPT_MAGIC, "optional header")?;
        let nrva_at = match magic {
            MAGIC_PE32 => OPT_NUMBER_OF_RVA_AND_SIZES_PE32,
            MAGIC_PE32_PLUS => OPT_NUMBER_OF_RVA_AND_SIZES_PE32_PLUS,
            m => return Err(PeError::BadMagic(m)),
        };
        let section_alignment = field(OPT_SECTION_ALIGNMENT, "SectionAlignment")?;
        let file_alignment = field(OPT_FILE_ALIGNMENT, "FileAlignment")?;
        for (field, value) in [
            ("SectionAlignment", section_alignment),
            ("FileAlignment", file_alignment),
        ] {
            if !value.is_power_of_two() {
                return Err(PeError::BadAlignment { field, value });
            }
        }
        let size_of_initialized_data =
            field(OPT_SIZE_OF_INITIALIZED_DATA, "SizeOfInitializedData")?;
        let size_of_image = field(OPT_SIZE_OF_IMAGE, "SizeOfImage")?;
        let size_of_headers = field(OPT_SIZE_OF_HEADERS, "SizeOfHeaders")?;
        field(OPT_CHECKSUM, "CheckSum")?;
        let nrva = usize_from(field(nrva_at, "NumberOfRvaAndSizes")?);
        // Directories that do not fit the optional header are absent, as loaders treat them.
        let room = (opt.len() - (nrva_at + 4)) / 8;
        let directories = (0..nrva.min(room))
            .map(|i| {
                let at = nrva_at + 4 + 8 * i;
                Ok((
                    le32(opt, at, "optional header")?,
                    le32(opt, at + 4, "optional header")?,
                ))
            })
            .collect::<Result<Vec<_>, PeError>>()?;
        let certificate_table = directories.get(DIR_CERTIFICATE_TABLE).copied();

        let section_table = optional + opt_size;
        let table = bytes(
            pe,
            section_table,
            SECTION_HEADER_LEN * usize::from(nsections),
            "section table",
        )?;
        let sections = table
            .chunks_exact(SECTION_HEADER_LEN)
            .map(|h| {
                let mut name = [0u8; 8];
                name.copy_from_slice(&h[..8]);
                Ok(Section {
                    name,
                    virtual_size: le32(h, 8, "section table")?,
                    virtual_address: le32(h, 12, "section table")?,
                    size_of_raw_data: le32(h, 16, "section table")?,
                    pointer_to_raw_data: le32(h, 20, "section table")?,
                    characteristics: le32(h, 36, "section table")?,
                })
            })
            .collect::<Result<Vec<_>, PeError>>()?;
        Ok(Headers {
            coff,
            optional,
            machine,
            pointer_to_symbol_table,
            section_alignment,
            file_alignment,
            size_of_initialized_data,
            size_of_image,
            size_of_headers,
            certificate_table,
            directories,
            section_table,
            sections,
        })
    }

    /// File offset just after the last section header.
    pub fn section_table_end(&self) -> usize {
        self.section_table + SECTION_HEADER_LEN * self.sections.len()
    }

    /// The bytes of `s` that a loader maps, checked against the file's length.
    pub fn data<'a>(&self, pe: &'a [u8], s: &Section) -> Result<&'a [u8], PeError> {
        let start = u64::from(s.pointer_to_raw_data);
        let end = start + u64::from(s.loaded_len());
        let outside = || PeError::SectionOutsideFile {
            name: s.name_str(),
            start,
            end,
            len: pe.len(),
        };
        let (Ok(a), Ok(b)) = (usize::try_from(start), usize::try_from(end)) else {
            return Err(outside());
        };
        pe.get(a..b).ok_or_else(outside)
    }
}

/// The PE image checksum (the algorithm of imagehlp's CheckSumMappedFile): a 16-bit
/// one's-complement-style sum of the file's little-endian words, with the 4 bytes of the
/// CheckSum field itself counted as 0, plus the file length.
pub fn checksum(pe: &[u8], checksum_at: usize) -> u32 {
    let mut sum: u64 = 0;
    for (i, chunk) in pe.chunks(2).enumerate() {
        let at = 2 * i;
        if at >= checksum_at && at < checksum_at + 4 {
            continue;
        }
        let word = u64::from(chunk[0]) | (u64::from(chunk.get(1).copied().unwrap_or(0)) << 8);
        sum += word;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    // The sum is below 0x10000 and PE files are far below 4 GiB, so this fits; wrapping
    // matches the reference algorithm's 32-bit arithmetic if they ever were not.
    (sum as u32).wrapping_add(pe.len() as u32)
}

/// Rounds `v` up to a multiple of `align` (a power of two).
pub fn align_up(v: u64, align: u32) -> u64 {
    let a = u64::from(align);
    v.div_ceil(a) * a
}

fn bytes<'a>(pe: &'a [u8], at: usize, n: usize, what: &'static str) -> Result<&'a [u8], PeError> {
    pe.get(at..at.saturating_add(n)).ok_or(PeError::Truncated {
        what,
        offset: at,
        len: pe.len(),
    })
}

fn le16(pe: &[u8], at: usize, what: &'static str) -> Result<u16, PeError> {
    let b = bytes(pe, at, 2, what)?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

pub fn le32(pe: &[u8], at: usize, what: &'static str) -> Result<u32, PeError> {
    let b = bytes(pe, at, 4, what)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Writes `v` little-endian at `at`.
pub fn put32(buf: &mut [u8], at: usize, v: u32, what: &'static str) -> Result<(), PeError> {
    put(buf, at, &v.to_le_bytes(), what)
}

pub fn put16(buf: &mut [u8], at: usize, v: u16, what: &'static str) -> Result<(), PeError> {
    put(buf, at, &v.to_le_bytes(), what)
}

pub fn put(buf: &mut [u8], at: usize, v: &[u8], what: &'static str) -> Result<(), PeError> {
    let len = buf.len();
    buf.get_mut(at..at.saturating_add(v.len()))
        .ok_or(PeError::Truncated {
            what,
            offset: at,
            len,
        })?
        .copy_from_slice(v);
    Ok(())
}

fn usize_from(v: u32) -> usize {
    // PE offsets are 32-bit; usize is at least that on every host the builder runs on.
    v as usize
}
