//! The checks of `[[pod]]` tables, done by converting each pod to the appc types it renders
//! to: a value that converts is valid. Names, IDs, app strings and quantities are checked by
//! the `aci` types themselves; the app's overrides, mounts and isolators together by `aci`'s
//! pod manifest validation, whose errors are moved back to the declared field. Checks that
//! need the embedded images (which image an app runs) are `pods_render`'s.

use aci::discovery::App as AppString;
use aci::manifest::{
    AcName, App, CapabilitySet, EnvironmentVariable, EventHandler, EventHandlerName, ImageId,
    Isolator, Mount, MountPoint, PodManifest, Quantity, Resource, RuntimeApp, RuntimeImage,
    SeccompSet, Volume, VolumeKind,
};

use crate::plan::{AppOverrides, AppPlan};
use crate::pods::{AppDecl, PodDecl, VolumeDecl, VolumeKindDecl};
use crate::{DeclError, HostDecl};

/// One app converted: everything of its pod manifest entry but the image ID, and its plan.
#[derive(Debug, Clone)]
pub(crate) struct AppParts {
    pub name: AcName,
    /// The app string as written (no os/arch defaults yet).
    pub request: AppString,
    pub pin: Option<ImageId>,
    pub read_only_root_fs: bool,
    pub mounts: Vec<Mount>,
    pub plan: AppPlan,
}

pub(crate) fn pod_field(i: usize, rest: &str) -> String {
    if rest.is_empty() {
        format!("pod[{i}]")
    } else {
        format!("pod[{i}].{rest}")
    }
}

pub(crate) fn app_field(i: usize, j: usize, rest: &str) -> String {
    pod_field(
        i,
        &if rest.is_empty() {
            format!("app[{j}]")
        } else {
            format!("app[{j}].{rest}")
        },
    )
}

const AC_NAME_RULE: &str = "an AC name: a-z, 0-9 and '-', not starting or ending with '-'";

impl HostDecl {
    fn bad(&self, field: &str, reason: impl Into<String>) -> DeclError {
        DeclError::Invalid {
            at: self.site(field),
            reason: reason.into(),
        }
    }

    fn ac_name(&self, field: &str, s: &str) -> Result<AcName, DeclError> {
        AcName::new(s)
            .map_err(|e| self.bad(field, format!("{s:?} is not {AC_NAME_RULE} ({})", e.reason)))
    }

    pub(crate) fn validate_pods(&self) -> Result<(), DeclError> {
        for (i, pod) in self.pods.iter().enumerate() {
            let name_field = pod_field(i, "name");
            self.ac_name(&name_field, &pod.name)?;
            if let Some(k) = self.pods[..i].iter().position(|p| p.name == pod.name) {
                return Err(self.bad(
                    &name_field,
                    format!("another pod is called {:?} (pod[{k}])", pod.name),
                ));
            }
            if pod.apps.is_empty() {
                return Err(self.bad(
                    &pod_field(i, ""),
                    "has no apps: add at least one [[pod.app]] table",
                ));
            }
            let volumes = self.pod_volumes(i)?;
            for j in 0..pod.apps.len() {
                let parts = self.app_parts(i, j)?;
                self.check_app_with_aci(i, j, &parts, &volumes)?;
            }
        }
        Ok(())
    }

    /// The pod's volumes as appc volumes (host sources under `hostimg::VOLUMES_DIR`).
    pub(crate) fn pod_volumes(&self, i: usize) -> Result<Vec<Volume>, DeclError> {
        let pod: &PodDecl = &self.pods[i];
        let mut out = Vec::new();
        for (k, v) in pod.volumes.iter().enumerate() {
            let at = |f: &str| pod_field(i, &format!("volume[{k}].{f}"));
            let name = self.ac_name(&at("name"), &v.name)?;
            if let Some(o) = pod.volumes[..k].iter().position(|o| o.name == v.name) {
                return Err(self.bad(
                    &at("name"),
                    format!("volume {:?} is declared twice (also volume[{o}])", v.name),
                ));
            }
            out.push(self.volume(v, name, &at)?);
        }
        Ok(out)
    }

    fn volume(
        &self,
        v: &VolumeDecl,
        name: AcName,
        at: &dyn Fn(&str) -> String,
    ) -> Result<Volume, DeclError> {
        let mut vol = Volume {
            name,
            kind: VolumeKind::Empty,
            source: None,
            read_only: v.read_only.then_some(true),
            recursive: None,
            mode: None,
            uid: None,
            gid: None,
        };
        match v.kind {
            VolumeKindDecl::Host => {
                for (key, set) in [
                    ("mode", v.mode.is_some()),
                    ("uid", v.uid.is_some()),
                    ("gid", v.gid.is_some()),
                ] {
                    if set {
                        return Err(self.bad(
                            &at(key),
                            "is for an `empty` volume; a `host` volume keeps what its directory has",
                        ));
                    }
                }
                let Some(source) = &v.source else {
                    return Err(DeclError::Missing {
                        at: self.site(&at("source")),
                    });
                };
                AcName::new(source.as_str()).map_err(|e| {
                    self.bad(
                        &at("source"),
                        format!(
                            "{source:?} is not {AC_NAME_RULE} ({}); it names a directory under {}",
                            e.reason,
                            hostimg::VOLUMES_DIR
                        ),
                    )
                })?;
                vol.kind = VolumeKind::Host;
                vol.source = Some(format!("{}/{source}", hostimg::VOLUMES_DIR));
            }
            VolumeKindDecl::Empty => {
                if v.source.is_some() {
                    return Err(self.bad(
                        &at("source"),
                        "is for a `host` volume; an `empty` volume starts empty at every pod start",
                    ));
                }
                if let Some(mode) = v.mode {
                    if mode > 0o7777 {
                        return Err(self.bad(
                            &at("mode"),
                            format!(
                                "{mode} is not permission bits (0o0000 to 0o7777; TOML writes octal as 0o755)"
                            ),
                        ));
                    }
                    vol.mode = Some(format!("{mode:04o}"));
                }
                vol.uid = v.uid;
                vol.gid = v.gid;
            }
        }
        Ok(vol)
    }

    /// Converts app `j` of pod `i`; errors name the declared field.
    pub(crate) fn app_parts(&self, i: usize, j: usize) -> Result<AppParts, DeclError> {
        let pod = &self.pods[i];
        let a: &AppDecl = &pod.apps[j];
        let at = |f: &str| app_field(i, j, f);
        let name = self.ac_name(&at("name"), &a.name)?;
        if let Some(k) = pod.apps[..j].iter().position(|o| o.name == a.name) {
            return Err(self.bad(
                &at("name"),
                format!(
                    "another app of pod {:?} is called {:?} (app[{k}])",
                    pod.name, a.name
                ),
            ));
        }
        let request =
            AppString::parse(&a.image).map_err(|e| self.bad(&at("image"), e.to_string()))?;
        self.check_os_arch(&at("image"), &request)?;
        self.check_image_url(i, j, &request)?;
        let pin = match &a.id {
            None => None,
            Some(id) => Some(ImageId::parse_full(id).map_err(|_| {
                self.bad(
                    &at("id"),
                    format!(
                        "{id:?} is not a full image ID: \"sha512-\" and 128 lowercase hex digits (`builder aci inspect` prints it)"
                    ),
                )
            })?),
        };
        if a.exec.as_ref().is_some_and(Vec::is_empty) {
            return Err(self.bad(
                &at("exec"),
                "is empty (leave it out to run the image's exec)",
            ));
        }

        let mut mounts = Vec::new();
        let mut mount_points = Vec::new();
        for (k, m) in a.mounts.iter().enumerate() {
            let m_at = |f: &str| at(&format!("mounts[{k}].{f}"));
            if !pod.volumes.iter().any(|v| v.name == m.volume) {
                let names: Vec<&str> = pod.volumes.iter().map(|v| v.name.as_str()).collect();
                return Err(self.bad(
                    &m_at("volume"),
                    if names.is_empty() {
                        format!(
                            "pod {:?} declares no volumes: add a [[pod.volume]] called {:?}",
                            pod.name, m.volume
                        )
                    } else {
                        format!(
                            "pod {:?} has no volume {:?} (its volumes: {})",
                            pod.name,
                            m.volume,
                            names.join(", ")
                        )
                    },
                ));
            }
            if let Some(o) = a.mounts[..k].iter().position(|o| o.volume == m.volume) {
                return Err(self.bad(
                    &m_at("volume"),
                    format!("volume {:?} is already mounted by mounts[{o}]; mount a volume once per app", m.volume),
                ));
            }
            let volume = self.ac_name(&m_at("volume"), &m.volume)?;
            mounts.push(Mount {
                volume: volume.clone(),
                path: m.path.clone(),
                app_volume: None,
            });
            mount_points.push(MountPoint {
                name: volume,
                path: m.path.clone(),
                read_only: m.read_only,
            });
        }

        let mut event_handlers = Vec::new();
        for (handler, exec) in [
            (EventHandlerName::PreStart, &a.pre_start),
            (EventHandlerName::PostStop, &a.post_stop),
        ] {
            if let Some(exec) = exec {
                event_handlers.push(EventHandler {
                    name: handler,
                    exec: exec.clone(),
                });
            }
        }
        let overrides = AppOverrides {
            exec: a.exec.clone(),
            user: a.user.clone(),
            group: a.group.clone(),
            supplementary_gids: a.supplementary_gids.clone(),
            working_directory: a.working_directory.clone(),
            environment: a
                .environment
                .iter()
                .map(|(name, value)| EnvironmentVariable {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            mount_points,
            isolators: self
                .isolators(i, j)?
                .into_iter()
                .map(|(iso, _)| iso)
                .collect(),
            event_handlers,
        };
        Ok(AppParts {
            name,
            request,
            pin,
            read_only_root_fs: a.read_only_root_fs,
            mounts,
            plan: AppPlan {
                name: a.name.clone(),
                restart: a.restart,
                overrides,
                fetch: None,
            },
        })
    }

    /// An `os` or `arch` label in the app string must be one this builder builds for.
    fn check_os_arch(&self, field: &str, request: &AppString) -> Result<(), DeclError> {
        if let Some(os) = request.labels.get("os")
            && os != "linux"
        {
            return Err(self.bad(
                field,
                format!("asks for os={os}, but the host runs linux images"),
            ));
        }
        if let Some(arch) = request.labels.get("arch")
            && !crate::Arch::ALL.iter().any(|a| a.appc_arch() == arch)
        {
            let hint = if arch == "arm64" {
                " (appc calls arm64 \"aarch64\")"
            } else {
                ""
            };
            return Err(self.bad(
                field,
                format!("asks for arch={arch}, but images are built for amd64 and aarch64{hint}; leave `arch` out to get each build's own"),
            ));
        }
        Ok(())
    }

    /// The app's isolators, each with the declared field it came from.
    fn isolators(&self, i: usize, j: usize) -> Result<Vec<(Isolator, &'static str)>, DeclError> {
        let a = &self.pods[i].apps[j];
        let at = |f: &str| app_field(i, j, f);
        let mut out = Vec::new();
        let quantity = |field: &'static str, q: &str, milli: bool| -> Result<Quantity, DeclError> {
            let parsed = Quantity::new(q).map_err(|e| {
                self.bad(
                    &at(field),
                    format!("{q:?} is not an appc quantity ({})", e.reason),
                )
            })?;
            let amount = if milli {
                parsed.to_milli_ceil()
            } else {
                parsed.to_units_ceil()
            };
            if amount == Some(0) {
                return Err(self.bad(
                    &at(field),
                    format!("{q:?} is no {field} at all; leave it out for no limit"),
                ));
            }
            Ok(parsed)
        };
        let limit = |q: Quantity| Resource {
            default: false,
            request: None,
            limit: Some(q),
        };
        if let Some(m) = &a.memory {
            out.push((
                Isolator::ResourceMemory(limit(quantity("memory", m, false)?)),
                "memory",
            ));
        }
        if let Some(c) = &a.cpu {
            out.push((
                Isolator::ResourceCpu(limit(quantity("cpu", c, true)?)),
                "cpu",
            ));
        }
        if let Some(n) = a.cpu_shares {
            out.push((Isolator::CpuShares(n), "cpu_shares"));
        }
        if let Some(n) = a.oom_score_adj {
            out.push((Isolator::OomScoreAdj(n), "oom_score_adj"));
        }
        if let Some(b) = a.no_new_privileges {
            out.push((Isolator::NoNewPrivileges(b), "no_new_privileges"));
        }
        match (&a.capabilities_retain, &a.capabilities_remove) {
            (Some(_), Some(_)) => {
                return Err(self.bad(
                    &at("capabilities_remove"),
                    "cannot be given together with capabilities_retain (retain names the whole set)",
                ));
            }
            (Some(set), None) => out.push((
                Isolator::CapabilitiesRetainSet(CapabilitySet { set: set.clone() }),
                "capabilities_retain",
            )),
            (None, Some(set)) => out.push((
                Isolator::CapabilitiesRemoveSet(CapabilitySet { set: set.clone() }),
                "capabilities_remove",
            )),
            (None, None) => {}
        }
        let errno = a.seccomp_errno.clone();
        match (&a.seccomp_retain, &a.seccomp_remove) {
            (Some(_), Some(_)) => {
                return Err(self.bad(
                    &at("seccomp_remove"),
                    "cannot be given together with seccomp_retain (retain names every allowed syscall)",
                ));
            }
            (Some(set), None) => out.push((
                Isolator::SeccompRetainSet(SeccompSet {
                    set: set.clone(),
                    errno,
                }),
                "seccomp_retain",
            )),
            (None, Some(set)) => out.push((
                Isolator::SeccompRemoveSet(SeccompSet {
                    set: set.clone(),
                    errno,
                }),
                "seccomp_remove",
            )),
            (None, None) if errno.is_some() => {
                return Err(self.bad(
                    &at("seccomp_errno"),
                    "applies to seccomp_retain or seccomp_remove, and neither is given",
                ));
            }
            (None, None) => {}
        }
        Ok(out)
    }

    /// Runs `aci`'s pod manifest validation over the app's overrides (as a whole `app`, the
    /// image's user and group standing in when not overridden) and its mounts, and reports its
    /// first error at the declared field.
    fn check_app_with_aci(
        &self,
        i: usize,
        j: usize,
        parts: &AppParts,
        volumes: &[Volume],
    ) -> Result<(), DeclError> {
        let o = &parts.plan.overrides;
        let app = App {
            exec: o.exec.clone().unwrap_or_default(),
            event_handlers: o.event_handlers.clone(),
            user: o.user.clone().unwrap_or_else(|| "0".into()),
            group: o.group.clone().unwrap_or_else(|| "0".into()),
            supplementary_gids: o.supplementary_gids.clone().unwrap_or_default(),
            working_directory: o.working_directory.clone(),
            environment: o.environment.clone(),
            mount_points: o.mount_points.clone(),
            isolators: o.isolators.clone(),
            ..App::default()
        };
        let mut pod = PodManifest::new(vec![RuntimeApp {
            name: parts.name.clone(),
            image: RuntimeImage {
                id: Some(ImageId::from_sha512(&[0; 64])),
                ..RuntimeImage::default()
            },
            app: Some(app),
            read_only_root_fs: parts.read_only_root_fs,
            mounts: parts.mounts.clone(),
            annotations: Default::default(),
        }]);
        pod.volumes = volumes.to_vec();
        let Err(e) = pod.validate() else {
            return Ok(());
        };
        let iso_fields: Vec<&str> = self.isolators(i, j)?.into_iter().map(|(_, f)| f).collect();
        let handler_fields: Vec<&str> = o
            .event_handlers
            .iter()
            .map(|h| match h.name {
                EventHandlerName::PreStart => "pre_start",
                EventHandlerName::PostStop => "post_stop",
            })
            .collect();
        let first = e.errors().first();
        let (field, reason) = match first {
            Some(fe) => {
                let declared = declared_field(&fe.path, &iso_fields, &handler_fields, o);
                (app_field(i, j, &declared), fe.reason.clone())
            }
            None => (app_field(i, j, ""), e.to_string()),
        };
        Err(self.bad(&field, reason))
    }
}

/// `[3].rest` → `(3, ".rest")`.
fn split_index(s: &str) -> Option<(usize, &str)> {
    let inner = s.strip_prefix('[')?;
    let close = inner.find(']')?;
    let n = inner.get(..close)?.parse().ok()?;
    Some((n, inner.get(close + 1..)?))
}

/// The declared field (relative to the app) an `aci` validation path points at.
fn declared_field(
    path: &str,
    iso_fields: &[&str],
    handler_fields: &[&str],
    o: &AppOverrides,
) -> String {
    let Some(rest) = path.strip_prefix("apps[0].") else {
        return String::new();
    };
    let indexed = |after: &str, names: &dyn Fn(usize) -> Option<String>| {
        split_index(after)
            .and_then(|(k, _)| names(k))
            .unwrap_or_default()
    };
    if let Some(after) = rest.strip_prefix("app.") {
        if let Some(x) = after.strip_prefix("exec") {
            return format!("exec{x}");
        }
        if let Some(x) = after.strip_prefix("isolators") {
            return indexed(x, &|k| iso_fields.get(k).map(|f| f.to_string()));
        }
        if let Some(x) = after.strip_prefix("eventHandlers") {
            return indexed(x, &|k| handler_fields.get(k).map(|f| f.to_string()));
        }
        if let Some(x) = after.strip_prefix("environment") {
            return indexed(x, &|k| {
                o.environment
                    .get(k)
                    .map(|e| format!("environment.{}", e.name))
            });
        }
        if let Some(x) = after.strip_prefix("mountPoints") {
            return indexed(x, &|k| Some(format!("mounts[{k}].path")));
        }
        return match after {
            "user" => "user".into(),
            "group" => "group".into(),
            "workingDirectory" => "working_directory".into(),
            _ => String::new(),
        };
    }
    if let Some(x) = rest.strip_prefix("mounts") {
        return match split_index(x) {
            Some((k, tail)) => format!("mounts[{k}]{tail}"),
            None => "mounts".into(),
        };
    }
    String::new()
}
