//! The Image Manifest (`acKind: ImageManifest`): name, labels, app, dependencies, path
//! whitelist and annotations.

use serde::{Deserialize, Serialize};

use super::annotations::Annotations;
use super::app::App;
use super::checks::{Errors, field, index, is_absolute};
use super::labels::Labels;
use super::types::{AcIdentifier, AcVersion, ImageId, ImageManifestKind};
use super::{ManifestError, decode, encode_pretty, null_as_default};

/// An ACI's `manifest` file. Fields are public plain data; [`ImageManifest::validate`] checks
/// the rules that span fields, and [`ImageManifest::from_json`] runs it for you.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub ac_kind: ImageManifestKind,
    pub ac_version: AcVersion,
    /// Must equal the name the image was discovered by.
    pub name: AcIdentifier,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Labels::is_empty"
    )]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<App>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Annotations::is_empty"
    )]
    pub annotations: Annotations,
    /// Rendered depth-first in this order, below this image's own rootfs.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dependencies: Vec<Dependency>,
    /// Absolute paths kept after rendering; empty means keep everything.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub path_whitelist: Vec<String>,
}

/// An image this one is layered on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    pub image_name: AcIdentifier,
    /// When set, the fetched dependency MUST have this ID.
    // Go matches JSON keys case-insensitively; `imageId` is the likely other spelling.
    #[serde(
        rename = "imageID",
        alias = "imageId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub image_id: Option<ImageId>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Labels::is_empty"
    )]
    pub labels: Labels,
    /// Bytes; the executor SHOULD check it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl ImageManifest {
    /// A manifest for `name` at the current appc version with nothing else set.
    pub fn new(name: AcIdentifier) -> ImageManifest {
        ImageManifest {
            ac_kind: ImageManifestKind,
            ac_version: AcVersion::current(),
            name,
            labels: Labels::default(),
            app: None,
            annotations: Annotations::default(),
            dependencies: Vec::new(),
            path_whitelist: Vec::new(),
        }
    }

    /// Decodes and validates. Unknown fields are ignored.
    pub fn from_json(json: &[u8]) -> Result<ImageManifest, ManifestError> {
        let m: ImageManifest = decode(json)?;
        m.validate()?;
        Ok(m)
    }

    /// Validates, then writes appc's JSON form (two-space indented, newline-terminated).
    pub fn to_json_pretty(&self) -> Result<Vec<u8>, ManifestError> {
        self.validate()?;
        encode_pretty(self)
    }

    /// Checks every rule that decoding alone does not; reports all broken ones.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let mut errs = Errors::default();
        self.labels.check("labels", &mut errs);
        if let Some(app) = &self.app {
            app.check("app", &mut errs);
        }
        self.annotations.check("annotations", &mut errs);
        for (i, dep) in self.dependencies.iter().enumerate() {
            dep.labels
                .check(&field(&index("dependencies", i), "labels"), &mut errs);
        }
        for (i, p) in self.path_whitelist.iter().enumerate() {
            if !is_absolute(p) {
                errs.add(
                    index("pathWhitelist", i),
                    format!("must be an absolute path, found {p:?}"),
                );
            }
        }
        errs.into_result()
    }

    /// The value of the label `name` (`version`, `os`, `arch`, ...).
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name)
    }

    /// The value of the annotation `name`.
    pub fn annotation(&self, name: &str) -> Option<&str> {
        self.annotations.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::test_util::{assert_decode_error, assert_invalid, example};
    use serde_json::json;

    fn base() -> serde_json::Value {
        json!({"acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/app"})
    }

    fn parse(v: &serde_json::Value) -> Result<ImageManifest, ManifestError> {
        ImageManifest::from_json(&serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn accepts_spec_example_image_manifest() {
        let m = ImageManifest::from_json(&example("image.json")).unwrap();
        assert_eq!(m.name, "example.com/reduce-worker");
        assert_eq!(m.label("os"), Some("linux"));
        assert_eq!(m.label("arch"), Some("amd64"));
        let app = m.app.as_ref().unwrap();
        assert_eq!(app.exec, ["/usr/bin/reduce-worker", "--quiet"]);
        assert_eq!((app.user.as_str(), app.group.as_str()), ("100", "300"));
        assert_eq!(app.isolators.len(), 5);
        assert_eq!(app.mount_points[0].name, "database");
        assert!(app.ports[0].socket_activated);
        assert_eq!(
            m.dependencies[0].image_name,
            "example.com/reduce-worker-base"
        );
        assert_eq!(m.dependencies[0].labels.get("env"), Some("canary"));
        assert_eq!(m.path_whitelist.len(), 5);
        assert_eq!(m.annotation("homepage"), Some("https://example.com"));
    }

    #[test]
    fn round_trips_spec_example_image_manifest() {
        let m = ImageManifest::from_json(&example("image.json")).unwrap();
        let out = m.to_json_pretty().unwrap();
        assert_eq!(ImageManifest::from_json(&out).unwrap(), m);
        // Writing is stable: a second round trip gives the same bytes.
        assert_eq!(
            ImageManifest::from_json(&out)
                .unwrap()
                .to_json_pretty()
                .unwrap(),
            out
        );
    }

    #[test]
    fn round_trip_keeps_every_optional_field() {
        let v = json!({
            "acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/full",
            "labels": [{"name": "version", "value": "1"}, {"name": "os", "value": "linux"}, {"name": "arch", "value": "aarch64"}],
            "app": {
                "exec": ["/bin/app", "-v"], "user": "app", "group": "app", "supplementaryGIDs": [10, 20],
                "workingDirectory": "/srv",
                "eventHandlers": [{"name": "pre-start", "exec": ["/bin/pre"]}, {"name": "post-stop", "exec": ["/bin/post"]}],
                "environment": [{"name": "A", "value": "1"}],
                "mountPoints": [{"name": "data", "path": "/data", "readOnly": true}],
                "ports": [{"name": "http", "protocol": "tcp", "port": 80, "count": 2, "socketActivated": true}],
                "isolators": [
                    {"name": "resource/memory", "value": {"request": "256Mi", "limit": "512M"}},
                    {"name": "os/linux/seccomp-remove-set", "value": {"set": ["reboot"], "errno": "EPERM"}},
                    {"name": "example.com/custom", "value": [1, "two", null]}
                ],
                "userAnnotations": {"k": "v"}, "userLabels": {"team": "x"}
            },
            "annotations": [{"name": "created", "value": "2020-01-01T00:00:00Z"}],
            "dependencies": [{"imageName": "example.com/base", "imageID": "sha512-abcd", "labels": [{"name": "os", "value": "linux"}], "size": 1024}],
            "pathWhitelist": ["/bin/app"]
        });
        let m = parse(&v).unwrap();
        let written: serde_json::Value =
            serde_json::from_slice(&m.to_json_pretty().unwrap()).unwrap();
        assert_eq!(written, v, "written JSON equals the input, field for field");
        assert_eq!(parse(&written).unwrap(), m);
    }

    #[test]
    fn writes_minimal_manifest_without_empty_fields() {
        let m = ImageManifest::new(AcIdentifier::new("example.com/min").unwrap());
        let out = String::from_utf8(m.to_json_pretty().unwrap()).unwrap();
        assert_eq!(
            out,
            "{\n  \"acKind\": \"ImageManifest\",\n  \"acVersion\": \"0.8.11\",\n  \"name\": \"example.com/min\"\n}\n"
        );
    }

    #[test]
    fn ignores_unknown_fields() {
        let mut v = base();
        v["futureField"] = json!({"x": 1});
        v["app"] = json!({"user": "0", "group": "0", "somethingNew": true});
        let m = parse(&v).unwrap();
        let written: serde_json::Value =
            serde_json::from_slice(&m.to_json_pretty().unwrap()).unwrap();
        assert!(
            written.get("futureField").is_none(),
            "unknown fields are not kept"
        );
    }

    #[test]
    fn accepts_null_lists_as_absent() {
        let mut v = base();
        for key in ["labels", "annotations", "dependencies", "pathWhitelist"] {
            v[key] = serde_json::Value::Null;
        }
        assert!(parse(&v).is_ok());
    }

    #[test]
    fn rejects_wrong_or_missing_ac_kind() {
        let mut v = base();
        v["acKind"] = json!("PodManifest");
        assert_decode_error(
            parse(&v),
            "acKind",
            "must be \"ImageManifest\", found \"PodManifest\"",
        );
        v.as_object_mut().unwrap().remove("acKind");
        assert_decode_error(parse(&v), "", "missing field `acKind`");
    }

    #[test]
    fn rejects_bad_ac_version() {
        for bad in ["", "0.0.0", "1.0", "latest"] {
            let mut v = base();
            v["acVersion"] = json!(bad);
            assert_decode_error(parse(&v), "acVersion", "invalid AC Version");
        }
    }

    #[test]
    fn accepts_older_spec_versions() {
        let mut v = base();
        v["acVersion"] = json!("0.3.0");
        assert_eq!(parse(&v).unwrap().ac_version.minor(), 3);
    }

    #[test]
    fn rejects_missing_or_invalid_name() {
        let mut v = base();
        v["name"] = json!("example.com//app");
        assert_decode_error(
            parse(&v),
            "name",
            "invalid AC Identifier \"example.com//app\"",
        );
        v.as_object_mut().unwrap().remove("name");
        assert_decode_error(parse(&v), "", "missing field `name`");
    }

    #[test]
    fn rejects_invalid_label_name_with_path() {
        let mut v = base();
        v["labels"] = json!([{"name": "ok", "value": "1"}, {"name": "Bad", "value": "2"}]);
        assert_decode_error(parse(&v), "labels[1].name", "invalid AC Identifier \"Bad\"");
    }

    #[test]
    fn rejects_label_rules_with_paths() {
        let mut v = base();
        v["labels"] = json!([
            {"name": "os", "value": "linux"}, {"name": "arch", "value": "arm64"}, {"name": "os", "value": "linux"},
            {"name": "name", "value": "x"}
        ]);
        assert_invalid(
            parse(&v),
            &[
                ("labels[2].name", "duplicate label \"os\""),
                ("labels[3].name", "may not be called \"name\""),
                (
                    "labels[1].value",
                    "arch \"arm64\" is not valid for os \"linux\"",
                ),
            ],
        );
    }

    #[test]
    fn rejects_image_without_app_user() {
        let mut v = base();
        v["app"] = json!({"exec": ["/x"], "group": "0"});
        assert_invalid(parse(&v), &[("app.user", "required")]);
    }

    #[test]
    fn accepts_image_without_app() {
        assert!(parse(&base()).unwrap().app.is_none());
    }

    #[test]
    fn rejects_bad_dependency_fields() {
        let mut v = base();
        v["dependencies"] = json!([{"imageName": "example.com/base", "imageID": "sha256-abc"}]);
        assert_decode_error(
            parse(&v),
            "dependencies[0].imageID",
            "hash algorithm \"sha256\"",
        );
        v["dependencies"] = json!([{"imageID": "sha512-abc"}]);
        assert_decode_error(parse(&v), "dependencies[0]", "missing field `imageName`");
        v["dependencies"] = json!([{"imageName": "a", "size": -1}]);
        assert_decode_error(parse(&v), "dependencies[0].size", "invalid value");
        v["dependencies"] =
            json!([{"imageName": "a", "labels": [{"name": "os", "value": "beos"}]}]);
        assert_invalid(
            parse(&v),
            &[("dependencies[0].labels[0].value", "unknown os \"beos\"")],
        );
    }

    #[test]
    fn reads_image_id_camel_case_spelling() {
        let mut v = base();
        v["dependencies"] = json!([{"imageName": "a", "imageId": "sha512-ab"}]);
        let m = parse(&v).unwrap();
        assert_eq!(
            m.dependencies[0].image_id.as_ref().map(ImageId::as_str),
            Some("sha512-ab")
        );
    }

    #[test]
    fn isolator_decode_error_names_isolator_and_inner_field() {
        let mut v = base();
        v["app"] = json!({"user": "0", "group": "0", "isolators": [
            {"name": "resource/memory", "value": {"limit": "1G"}},
            {"name": "resource/cpu", "value": {"limit": "fast"}}
        ]});
        assert_decode_error(
            parse(&v),
            "app.isolators[1]",
            "isolator \"resource/cpu\": value.limit: invalid quantity \"fast\"",
        );
    }

    #[test]
    fn rejects_relative_path_whitelist_entry() {
        let mut v = base();
        v["pathWhitelist"] = json!(["/ok", "etc/passwd"]);
        assert_invalid(
            parse(&v),
            &[("pathWhitelist[1]", "must be an absolute path")],
        );
    }

    #[test]
    fn rejects_bad_annotations_with_paths() {
        let mut v = base();
        v["annotations"] = json!([
            {"name": "created", "value": "2014-10-27"},
            {"name": "homepage", "value": "ftp://x"},
            {"name": "created", "value": "2014-10-27T19:32:27Z"}
        ]);
        assert_invalid(
            parse(&v),
            &[
                ("annotations[0].value", "RFC 3339"),
                ("annotations[1].value", "not http or https"),
                ("annotations[2].name", "duplicate annotation \"created\""),
            ],
        );
    }

    #[test]
    fn reports_every_broken_rule_at_once() {
        let mut v = base();
        v["app"] = json!({"ports": [{"name": "p", "protocol": "tcp", "port": 80, "count": 0}]});
        v["pathWhitelist"] = json!(["rel"]);
        let err = parse(&v).unwrap_err();
        let paths: Vec<&str> = err.errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "app.user",
                "app.group",
                "app.ports[0].count",
                "pathWhitelist[0]"
            ]
        );
        assert!(
            err.to_string()
                .contains("app.ports[0].count: must be at least 1"),
            "{err}"
        );
    }

    #[test]
    fn to_json_pretty_refuses_invalid_manifest() {
        let mut m = ImageManifest::new(AcIdentifier::new("a").unwrap());
        m.path_whitelist.push("relative".into());
        assert!(matches!(m.to_json_pretty(), Err(ManifestError::Invalid(_))));
    }
}
