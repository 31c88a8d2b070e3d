//! The Pod Manifest (`acKind: PodManifest`): apps with their images, app overrides and mounts,
//! volumes, pod isolators, exposed ports and annotations; runnable and template forms.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::annotations::Annotations;
use super::app::{App, Port};
use super::checks::{Errors, field, index, is_absolute};
use super::isolator::{Isolator, check_isolators};
use super::labels::Labels;
use super::types::{AcIdentifier, AcName, AcVersion, ImageId, PodManifestKind};
use super::{ManifestError, decode, encode_pretty, null_as_default};

/// How complete a pod manifest must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodMode {
    /// Ready to run ("reified", spec `pods.md`): every app image has an `id` and every mount
    /// names a volume declared in the pod (or carries its own `appVolume`).
    #[default]
    Reified,
    /// A template another tool will resolve: images may be given by `name` and `labels` only
    /// (but by something), and mounts may name volumes bound later. The spec's
    /// `examples/pod_template.json` is one.
    Template,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodManifest {
    pub ac_version: AcVersion,
    pub ac_kind: PodManifestKind,
    pub apps: Vec<RuntimeApp>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub volumes: Vec<Volume>,
    /// Bound the apps' own isolators.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub isolators: Vec<Isolator>,
    /// Served by the metadata service.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Annotations::is_empty"
    )]
    pub annotations: Annotations,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ports: Vec<ExposedPort>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub user_annotations: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub user_labels: BTreeMap<String, String>,
}

/// One app of the pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeApp {
    /// Unique within the pod; several apps may run the same image under different names.
    pub name: AcName,
    pub image: RuntimeImage,
    /// Replaces the image manifest's whole `app` when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<App>,
    // Go matches JSON keys case-insensitively; `readOnlyRootFs` is the likely other spelling.
    #[serde(
        rename = "readOnlyRootFS",
        alias = "readOnlyRootFs",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub read_only_root_fs: bool,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub mounts: Vec<Mount>,
    /// Take precedence over the image's annotations.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Annotations::is_empty"
    )]
    pub annotations: Annotations,
}

/// Which image an app runs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RuntimeImage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<AcIdentifier>,
    /// Required in a runnable pod ([`PodMode::Reified`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<ImageId>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Labels::is_empty"
    )]
    pub labels: Labels,
}

/// Maps a volume onto a path in one app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    /// A key into the pod's `volumes`, unless `app_volume` is given.
    pub volume: AcName,
    /// Where in the app's filesystem; usually one of its mount points' paths.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_volume: Option<Volume>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    /// A fresh directory that lives as long as the pod.
    Empty,
    /// A bind mount of `source` from the host.
    Host,
}

/// A pod volume. Optional fields stay unset rather than being filled with defaults, so a
/// manifest is written back as it was read; the accessors apply the spec's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub name: AcName,
    pub kind: VolumeKind,
    /// Host kind only: absolute path on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Host kind only; defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recursive: Option<bool>,
    /// Empty kind only: octal permission bits as a string, default `"0755"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Empty kind only; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Empty kind only; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// A port the pod exposes on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExposedPort {
    /// Names a port of one of the apps, unless `pod_port` gives it here.
    pub name: AcName,
    pub host_port: u16,
    /// Dotted-quad IPv4 to forward from; all addresses when absent.
    #[serde(
        rename = "hostIP",
        alias = "hostIp",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub host_ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_port: Option<Port>,
}

impl Volume {
    pub fn read_only(&self) -> bool {
        self.read_only.unwrap_or(false)
    }

    /// Whether a host volume's submounts come along; the spec says executors SHOULD default to
    /// recursive.
    pub fn recursive(&self) -> bool {
        self.recursive.unwrap_or(true)
    }

    /// The permission bits of an empty volume (0o755 by default). `None` only for a mode that
    /// validation rejects.
    pub fn mode_bits(&self) -> Option<u32> {
        match &self.mode {
            None => Some(0o755),
            Some(m) => parse_mode(m),
        }
    }

    pub fn uid(&self) -> u32 {
        self.uid.unwrap_or(0)
    }

    pub fn gid(&self) -> u32 {
        self.gid.unwrap_or(0)
    }

    fn check(&self, at: &str, errs: &mut Errors) {
        match self.kind {
            VolumeKind::Host => {
                match self.source.as_deref() {
                    None | Some("") => errs.add(field(at, "source"), "required for a host volume"),
                    Some(s) if !is_absolute(s) => {
                        errs.add(
                            field(at, "source"),
                            format!("must be an absolute path, found {s:?}"),
                        );
                    }
                    Some(_) => {}
                }
                for (key, set) in [
                    ("mode", self.mode.is_some()),
                    ("uid", self.uid.is_some()),
                    ("gid", self.gid.is_some()),
                ] {
                    if set {
                        errs.add(field(at, key), "only an empty volume may set it");
                    }
                }
            }
            VolumeKind::Empty => {
                if self.source.is_some() {
                    errs.add(field(at, "source"), "an empty volume has no source");
                }
                if let Some(m) = &self.mode
                    && parse_mode(m).is_none()
                {
                    errs.add(
                        field(at, "mode"),
                        format!("{m:?} is not an octal mode like \"0755\" (3 or 4 octal digits)"),
                    );
                }
            }
        }
    }
}

fn parse_mode(m: &str) -> Option<u32> {
    if !(3..=4).contains(&m.len()) || !m.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(m, 8).ok()
}

impl PodManifest {
    /// A pod of `apps` at the current appc version with nothing else set.
    pub fn new(apps: Vec<RuntimeApp>) -> PodManifest {
        PodManifest {
            ac_version: AcVersion::current(),
            ac_kind: PodManifestKind,
            apps,
            volumes: Vec::new(),
            isolators: Vec::new(),
            annotations: Annotations::default(),
            ports: Vec::new(),
            user_annotations: BTreeMap::new(),
            user_labels: BTreeMap::new(),
        }
    }

    /// Decodes and validates a runnable pod ([`PodMode::Reified`]). Unknown fields are ignored.
    pub fn from_json(json: &[u8]) -> Result<PodManifest, ManifestError> {
        Self::from_json_with(json, PodMode::Reified)
    }

    /// Decodes and validates a pod template ([`PodMode::Template`]).
    pub fn from_json_template(json: &[u8]) -> Result<PodManifest, ManifestError> {
        Self::from_json_with(json, PodMode::Template)
    }

    pub fn from_json_with(json: &[u8], mode: PodMode) -> Result<PodManifest, ManifestError> {
        let m: PodManifest = decode(json)?;
        m.validate_with(mode)?;
        Ok(m)
    }

    /// Validates as a template (writing templates is legitimate), then writes appc's JSON form.
    /// Call [`PodManifest::validate`] first when the output must be runnable.
    pub fn to_json_pretty(&self) -> Result<Vec<u8>, ManifestError> {
        self.validate_with(PodMode::Template)?;
        encode_pretty(self)
    }

    /// Validates a runnable pod; reports every broken rule.
    pub fn validate(&self) -> Result<(), ManifestError> {
        self.validate_with(PodMode::Reified)
    }

    pub fn validate_with(&self, mode: PodMode) -> Result<(), ManifestError> {
        let mut errs = Errors::default();
        if self.apps.is_empty() {
            errs.add("apps", "a pod must have at least one app");
        }
        for (i, app) in self.apps.iter().enumerate() {
            let at = index("apps", i);
            if self.apps.iter().take(i).any(|a| a.name == app.name) {
                errs.add(
                    field(&at, "name"),
                    format!("duplicate app name {:?}", app.name.as_str()),
                );
            }
            self.check_app(app, &at, mode, &mut errs);
        }
        for (i, vol) in self.volumes.iter().enumerate() {
            let at = index("volumes", i);
            if self.volumes.iter().take(i).any(|v| v.name == vol.name) {
                errs.add(
                    field(&at, "name"),
                    format!("duplicate volume {:?}", vol.name.as_str()),
                );
            }
            vol.check(&at, &mut errs);
        }
        check_isolators(&self.isolators, "isolators", &mut errs);
        self.annotations.check("annotations", &mut errs);
        for (i, port) in self.ports.iter().enumerate() {
            let at = index("ports", i);
            if self.ports.iter().take(i).any(|p| p.name == port.name) {
                errs.add(
                    field(&at, "name"),
                    format!("duplicate port {:?}", port.name.as_str()),
                );
            }
            if port.host_port == 0 {
                errs.add(field(&at, "hostPort"), "must be between 1 and 65535");
            }
            if let Some(p) = &port.pod_port {
                p.check(&field(&at, "podPort"), &mut errs);
            }
        }
        errs.into_result()
    }

    fn check_app(&self, app: &RuntimeApp, at: &str, mode: PodMode, errs: &mut Errors) {
        let image = field(at, "image");
        match (mode, &app.image.id, &app.image.name) {
            (PodMode::Reified, None, _) => errs.add(
                field(&image, "id"),
                "required in a runnable pod manifest (only a template may name images without an id)",
            ),
            (PodMode::Template, None, None) => {
                errs.add(image.clone(), "must give an id or a name");
            }
            _ => {}
        }
        app.image.labels.check(&field(&image, "labels"), errs);
        if let Some(a) = &app.app {
            a.check(&field(at, "app"), errs);
        }
        let mounts = field(at, "mounts");
        for (j, m) in app.mounts.iter().enumerate() {
            let m_at = index(&mounts, j);
            if !is_absolute(&m.path) {
                errs.add(
                    field(&m_at, "path"),
                    format!("must be an absolute path, found {:?}", m.path),
                );
            } else if app.mounts.iter().take(j).any(|o| o.path == m.path) {
                errs.add(
                    field(&m_at, "path"),
                    format!("another mount of this app is already at {:?}", m.path),
                );
            }
            match &m.app_volume {
                Some(v) => v.check(&field(&m_at, "appVolume"), errs),
                None if mode == PodMode::Reified
                    && !self.volumes.iter().any(|v| v.name == m.volume) =>
                {
                    errs.add(
                        field(&m_at, "volume"),
                        format!(
                            "no volume {:?} is declared in the pod's volumes",
                            m.volume.as_str()
                        ),
                    );
                }
                None => {}
            }
        }
        app.annotations.check(&field(at, "annotations"), errs);
    }

    /// The app called `name`.
    pub fn app(&self, name: &str) -> Option<&RuntimeApp> {
        self.apps.iter().find(|a| a.name == name)
    }

    /// The pod volume called `name`.
    pub fn volume(&self, name: &str) -> Option<&Volume> {
        self.volumes.iter().find(|v| v.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::test_util::{assert_decode_error, assert_invalid, example};
    use serde_json::json;

    const ID: &str = "sha512-8d3fffddf79e9a232ffd19f9ccaa4d6b37a6a243dbe0f23137b108a043d9da13121a9b505c804956b22e93c7f93969f4a7ba8ddea45bf4aab0bebc8f814e0990";

    fn base() -> serde_json::Value {
        json!({
            "acVersion": "0.8.11", "acKind": "PodManifest",
            "apps": [{"name": "web", "image": {"id": ID}}]
        })
    }

    fn parse(v: &serde_json::Value) -> Result<PodManifest, ManifestError> {
        PodManifest::from_json(&serde_json::to_vec(v).unwrap())
    }

    fn parse_template(v: &serde_json::Value) -> Result<PodManifest, ManifestError> {
        PodManifest::from_json_template(&serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn accepts_spec_example_pod_runtime() {
        let p = PodManifest::from_json(&example("pod_runtime.json")).unwrap();
        assert_eq!(p.apps.len(), 3);
        let worker = p.app("reduce-worker").unwrap();
        assert!(worker.image.id.as_ref().is_some_and(ImageId::is_full));
        assert_eq!(worker.app.as_ref().unwrap().user, "0");
        assert_eq!(p.app("backup").unwrap().mounts[1].volume, "buildoutput");
        let db = p.volume("dbvolume").unwrap();
        assert_eq!(
            (db.kind, db.read_only(), db.recursive()),
            (VolumeKind::Host, true, true)
        );
        assert_eq!(p.volume("buildoutput").unwrap().mode_bits(), Some(0o777));
        assert!(matches!(p.isolators[1], Isolator::Sysctl(_)));
        assert_eq!(p.annotations.get("ip-address"), Some("10.1.2.3"));
    }

    #[test]
    fn round_trips_spec_example_pod_runtime() {
        let p = PodManifest::from_json(&example("pod_runtime.json")).unwrap();
        let out = p.to_json_pretty().unwrap();
        assert_eq!(PodManifest::from_json(&out).unwrap(), p);
        let input: serde_json::Value =
            serde_json::from_slice(&example("pod_runtime.json")).unwrap();
        let written: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(written, input, "nothing in the example is lost or added");
    }

    #[test]
    fn accepts_spec_example_pod_template_in_template_mode() {
        let p = PodManifest::from_json_template(&example("pod_template.json")).unwrap();
        assert_eq!(p.ac_version.as_str(), "0.3.0");
        assert_eq!(p.apps[1].image.labels.get("version"), Some("latest"));
        let out = p.to_json_pretty().unwrap();
        assert_eq!(PodManifest::from_json_template(&out).unwrap(), p);
    }

    #[test]
    fn rejects_spec_example_pod_template_as_runnable() {
        assert_invalid(
            PodManifest::from_json(&example("pod_template.json")),
            &[
                ("apps[1].image.id", "required in a runnable pod"),
                ("apps[2].image.id", "required"),
            ],
        );
    }

    #[test]
    fn template_image_needs_id_or_name() {
        let mut v = base();
        v["apps"][0]["image"] = json!({"labels": [{"name": "version", "value": "1"}]});
        assert_invalid(
            parse_template(&v),
            &[("apps[0].image", "must give an id or a name")],
        );
    }

    #[test]
    fn rejects_wrong_kind_and_missing_apps() {
        let mut v = base();
        v["acKind"] = json!("ImageManifest");
        assert_decode_error(parse(&v), "acKind", "must be \"PodManifest\"");
        let mut v = base();
        v.as_object_mut().unwrap().remove("apps");
        assert_decode_error(parse(&v), "", "missing field `apps`");
        let mut v = base();
        v["apps"] = json!([]);
        assert_invalid(parse(&v), &[("apps", "at least one app")]);
    }

    #[test]
    fn rejects_duplicate_app_names() {
        let mut v = base();
        v["apps"] = json!([
            {"name": "web", "image": {"id": ID}},
            {"name": "web", "image": {"id": ID}},
        ]);
        assert_invalid(parse(&v), &[("apps[1].name", "duplicate app name \"web\"")]);
    }

    #[test]
    fn rejects_app_name_that_is_not_an_ac_name() {
        let mut v = base();
        v["apps"][0]["name"] = json!("example.com/web");
        assert_decode_error(parse(&v), "apps[0].name", "invalid AC Name");
    }

    #[test]
    fn rejects_bad_image_fields() {
        let mut v = base();
        v["apps"][0]["image"]["id"] = json!("md5-abc");
        assert_decode_error(parse(&v), "apps[0].image.id", "invalid Image ID");
        let mut v = base();
        v["apps"][0]["image"]["labels"] =
            json!([{"name": "os", "value": "linux"}, {"name": "os", "value": "linux"}]);
        assert_invalid(
            parse(&v),
            &[("apps[0].image.labels[1].name", "duplicate label")],
        );
    }

    #[test]
    fn checks_app_override_under_its_path() {
        let mut v = base();
        v["apps"][0]["app"] = json!({"user": "0", "group": "", "workingDirectory": "rel"});
        assert_invalid(
            parse(&v),
            &[
                ("apps[0].app.group", "required"),
                ("apps[0].app.workingDirectory", "absolute"),
            ],
        );
    }

    #[test]
    fn round_trips_read_only_root_fs_spelling() {
        let mut v = base();
        v["apps"][0]["readOnlyRootFS"] = json!(true);
        let p = parse(&v).unwrap();
        assert!(p.apps[0].read_only_root_fs);
        let written: serde_json::Value =
            serde_json::from_slice(&p.to_json_pretty().unwrap()).unwrap();
        assert_eq!(written, v);
    }

    #[test]
    fn reads_camel_case_spellings_of_acronym_fields() {
        let mut v = base();
        v["apps"][0]["readOnlyRootFs"] = json!(true);
        v["ports"] = json!([{"name": "a", "hostPort": 1, "hostIp": "10.0.0.1"}]);
        let p = parse(&v).unwrap();
        assert!(p.apps[0].read_only_root_fs);
        assert_eq!(p.ports[0].host_ip, Some(Ipv4Addr::new(10, 0, 0, 1)));
        let written = String::from_utf8(p.to_json_pretty().unwrap()).unwrap();
        assert!(
            written.contains("\"readOnlyRootFS\"") && written.contains("\"hostIP\""),
            "{written}"
        );
    }

    #[test]
    fn rejects_mount_of_undeclared_volume_unless_template() {
        let mut v = base();
        v["apps"][0]["mounts"] = json!([{"volume": "data", "path": "/data"}]);
        assert_invalid(
            parse(&v),
            &[("apps[0].mounts[0].volume", "no volume \"data\" is declared")],
        );
        assert!(parse_template(&v).is_ok());
    }

    #[test]
    fn accepts_mount_with_app_volume() {
        let mut v = base();
        v["apps"][0]["mounts"] = json!([{"volume": "scratch", "path": "/tmp", "appVolume": {"name": "scratch", "kind": "empty"}}]);
        assert!(parse(&v).is_ok());
        v["apps"][0]["mounts"][0]["appVolume"] = json!({"name": "scratch", "kind": "host"});
        assert_invalid(
            parse(&v),
            &[("apps[0].mounts[0].appVolume.source", "required")],
        );
    }

    #[test]
    fn rejects_relative_and_repeated_mount_paths() {
        let mut v = base();
        v["volumes"] = json!([{"name": "d", "kind": "empty"}]);
        v["apps"][0]["mounts"] = json!([
            {"volume": "d", "path": "data"},
            {"volume": "d", "path": "/x"},
            {"volume": "d", "path": "/x"},
        ]);
        assert_invalid(
            parse(&v),
            &[
                ("apps[0].mounts[0].path", "absolute"),
                ("apps[0].mounts[2].path", "already at \"/x\""),
            ],
        );
    }

    #[test]
    fn accepts_empty_volume_defaults() {
        let mut v = base();
        v["volumes"] = json!([{"name": "d", "kind": "empty"}]);
        let p = parse(&v).unwrap();
        let d = &p.volumes[0];
        assert_eq!(
            (d.mode_bits(), d.uid(), d.gid(), d.read_only()),
            (Some(0o755), 0, 0, false)
        );
        let written: serde_json::Value =
            serde_json::from_slice(&p.to_json_pretty().unwrap()).unwrap();
        assert_eq!(
            written["volumes"],
            json!([{"name": "d", "kind": "empty"}]),
            "defaults are not written"
        );
    }

    #[test]
    fn rejects_host_volume_without_absolute_source_or_with_empty_only_fields() {
        let mut v = base();
        v["volumes"] = json!([
            {"name": "a", "kind": "host"},
            {"name": "b", "kind": "host", "source": "rel/dir"},
            {"name": "c", "kind": "host", "source": "/srv", "mode": "0755", "uid": 1, "gid": 1},
        ]);
        assert_invalid(
            parse(&v),
            &[
                ("volumes[0].source", "required for a host volume"),
                ("volumes[1].source", "absolute"),
                ("volumes[2].mode", "only an empty volume"),
                ("volumes[2].uid", "only an empty volume"),
                ("volumes[2].gid", "only an empty volume"),
            ],
        );
    }

    #[test]
    fn rejects_empty_volume_with_source_or_bad_mode() {
        let mut v = base();
        v["volumes"] = json!([
            {"name": "a", "kind": "empty", "source": "/srv"},
            {"name": "b", "kind": "empty", "mode": "0855"},
            {"name": "c", "kind": "empty", "mode": "rwx"},
        ]);
        assert_invalid(
            parse(&v),
            &[
                ("volumes[0].source", "no source"),
                ("volumes[1].mode", "octal"),
                ("volumes[2].mode", "octal"),
            ],
        );
    }

    #[test]
    fn rejects_unknown_volume_kind_and_duplicate_volumes() {
        let mut v = base();
        v["volumes"] = json!([{"name": "a", "kind": "tmpfs"}]);
        assert_decode_error(parse(&v), "volumes[0].kind", "unknown variant `tmpfs`");
        v["volumes"] = json!([{"name": "a", "kind": "empty"}, {"name": "a", "kind": "empty"}]);
        assert_invalid(parse(&v), &[("volumes[1].name", "duplicate volume \"a\"")]);
        v["volumes"] = json!([{"name": "a", "kind": "empty", "uid": -1}]);
        assert_decode_error(parse(&v), "volumes[0].uid", "invalid value");
    }

    #[test]
    fn accepts_exposed_ports() {
        let mut v = base();
        v["ports"] = json!([
            {"name": "ftp", "hostPort": 2121},
            {"name": "http", "hostPort": 80, "hostIP": "203.0.113.23",
             "podPort": {"name": "http", "protocol": "tcp", "port": 8080}},
        ]);
        let p = parse(&v).unwrap();
        assert_eq!(p.ports[1].host_ip, Some(Ipv4Addr::new(203, 0, 113, 23)));
        let written: serde_json::Value =
            serde_json::from_slice(&p.to_json_pretty().unwrap()).unwrap();
        assert_eq!(written, v);
    }

    #[test]
    fn rejects_bad_exposed_ports() {
        let mut v = base();
        v["ports"] = json!([
            {"name": "a", "hostPort": 0},
            {"name": "a", "hostPort": 1, "podPort": {"name": "a", "protocol": "tcp", "port": 1, "count": 0}},
        ]);
        assert_invalid(
            parse(&v),
            &[
                ("ports[0].hostPort", "between 1 and 65535"),
                ("ports[1].name", "duplicate port \"a\""),
                ("ports[1].podPort.count", "at least 1"),
            ],
        );
        let mut v = base();
        v["ports"] = json!([{"name": "a"}]);
        assert_decode_error(parse(&v), "ports[0]", "missing field `hostPort`");
        v["ports"] = json!([{"name": "a", "hostPort": 1, "hostIP": "::1"}]);
        assert_decode_error(parse(&v), "ports[0].hostIP", "invalid");
        v["ports"] = json!([{"name": "a", "hostPort": 1, "hostIP": "10.0.0.256"}]);
        assert_decode_error(parse(&v), "ports[0].hostIP", "invalid");
    }

    #[test]
    fn checks_pod_isolators_and_annotations() {
        let mut v = base();
        v["isolators"] = json!([
            {"name": "os/unix/sysctl", "value": {"net.ipv4.ip_forward": "0"}},
            {"name": "os/unix/sysctl", "value": {}},
        ]);
        v["annotations"] = json!([{"name": "homepage", "value": "nope"}]);
        v["apps"][0]["annotations"] =
            json!([{"name": "a", "value": "1"}, {"name": "a", "value": "2"}]);
        assert_invalid(
            parse(&v),
            &[
                ("apps[0].annotations[1].name", "duplicate annotation"),
                ("isolators[1].name", "only one \"os/unix/sysctl\""),
                ("annotations[0].value", "http"),
            ],
        );
    }

    #[test]
    fn keeps_user_annotations_and_labels() {
        let mut v = base();
        v["userAnnotations"] = json!({"any key at all": "v"});
        v["userLabels"] = json!({"team": "infra"});
        let p = parse(&v).unwrap();
        assert_eq!(p.user_labels.get("team").map(String::as_str), Some("infra"));
        let written: serde_json::Value =
            serde_json::from_slice(&p.to_json_pretty().unwrap()).unwrap();
        assert_eq!(written, v);
    }

    #[test]
    fn accepts_go_style_nulls() {
        let mut v = base();
        for key in ["volumes", "isolators", "annotations", "ports"] {
            v[key] = serde_json::Value::Null;
        }
        assert!(parse(&v).is_ok());
    }

    #[test]
    fn new_pod_writes_and_reads_back() {
        let app = RuntimeApp {
            name: AcName::new("web").unwrap(),
            image: RuntimeImage {
                id: Some(ImageId::from_sha512(&[7; 64])),
                ..RuntimeImage::default()
            },
            app: None,
            read_only_root_fs: false,
            mounts: Vec::new(),
            annotations: Annotations::default(),
        };
        let p = PodManifest::new(vec![app]);
        p.validate().unwrap();
        assert_eq!(
            PodManifest::from_json(&p.to_json_pretty().unwrap()).unwrap(),
            p
        );
    }
}
