//! The host declaration (`host.toml`): its schema, validation, and the rendered form the
//! builder places in the initramfs for init. This is the on-disk contract between the two.
//! `docs/host-toml.md` documents every field.

mod errors;
mod fetch_spec;
mod inputs;
pub mod net_plan;
mod network;
pub mod plan;
mod pods;
mod pods_check;
mod pods_render;
mod sections;
mod source;
mod validate;

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use errors::{DeclError, FileProblem, KeyHint, Located, Site};
pub use inputs::{FileInput, FileRef, ImageInput, Inputs, TrustInput, check_file};
pub use net_plan::{
    Addressing, CaCertificate, Device, FetchPolicy, HostEntry, InterfacePlan, NetworkPlan,
};
pub use network::{FetchDecl, HostEntryDecl, InterfaceDecl, NetworkDecl};
pub use plan::{AppOverrides, AppPlan, EmbeddedImage, FetchSpec, PodPlan, PodsPlan, RestartPolicy};
pub use pods::{AppDecl, MountDecl, PodDecl, VolumeDecl, VolumeKindDecl};
pub use pods_render::AvailableImage;
pub use sections::{DiskDecl, FileDecl, Format, ImageDecl, SigningDecl, TrustDecl};
use source::Origin;

/// Where the builder puts the rendered declaration inside the initramfs, and where init reads it.
pub const RENDERED_PATH: &str = "/etc/hostos/host.toml";

/// A CPU architecture images are built for, named as the kernel and Rust name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Arch {
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "aarch64")]
    Aarch64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The kernel's name for the first serial port of the machines we boot this arch on (PC
    /// 8250 UART, PL011 on arm64 virt and most boards), for `console=`.
    pub fn serial_console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }

    /// The architecture this program was compiled for, if it is one we build images for.
    pub fn current() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Aarch64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "x86_64" => Ok(Arch::X86_64),
            "aarch64" => Ok(Arch::Aarch64),
            other => Err(format!(
                "unknown architecture {other:?} (expected \"x86_64\" or \"aarch64\")"
            )),
        }
    }
}

/// What init does when it meets an error it cannot recover from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FatalAction {
    /// Power the machine off (the default: a test or a cloud VM stops visibly).
    #[default]
    Poweroff,
    /// Reboot (boards in the field should come back by themselves).
    Reboot,
}

/// The whole declaration.
///
/// The sections after `init` are the builder's: they are not rendered into the image for init
/// (`skip_serializing`), which reads only what it acts on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostDecl {
    /// Image name; used for output file names.
    pub name: String,
    /// Image version, recorded in the signed manifest and the UKI's os-release (default `0`).
    #[serde(default = "default_version")]
    pub version: String,
    /// The guest's hostname (default: `name`).
    #[serde(default)]
    pub hostname: String,
    /// Architectures to build (default: both).
    #[serde(default = "default_arches")]
    pub arch: Vec<Arch>,
    #[serde(default)]
    pub kernel: KernelDecl,
    #[serde(default)]
    pub init: InitDecl,
    #[serde(default, skip_serializing)]
    pub signing: SigningDecl,
    #[serde(default, skip_serializing)]
    pub disk: DiskDecl,
    /// Outputs per arch (default: `["raw"]`).
    #[serde(default = "sections::default_formats", skip_serializing)]
    pub formats: Vec<Format>,
    /// `[[image]]`: ACIs embedded in the payload.
    #[serde(default, rename = "image", skip_serializing)]
    pub images: Vec<ImageDecl>,
    /// `[[trust]]`: keys init trusts, copied into the image.
    #[serde(default, rename = "trust", skip_serializing)]
    pub trust: Vec<TrustDecl>,
    /// `[[file]]`: extra files for the payload.
    #[serde(default, rename = "file", skip_serializing)]
    pub files: Vec<FileDecl>,
    /// `[[pod]]`: the pods init runs. Rendered for init separately, as [`PodsPlan`].
    #[serde(default, rename = "pod", skip_serializing)]
    pub pods: Vec<PodDecl>,
    /// `[network]`: rendered for init separately, as [`NetworkPlan`].
    #[serde(default, skip_serializing)]
    pub network: NetworkDecl,
    /// `[fetch]`: how images not embedded are fetched at boot (in [`NetworkPlan`]).
    #[serde(default, skip_serializing)]
    pub fetch: FetchDecl,
    /// Where each field was written, for errors found after parsing.
    #[serde(skip)]
    origin: Origin,
}

fn default_version() -> String {
    "0".to_string()
}

fn default_arches() -> Vec<Arch> {
    Arch::ALL.to_vec()
}

/// Every table of the declaration (by path, without array indices), for the key check.
const PLACES: &[&str] = &[
    "",
    "kernel",
    "kernel.prebuilt",
    "init",
    "signing",
    "disk",
    "image",
    "trust",
    "file",
    "pod",
    "pod.app",
    "pod.app.mounts",
    "pod.volume",
    "network",
    "network.interface",
    "network.host",
    "fetch",
];

/// The keys valid in each table, taken from the structs' `Deserialize`.
fn keys_at(place: &str) -> Option<&'static [&'static str]> {
    use source::fields_of;
    Some(match place {
        "" => fields_of::<HostDecl>(),
        "kernel" => fields_of::<KernelDecl>(),
        "kernel.prebuilt" => fields_of::<Prebuilt>(),
        "init" => fields_of::<InitDecl>(),
        "signing" => fields_of::<SigningDecl>(),
        "disk" => fields_of::<DiskDecl>(),
        "image" => fields_of::<ImageDecl>(),
        "trust" => fields_of::<TrustDecl>(),
        "file" => fields_of::<FileDecl>(),
        "pod" => fields_of::<PodDecl>(),
        "pod.app" => fields_of::<AppDecl>(),
        "pod.app.mounts" => fields_of::<MountDecl>(),
        "pod.volume" => fields_of::<VolumeDecl>(),
        "network" => fields_of::<NetworkDecl>(),
        "network.interface" => fields_of::<InterfaceDecl>(),
        "network.host" => fields_of::<HostEntryDecl>(),
        "fetch" => fields_of::<FetchDecl>(),
        _ => return None,
    })
}

/// Which kernel goes into the image.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelDecl {
    /// Extra kernel command line, appended after the builder's console settings.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cmdline: String,
    /// Kernel source tarball (path or http(s) URL); default: Debian's linux-source-6.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Pinned sha256 of `source`; required for URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Prebuilt kernel images per arch, used instead of building one, e.g.
    /// `prebuilt = { x86_64 = "bzImage" }`. Paths are relative to the declaration's directory.
    #[serde(default, skip_serializing_if = "Prebuilt::is_empty")]
    pub prebuilt: Prebuilt,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prebuilt {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x86_64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aarch64: Option<String>,
}

impl Prebuilt {
    pub fn is_empty(&self) -> bool {
        self.x86_64.is_none() && self.aarch64.is_none()
    }

    pub fn for_arch(&self, arch: Arch) -> Option<&str> {
        match arch {
            Arch::X86_64 => self.x86_64.as_deref(),
            Arch::Aarch64 => self.aarch64.as_deref(),
        }
    }
}

/// How init behaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitDecl {
    #[serde(default)]
    pub on_fatal: FatalAction,
    /// Seconds between SIGTERM and SIGKILL at shutdown.
    #[serde(default = "default_grace")]
    pub shutdown_grace_secs: u32,
}

fn default_grace() -> u32 {
    10
}

impl Default for InitDecl {
    fn default() -> Self {
        InitDecl {
            on_fatal: FatalAction::default(),
            shutdown_grace_secs: default_grace(),
        }
    }
}

impl HostDecl {
    /// Parses and validates a declaration. `origin` (usually the file path) starts every error,
    /// followed by the line, column and field. Files the declaration names are not looked at
    /// here (init parses the rendered form, where they do not exist): see
    /// [`HostDecl::resolve_paths`].
    pub fn from_toml_str(text: &str, origin: &str) -> Result<HostDecl, DeclError> {
        let map = source::scan(text, origin, keys_at, PLACES)?;
        let mut decl: HostDecl = toml::from_str(text).map_err(|e| map.serde_error(&e))?;
        decl.origin = Origin::new(map);
        if decl.hostname.is_empty() {
            decl.hostname = decl.name.clone();
        }
        decl.validate()?;
        Ok(decl)
    }

    /// Reads and parses the declaration at `path`; errors name it as given.
    pub fn load(path: &Path) -> Result<HostDecl, DeclError> {
        let text = std::fs::read_to_string(path).map_err(|source| DeclError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        HostDecl::from_toml_str(&text, &path.display().to_string())
    }

    /// The normalized form written into the image (defaults filled in, builder-only sections
    /// left out).
    pub fn to_toml_string(&self) -> Result<String, DeclError> {
        toml::to_string(self).map_err(|e| DeclError::Render(e.to_string()))
    }

    /// Where `field` (a dotted path such as `kernel.prebuilt.x86_64` or `image[0].id`) was
    /// written; for a field left out, where its nearest enclosing table was.
    pub fn site(&self, field: &str) -> Site {
        self.origin.site(field)
    }

    /// The architectures `builder build --arch` should build: all the declaration lists, or the
    /// one requested if the declaration lists it.
    pub fn arches_to_build(&self, requested: Option<Arch>) -> Result<Vec<Arch>, DeclError> {
        match requested {
            None => Ok(self.arch.clone()),
            Some(a) if self.arch.contains(&a) => Ok(vec![a]),
            Some(a) => Err(DeclError::ArchNotDeclared {
                at: self.site("arch"),
                requested: a,
                declared: self.arch.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_fetch;
#[cfg(test)]
mod tests_network;
