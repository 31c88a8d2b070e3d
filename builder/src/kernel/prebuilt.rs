//! A prebuilt kernel named by the declaration (`kernel.prebuilt.<arch>`): checked to be a file
//! and a kernel image for that arch, by the magic numbers the boot loaders themselves check,
//! before anything is built from it.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use hostdecl::{Arch, FileProblem};

/// The kinds of kernel image we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// x86 boot protocol image: "HdrS" at 0x202.
    BzImage,
    /// arm64 `Image`: "ARM\x64" at 0x38 (Documentation/arch/arm64/booting.rst).
    Arm64Image,
    /// A gzipped arm64 `Image` (what our kernel build writes, `Image.gz`).
    Arm64ImageGz,
    /// An EFI zboot image (`vmlinuz.efi`): a PE file ("MZ", "zimg" at 4) that decompresses
    /// itself; its PE machine field says the arch.
    Zboot(Arch),
}

impl KernelFormat {
    pub fn arch(self) -> Arch {
        match self {
            KernelFormat::BzImage => Arch::X86_64,
            KernelFormat::Arm64Image | KernelFormat::Arm64ImageGz => Arch::Aarch64,
            KernelFormat::Zboot(a) => a,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            KernelFormat::BzImage => "an x86_64 bzImage",
            KernelFormat::Arm64Image => "an arm64 Image",
            KernelFormat::Arm64ImageGz => "a gzipped arm64 Image",
            KernelFormat::Zboot(Arch::X86_64) => "an x86_64 EFI zboot image",
            KernelFormat::Zboot(Arch::Aarch64) => "an arm64 EFI zboot image",
        }
    }
}

/// What the kernel of each arch must be.
fn expected(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "an x86_64 bzImage (\"HdrS\" at offset 0x202)",
        Arch::Aarch64 => {
            "an arm64 Image (\"ARM\\x64\" at offset 0x38), Image.gz or EFI zboot image"
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PrebuiltError {
    #[error("{at}: prebuilt kernel {} {problem}", path.display())]
    File {
        at: String,
        path: PathBuf,
        problem: FileProblem,
    },
    #[error("{at}: reading prebuilt kernel {}", path.display())]
    Read {
        at: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{at}: prebuilt kernel {} is {}, not a kernel for {arch}", path.display(), found.describe())]
    WrongArch {
        at: String,
        path: PathBuf,
        arch: Arch,
        found: KernelFormat,
    },
    #[error("{at}: prebuilt kernel {} ({len} bytes) is not a kernel image: expected {}", path.display(), expected(*arch))]
    NotAKernel {
        at: String,
        path: PathBuf,
        arch: Arch,
        len: u64,
    },
}

/// Enough of the file to see every magic number, including a PE header's.
const HEAD: u64 = 4096;

/// Identifies a kernel image from its first bytes (and, for gzip, its first decompressed ones).
pub fn identify(path: &Path) -> io::Result<Option<KernelFormat>> {
    let mut head = Vec::new();
    File::open(path)?.take(HEAD).read_to_end(&mut head)?;
    if let Some(f) = identify_head(&head) {
        return Ok(Some(f));
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        let Ok((_, inner)) = aci::archive::compression::decompress(File::open(path)?) else {
            return Ok(None);
        };
        let mut inner_head = Vec::new();
        // A corrupt stream is "not a kernel", not an I/O failure.
        if inner.take(64).read_to_end(&mut inner_head).is_err() {
            return Ok(None);
        }
        if identify_head(&inner_head) == Some(KernelFormat::Arm64Image) {
            return Ok(Some(KernelFormat::Arm64ImageGz));
        }
    }
    Ok(None)
}

fn identify_head(head: &[u8]) -> Option<KernelFormat> {
    if head.get(0x202..0x206) == Some(b"HdrS") {
        return Some(KernelFormat::BzImage);
    }
    if head.get(0x38..0x3c) == Some(b"ARM\x64") {
        return Some(KernelFormat::Arm64Image);
    }
    if head.get(0..2) == Some(b"MZ") && head.get(4..8) == Some(b"zimg") {
        // e_lfanew at 0x3c points at "PE\0\0", followed by the COFF machine field.
        let pe = u32::from_le_bytes(head.get(0x3c..0x40)?.try_into().ok()?);
        let pe = usize::try_from(pe).ok()?;
        if head.get(pe..pe.checked_add(4)?) != Some(b"PE\0\0") {
            return None;
        }
        let machine = head.get(pe + 4..pe + 6)?;
        return match u16::from_le_bytes([machine[0], machine[1]]) {
            0x8664 => Some(KernelFormat::Zboot(Arch::X86_64)),
            0xaa64 => Some(KernelFormat::Zboot(Arch::Aarch64)),
            _ => None,
        };
    }
    None
}

/// Checks `path` is a kernel image for `arch`. `at` says where it was named
/// (`host.toml:7:12: kernel.prebuilt.x86_64`), and starts every error.
pub fn check(path: &Path, arch: Arch, at: &str) -> Result<KernelFormat, PrebuiltError> {
    hostdecl::check_file(path, "a kernel image").map_err(|problem| PrebuiltError::File {
        at: at.to_string(),
        path: path.to_path_buf(),
        problem,
    })?;
    let read_err = |source| PrebuiltError::Read {
        at: at.to_string(),
        path: path.to_path_buf(),
        source,
    };
    match identify(path).map_err(read_err)? {
        Some(f) if f.arch() == arch => Ok(f),
        Some(found) => Err(PrebuiltError::WrongArch {
            at: at.to_string(),
            path: path.to_path_buf(),
            arch,
            found,
        }),
        None => Err(PrebuiltError::NotAKernel {
            at: at.to_string(),
            path: path.to_path_buf(),
            arch,
            len: std::fs::metadata(path).map_err(read_err)?.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bzimage() -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b
    }

    fn arm64_image() -> Vec<u8> {
        let mut b = vec![0u8; 0x100];
        b[0..2].copy_from_slice(b"MZ");
        b[0x38..0x3c].copy_from_slice(b"ARM\x64");
        b
    }

    fn zboot(machine: u16) -> Vec<u8> {
        let mut b = vec![0u8; 0x200];
        b[0..2].copy_from_slice(b"MZ");
        b[4..8].copy_from_slice(b"zimg");
        b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        b[0x80..0x84].copy_from_slice(b"PE\0\0");
        b[0x84..0x86].copy_from_slice(&machine.to_le_bytes());
        b
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut child = std::process::Command::new("gzip")
            .arg("-c")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("`gzip` not found: install the Debian package gzip");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        out.stdout
    }

    #[test]
    fn accepts_each_kernel_format_for_its_arch() {
        let d = tempfile::tempdir().unwrap();
        let cases = [
            ("bz", bzimage(), Arch::X86_64, KernelFormat::BzImage),
            (
                "Image",
                arm64_image(),
                Arch::Aarch64,
                KernelFormat::Arm64Image,
            ),
            (
                "Image.gz",
                gzip(&arm64_image()),
                Arch::Aarch64,
                KernelFormat::Arm64ImageGz,
            ),
            (
                "vmlinuz.efi",
                zboot(0xaa64),
                Arch::Aarch64,
                KernelFormat::Zboot(Arch::Aarch64),
            ),
        ];
        for (name, bytes, arch, want) in cases {
            let p = write(d.path(), name, &bytes);
            assert_eq!(check(&p, arch, "t").unwrap(), want, "{name}");
        }
    }

    #[test]
    fn refuses_a_kernel_of_the_other_arch_naming_what_it_is() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "Image", &arm64_image());
        let e = check(&p, Arch::X86_64, "h.toml:5:3: kernel.prebuilt.x86_64").unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("h.toml:5:3: kernel.prebuilt.x86_64: "),
            "{text}"
        );
        assert!(
            text.contains("is an arm64 Image, not a kernel for x86_64"),
            "{text}"
        );
    }

    #[test]
    fn refuses_a_file_that_is_not_a_kernel() {
        let d = tempfile::tempdir().unwrap();
        for (name, bytes) in [
            ("hostname", b"box".to_vec()),
            ("random.gz", gzip(b"hello, not a kernel")),
            ("zeros", vec![0u8; 8192]),
        ] {
            let p = write(d.path(), name, &bytes);
            let e = check(&p, Arch::X86_64, "at").unwrap_err();
            assert!(matches!(e, PrebuiltError::NotAKernel { .. }), "{name}: {e}");
            assert!(e.to_string().contains("is not a kernel image"), "{e}");
            let e = check(&p, Arch::Aarch64, "at").unwrap_err();
            assert!(matches!(e, PrebuiltError::NotAKernel { .. }), "{name}: {e}");
        }
    }

    #[test]
    fn a_directory_is_called_a_directory() {
        let d = tempfile::tempdir().unwrap();
        let e = check(d.path(), Arch::X86_64, "at").unwrap_err();
        assert!(
            e.to_string()
                .ends_with("is a directory, not a kernel image"),
            "{e}"
        );
        let e = check(&d.path().join("none"), Arch::X86_64, "at").unwrap_err();
        assert!(e.to_string().ends_with("does not exist"), "{e}");
    }
}
