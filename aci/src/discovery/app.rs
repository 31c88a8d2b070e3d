//! The app string `name[:version][,label=value...]` that names an image to discover, and the
//! post-fetch rule that an image's manifest must match it.

use std::collections::BTreeMap;
use std::fmt;

/// An image request: a name and the labels the image must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub name: String,
    /// Requested labels, `version` included when given with `:`. Sorted for stable output.
    pub labels: BTreeMap<String, String>,
}

/// Why an app string or a fetched manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    #[error("app string is empty")]
    Empty,
    #[error("app string {0:?}: a colon may appear only once, right after the name")]
    Colon(String),
    #[error("app string {app:?}: {name:?} is not a valid image name (AC identifier)")]
    Name { app: String, name: String },
    #[error("app string {app:?}: {part:?} is not label=value")]
    Label { app: String, part: String },
    #[error("app string {app:?}: label name {label:?} is not a valid AC identifier")]
    LabelName { app: String, label: String },
    #[error("app string {app:?}: label {label:?} is given more than once")]
    Duplicate { app: String, label: String },
    #[error("app string {app:?}: `name` cannot be a label")]
    NameLabel { app: String },
    #[error("fetched image is named {found:?}, but {wanted:?} was requested")]
    ManifestName { wanted: String, found: String },
    #[error(
        "image {name}: label {label} is {found:?} in the manifest, but {wanted:?} was requested"
    )]
    ManifestLabel {
        name: String,
        label: String,
        wanted: String,
        found: Option<String>,
    },
}

// appc's AC identifier, checked by the one checker that lives with the appc types.
use crate::manifest::is_ac_identifier;

impl App {
    /// Parses `name[:version][,label=value...]` (appc's `discovery.NewAppFromString`).
    pub fn parse(s: &str) -> Result<App, AppError> {
        if s.is_empty() {
            return Err(AppError::Empty);
        }
        let first_comma = s.find(',');
        let colons = s.matches(':').count();
        if colons > 1 || matches!((s.find(':'), first_comma), (Some(c), Some(m)) if c > m) {
            return Err(AppError::Colon(s.into()));
        }
        let mut parts = s.split(',');
        let head = parts.next().unwrap_or_default();
        let (name, version) = match head.split_once(':') {
            Some((n, v)) => (n, Some(v)),
            None => (head, None),
        };
        if !is_ac_identifier(name) {
            return Err(AppError::Name {
                app: s.into(),
                name: name.into(),
            });
        }
        let mut labels = BTreeMap::new();
        let pairs = version
            .map(|v| Ok(("version", v)))
            .into_iter()
            .chain(parts.map(|p| {
                p.split_once('=').ok_or_else(|| AppError::Label {
                    app: s.into(),
                    part: p.into(),
                })
            }));
        for pair in pairs {
            let (k, v) = pair?;
            if k == "name" {
                return Err(AppError::NameLabel { app: s.into() });
            }
            if !is_ac_identifier(k) {
                return Err(AppError::LabelName {
                    app: s.into(),
                    label: k.into(),
                });
            }
            if labels.insert(k.to_string(), v.to_string()).is_some() {
                return Err(AppError::Duplicate {
                    app: s.into(),
                    label: k.into(),
                });
            }
        }
        Ok(App {
            name: name.into(),
            labels,
        })
    }

    /// Adds `os` and `arch` labels when the request has none, as rkt does with the host's.
    pub fn with_default_os_arch(mut self, os: &str, arch: &str) -> App {
        self.labels.entry("os".into()).or_insert_with(|| os.into());
        self.labels
            .entry("arch".into())
            .or_insert_with(|| arch.into());
        self
    }

    /// This machine's appc os and arch (`linux`, `amd64`/`aarch64`/...).
    pub fn host_os_arch() -> (&'static str, &'static str) {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "i386",
            "arm" => "armv7l",
            "powerpc64" => "ppc64",
            other => other,
        };
        (std::env::consts::OS, arch)
    }

    /// The manifest of a fetched image must carry the requested name and every requested label
    /// with the same value (extra labels are fine).
    pub fn check_manifest(&self, name: &str, labels: &[(String, String)]) -> Result<(), AppError> {
        if name != self.name {
            return Err(AppError::ManifestName {
                wanted: self.name.clone(),
                found: name.into(),
            });
        }
        for (label, wanted) in &self.labels {
            let found = labels.iter().find(|(n, _)| n == label).map(|(_, v)| v);
            if found != Some(wanted) {
                return Err(AppError::ManifestLabel {
                    name: self.name.clone(),
                    label: label.clone(),
                    wanted: wanted.clone(),
                    found: found.cloned(),
                });
            }
        }
        Ok(())
    }
}

impl fmt::Display for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (k, v) in &self.labels {
            write!(f, ",{k}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_version_and_labels() {
        let app = App::parse("example.com/app:1.0.0,os=linux,arch=amd64").unwrap();
        assert_eq!(app.name, "example.com/app");
        assert_eq!(app.labels["version"], "1.0.0");
        assert_eq!(app.labels["os"], "linux");
        assert_eq!(app.labels["arch"], "amd64");
        assert_eq!(App::parse("a.com/b").unwrap().labels.len(), 0);
    }

    #[test]
    fn refuses_malformed_app_strings() {
        type Check = fn(&AppError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, AppError::Empty)),
            ("a:1:2", |e| matches!(e, AppError::Colon(_))),
            ("a,os=linux:1", |e| matches!(e, AppError::Colon(_))),
            ("Example.com", |e| matches!(e, AppError::Name { .. })),
            ("a/", |e| matches!(e, AppError::Name { .. })),
            (":1", |e| matches!(e, AppError::Name { .. })),
            ("a,os", |e| matches!(e, AppError::Label { .. })),
            ("a,OS=x", |e| matches!(e, AppError::LabelName { .. })),
            ("a:1,version=2", |e| matches!(e, AppError::Duplicate { .. })),
            ("a,name=b", |e| matches!(e, AppError::NameLabel { .. })),
        ];
        for (s, ok) in cases {
            let err = App::parse(s).unwrap_err();
            assert!(ok(&err), "{s:?} gave {err:?}");
        }
    }

    #[test]
    fn default_os_arch_does_not_override_requested() {
        let app = App::parse("a,os=freebsd")
            .unwrap()
            .with_default_os_arch("linux", "amd64");
        assert_eq!(app.labels["os"], "freebsd");
        assert_eq!(app.labels["arch"], "amd64");
    }

    #[test]
    fn manifest_must_match_name_and_requested_labels() {
        let app = App::parse("a.com/x:1.0").unwrap();
        let labels = vec![
            ("version".to_string(), "1.0".to_string()),
            ("os".to_string(), "linux".to_string()),
        ];
        app.check_manifest("a.com/x", &labels).unwrap();
        assert!(matches!(
            app.check_manifest("a.com/y", &labels),
            Err(AppError::ManifestName { .. })
        ));
        let wrong = vec![("version".to_string(), "2.0".to_string())];
        assert!(matches!(
            app.check_manifest("a.com/x", &wrong),
            Err(AppError::ManifestLabel { .. })
        ));
        assert!(matches!(
            app.check_manifest("a.com/x", &[]),
            Err(AppError::ManifestLabel { found: None, .. })
        ));
    }
}
