//! `[[pod]]`: the pods init runs, their apps and volumes, as the declaration writes them.
//! `pods_check` validates them; `pods_render` turns them, for one arch, into the appc pod
//! manifests and overrides of [`crate::PodsPlan`]. `docs/host-toml.md` documents every field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plan::RestartPolicy;

/// `[[pod]]`: one pod, started in declared order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodDecl {
    /// An AC name (`a-z`, `0-9`, `-`), unique among the pods: console prefix, cgroup, state
    /// and log directories, and the pod's hostname.
    pub name: String,
    /// `[[pod.app]]`: at least one.
    #[serde(default, rename = "app")]
    pub apps: Vec<AppDecl>,
    /// `[[pod.volume]]`: what the apps' `mounts` name.
    #[serde(default, rename = "volume")]
    pub volumes: Vec<VolumeDecl>,
}

/// `[[pod.app]]`: one app of a pod. Every field after `id` overrides the image manifest's;
/// left out, the image's value stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppDecl {
    /// An AC name, unique in the pod.
    pub name: String,
    /// The appc app string `name[:version][,label=value...]`; the build adds `os=linux` and
    /// the arch's `arch` label unless given.
    pub image: String,
    /// The image ID the app runs (`sha512-` and 128 hex digits): must be the matching
    /// embedded image's; for an image fetched at boot, the fetched image must have it (and a
    /// store already holding it needs no fetch).
    #[serde(default)]
    pub id: Option<String>,
    /// Fetch the image from this `https://` (or, where `[fetch] allow_http` covers the name,
    /// `http://`) URL instead of discovering it by name. Discovery's placeholders (`{name}`,
    /// `{version}`, `{os}`, `{arch}`, `{ext}`, any label) are rendered per build; the
    /// signature is at the same URL with `{ext}` = `aci.minisig`, or `.minisig` added to the
    /// path. Used only where no embedded image of the build is the app's.
    #[serde(default)]
    pub image_url: Option<String>,
    #[serde(default)]
    pub exec: Option<Vec<String>>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub supplementary_gids: Option<Vec<u32>>,
    #[serde(default)]
    pub working_directory: Option<String>,
    /// Added to (or replacing by name) the image's environment.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub read_only_root_fs: bool,
    /// The `pre-start` event handler: runs in the app's root before `exec`, must exit 0.
    #[serde(default)]
    pub pre_start: Option<Vec<String>>,
    /// The `post-stop` event handler: runs after the app's main process ended.
    #[serde(default)]
    pub post_stop: Option<Vec<String>>,
    #[serde(default)]
    pub mounts: Vec<MountDecl>,
    /// `resource/memory` limit, an appc quantity (`64M`, `128Mi`).
    #[serde(default)]
    pub memory: Option<String>,
    /// `resource/cpu` limit, an appc quantity in cores (`500m`, `2`).
    #[serde(default)]
    pub cpu: Option<String>,
    /// `os/linux/cpu-shares`, 2 to 262144.
    #[serde(default)]
    pub cpu_shares: Option<i64>,
    /// `os/linux/oom-score-adj`, -1000 to 1000.
    #[serde(default)]
    pub oom_score_adj: Option<i64>,
    /// `os/linux/no-new-privileges`.
    #[serde(default)]
    pub no_new_privileges: Option<bool>,
    /// `os/linux/capabilities-retain-set`: exactly these capabilities.
    #[serde(default)]
    pub capabilities_retain: Option<Vec<String>>,
    /// `os/linux/capabilities-remove-set`: the appc default set without these.
    #[serde(default)]
    pub capabilities_remove: Option<Vec<String>>,
    /// `os/linux/seccomp-retain-set`: only these syscalls (or `@appc.io/...` groups).
    #[serde(default)]
    pub seccomp_retain: Option<Vec<String>>,
    /// `os/linux/seccomp-remove-set`: every syscall but these.
    #[serde(default)]
    pub seccomp_remove: Option<Vec<String>>,
    /// The errno a blocked syscall returns (`EPERM`); default: the call kills the app.
    #[serde(default)]
    pub seccomp_errno: Option<String>,
}

/// One entry of `mounts`: a pod volume at a path of the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountDecl {
    /// The name of a `[[pod.volume]]` of this pod.
    pub volume: String,
    /// Absolute path inside the app.
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// What a volume is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKindDecl {
    /// A directory on the data partition that outlives the pod and reboots.
    Host,
    /// A fresh directory per pod start, shared by the pod's apps.
    Empty,
}

/// `[[pod.volume]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeDecl {
    /// An AC name, unique in the pod.
    pub name: String,
    pub kind: VolumeKindDecl,
    /// `host` only, required: an AC name; the directory is `hostimg::VOLUMES_DIR/<source>` on
    /// the data partition. Pods naming the same source share it.
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub read_only: bool,
    /// `empty` only: permission bits (TOML writes octal as `0o755`); default 0o755.
    #[serde(default)]
    pub mode: Option<u32>,
    /// `empty` only: owner; default 0.
    #[serde(default)]
    pub uid: Option<u32>,
    /// `empty` only: group; default 0.
    #[serde(default)]
    pub gid: Option<u32>,
}
