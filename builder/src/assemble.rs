//! `builder build`, one architecture: from the declaration to the signed disk image and the
//! output formats it asks for.
//!
//! Order (each step's output feeds the next; nothing random, nothing from the clock):
//! 1. kernel (cached build or the declaration's prebuilt) and init (carried in the builder);
//! 2. trust keys and embedded images, each image's signature checked against those keys;
//! 3. the identity seed over all of that (`identity`), and from it every GUID, UUID and salt;
//! 4. the payload (erofs + dm-verity) → its root hash goes on the command line;
//! 5. the initramfs and the UKI (systemd-stub + kernel + initramfs + command line + os-release);
//! 6. the ESP holding the UKI, the empty ext4 data filesystem;
//! 7. the GPT disk, measured into the manifest, signed, the manifest written into its
//!    partition and beside the image;
//! 8. the other formats from the raw image.

mod embed;
pub mod identity;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use aci::sign::SecretKey;
use hostdecl::{Arch, Format as DeclFormat};
use hostimg::{ALIGN, BootParams, Role};

use crate::disk::{self, Content, DiskSpec, PartitionSpec};
use crate::formats::{self, Format};
use crate::image::{self, Declaration};
use crate::initramfs::{Initramfs, Kind};
use crate::{datafs, esp, init_bin, kernel, manifest, payload, tools, uki};

/// What the command line adds to the declaration.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// `--format`: overriding the declaration's `formats`.
    pub formats: Option<Vec<DeclFormat>>,
    /// `--skip-image-checks`: embed `[[image]]`s without checking their signatures.
    pub skip_image_checks: bool,
}

/// What one architecture's build wrote.
#[derive(Debug)]
pub struct Built {
    /// The raw disk image (always written: every other format is made from it).
    pub image: PathBuf,
    /// The direct-boot artifacts, when `kernel` was among the formats.
    pub direct: Option<image::Built>,
    pub outputs: Vec<PathBuf>,
}

const MIB: u64 = 1 << 20;
/// The manifest partition: the signed manifest is a few KiB.
const MANIFEST_PARTITION: u64 = MIB;

pub fn build(d: &Declaration, arch: Arch, out: &Path, opts: &BuildOptions) -> Result<Built> {
    let start = Instant::now();
    let epoch = identity::epoch_from_env()?;
    let formats = opts
        .formats
        .clone()
        .unwrap_or_else(|| d.decl.formats.clone());
    let key = signing_key(d)?;
    // Scratch space outside OUT: a build refused for bad input writes nothing there.
    let scratch = tempfile::Builder::new()
        .prefix("hostos-build-")
        .tempdir()
        .context("creating a scratch directory")?;

    // 1. Trust keys, embedded images and the pods plan: before the kernel, so a declaration
    // whose pods cannot be resolved fails in a second, not after a kernel build.
    let trust = embed::trust_keys(d, scratch.path())?;
    let embedded = embed::payload(d, &trust, arch, opts.skip_image_checks)?;
    let rendered = d.decl.to_toml_string()?;
    let pods = d.decl.pods_plan(arch, &embedded.available)?;
    let pods_json = pods
        .to_json_pretty()
        .context("rendering the pods plan as JSON")?;
    // The network plan carries the [fetch] CA certificates, read here: a missing or broken
    // CA file fails the build before the kernel, too.
    let network_json = d
        .decl
        .network_plan(&d.inputs)?
        .to_json_pretty()
        .context("rendering the network plan as JSON")?;

    // 2. Kernel and init.
    let k = kernel::resolve_for_decl(&d.decl, &d.inputs, arch)?;
    let kernel_bytes =
        fs::read(&k.image).with_context(|| format!("reading kernel {}", k.image.display()))?;
    let init = init_bin::for_arch(arch);
    let stub_path = uki::stub_path(arch);
    let stub = fs::read(&stub_path).with_context(|| {
        format!(
            "reading the UKI stub {} (install systemd-boot-efi{}; scripts/setup.sh does)",
            stub_path.display(),
            if arch == Arch::Aarch64 { ":arm64" } else { "" }
        )
    })?;

    // 3. Identities.
    let mut seed = identity::Seed::new();
    seed.input("builder", env!("CARGO_PKG_VERSION").as_bytes());
    seed.input("arch", arch.as_str().as_bytes());
    seed.input("declaration", rendered.as_bytes());
    seed.input("pods", &pods_json);
    seed.input("network", &network_json);
    seed.input("epoch", &epoch.to_le_bytes());
    seed.input("kernel", &embed::sha256(&kernel_bytes));
    seed.input("init", &embed::sha256(init));
    seed.input("stub", &embed::sha256(&stub));
    for (path, bytes) in &trust.files {
        seed.input(path, &embed::sha256(bytes));
    }
    for (path, digest) in &embedded.digests {
        seed.input(path, digest);
    }
    let id = seed.finish();
    let guid = |role: Role| id.guid(role.label());

    // 4. Payload. With large embedded images this and the formats below are the long steps
    // after the kernel: each says what it starts, so a long build is visibly alive.
    let step = |what: &str| eprintln!("build {} {arch}: {what}", d.decl.name);
    let payload_bytes: u64 = embedded
        .files
        .iter()
        .map(|f| match &f.source {
            payload::Source::Bytes(b) => b.len() as u64,
            payload::Source::File(p) => fs::metadata(p).map(|m| m.len()).unwrap_or(0),
        })
        .sum();
    step(&format!(
        "payload: {} file(s), {} KiB, erofs and dm-verity",
        embedded.files.len(),
        payload_bytes / 1024
    ));
    let payload = payload::build(
        &embedded.files,
        id.guid("payload-fs"),
        &id.bytes("verity-salt"),
        epoch,
        scratch.path(),
    )?;
    let boot = BootParams {
        payload: guid(Role::PayloadA),
        verity: payload.verity.clone(),
        data: guid(Role::Data),
    };

    // 5. Initramfs and UKI.
    let mut initramfs = Initramfs::with_skeleton()?;
    initramfs.add("init", Kind::File(init.to_vec()), 0o755)?;
    initramfs.add(
        hostdecl::RENDERED_PATH,
        Kind::File(rendered.clone().into_bytes()),
        0o644,
    )?;
    initramfs.add(
        hostimg::PODS_PLAN_PATH,
        Kind::File(pods_json.clone()),
        0o644,
    )?;
    initramfs.add(hostimg::NETWORK_PLAN_PATH, Kind::File(network_json), 0o644)?;
    for (path, bytes) in &trust.files {
        initramfs.add(path, Kind::File(bytes.clone()), 0o644)?;
    }
    let initramfs = initramfs.to_cpio_zstd()?;
    let cmdline = format!("{} {}", image::cmdline(&d.decl, arch), boot.to_cmdline());
    let osrel = os_release(d, arch);
    let uki_bytes = uki::assemble(
        &stub,
        &uki::UkiParts {
            linux: &kernel_bytes,
            initrd: &initramfs,
            cmdline: &cmdline,
            osrel: &osrel,
            uname: None,
        },
        u32::try_from(epoch).unwrap_or(u32::MAX),
    )
    .with_context(|| match d.inputs.prebuilt(arch) {
        // The usual cause is the declaration's own kernel: say where it was named.
        Some(p) => format!(
            "{}: assembling the UKI with the prebuilt kernel {}",
            p.site,
            p.value.display()
        ),
        None => "assembling the UKI".to_string(),
    })?;

    // 6. ESP and data.
    let boot_file = match arch {
        Arch::X86_64 => "EFI/BOOT/BOOTX64.EFI",
        Arch::Aarch64 => "EFI/BOOT/BOOTAA64.EFI",
    };
    let esp_files = [esp::EspFile {
        path: boot_file,
        bytes: &uki_bytes,
    }];
    let esp_size = sized(
        d.decl.disk.esp_mib,
        esp::min_size(&esp_files),
        "disk.esp_mib",
    )?;
    let esp_bytes =
        esp::write_esp(esp_size, id.volume_id(), epoch, &esp_files).context("writing the ESP")?;
    let payload_size = sized(
        d.decl.disk.payload_mib,
        round_up(payload.partition.len() as u64),
        "disk.payload_mib",
    )?;
    let data_size = sized(d.decl.disk.data_mib, datafs::MIN_SIZE, "disk.data_mib")?;
    let data_file = scratch.path().join("data.ext4");
    datafs::make_ext4(
        &data_file,
        data_size,
        id.guid("data-fs"),
        id.guid("data-hash-seed"),
        epoch,
    )?;

    // 7. Disk, manifest, signature.
    let spec = DiskSpec {
        disk_guid: id.guid("disk"),
        partitions: vec![
            part(
                Role::Esp,
                esp_size,
                guid(Role::Esp),
                Content::Bytes(esp_bytes),
                false,
            ),
            part(
                Role::PayloadA,
                payload_size,
                guid(Role::PayloadA),
                Content::Bytes(payload.partition),
                true,
            ),
            part(
                Role::PayloadB,
                payload_size,
                guid(Role::PayloadB),
                Content::Zeros,
                true,
            ),
            part(
                Role::Manifest,
                MANIFEST_PARTITION,
                guid(Role::Manifest),
                Content::Zeros,
                false,
            ),
            part(
                Role::Data,
                data_size,
                guid(Role::Data),
                Content::File(data_file),
                false,
            ),
        ],
        total_size: match d.decl.disk.size_mib {
            0 => None,
            n => Some(u64::from(n) * MIB),
        },
    };
    let mut spec = spec;
    let mut layout = disk::plan(&spec)?;
    // Without a declared size, the disk grows to what every requested format needs (GCE: a
    // whole GiB); the space after data is free for init to grow into on first boot.
    let multiple = formats
        .iter()
        .filter(|f| !matches!(f, DeclFormat::Raw | DeclFormat::Kernel))
        .map(|f| to_format(*f).size_multiple())
        .max()
        .unwrap_or(1);
    if spec.total_size.is_none() && layout.disk_size % multiple != 0 {
        spec.total_size = Some(layout.disk_size.div_ceil(multiple) * multiple);
        layout = disk::plan(&spec)?;
    }
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let image_path = out.join(formats::output_name(&d.decl.name, arch, Format::Raw));
    let staged = disk::stage(&spec, &layout, &image_path)?;
    let facts = manifest::ImageFacts {
        name: d.decl.name.clone(),
        version: d.decl.version.clone(),
        arch: arch.as_str().to_string(),
        uki_sha256: hex::encode(embed::sha256(&uki_bytes)),
        verity_root_hash: hex::encode(boot.verity.root_hash),
        cmdline: cmdline.clone(),
        embedded_images: embedded.images,
        trust_keys: trust.facts,
        tools: tool_versions(),
    };
    let manifest_name = manifest::detached_paths(&image_path)
        .0
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let signed = manifest::seal(
        &staged,
        facts,
        &key,
        &manifest_name,
        u64::try_from(epoch).unwrap_or(0),
    )?;
    let image_path = staged.persist()?;
    signed.write_beside(&image_path)?;
    let mut outputs = vec![image_path.clone()];
    let (json, sig) = manifest::detached_paths(&image_path);
    outputs.extend([json, sig]);

    // 8. Other formats.
    let mut direct = None;
    for f in &formats {
        match f {
            DeclFormat::Raw => {}
            DeclFormat::Kernel => {
                let direct_kernel = if k.direct == k.image {
                    kernel_bytes.clone()
                } else {
                    fs::read(&k.direct)
                        .with_context(|| format!("reading kernel {}", k.direct.display()))?
                };
                direct = Some(image::write_direct(
                    arch,
                    out,
                    &direct_kernel,
                    &initramfs,
                    &cmdline,
                )?);
            }
            other => {
                let fmt = to_format(*other);
                let path = out.join(formats::output_name(&d.decl.name, arch, fmt));
                step(&format!("writing {}", path.display()));
                formats::write(&image_path, fmt, &path, epoch, id.as_bytes())?;
                outputs.push(path);
            }
        }
    }
    drop(scratch);
    eprintln!(
        "build {} {arch}: UKI {} KiB (kernel {} KiB, initramfs {} KiB), disk {} MiB in {:.1} s -> {}",
        d.decl.name,
        uki_bytes.len() / 1024,
        kernel_bytes.len() / 1024,
        initramfs.len() / 1024,
        layout.disk_size / MIB,
        start.elapsed().as_secs_f64(),
        image_path.display()
    );
    Ok(Built {
        image: image_path,
        direct,
        outputs,
    })
}

fn part(
    role: Role,
    size: u64,
    guid: hostimg::Guid,
    content: Content,
    read_only: bool,
) -> PartitionSpec {
    PartitionSpec {
        role,
        size,
        guid,
        content,
        read_only,
    }
}

fn to_format(f: DeclFormat) -> Format {
    match f {
        DeclFormat::Raw | DeclFormat::Kernel => Format::Raw,
        DeclFormat::Qcow2 => Format::Qcow2,
        DeclFormat::Vhd => Format::Vhd,
        DeclFormat::Gce => Format::Gce,
        DeclFormat::Zst => Format::Zst,
    }
}

fn round_up(n: u64) -> u64 {
    n.div_ceil(ALIGN).max(1) * ALIGN
}

/// The declared size in MiB, or the minimum when it is 0; a declared size below the minimum
/// is an error naming the field.
fn sized(declared_mib: u32, min: u64, field: &str) -> Result<u64> {
    let min = round_up(min);
    if declared_mib == 0 {
        return Ok(min);
    }
    let want = u64::from(declared_mib) * MIB;
    if want < min {
        bail!(
            "{field} = {declared_mib} is too small: this image needs at least {} MiB there",
            min / MIB
        );
    }
    Ok(want)
}

/// The key that signs the image: `--key` or `[signing] key` (resolved when the declaration
/// was loaded), else the development key of
/// this user (created on first use, with a warning that names it).
fn signing_key(d: &Declaration) -> Result<SecretKey> {
    let Some(key) = &d.inputs.signing_key else {
        return development_key();
    };
    let path = key.value.clone();
    let text = fs::read_to_string(&path)
        .with_context(|| format!("reading the signing key {}", path.display()))?;
    let password = if SecretKey::is_encrypted(&text).unwrap_or(false) {
        Some(std::env::var("HOSTOS_SIGNING_PASSWORD").with_context(|| {
            format!(
                "{} is password-protected: set HOSTOS_SIGNING_PASSWORD",
                path.display()
            )
        })?)
    } else {
        None
    };
    SecretKey::from_minisign(&text, password.as_deref())
        .with_context(|| format!("reading the signing key {}", path.display()))
}

/// `$HOSTOS_CACHE/signing/development.key`: lets `builder build` work out of the box; every
/// image it signs says so in the build's output. Created on first use; concurrent builds that
/// race to create it all end up with the one that was published first.
fn development_key() -> Result<SecretKey> {
    let dir = crate::paths::cache_root().join("signing");
    let path = dir.join("development.key");
    let public = dir.join("development.pub");
    let created = if path.exists() {
        false
    } else {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let key = SecretKey::generate().context("generating the development key")?;
        let tmp = tempfile::Builder::new()
            .prefix(".development.")
            .tempdir_in(&dir)
            .with_context(|| format!("creating a temporary directory in {}", dir.display()))?;
        let (tmp_key, tmp_pub) = (tmp.path().join("k"), tmp.path().join("p"));
        crate::sign_cmd::write_new_key_pair(&key, &tmp_key, &tmp_pub)?;
        // A hard link publishes a complete file and fails if another build got there first.
        let won = match fs::hard_link(&tmp_key, &path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        };
        if won {
            match fs::hard_link(&tmp_pub, &public) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("creating {}", public.display())),
            }
        }
        won
    };
    log::warn!(
        "no [signing] key in the declaration and no --key: {} the development key {} (verify with --key {})",
        if created {
            "created and signed with"
        } else {
            "signed with"
        },
        path.display(),
        public.display()
    );
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    SecretKey::from_minisign(&text, None).with_context(|| format!("reading {}", path.display()))
}

/// The UKI's `.osrel`: who built it, for `builder inspect` and for firmware menus.
fn os_release(d: &Declaration, arch: Arch) -> String {
    format!(
        "NAME=hostos\nID=hostos\nPRETTY_NAME=\"hostos {} ({arch})\"\nVERSION_ID={}\nIMAGE_ID={}\nIMAGE_VERSION={}\n",
        d.decl.name,
        env!("CARGO_PKG_VERSION"),
        d.decl.name,
        d.decl.version
    )
}

/// The versions of the outside tools whose output is in the image: a bit-identical rebuild is
/// promised for the same tools.
fn tool_versions() -> Vec<manifest::ToolVersion> {
    let mut tools = vec![
        manifest::ToolVersion {
            name: "mkfs.erofs".into(),
            version: tools::version_line("mkfs.erofs", "--version"),
        },
        manifest::ToolVersion {
            name: "mke2fs".into(),
            version: tools::version_line("mke2fs", "-V"),
        },
    ];
    if let Ok(v) = formats::qemu_img_version() {
        tools.push(manifest::ToolVersion {
            name: "qemu-img".into(),
            version: v,
        });
    }
    tools
}
