//! The disk `builder run` boots: which arch an image is for, and the sparse copy (optionally
//! enlarged) that QEMU writes to, so the user's image stays as it was built.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

use hostdecl::Arch;

/// qcow2's magic, `QFI\xfb`: a format QEMU would have to be told, and which a byte copy
/// cannot grow.
const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";
/// Copy granularity: runs of zeros this long become holes.
const CHUNK: usize = 1 << 20;

/// The arch an image is for, from its name: `NAME-ARCH.img` as `builder build` writes it.
pub fn arch_of_image(image: &Path) -> Result<Arch> {
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".img").unwrap_or(&name);
    for arch in Arch::ALL {
        if stem.ends_with(&format!("-{}", arch.as_str())) {
            return Ok(arch);
        }
    }
    bail!(
        "cannot tell which architecture {} is for: builder build names images NAME-ARCH.img \
         (NAME-x86_64.img, NAME-aarch64.img); rename it or pass --arch",
        image.display()
    )
}

/// Copies the raw image `from` to `to` (a new file) without writing its runs of zeros, so the
/// copy takes the space the image's data does, then sets its length to `size` (at least the
/// image's own). Returns the copy's length.
pub fn sparse_copy(from: &Path, to: &Path, size: Option<u64>) -> Result<u64> {
    let mut src = File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let len = src
        .metadata()
        .with_context(|| format!("reading the size of {}", from.display()))?
        .len();
    let target_len = match size {
        Some(size) if size < len => bail!(
            "--disk-size {size} is smaller than the image {} ({len} bytes): the copy can only \
             grow",
            from.display()
        ),
        Some(size) => size,
        None => len,
    };
    let dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .with_context(|| format!("creating {}", to.display()))?;
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let n =
            read_full(&mut src, &mut buf).with_context(|| format!("reading {}", from.display()))?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        if offset == 0 && chunk.starts_with(QCOW2_MAGIC) {
            bail!(
                "{} is a qcow2 image: builder run boots the raw NAME-ARCH.img",
                from.display()
            );
        }
        if chunk.iter().any(|&b| b != 0) {
            dst.write_all_at(chunk, offset)
                .with_context(|| format!("writing {}", to.display()))?;
        }
        offset += n as u64;
    }
    dst.set_len(target_len)
        .with_context(|| format!("setting the length of {}", to.display()))?;
    Ok(target_len)
}

/// Reads until `buf` is full or the file ends; the number of bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A size for `--disk-size`: bytes, or a number with K, M, G or T (powers of 1024, an optional
/// `iB`/`B` after it), as `qemu-img resize` takes them.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (like 4G, 512M or 1073741824)"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("{text:?}: unknown unit (use K, M, G or T)")),
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn arch_comes_from_the_name_builder_build_writes() {
        assert_eq!(
            arch_of_image(Path::new("out/hello-x86_64.img")).unwrap(),
            Arch::X86_64
        );
        assert_eq!(
            arch_of_image(Path::new("/x/my-host-aarch64.img")).unwrap(),
            Arch::Aarch64
        );
        let err = arch_of_image(Path::new("disk.img"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("NAME-x86_64.img") && err.contains("--arch"),
            "{err}"
        );
    }

    #[test]
    fn sparse_copy_keeps_data_leaves_holes_and_grows_to_the_size_asked() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("a-x86_64.img");
        let mut bytes = vec![0u8; 8 * CHUNK];
        bytes[10] = 1;
        bytes[5 * CHUNK + 3] = 2;
        std::fs::write(&image, &bytes).unwrap();
        let copy = dir.path().join("copy.img");
        let len = sparse_copy(&image, &copy, Some(64 * CHUNK as u64)).unwrap();
        assert_eq!(len, 64 * CHUNK as u64);
        let copied = std::fs::read(&copy).unwrap();
        assert_eq!(copied.len(), 64 * CHUNK);
        assert_eq!(copied[..bytes.len()], bytes[..]);
        assert!(copied[bytes.len()..].iter().all(|&b| b == 0));
        // Two chunks of data, not 64 MiB: the zeros are holes.
        let allocated = std::fs::metadata(&copy).unwrap().blocks() * 512;
        assert!(
            allocated <= 2 * CHUNK as u64 + 65536,
            "{allocated} bytes allocated"
        );
    }

    #[test]
    fn sparse_copy_refuses_to_shrink_and_refuses_qcow2() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("a-x86_64.img");
        std::fs::write(&image, vec![1u8; 4096]).unwrap();
        let err = sparse_copy(&image, &dir.path().join("c1"), Some(1024)).unwrap_err();
        assert!(err.to_string().contains("only grow"), "{err}");
        let qcow = dir.path().join("q-x86_64.img");
        std::fs::write(&qcow, b"QFI\xfb\0\0\0\x03").unwrap();
        let err = sparse_copy(&qcow, &dir.path().join("c2"), None).unwrap_err();
        assert!(err.to_string().contains("qcow2"), "{err}");
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1073741824").unwrap(), 1 << 30);
        assert!(parse_size("4X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
