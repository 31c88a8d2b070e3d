//! Reading the rendered host declaration and turning it into init's settings.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hostdecl::{FatalAction, HostDecl};

use crate::shutdown::PowerAction;

/// The hostname when the image carries no declaration.
pub const DEFAULT_HOSTNAME: &str = "hostos";

#[derive(Debug, thiserror::Error)]
pub enum DeclError {
    #[error("cannot read the host declaration {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    // hostdecl's message already names the file.
    #[error("the host declaration is malformed")]
    Parse(#[source] hostdecl::DeclError),
}

/// What init takes from the declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub hostname: String,
    pub on_fatal: PowerAction,
    pub shutdown_grace: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self::from_decl_parts(DEFAULT_HOSTNAME, &hostdecl::InitDecl::default())
    }
}

impl Settings {
    pub fn from_decl(decl: &HostDecl) -> Self {
        Self::from_decl_parts(&decl.hostname, &decl.init)
    }

    fn from_decl_parts(hostname: &str, init: &hostdecl::InitDecl) -> Self {
        Self {
            hostname: hostname.to_owned(),
            on_fatal: match init.on_fatal {
                FatalAction::Poweroff => PowerAction::PowerOff,
                FatalAction::Reboot => PowerAction::Reboot,
            },
            shutdown_grace: Duration::from_secs(u64::from(init.shutdown_grace_secs)),
        }
    }
}

/// The settings, and whether they are defaults because the file was missing.
#[derive(Debug)]
pub struct Loaded {
    pub settings: Settings,
    pub defaulted: bool,
}

/// Reads `path`. A missing file means defaults (an image built without a declaration still
/// boots); an unreadable or malformed one is an error, because running with settings other
/// than the ones the operator signed would be worse than stopping.
pub fn load(path: &Path) -> Result<Loaded, DeclError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Loaded {
                settings: Settings::default(),
                defaulted: true,
            });
        }
        Err(source) => {
            return Err(DeclError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let decl =
        HostDecl::from_toml_str(&text, &path.display().to_string()).map_err(DeclError::Parse)?;
    Ok(Loaded {
        settings: Settings::from_decl(&decl),
        defaulted: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_temp(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("init-decl-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn missing_declaration_gives_defaults() {
        let loaded = load(Path::new("/nonexistent/host.toml")).expect("defaults");
        assert!(loaded.defaulted);
        assert_eq!(loaded.settings.hostname, DEFAULT_HOSTNAME);
        assert_eq!(loaded.settings.on_fatal, PowerAction::PowerOff);
        assert_eq!(loaded.settings.shutdown_grace, Duration::from_secs(10));
    }

    #[test]
    fn reads_hostname_and_init_section() {
        let path = write_temp(
            "ok.toml",
            "name = \"web\"\nhostname = \"web-1\"\n[init]\non_fatal = \"reboot\"\nshutdown_grace_secs = 3\n",
        );
        let loaded = load(&path).expect("valid");
        assert!(!loaded.defaulted);
        assert_eq!(
            loaded.settings,
            Settings {
                hostname: "web-1".into(),
                on_fatal: PowerAction::Reboot,
                shutdown_grace: Duration::from_secs(3),
            }
        );
    }

    #[test]
    fn malformed_declaration_is_an_error_naming_the_file() {
        let path = write_temp("bad.toml", "name = \n");
        let err = load(&path).expect_err("malformed");
        let text = crate::fatal::chain(&err);
        assert!(
            text.starts_with("the host declaration is malformed: "),
            "{text}"
        );
        assert!(text.contains("bad.toml"), "{text}");
    }
}
