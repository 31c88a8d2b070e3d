//! `builder kernel`: build a kernel from tinyconfig + our `kernel-config/` fragments, check that
//! kconfig kept every requested option, and cache the result by a hash of everything that goes
//! into it (source, fragments, toolchain, this recipe).

mod config;
mod fragments;
#[cfg(test)]
mod hardening;
mod make;
mod prebuilt;
mod source;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use hostdecl::{Arch, HostDecl, Inputs};

#[allow(unused_imports)] // identify/KernelFormat: for the UKI assembly, which needs the format
pub use prebuilt::{KernelFormat, PrebuiltError, identify};

use crate::{paths, tools};

/// Bump when the way a kernel is built changes, so old cache entries are not reused.
const RECIPE_VERSION: &str = "kernel-recipe-5";

/// What to build.
#[derive(Debug, Clone)]
pub struct KernelRequest {
    pub arch: Arch,
    /// Source tarball path or URL; `None`: Debian's linux-source-6.1.
    pub source: Option<String>,
    pub sha256: Option<String>,
    /// Directory holding `common.config` and `<arch>.config`; `None`: the fragments built
    /// into the builder (this repository's `kernel-config/` when it was compiled).
    pub fragments_dir: Option<PathBuf>,
    /// Further fragments merged last (not required to be commented).
    pub extra_fragments: Vec<PathBuf>,
    pub jobs: usize,
}

impl KernelRequest {
    pub fn new(arch: Arch) -> KernelRequest {
        KernelRequest {
            arch,
            source: None,
            sha256: None,
            fragments_dir: None,
            extra_fragments: Vec::new(),
            jobs: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        }
    }
}

/// A built (or cached) kernel.
#[derive(Debug, Clone)]
pub struct BuiltKernel {
    pub arch: Arch,
    /// The image the UKI carries: bzImage on x86_64, vmlinuz.efi (EFI zboot) on aarch64.
    pub image: PathBuf,
    /// The image QEMU's `-kernel` boots: the same bzImage on x86_64, Image.gz on aarch64.
    pub direct: PathBuf,
    /// The final .config it was built with.
    pub config: PathBuf,
    /// The build's symbol map, for reading an oops (the kernel has no kallsyms); empty for a
    /// prebuilt kernel.
    pub system_map: PathBuf,
    pub cache_hit: bool,
}

fn required_tools(arch: Arch) -> Vec<tools::Tool> {
    let mut t = vec![
        tools::MAKE,
        tools::GCC,
        tools::FLEX,
        tools::BISON,
        tools::BC,
        tools::PERL,
        tools::TAR,
        tools::XZ,
        tools::ZSTD,
    ];
    if arch == Arch::Aarch64 && Arch::current() != Some(Arch::Aarch64) {
        t.push(tools::AARCH64_GCC);
    }
    t
}

fn compiler(arch: Arch) -> &'static str {
    if arch == Arch::Aarch64 && Arch::current() != Some(Arch::Aarch64) {
        "aarch64-linux-gnu-gcc"
    } else {
        "gcc"
    }
}

/// The requests of every fragment, and each fragment's text (for the cache key).
type Fragments = (Vec<config::Request>, Vec<String>);

/// Reads every fragment in merge order: common, arch, then extras.
fn read_fragments(req: &KernelRequest) -> Result<Fragments> {
    let mut requests = Vec::new();
    let mut contents = Vec::new();
    let mut files: Vec<(PathBuf, bool)> = Vec::new();
    match &req.fragments_dir {
        Some(dir) => {
            files.push((dir.join("common.config"), true));
            files.push((dir.join(format!("{}.config", req.arch)), true));
        }
        None => {
            for (name, text) in fragments::builtin(req.arch) {
                requests.extend(config::parse_fragment(text, Path::new(name), true)?);
                contents.push(text.to_string());
            }
        }
    }
    files.extend(req.extra_fragments.iter().map(|p| (p.clone(), false)));
    for (path, commented) in files {
        let text = fs::read_to_string(&path)
            .with_context(|| format!("reading kernel config fragment {}", path.display()))?;
        requests.extend(config::parse_fragment(&text, &path, commented)?);
        contents.push(text);
    }
    Ok((requests, contents))
}

/// Builds the kernel, or returns the cached build for the same inputs.
pub fn build(req: &KernelRequest) -> Result<BuiltKernel> {
    let cache = paths::cache_root().join("kernel");
    fs::create_dir_all(&cache).with_context(|| format!("creating cache {}", cache.display()))?;

    let (requests, contents) = read_fragments(req)?;
    let src = source::resolve(req.source.as_deref(), req.sha256.as_deref(), &cache)?;
    let entry = cache_entry(req, &cache, &src, &contents);

    if let Some(hit) = cached(&entry, req.arch) {
        return Ok(hit);
    }
    tools::require(
        &required_tools(req.arch),
        &[tools::LIBELF_HEADER, tools::OPENSSL_HEADER],
    )?;

    // One build per arch at a time; a second builder waits, then finds the cache entry.
    let lock_path = cache.join(format!("{}.lock", req.arch));
    let lock = fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    if let Some(hit) = cached(&entry, req.arch) {
        return Ok(hit);
    }

    let tree = source::unpack(&src, &cache)?;
    let final_config = configure(req, &tree, &cache, &requests)?;

    // The build directory is per arch and source, and kept: a fragment change rebuilds only
    // what that option touches.
    let build_dir = cache.join(format!("build-{}-{}", req.arch, &src.sha256[..16]));
    fs::create_dir_all(&build_dir).with_context(|| format!("creating {}", build_dir.display()))?;
    let kb = make::Kbuild {
        arch: req.arch,
        src: tree.clone(),
        out: build_dir.clone(),
        jobs: req.jobs,
    };
    let dot_config = build_dir.join(".config");
    if fs::read_to_string(&dot_config).ok().as_deref() != Some(final_config.as_str()) {
        fs::write(&dot_config, &final_config)
            .with_context(|| format!("writing {}", dot_config.display()))?;
        kb.run_quiet(&["olddefconfig"])?;
    }
    let (targets, image_rel, direct_rel) = kb.image_targets();
    let tmp = cache.join(format!(".{}-{}.tmp", req.arch, std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    eprintln!(
        "kernel {}: building {} with {} jobs (log: {})",
        req.arch,
        targets.join(" "),
        req.jobs,
        entry.with_extension("log").display()
    );
    kb.run_with_progress(
        targets,
        &entry.with_extension("log"),
        &cache.join(format!("{}.last-build", req.arch)),
    )?;

    let built = build_dir.join(image_rel);
    fs::copy(&built, tmp.join("vmlinuz"))
        .with_context(|| format!("copying {}", built.display()))?;
    if direct_rel != image_rel {
        let direct = build_dir.join(direct_rel);
        fs::copy(&direct, tmp.join(DIRECT))
            .with_context(|| format!("copying {}", direct.display()))?;
    }
    fs::write(tmp.join("config"), &final_config)
        .with_context(|| format!("writing {}", tmp.join("config").display()))?;
    // The kernel has no kallsyms (kernel-config/common.config): this is how an oops's
    // addresses map back to names.
    let map = build_dir.join("System.map");
    fs::copy(&map, tmp.join("System.map")).with_context(|| format!("copying {}", map.display()))?;
    fs::rename(&tmp, &entry).with_context(|| format!("publishing {}", entry.display()))?;
    let mut k = cached(&entry, req.arch).context("kernel cache entry missing after build")?;
    k.cache_hit = false;
    Ok(k)
}

/// The cache directory of the build of `req` from `src` with fragments `contents`: a hash of
/// everything that goes into the kernel (recipe, arch, source, fragment texts, toolchain).
fn cache_entry(
    req: &KernelRequest,
    cache: &Path,
    src: &source::Source,
    contents: &[String],
) -> PathBuf {
    let mut h = Sha256::new();
    h.update(RECIPE_VERSION);
    h.update(req.arch.as_str());
    h.update(&src.sha256);
    // File names matter only through their role (order); contents decide the key.
    for text in contents {
        h.update((text.len() as u64).to_le_bytes());
        h.update(text);
    }
    h.update(tools::version_line(compiler(req.arch), "--version"));
    h.update(tools::version_line("make", "--version"));
    let key = hex::encode(h.finalize());
    cache.join(format!("{}-{}", req.arch, &key[..16]))
}

/// The merged `.config` the cache holds for `req` (what `build` would return without building)
/// and the requests of its fragments; `None` when that kernel has not been built yet.
#[cfg(test)]
pub(crate) fn cached_config(
    req: &KernelRequest,
) -> Result<(Option<PathBuf>, Vec<config::Request>)> {
    let cache = paths::cache_root().join("kernel");
    let (requests, contents) = read_fragments(req)?;
    let src = source::resolve(req.source.as_deref(), req.sha256.as_deref(), &cache)?;
    let entry = cache_entry(req, &cache, &src, &contents);
    let config = cached(&entry, req.arch).map(|k| k.config);
    Ok((config, requests))
}

/// The cache entry's file for `-kernel` boots, where it is not `vmlinuz` itself (arm64).
const DIRECT: &str = "vmlinuz-direct";

fn cached(entry: &Path, arch: Arch) -> Option<BuiltKernel> {
    let image = entry.join("vmlinuz");
    let direct = match arch {
        Arch::X86_64 => image.clone(),
        Arch::Aarch64 => entry.join(DIRECT),
    };
    (image.is_file() && direct.is_file()).then(|| BuiltKernel {
        arch,
        image,
        direct,
        config: entry.join("config"),
        system_map: entry.join("System.map"),
        cache_hit: true,
    })
}

/// tinyconfig, merge, olddefconfig and the check, in a scratch directory so a rejected
/// fragment never disturbs the kept build directory.
fn configure(
    req: &KernelRequest,
    tree: &Path,
    cache: &Path,
    requests: &[config::Request],
) -> Result<String> {
    let scratch = cache.join(format!(".kconfig-{}-{}", req.arch, std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let result = (|| -> Result<String> {
        let kb = make::Kbuild {
            arch: req.arch,
            src: tree.to_path_buf(),
            out: scratch.clone(),
            jobs: req.jobs,
        };
        eprintln!("kernel {}: configuring (tinyconfig + fragments)", req.arch);
        kb.run_quiet(&["tinyconfig"])?;
        let dot = scratch.join(".config");
        let base =
            fs::read_to_string(&dot).with_context(|| format!("reading {}", dot.display()))?;
        fs::write(&dot, config::merge(&base, requests))
            .with_context(|| format!("writing {}", dot.display()))?;
        kb.run_quiet(&["olddefconfig"])?;
        let fin = fs::read_to_string(&dot).with_context(|| format!("reading {}", dot.display()))?;
        config::check(&fin, requests)?;
        Ok(fin)
    })();
    let _ = fs::remove_dir_all(&scratch);
    result
}

/// Used by `builder build`: the prebuilt kernel the declaration names for `arch` (checked to be
/// a kernel image for that arch, errors at the declaration's line and field), otherwise ours,
/// built from the declaration's kernel source.
pub fn resolve_for_decl(decl: &HostDecl, inputs: &Inputs, arch: Arch) -> Result<BuiltKernel> {
    if let Some(p) = inputs.prebuilt(arch) {
        prebuilt::check(&p.value, arch, &p.site.to_string())?;
        return Ok(BuiltKernel {
            arch,
            image: p.value.clone(),
            direct: p.value.clone(),
            config: PathBuf::new(),
            system_map: PathBuf::new(),
            cache_hit: true,
        });
    }
    let mut req = KernelRequest::new(arch);
    req.source = inputs.kernel_source.as_ref().map(|s| s.value.clone());
    req.sha256 = decl.kernel.sha256.clone();
    build(&req)
}
