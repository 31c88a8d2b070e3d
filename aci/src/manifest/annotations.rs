//! Annotations: unique `{name, value}` pairs, with the values of the spec's well-known names
//! checked (`created`, `homepage`, `documentation`, `appc.io/executor/supports-systemd-notify`).

use serde::{Deserialize, Serialize};

use super::checks::{Errors, check_http_url, check_rfc3339, field, index};
use super::named_list::{check_unique, named_value_list};
use super::types::AcIdentifier;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Annotation {
    pub name: AcIdentifier,
    pub value: String,
}

/// An annotation list in manifest order. Names are AC Identifiers everywhere, also in pod
/// manifests where the spec text says AC Name: the Go reference uses one type for both, and
/// every AC Name is an AC Identifier.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Annotations(pub Vec<Annotation>);

named_value_list!(Annotations, Annotation);

impl Annotations {
    pub const CREATED: &'static str = "created";
    pub const AUTHORS: &'static str = "authors";
    pub const HOMEPAGE: &'static str = "homepage";
    pub const DOCUMENTATION: &'static str = "documentation";
    pub const SUPPORTS_SYSTEMD_NOTIFY: &'static str = "appc.io/executor/supports-systemd-notify";

    pub(crate) fn check(&self, path: &str, errs: &mut Errors) {
        for (i, a) in self.0.iter().enumerate() {
            let at = index(path, i);
            check_unique(&self.0, i, &at, "annotation", errs);
            let value_error = match a.name.as_str() {
                Self::CREATED => check_rfc3339(&a.value).err(),
                Self::HOMEPAGE | Self::DOCUMENTATION => check_http_url(&a.value).err(),
                Self::SUPPORTS_SYSTEMD_NOTIFY => (a.value != "true" && a.value != "false")
                    .then(|| format!("must be \"true\" or \"false\", found {:?}", a.value)),
                _ => None,
            };
            if let Some(reason) = value_error {
                errs.add(field(&at, "value"), reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(pairs: &[(&str, &str)]) -> Vec<String> {
        let list = Annotations(
            pairs
                .iter()
                .map(|(n, v)| Annotation {
                    name: AcIdentifier::new(*n).unwrap(),
                    value: (*v).to_owned(),
                })
                .collect(),
        );
        let mut errs = Errors::default();
        list.check("annotations", &mut errs);
        match errs.into_result() {
            Ok(()) => vec![],
            Err(e) => e.errors().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn accepts_well_known_annotations() {
        assert!(
            errors(&[
                ("authors", "anyone <a@b>"),
                ("created", "2014-10-27T19:32:27.67021798Z"),
                ("homepage", "https://example.com"),
                ("documentation", "http://example.com/docs"),
                ("appc.io/executor/supports-systemd-notify", "true"),
                ("example.com/free-form", "anything at all"),
            ])
            .is_empty()
        );
    }

    #[test]
    fn rejects_duplicate_annotation() {
        assert_eq!(
            errors(&[("a", "1"), ("b", "2"), ("a", "3")]),
            ["annotations[2].name: duplicate annotation \"a\""]
        );
    }

    #[test]
    fn rejects_created_that_is_not_rfc3339() {
        let e = errors(&[("created", "yesterday")]);
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("annotations[0].value: must be an RFC 3339"),
            "{e:?}"
        );
    }

    #[test]
    fn rejects_homepage_and_documentation_that_are_not_http_urls() {
        let e = errors(&[
            ("homepage", "ftp://example.com"),
            ("documentation", "example.com"),
        ]);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("annotations[0].value: URL scheme \"ftp\""),
            "{e:?}"
        );
        assert!(e[1].starts_with("annotations[1].value:"), "{e:?}");
    }

    #[test]
    fn rejects_systemd_notify_that_is_not_a_boolean_string() {
        assert_eq!(
            errors(&[("appc.io/executor/supports-systemd-notify", "yes")]),
            ["annotations[0].value: must be \"true\" or \"false\", found \"yes\""]
        );
    }
}
