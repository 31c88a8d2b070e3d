//! The disk `builder run` boots: which arch an image is for, and the size `--disk-size` takes.
//! (The sparse copy itself is `hostos_qemu::disk::sparse_copy`, which the tests use too.)

use std::path::Path;

use anyhow::{Result, bail};

use hostdecl::Arch;

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
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1073741824").unwrap(), 1 << 30);
        assert!(parse_size("4X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
