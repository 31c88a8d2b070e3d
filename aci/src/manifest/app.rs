//! The `app` object shared by image manifests and pod app overrides: exec, user and group,
//! event handlers, environment, working directory, mount points, ports and isolators.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::checks::{Errors, field, index, is_absolute, is_env_name};
use super::isolator::{Isolator, check_isolators};
use super::null_as_default;
use super::types::AcName;

/// What an app runs and how. In a pod manifest it replaces the image's `app` whole.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    /// argv; no shell, no variable expansion. A program name without `/` is looked up in PATH.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub exec: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub event_handlers: Vec<EventHandler>,
    /// Required. A name from the image's /etc/passwd, a number, or an absolute path whose owner
    /// is used. Absent decodes as empty so validation can say so with the field's path.
    #[serde(default)]
    pub user: String,
    /// Required, resolved like `user` against /etc/group.
    #[serde(default)]
    pub group: String,
    /// Go's tag says `supplementaryGIDs`; the spec's example writes `supplementaryGids`, and Go
    /// decodes keys case-insensitively. Both are read; `supplementaryGIDs` is written.
    #[serde(
        default,
        rename = "supplementaryGIDs",
        alias = "supplementaryGids",
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub supplementary_gids: Vec<u32>,
    /// Absolute; `/` when absent (see [`App::working_directory`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub environment: Vec<EnvironmentVariable>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub mount_points: Vec<MountPoint>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ports: Vec<Port>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub isolators: Vec<Isolator>,
    /// Free-form; MUST NOT affect the runtime.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub user_annotations: BTreeMap<String, String>,
    /// Free-form; MUST NOT affect the runtime.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub user_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventHandlerName {
    /// Runs before the app, in its environment, and must exit 0 for the app to start.
    #[serde(rename = "pre-start")]
    PreStart,
    /// Runs after the app has stopped.
    #[serde(rename = "post-stop")]
    PostStop,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventHandler {
    pub name: EventHandlerName,
    #[serde(default, deserialize_with = "null_as_default")]
    pub exec: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentVariable {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// A place in the app's filesystem that a pod volume must fill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountPoint {
    pub name: AcName,
    pub path: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// A port (or range of `count` ports) the app listens on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    pub name: AcName,
    /// Required by the spec, e.g. `tcp` or `udp`.
    #[serde(default)]
    pub protocol: String,
    /// 1..=65535; 0 decodes so validation can name it.
    pub port: u16,
    /// Absent means 1 (see [`Port::count`]); an explicit 0 is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u16>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub socket_activated: bool,
}

impl Port {
    /// How many consecutive ports, from `port`, this entry covers.
    pub fn count(&self) -> u16 {
        self.count.unwrap_or(1)
    }

    pub(crate) fn check(&self, at: &str, errs: &mut Errors) {
        if self.protocol.is_empty() {
            errs.add(field(at, "protocol"), "required, e.g. \"tcp\" or \"udp\"");
        }
        if self.port == 0 {
            errs.add(field(at, "port"), "must be between 1 and 65535");
        }
        match self.count {
            Some(0) => errs.add(field(at, "count"), "must be at least 1"),
            Some(count) if self.port != 0 && u32::from(self.port) + u32::from(count) > 65_536 => {
                errs.add(
                    field(at, "count"),
                    format!("the range {}+{count} ends past port 65535", self.port),
                );
            }
            _ => {}
        }
    }
}

impl App {
    /// The working directory, `/` when unset.
    pub fn working_directory(&self) -> &str {
        self.working_directory.as_deref().unwrap_or("/")
    }

    /// The handler for `name`, if any (at most one per name in a valid app).
    pub fn event_handler(&self, name: EventHandlerName) -> Option<&EventHandler> {
        self.event_handlers.iter().find(|h| h.name == name)
    }

    /// The value of the environment variable `name`.
    pub fn env(&self, name: &str) -> Option<&str> {
        self.environment
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.value.as_str())
    }

    /// The last isolator called `name`: where Go allows repeats (resources), the last one wins.
    pub fn isolator(&self, name: &str) -> Option<&Isolator> {
        self.isolators.iter().rev().find(|i| i.name() == name)
    }

    /// Checks the app at `path` (`app` in an image, `apps[2].app` in a pod).
    pub(crate) fn check(&self, path: &str, errs: &mut Errors) {
        if self.exec.first().is_some_and(String::is_empty) {
            errs.add(
                index(&field(path, "exec"), 0),
                "the program must not be empty",
            );
        }
        if self.user.is_empty() {
            errs.add(field(path, "user"), "required, must not be empty");
        }
        if self.group.is_empty() {
            errs.add(field(path, "group"), "required, must not be empty");
        }
        if let Some(dir) = &self.working_directory
            && !is_absolute(dir)
        {
            errs.add(
                field(path, "workingDirectory"),
                format!("must be an absolute path, found {dir:?}"),
            );
        }
        let handlers = field(path, "eventHandlers");
        for (i, h) in self.event_handlers.iter().enumerate() {
            let at = index(&handlers, i);
            if let Some(j) = self
                .event_handlers
                .iter()
                .take(i)
                .position(|e| e.name == h.name)
            {
                errs.add(
                    field(&at, "name"),
                    format!(
                        "only one {:?} handler is allowed (another is at {})",
                        h.name.as_str(),
                        index(&handlers, j)
                    ),
                );
            }
            if h.exec.first().is_none_or(String::is_empty) {
                errs.add(field(&at, "exec"), "must name a program to run");
            }
        }
        let env = field(path, "environment");
        for (i, e) in self.environment.iter().enumerate() {
            let at = field(&index(&env, i), "name");
            if !is_env_name(&e.name) {
                errs.add(
                    at.clone(),
                    format!(
                        "{:?} is not a valid name (must match ^[A-Za-z_][A-Za-z_0-9.-]*$)",
                        e.name
                    ),
                );
            }
            if self.environment.iter().take(i).any(|o| o.name == e.name) {
                errs.add(at, format!("duplicate environment variable {:?}", e.name));
            }
        }
        let mps = field(path, "mountPoints");
        for (i, mp) in self.mount_points.iter().enumerate() {
            let at = index(&mps, i);
            if self.mount_points.iter().take(i).any(|o| o.name == mp.name) {
                errs.add(
                    field(&at, "name"),
                    format!("duplicate mount point {:?}", mp.name.as_str()),
                );
            }
            if !is_absolute(&mp.path) {
                errs.add(
                    field(&at, "path"),
                    format!("must be an absolute path, found {:?}", mp.path),
                );
            }
        }
        let ports = field(path, "ports");
        for (i, p) in self.ports.iter().enumerate() {
            let at = index(&ports, i);
            p.check(&at, errs);
            if self.ports.iter().take(i).any(|o| o.name == p.name) {
                errs.add(
                    field(&at, "name"),
                    format!("duplicate port {:?}", p.name.as_str()),
                );
            }
        }
        check_isolators(&self.isolators, &field(path, "isolators"), errs);
    }
}

impl EventHandlerName {
    pub fn as_str(self) -> &'static str {
        match self {
            EventHandlerName::PreStart => "pre-start",
            EventHandlerName::PostStop => "post-stop",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(json: serde_json::Value) -> App {
        serde_json::from_value(json).unwrap()
    }

    fn errors(a: &App) -> Vec<String> {
        let mut errs = Errors::default();
        a.check("app", &mut errs);
        match errs.into_result() {
            Ok(()) => vec![],
            Err(e) => e.errors().iter().map(ToString::to_string).collect(),
        }
    }

    fn minimal() -> serde_json::Value {
        serde_json::json!({"exec": ["/bin/sh"], "user": "0", "group": "0"})
    }

    fn with(key: &str, value: serde_json::Value) -> App {
        let mut j = minimal();
        j[key] = value;
        app(j)
    }

    #[test]
    fn accepts_minimal_app() {
        let a = app(minimal());
        assert!(errors(&a).is_empty());
        assert_eq!(a.working_directory(), "/");
    }

    #[test]
    fn accepts_app_without_exec() {
        assert!(errors(&app(serde_json::json!({"user": "u", "group": "g"}))).is_empty());
    }

    #[test]
    fn rejects_missing_user_and_group() {
        assert_eq!(
            errors(&app(serde_json::json!({"exec": ["/x"]}))),
            [
                "app.user: required, must not be empty",
                "app.group: required, must not be empty"
            ]
        );
        assert_eq!(
            errors(&with("user", "".into())),
            ["app.user: required, must not be empty"]
        );
    }

    #[test]
    fn rejects_empty_program() {
        assert_eq!(
            errors(&with("exec", serde_json::json!([""]))),
            ["app.exec[0]: the program must not be empty"]
        );
    }

    #[test]
    fn rejects_relative_working_directory() {
        assert_eq!(
            errors(&with("workingDirectory", "srv".into())),
            ["app.workingDirectory: must be an absolute path, found \"srv\""]
        );
        assert_eq!(
            with("workingDirectory", "/srv".into()).working_directory(),
            "/srv"
        );
    }

    #[test]
    fn reads_both_supplementary_gid_spellings_and_writes_go_spelling() {
        assert_eq!(
            with("supplementaryGids", serde_json::json!([1, 2])).supplementary_gids,
            [1, 2]
        );
        let a = with("supplementaryGIDs", serde_json::json!([3]));
        assert_eq!(a.supplementary_gids, [3]);
        let out = serde_json::to_value(&a).unwrap();
        assert_eq!(out["supplementaryGIDs"], serde_json::json!([3]));
        assert!(out.get("supplementaryGids").is_none());
    }

    #[test]
    fn rejects_bad_and_duplicate_environment_names() {
        let a = with(
            "environment",
            serde_json::json!([
                {"name": "GOOD_1", "value": "x"},
                {"name": "1BAD", "value": "x"},
                {"name": "GOOD_1", "value": "y"},
            ]),
        );
        let e = errors(&a);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("app.environment[1].name: \"1BAD\" is not a valid name"),
            "{e:?}"
        );
        assert_eq!(
            e[1],
            "app.environment[2].name: duplicate environment variable \"GOOD_1\""
        );
        assert_eq!(a.env("GOOD_1"), Some("x"));
    }

    #[test]
    fn rejects_unknown_event_handler_name() {
        let err = serde_json::from_value::<App>(serde_json::json!({
            "user": "0", "group": "0", "eventHandlers": [{"name": "post-start", "exec": ["/x"]}]
        }))
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `post-start`"),
            "{err}"
        );
    }

    #[test]
    fn rejects_repeated_event_handler() {
        let a = with(
            "eventHandlers",
            serde_json::json!([
                {"name": "pre-start", "exec": ["/a"]},
                {"name": "post-stop", "exec": ["/b"]},
                {"name": "pre-start", "exec": ["/c"]},
            ]),
        );
        assert_eq!(
            errors(&a),
            [
                "app.eventHandlers[2].name: only one \"pre-start\" handler is allowed (another is at app.eventHandlers[0])"
            ]
        );
        assert_eq!(
            a.event_handler(EventHandlerName::PostStop)
                .map(|h| h.exec.clone()),
            Some(vec!["/b".to_string()])
        );
    }

    #[test]
    fn rejects_event_handler_without_exec() {
        let a = with(
            "eventHandlers",
            serde_json::json!([{"name": "pre-start", "exec": []}]),
        );
        assert_eq!(
            errors(&a),
            ["app.eventHandlers[0].exec: must name a program to run"]
        );
    }

    #[test]
    fn accepts_port_ranges_up_to_65535() {
        let a = with(
            "ports",
            serde_json::json!([
                {"name": "a", "protocol": "tcp", "port": 1},
                {"name": "b", "protocol": "udp", "port": 65535, "count": 1},
                {"name": "c", "protocol": "tcp", "port": 65000, "count": 536, "socketActivated": true},
            ]),
        );
        assert!(errors(&a).is_empty(), "{:?}", errors(&a));
        assert_eq!(a.ports[0].count(), 1);
    }

    #[test]
    fn rejects_port_zero_count_zero_and_range_past_65535() {
        let a = with(
            "ports",
            serde_json::json!([
                {"name": "a", "protocol": "tcp", "port": 0},
                {"name": "b", "protocol": "tcp", "port": 80, "count": 0},
                {"name": "c", "protocol": "tcp", "port": 65000, "count": 537},
                {"name": "d", "port": 80},
            ]),
        );
        assert_eq!(
            errors(&a),
            [
                "app.ports[0].port: must be between 1 and 65535",
                "app.ports[1].count: must be at least 1",
                "app.ports[2].count: the range 65000+537 ends past port 65535",
                "app.ports[3].protocol: required, e.g. \"tcp\" or \"udp\"",
            ]
        );
    }

    #[test]
    fn rejects_port_number_above_65535_while_decoding() {
        let err = serde_json::from_value::<App>(serde_json::json!({
            "user": "0", "group": "0", "ports": [{"name": "a", "protocol": "tcp", "port": 65536}]
        }))
        .unwrap_err();
        assert!(err.to_string().contains("65536"), "{err}");
    }

    #[test]
    fn rejects_duplicate_port_names() {
        let a = with(
            "ports",
            serde_json::json!([
                {"name": "http", "protocol": "tcp", "port": 80},
                {"name": "http", "protocol": "tcp", "port": 8080},
            ]),
        );
        assert_eq!(errors(&a), ["app.ports[1].name: duplicate port \"http\""]);
    }

    #[test]
    fn rejects_mount_point_with_bad_name_while_decoding() {
        let err = serde_json::from_value::<App>(serde_json::json!({
            "user": "0", "group": "0", "mountPoints": [{"name": "data_dir", "path": "/d"}]
        }))
        .unwrap_err();
        assert!(
            err.to_string().contains("invalid AC Name \"data_dir\""),
            "{err}"
        );
    }

    #[test]
    fn rejects_relative_and_duplicate_mount_points() {
        let a = with(
            "mountPoints",
            serde_json::json!([
                {"name": "db", "path": "/var/lib/db", "readOnly": true},
                {"name": "db", "path": "var/cache"},
            ]),
        );
        assert_eq!(
            errors(&a),
            [
                "app.mountPoints[1].name: duplicate mount point \"db\"",
                "app.mountPoints[1].path: must be an absolute path, found \"var/cache\"",
            ]
        );
    }

    #[test]
    fn checks_app_isolators_under_app_path() {
        let a = with(
            "isolators",
            serde_json::json!([{"name": "os/linux/cpu-shares", "value": 0}]),
        );
        assert_eq!(
            errors(&a),
            ["app.isolators[0].value: must be between 2 and 262144, found 0"]
        );
    }

    #[test]
    fn isolator_lookup_returns_last_of_a_name() {
        let a = with(
            "isolators",
            serde_json::json!([
                {"name": "resource/memory", "value": {"limit": "1G"}},
                {"name": "resource/memory", "value": {"limit": "2G"}},
            ]),
        );
        match a.isolator(Isolator::RESOURCE_MEMORY) {
            Some(Isolator::ResourceMemory(r)) => {
                assert_eq!(r.limit.as_ref().map(|q| q.as_str()), Some("2G"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn accepts_null_lists_as_empty() {
        let a = app(serde_json::json!({
            "exec": null, "user": "0", "group": "0", "environment": null, "isolators": null,
            "ports": null, "mountPoints": null, "eventHandlers": null, "userLabels": null
        }));
        assert!(errors(&a).is_empty());
        assert!(a.exec.is_empty());
    }
}
