//! Rendering `[[pod]]` for one arch into the [`PodsPlan`] init reads: each app's image
//! resolved to an embedded image of this arch matching its app string, or else to an image
//! init fetches at boot (`fetch_spec`), pinned or by name and labels; each pod an appc pod
//! manifest, runnable but for fetched images without a pin.

use aci::manifest::{
    AcIdentifier, ImageId, Label, Labels, PodManifest, PodMode, RuntimeApp, RuntimeImage,
};

use crate::plan::{EmbeddedImage, FetchSpec, PodPlan, PodsPlan};
use crate::pods_check::{AppParts, app_field, pod_field};
use crate::{Arch, DeclError, HostDecl};

/// An image one arch's payload carries, with the manifest labels the builder read from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvailableImage {
    pub embedded: EmbeddedImage,
    pub labels: Vec<(String, String)>,
}

impl Arch {
    /// The appc `arch` label of this arch (appc never used Go's `arm64`).
    pub fn appc_arch(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "aarch64",
        }
    }
}

impl HostDecl {
    /// The pods for `arch`, given the images its payload carries. An app runs the one embedded
    /// image whose manifest has the app string's name and labels (with `os=linux` and this
    /// arch's `arch` added unless written); a pin must agree with the embedded image that
    /// matches. With none, init fetches the image at boot (its store first), which needs a
    /// `[[trust]]` key covering the name.
    pub fn pods_plan(&self, arch: Arch, images: &[AvailableImage]) -> Result<PodsPlan, DeclError> {
        let mut pods = Vec::new();
        for i in 0..self.pods.len() {
            pods.push(self.pod_plan(i, arch, images)?);
        }
        Ok(PodsPlan {
            pods,
            images: images.iter().map(|a| a.embedded.clone()).collect(),
        })
    }

    fn pod_plan(
        &self,
        i: usize,
        arch: Arch,
        images: &[AvailableImage],
    ) -> Result<PodPlan, DeclError> {
        let pod = &self.pods[i];
        let mut apps = Vec::new();
        let mut plans = Vec::new();
        for j in 0..pod.apps.len() {
            let mut parts = self.app_parts(i, j)?;
            let (id, labels, fetch) = self.resolve(i, j, &parts, arch, images)?;
            parts.plan.fetch = fetch;
            let name =
                AcIdentifier::new(parts.request.name.as_str()).map_err(|e| DeclError::Invalid {
                    at: self.site(&app_field(i, j, "image")),
                    reason: e.to_string(),
                })?;
            apps.push(RuntimeApp {
                name: parts.name,
                image: RuntimeImage {
                    name: Some(name),
                    id,
                    labels,
                },
                app: None,
                read_only_root_fs: parts.read_only_root_fs,
                mounts: parts.mounts,
                annotations: Default::default(),
            });
            plans.push(parts.plan);
        }
        // Runnable unless an app's image is fetched without a pin (its ID comes at boot).
        let mode = if apps.iter().all(|a| a.image.id.is_some()) {
            PodMode::Reified
        } else {
            PodMode::Template
        };
        let mut manifest = PodManifest::new(apps);
        manifest.volumes = self.pod_volumes(i)?;
        // The checks before should leave nothing for this one; it guards the contract with
        // init should they ever drift.
        manifest
            .validate_with(mode)
            .map_err(|e| DeclError::Invalid {
                at: self.site(&pod_field(i, "")),
                reason: format!("renders to an invalid pod manifest: {e}"),
            })?;
        Ok(PodPlan {
            name: pod.name.clone(),
            manifest,
            apps: plans,
        })
    }

    /// The image ID app `j` of pod `i` runs on `arch` (`None`: fetched at boot, not pinned),
    /// the labels its manifest entry asks for, and how init fetches it when no embedded image
    /// is the app's.
    fn resolve(
        &self,
        i: usize,
        j: usize,
        parts: &AppParts,
        arch: Arch,
        images: &[AvailableImage],
    ) -> Result<(Option<ImageId>, Labels, Option<FetchSpec>), DeclError> {
        let bad = |field: &str, reason: String| DeclError::Invalid {
            at: self.site(&app_field(i, j, field)),
            reason,
        };
        let request = parts
            .request
            .clone()
            .with_default_os_arch("linux", arch.appc_arch());
        let mut labels = Labels::default();
        for (k, v) in &request.labels {
            let name = AcIdentifier::new(k.as_str()).map_err(|e| bad("image", e.to_string()))?;
            labels.0.push(Label {
                name,
                value: v.clone(),
            });
        }
        let matching: Vec<&AvailableImage> = images
            .iter()
            .filter(|c| request.check_manifest(&c.embedded.name, &c.labels).is_ok())
            .collect();
        let pin = parts.pin.as_ref();
        let chosen = match (matching.as_slice(), pin) {
            ([], None) => {
                let near = self.near(&request, images);
                let spec = self.fetch_spec((i, j), &request, None, arch, &near)?;
                return Ok((None, labels, Some(spec)));
            }
            ([], Some(pin)) => {
                if let Some(c) = images.iter().find(|c| c.embedded.id == pin.as_str()) {
                    let why = request
                        .check_manifest(&c.embedded.name, &c.labels)
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_default();
                    return Err(bad(
                        "id",
                        format!(
                            "is the embedded image {} ({}), which is not the image {request} asks for: {why}",
                            c.embedded.file, c.embedded.name
                        ),
                    ));
                }
                let near = self.near(&request, images);
                let spec = self.fetch_spec((i, j), &request, Some(pin), arch, &near)?;
                return Ok((Some(pin.clone()), labels, Some(spec)));
            }
            ([one], None) => one,
            (many, Some(pin)) => match many.iter().find(|c| c.embedded.id == pin.as_str()) {
                Some(c) => c,
                None => {
                    let found: Vec<String> = many
                        .iter()
                        .map(|c| format!("{} has {}", c.embedded.file, c.embedded.id))
                        .collect();
                    return Err(bad(
                        "id",
                        format!(
                            "does not match the embedded image{} {request} names for {arch}: {}",
                            if many.len() > 1 { "s" } else { "" },
                            found.join("; ")
                        ),
                    ));
                }
            },
            (many, None) => {
                let files: Vec<&str> = many.iter().map(|c| c.embedded.file.as_str()).collect();
                return Err(bad(
                    "image",
                    format!(
                        "{request} matches {} embedded images for {arch} ({}): add a label (version=...) or pin `id`",
                        many.len(),
                        files.join(", ")
                    ),
                ));
            }
        };
        let id =
            ImageId::parse_full(&chosen.embedded.id).map_err(|e| bad("image", e.to_string()))?;
        Ok((Some(id), labels, None))
    }

    /// Why no embedded image fits, as the closest candidates' mismatch (` (near: ...)`), or
    /// nothing.
    fn near(&self, request: &aci::discovery::App, images: &[AvailableImage]) -> String {
        let near: Vec<String> = images
            .iter()
            .filter(|c| c.embedded.name == request.name)
            .filter_map(|c| {
                request
                    .check_manifest(&c.embedded.name, &c.labels)
                    .err()
                    .map(|e| format!("{}: {e}", c.embedded.file))
            })
            .collect();
        if near.is_empty() {
            String::new()
        } else {
            format!(" (embedded but not matching: {})", near.join("; "))
        }
    }
}
