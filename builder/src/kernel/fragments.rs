//! The kernel config fragments shipped in `kernel-config/`, carried inside the builder binary
//! so that an installed builder builds the same kernel without this checkout. `builder kernel
//! --fragments DIR` reads another directory instead.

use hostdecl::Arch;

const COMMON: &str = include_str!("../../../kernel-config/common.config");
const X86_64: &str = include_str!("../../../kernel-config/x86_64.config");
const AARCH64: &str = include_str!("../../../kernel-config/aarch64.config");

/// The built-in `common.config` and `<arch>.config`, each with the name errors show for it.
pub fn builtin(arch: Arch) -> [(&'static str, &'static str); 2] {
    let arch_fragment = match arch {
        Arch::X86_64 => ("kernel-config/x86_64.config (built in)", X86_64),
        Arch::Aarch64 => ("kernel-config/aarch64.config (built in)", AARCH64),
    };
    [
        ("kernel-config/common.config (built in)", COMMON),
        arch_fragment,
    ]
}
