//! The test that keeps the kernel's hardening true: it reads the merged `.config` the kernel
//! cache holds for the shipped fragments, per arch, and fails naming each hardening option that
//! is lost and the fragment line that should set it.
//!
//! Two ways an option gets lost, both caught: kconfig drops a requested option (an unmet
//! dependency after an edit elsewhere), or someone deletes or changes the fragment line. The
//! second is why the options are pinned here by hand as well as read from the fragments.
//!
//! The merged config comes from the cache (`builder kernel --arch ARCH` fills it; scripts/test.sh
//! builds both kernels before `cargo test`). A missing entry is a failure that says so, never a
//! skip.

use std::path::Path;

use hostdecl::Arch;

use super::config::{self, Request};
use super::{KernelRequest, cached_config};

/// Hardening both arches must keep: (symbol, value), `None` meaning "is not set".
const COMMON: &[(&str, Option<&str>)] = &[
    ("MODULES", None),
    ("SLAB_FREELIST_RANDOM", Some("y")),
    ("SLAB_FREELIST_HARDENED", Some("y")),
    ("SLAB_MERGE_DEFAULT", None),
    ("SHUFFLE_PAGE_ALLOCATOR", Some("y")),
    ("STACKPROTECTOR_STRONG", Some("y")),
    ("STRICT_KERNEL_RWX", Some("y")),
    ("VMAP_STACK", Some("y")),
    ("RANDOMIZE_BASE", Some("y")),
    ("HARDENED_USERCOPY", Some("y")),
    ("FORTIFY_SOURCE", Some("y")),
    ("INIT_ON_ALLOC_DEFAULT_ON", Some("y")),
    ("INIT_STACK_ALL_ZERO", Some("y")),
    ("ZERO_CALL_USED_REGS", Some("y")),
    ("RANDOMIZE_KSTACK_OFFSET_DEFAULT", Some("y")),
    ("BUG_ON_DATA_CORRUPTION", Some("y")),
    ("DEBUG_LIST", Some("y")),
    ("DEBUG_SG", Some("y")),
    ("DEBUG_NOTIFIERS", Some("y")),
    ("DEBUG_CREDENTIALS", Some("y")),
    ("DEBUG_VIRTUAL", Some("y")),
    ("SCHED_STACK_END_CHECK", Some("y")),
    ("PAGE_TABLE_CHECK_ENFORCED", Some("y")),
    ("DEBUG_WX", Some("y")),
    ("PANIC_ON_OOPS", Some("y")),
    ("SECURITY_DMESG_RESTRICT", Some("y")),
    ("SECURITY_YAMA", Some("y")),
    ("SECURITY_LANDLOCK", Some("y")),
    ("SECURITY_LOCKDOWN_LSM", Some("y")),
    ("SECURITY_LOCKDOWN_LSM_EARLY", Some("y")),
    ("LOCK_DOWN_KERNEL_FORCE_INTEGRITY", Some("y")),
    ("LSM", Some("\"landlock,lockdown,yama\"")),
    ("DEFAULT_MMAP_MIN_ADDR", Some("65536")),
    ("SCHED_CORE", Some("y")),
    ("STATIC_USERMODEHELPER", Some("y")),
    ("PROC_MEM_NO_FORCE", Some("y")),
    ("SYN_COOKIES", Some("y")),
    ("EFI_DISABLE_PCI_DMA", Some("y")),
    ("RESET_ATTACK_MITIGATION", Some("y")),
    ("SECCOMP_FILTER", Some("y")),
    ("DEVMEM", None),
    ("PROC_KCORE", None),
    ("KEXEC", None),
    ("HIBERNATION", None),
    ("USERFAULTFD", None),
    ("LDISC_AUTOLOAD", None),
    ("IO_URING", None),
    ("LEGACY_PTYS", None),
    ("INET_DIAG", None),
    ("PROC_PAGE_MONITOR", None),
];

const X86_64: &[(&str, Option<&str>)] = &[
    ("RANDOMIZE_MEMORY", Some("y")),
    ("PAGE_TABLE_ISOLATION", Some("y")),
    ("RETPOLINE", Some("y")),
    ("RETHUNK", Some("y")),
    ("CPU_UNRET_ENTRY", Some("y")),
    ("CPU_IBPB_ENTRY", Some("y")),
    ("CPU_IBRS_ENTRY", Some("y")),
    ("CPU_SRSO", Some("y")),
    ("SLS", Some("y")),
    ("X86_KERNEL_IBT", Some("y")),
    ("X86_UMIP", Some("y")),
    ("X86_MCE", Some("y")),
    ("LEGACY_VSYSCALL_NONE", Some("y")),
    ("ARCH_MMAP_RND_BITS", Some("32")),
    ("IA32_EMULATION", None),
    ("MODIFY_LDT_SYSCALL", None),
    ("DEVPORT", None),
    ("ACPI_TABLE_UPGRADE", None),
];

const AARCH64: &[(&str, Option<&str>)] = &[
    ("ARM64_PTR_AUTH_KERNEL", Some("y")),
    ("ARM64_BTI", Some("y")),
    ("UNMAP_KERNEL_AT_EL0", Some("y")),
    ("ARM64_SW_TTBR0_PAN", Some("y")),
    ("ARM64_PAN", Some("y")),
    ("ARM64_EPAN", Some("y")),
    ("ARM64_E0PD", Some("y")),
    ("ARM64_MTE", Some("y")),
    ("RODATA_FULL_DEFAULT_ENABLED", Some("y")),
    ("MITIGATE_SPECTRE_BRANCH_HISTORY", Some("y")),
    ("ARCH_MMAP_RND_BITS", Some("24")),
    ("COMPAT", None),
    ("DEVPORT", None),
    ("ACPI_TABLE_UPGRADE", None),
    ("EFI_CUSTOM_SSDT_OVERLAYS", None),
];

fn pinned(arch: Arch) -> impl Iterator<Item = &'static (&'static str, Option<&'static str>)> {
    let own = match arch {
        Arch::X86_64 => X86_64,
        Arch::Aarch64 => AARCH64,
    };
    COMMON.iter().chain(own)
}

/// One line per lost option: the option, what the merged config has instead, and the fragment
/// line that asks for it (or that none does any more).
fn lost_options(
    arch: Arch,
    merged: &str,
    requests: &[Request],
    pins: impl Iterator<Item = &'static (&'static str, Option<&'static str>)>,
) -> Vec<String> {
    let mut lost = Vec::new();
    // Every requested option, hardening or not, must have survived kconfig.
    if let Err(config::ConfigError::Dropped(dropped)) = config::check(merged, requests) {
        for d in dropped {
            lost.push(format!(
                "{}: {} ({}:{}) is {} in the merged config",
                arch,
                d.request,
                d.request.file.display(),
                d.request.line,
                d.actual.as_deref().unwrap_or("not set")
            ));
        }
    }
    // The pinned hardening must still be requested, with the value pinned here.
    for (symbol, value) in pins {
        let want = Request {
            symbol: symbol.to_string(),
            value: value.map(str::to_string),
            file: Path::new("kernel-config").to_path_buf(),
            line: 0,
        };
        match requests.iter().rev().find(|r| r.symbol == *symbol) {
            Some(r) if r.value.as_deref() == *value => {}
            Some(r) => lost.push(format!(
                "{arch}: {want} is pinned as hardening, but {}:{} asks for {r}",
                r.file.display(),
                r.line
            )),
            None => lost.push(format!(
                "{arch}: {want} is pinned as hardening, but no fragment line sets it any more \
                 (it belongs in kernel-config/common.config or kernel-config/{arch}.config)"
            )),
        }
    }
    lost
}

#[test]
fn the_cached_kernel_of_each_arch_keeps_every_hardening_option() {
    let mut lost = Vec::new();
    for arch in [Arch::X86_64, Arch::Aarch64] {
        let (config, requests) = cached_config(&KernelRequest::new(arch)).unwrap();
        let Some(config) = config else {
            panic!(
                "no cached {arch} kernel for the current kernel-config/ fragments: run \
                 `builder kernel --arch {arch}` first (scripts/test.sh does)"
            );
        };
        let merged = std::fs::read_to_string(&config).unwrap();
        lost.extend(lost_options(arch, &merged, &requests, pinned(arch)));
    }
    assert!(lost.is_empty(), "hardening lost:\n  {}", lost.join("\n  "));
}

#[test]
fn a_dropped_or_deleted_option_is_named_with_its_fragment_line() {
    let fragment = "# why\nCONFIG_KFENCE=y\n# why\n# CONFIG_DEVMEM is not set\n";
    let requests = config::parse_fragment(fragment, Path::new("common.config"), true).unwrap();
    // kconfig dropped KFENCE; DEVMEM came out as asked.
    let merged = "# CONFIG_KFENCE is not set\n# CONFIG_DEVMEM is not set\n";
    static PINS: &[(&str, Option<&str>)] = &[
        ("KFENCE", Some("y")),
        ("DEVMEM", None),
        ("SYN_COOKIES", Some("y")),
    ];
    let lost = lost_options(Arch::X86_64, merged, &requests, PINS.iter());
    assert_eq!(
        lost,
        [
            "x86_64: CONFIG_KFENCE=y (common.config:2) is not set in the merged config",
            "x86_64: CONFIG_SYN_COOKIES=y is pinned as hardening, but no fragment line sets it \
             any more (it belongs in kernel-config/common.config or kernel-config/x86_64.config)",
        ]
    );
    // A fragment that flips a pinned option is named at its line.
    let flipped = config::parse_fragment(
        "# why\n# CONFIG_KFENCE is not set\n",
        Path::new("x86_64.config"),
        true,
    )
    .unwrap();
    let lost = lost_options(Arch::X86_64, merged, &flipped, PINS[..1].iter());
    assert_eq!(
        lost,
        [
            "x86_64: CONFIG_KFENCE=y is pinned as hardening, but x86_64.config:2 asks for \
          # CONFIG_KFENCE is not set"
        ]
    );
}
