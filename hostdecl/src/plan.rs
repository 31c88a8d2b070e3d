//! The pods as the builder plans them for init: written as JSON into the initramfs at
//! [`hostimg::PODS_PLAN_PATH`] (inside the signed UKI), read by init at boot.
//!
//! Each pod is an appc pod manifest that is runnable (every app names its image by ID), plus
//! what appc has no field for: each app's restart policy and the declaration's overrides of the
//! image's `app` (init merges them over the image manifest at boot, because for an image that
//! is not embedded only init ever sees the manifest). `images` lists the embedded images: the
//! payload files init imports into the store, with the ID and name the builder found, so a
//! refusal can name the file.

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
    /// Runnable: every app's `image.id` is set. Apps carry no `app` object (see `apps`).
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
