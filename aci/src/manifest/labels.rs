//! Labels: unique `{name, value}` pairs, none called `name`, with `os`/`arch` restricted to the
//! Go reference's whitelist (`types.ValidOSArch`).

use serde::{Deserialize, Serialize};

use super::checks::{Errors, field, index};
use super::named_list::{check_unique, named_value_list};
use super::types::AcIdentifier;

/// The `os` label values and, for each, the `arch` values allowed with it. Note `aarch64`:
/// appc never used Go's `arm64`.
pub const VALID_OS_ARCH: &[(&str, &[&str])] = &[
    (
        "linux",
        &[
            "amd64",
            "i386",
            "aarch64",
            "aarch64_be",
            "armv6l",
            "armv7l",
            "armv7b",
            "ppc64",
            "ppc64le",
            "s390x",
        ],
    ),
    ("freebsd", &["amd64", "i386", "arm"]),
    ("darwin", &["x86_64", "i386"]),
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    pub name: AcIdentifier,
    pub value: String,
}

/// A label list in manifest order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Labels(pub Vec<Label>);

named_value_list!(Labels, Label);

impl Labels {
    /// `path` is the JSON path of the list itself, e.g. `labels` or `dependencies[0].labels`.
    pub(crate) fn check(&self, path: &str, errs: &mut Errors) {
        for (i, label) in self.0.iter().enumerate() {
            let at = index(path, i);
            if label.name == "name" {
                errs.add(
                    field(&at, "name"),
                    "a label may not be called \"name\" (the image name is its own field)",
                );
            }
            check_unique(&self.0, i, &at, "label", errs);
        }
        let os_at = self.0.iter().position(|l| l.name == "os");
        let Some((os_i, os)) = os_at.and_then(|i| Some((i, self.0.get(i)?.value.as_str()))) else {
            // Without `os` an `arch` label has no meaning (the spec), so it is not checked.
            return;
        };
        let Some((_, arches)) = VALID_OS_ARCH.iter().find(|(o, _)| *o == os) else {
            let known: Vec<&str> = VALID_OS_ARCH.iter().map(|(o, _)| *o).collect();
            errs.add(
                field(&index(path, os_i), "value"),
                format!("unknown os {os:?} (expected one of {})", known.join(", ")),
            );
            return;
        };
        if let Some(arch_i) = self.0.iter().position(|l| l.name == "arch") {
            let arch = self.0.get(arch_i).map_or("", |l| l.value.as_str());
            if !arches.contains(&arch) {
                let hint = if arch == "arm64" {
                    "; appc calls it \"aarch64\""
                } else {
                    ""
                };
                errs.add(
                    field(&index(path, arch_i), "value"),
                    format!(
                        "arch {arch:?} is not valid for os {os:?} (expected one of {}{hint})",
                        arches.join(", ")
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels(
            pairs
                .iter()
                .map(|(n, v)| Label {
                    name: AcIdentifier::new(*n).unwrap(),
                    value: (*v).to_owned(),
                })
                .collect(),
        )
    }

    fn errors(l: &Labels) -> Vec<String> {
        let mut errs = Errors::default();
        l.check("labels", &mut errs);
        match errs.into_result() {
            Ok(()) => vec![],
            Err(e) => e.errors().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn accepts_known_os_arch_pairs() {
        for (os, arches) in VALID_OS_ARCH {
            for arch in *arches {
                assert!(
                    errors(&labels(&[("os", os), ("arch", arch)])).is_empty(),
                    "{os}/{arch}"
                );
            }
        }
    }

    #[test]
    fn rejects_label_named_name() {
        assert_eq!(
            errors(&labels(&[("version", "1"), ("name", "x")])),
            [
                "labels[1].name: a label may not be called \"name\" (the image name is its own field)"
            ]
        );
    }

    #[test]
    fn rejects_duplicate_label() {
        assert_eq!(
            errors(&labels(&[
                ("os", "linux"),
                ("version", "1"),
                ("os", "linux")
            ])),
            ["labels[2].name: duplicate label \"os\""]
        );
    }

    #[test]
    fn rejects_unknown_os() {
        let e = errors(&labels(&[("os", "plan9")]));
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("labels[0].value: unknown os \"plan9\""),
            "{e:?}"
        );
    }

    #[test]
    fn rejects_arm64_and_suggests_aarch64() {
        let e = errors(&labels(&[("arch", "arm64"), ("os", "linux")]));
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("labels[0].value: arch \"arm64\" is not valid for os \"linux\""),
            "{e:?}"
        );
        assert!(e[0].contains("aarch64"), "{e:?}");
    }

    #[test]
    fn rejects_arch_of_another_os() {
        assert_eq!(
            errors(&labels(&[("os", "darwin"), ("arch", "amd64")])).len(),
            1
        );
    }

    #[test]
    fn accepts_arch_without_os_unchecked() {
        assert!(errors(&labels(&[("arch", "whatever")])).is_empty());
    }

    #[test]
    fn get_and_set_find_labels_by_name() {
        let mut l = labels(&[("os", "linux")]);
        assert_eq!(l.get("os"), Some("linux"));
        assert_eq!(l.get("arch"), None);
        l.set(AcIdentifier::new("os").unwrap(), "freebsd");
        l.set(AcIdentifier::new("arch").unwrap(), "arm");
        assert_eq!(l.len(), 2);
        assert_eq!(l.get("os"), Some("freebsd"));
    }
}
