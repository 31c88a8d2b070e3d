//! The pods as the builder plans them for init: written as JSON into the initramfs at
//! [`hostimg::PODS_PLAN_PATH`] (inside the signed UKI), read by init at boot.
//!
//! Each pod is an appc pod manifest, plus what appc has no field for: each app's restart
//! policy, the declaration's overrides of the image's `app` (init merges them over the image
//! manifest at boot, because for an image that is not embedded only init ever sees the
//! manifest), and for an image init fetches at boot its [`FetchSpec`]. The manifest is
//! runnable (every app names its image by ID) except where an app's image is fetched without
//! a pinned ID: that app's `image` has name and labels only, as in a pod template, until init
//! fetched it and knows the ID. `images` lists the embedded images: the payload files init
//! imports into the store, with the ID and name the builder found, so a refusal can name the
//! file.
//!
//! Older plans (no `fetch`) read the same: every new field defaults.

use std::collections::BTreeMap;

use aci::manifest::{EnvironmentVariable, EventHandler, Isolator, MountPoint, PodManifest};
use serde::{Deserialize, Serialize};

/// The whole plan (`/etc/hostos/pods.json`). Pods start in this order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodsPlan {
    #[serde(default)]
    pub pods: Vec<PodPlan>,
    #[serde(default)]
    pub images: Vec<EmbeddedImage>,
}

/// One declared pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodPlan {
    /// The declared name (an AC name): console prefix, cgroup, state and log directories.
    pub name: String,
    /// Runnable, but for apps fetched without a pinned ID (their `image.id` is absent; see
    /// [`AppPlan::fetch`]). Apps carry no `app` object (see `apps`).
    pub manifest: PodManifest,
    /// One entry per app of `manifest.apps`, same order, same names.
    pub apps: Vec<AppPlan>,
}

/// What init needs about one app beyond its pod manifest entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppPlan {
    pub name: String,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub overrides: AppOverrides,
    /// Set when no embedded image of this arch is the app's: init looks for the image in
    /// the store (by the pinned ID, else by name and labels) and otherwise fetches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch: Option<FetchSpec>,
}

/// How init gets an app's image that the payload does not carry: the appc request (name and
/// labels, `os` and `arch` always among them), discovered by name unless `url` is given.
/// Whatever arrives must be signed by a key the initramfs trust store holds for `name`'s
/// prefix (the builder refused the declaration if it has none), carry `name` and every
/// label, and have `pinned_id` if given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchSpec {
    /// The image name (an AC identifier).
    pub name: String,
    /// `version` (when the app string gave one), `os` = `linux`, `arch` = this build's appc
    /// arch (`amd64`, `aarch64`), and any other label the app string gave.
    pub labels: BTreeMap<String, String>,
    /// The image ID the declaration pins (`id`): the fetched image must have it, and a store
    /// that already holds it needs no fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_id: Option<String>,
    /// A plain image URL (`image_url`, placeholders rendered for this build) instead of
    /// discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// With `url`: its minisign signature's URL, derived as discovery derives it (the
    /// template's `{ext}` as `aci.minisig`, else `.minisig` added to the URL's path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_url: Option<String>,
    /// `[fetch] allow_http` covers `name`: discovery and fetch may use `http://`.
    #[serde(default)]
    pub allow_http: bool,
}

impl FetchSpec {
    /// The appc request init discovers and checks the fetched manifest against.
    pub fn request(&self) -> aci::discovery::App {
        aci::discovery::App {
            name: self.name.clone(),
            labels: self.labels.clone(),
        }
    }
}

/// When init starts an app again after its main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Whatever the exit status.
    Always,
    /// After a non-zero exit status or a signal (the default: a finished job stays finished,
    /// a crashed service comes back).
    #[default]
    OnFailure,
    Never,
}

/// The declaration's changes to the image manifest's `app`. `None` / empty keeps the image's.
/// Lists merge by name: a declared environment variable, mount point, isolator or event
/// handler replaces the image's of the same name, the others are appended in declared order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AppOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplementary_gids: Option<Vec<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<EnvironmentVariable>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_points: Vec<MountPoint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub isolators: Vec<Isolator>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_handlers: Vec<EventHandler>,
}

/// An image the payload carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedImage {
    /// Relative to the payload mount: `images/<file>.aci`.
    pub file: String,
    /// Relative to the payload mount: the detached minisign signature of `file`.
    pub signature: String,
    /// The image ID the builder computed (`sha512-` + 128 hex digits).
    pub id: String,
    /// The image manifest's name.
    pub name: String,
}

impl PodsPlan {
    pub fn from_json(json: &[u8]) -> Result<PodsPlan, serde_json::Error> {
        serde_json::from_slice(json)
    }

    pub fn to_json_pretty(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec_pretty(self)
    }

    /// The embedded image with this ID, if the payload carries it.
    pub fn embedded(&self, id: &str) -> Option<&EmbeddedImage> {
        self.images.iter().find(|i| i.id == id)
    }
}
