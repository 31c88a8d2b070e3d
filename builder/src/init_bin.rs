//! The guest's `init`, built for both architectures by `build.rs` when the builder is built and
//! carried inside the builder binary, so an installed builder needs neither this checkout nor
//! cargo to build images.

use hostdecl::Arch;

static INIT_X86_64: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/init-x86_64"));
static INIT_AARCH64: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/init-aarch64"));

/// The static init binary for `arch`.
pub fn for_arch(arch: Arch) -> &'static [u8] {
    match arch {
        Arch::X86_64 => INIT_X86_64,
        Arch::Aarch64 => INIT_AARCH64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_inits_are_static_elf_executables_for_their_machine() {
        // e_machine at offset 18: 0x3e x86-64, 0xb7 AArch64.
        for (arch, machine) in [(Arch::X86_64, 0x3e_u16), (Arch::Aarch64, 0xb7)] {
            let bin = for_arch(arch);
            assert_eq!(&bin[..4], b"\x7fELF", "{arch}");
            assert_eq!(u16::from_le_bytes([bin[18], bin[19]]), machine, "{arch}");
            // No PT_INTERP program header: a static binary has no dynamic loader.
            let phoff = u64::from_le_bytes(bin[32..40].try_into().unwrap()) as usize;
            let phentsize = u16::from_le_bytes([bin[54], bin[55]]) as usize;
            let phnum = u16::from_le_bytes([bin[56], bin[57]]) as usize;
            for i in 0..phnum {
                let p_type =
                    u32::from_le_bytes(bin[phoff + i * phentsize..][..4].try_into().unwrap());
                assert_ne!(p_type, 3, "{arch} init has a PT_INTERP");
            }
        }
    }
}
