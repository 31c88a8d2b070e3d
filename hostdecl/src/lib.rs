//! The host declaration (`host.toml`): its schema, validation, and the rendered form the
//! builder places in the initramfs for init. This is the on-disk contract between the two.

use std::fmt;

use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostDecl {
    /// Image name; used for output file names.
    pub name: String,
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
}

fn default_arches() -> Vec<Arch> {
    Arch::ALL.to_vec()
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

/// A declaration that could not be read; the message names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum DeclError {
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: {field}: {reason}")]
    Invalid {
        origin: String,
        field: &'static str,
        reason: String,
    },
}

impl HostDecl {
    /// Parses and validates a declaration. `origin` (usually the file path) prefixes every error.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<HostDecl, DeclError> {
        let mut decl: HostDecl = toml::from_str(text).map_err(|e| DeclError::Parse {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        if decl.hostname.is_empty() {
            decl.hostname = decl.name.clone();
        }
        decl.validate(origin)?;
        Ok(decl)
    }

    /// The normalized form written into the image (defaults filled in).
    pub fn to_toml_string(&self) -> Result<String, DeclError> {
        toml::to_string(self).map_err(|e| DeclError::Parse {
            origin: "rendered declaration".to_string(),
            message: e.to_string(),
        })
    }

    fn validate(&self, origin: &str) -> Result<(), DeclError> {
        let invalid = |field: &'static str, reason: String| DeclError::Invalid {
            origin: origin.to_string(),
            field,
            reason,
        };
        if !is_label(&self.name, 64) {
            return Err(invalid(
                "name",
                format!(
                    "{:?} must be 1-64 characters of a-z, 0-9 and '-', not starting or ending with '-'",
                    self.name
                ),
            ));
        }
        // 64 bytes is the kernel's limit for sethostname(2) (__NEW_UTS_LEN).
        if !self.hostname.split('.').all(|l| is_label(l, 63)) || self.hostname.len() > 64 {
            return Err(invalid(
                "hostname",
                format!(
                    "{:?} is not a valid host name (dot-separated labels of a-z, 0-9, '-')",
                    self.hostname
                ),
            ));
        }
        if self.arch.is_empty() {
            return Err(invalid("arch", "names no architecture".to_string()));
        }
        for (i, a) in self.arch.iter().enumerate() {
            if self.arch[..i].contains(a) {
                return Err(invalid("arch", format!("{a} is listed twice")));
            }
        }
        if let Some(sha) = &self.kernel.sha256
            && (sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(invalid(
                "kernel.sha256",
                format!("{sha:?} is not 64 hex digits"),
            ));
        }
        if let Some(src) = &self.kernel.source {
            let is_url = src.starts_with("http://") || src.starts_with("https://");
            if is_url && self.kernel.sha256.is_none() {
                return Err(invalid(
                    "kernel.sha256",
                    format!("required when kernel.source is a URL ({src})"),
                ));
            }
        }
        if self.kernel.cmdline.contains('\n') {
            return Err(invalid("kernel.cmdline", "must be one line".to_string()));
        }
        Ok(())
    }
}

fn is_label(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_declaration_gets_defaults() {
        let d = HostDecl::from_toml_str("name = \"hello\"\n", "t.toml").unwrap();
        assert_eq!(d.hostname, "hello");
        assert_eq!(d.arch, vec![Arch::X86_64, Arch::Aarch64]);
        assert_eq!(d.init.on_fatal, FatalAction::Poweroff);
        assert_eq!(d.init.shutdown_grace_secs, 10);
    }

    #[test]
    fn rendered_form_reads_back_equal() {
        let text = "name = \"web\"\nhostname = \"web-1.example\"\narch = [\"aarch64\"]\n[kernel]\ncmdline = \"quiet\"\n[init]\non_fatal = \"reboot\"\nshutdown_grace_secs = 3\n";
        let d = HostDecl::from_toml_str(text, "t.toml").unwrap();
        let rendered = d.to_toml_string().unwrap();
        assert_eq!(HostDecl::from_toml_str(&rendered, "r").unwrap(), d);
    }

    #[test]
    fn unknown_field_error_names_file_and_field() {
        let err = HostDecl::from_toml_str("name = \"a\"\nhostnme = \"x\"\n", "images/a.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("images/a.toml: "), "{err}");
        assert!(err.contains("hostnme"), "{err}");
    }

    #[test]
    fn rejects_bad_hostname_naming_the_field() {
        let err = HostDecl::from_toml_str("name = \"a\"\nhostname = \"Bad_Host\"\n", "h.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("h.toml: hostname:"), "{err}");
    }

    #[test]
    fn rejects_hostname_longer_than_the_kernel_allows() {
        let long = format!("{}.{}", "a".repeat(40), "b".repeat(30));
        let err = HostDecl::from_toml_str(&format!("name = \"a\"\nhostname = \"{long}\"\n"), "h")
            .unwrap_err();
        assert!(err.to_string().contains("hostname"), "{err}");
    }

    #[test]
    fn rejects_unknown_arch_and_duplicates() {
        let e1 = HostDecl::from_toml_str("name = \"a\"\narch = [\"arm64\"]\n", "x").unwrap_err();
        assert!(e1.to_string().contains("arm64"), "{e1}");
        let e2 = HostDecl::from_toml_str("name = \"a\"\narch = [\"x86_64\", \"x86_64\"]\n", "x")
            .unwrap_err();
        assert!(e2.to_string().contains("listed twice"), "{e2}");
    }

    #[test]
    fn url_source_requires_pinned_hash() {
        let err = HostDecl::from_toml_str(
            "name = \"a\"\n[kernel]\nsource = \"https://example.com/linux.tar.xz\"\n",
            "x",
        )
        .unwrap_err();
        assert!(err.to_string().contains("kernel.sha256"), "{err}");
    }
}
