//! Apps whose image is not embedded: the [`FetchSpec`] init follows to fetch it at boot, and
//! the build-time rules that make such a fetch possible at all: a `[[trust]]` key must cover
//! the image's name (or init could never accept what it fetched), and an `image_url` must be
//! an `https://` URL (`http://` only where `[fetch] allow_http` covers the name), one per arch.

use std::collections::BTreeMap;

use aci::discovery::App as AppString;
use aci::manifest::ImageId;
use aci::trust::TrustScope;

use crate::network::name_prefix;
use crate::plan::FetchSpec;
use crate::pods_check::app_field;
use crate::{Arch, DeclError, HostDecl};

/// The image and signature URLs an `image_url` template gives for `request` (whose `os` and
/// `arch` labels are set): discovery's placeholders rendered, the signature derived as
/// discovery derives it.
pub(crate) fn image_urls(template: &str, request: &AppString) -> Result<(String, String), String> {
    let mut fields: BTreeMap<String, String> = request.labels.clone();
    fields
        .entry("version".into())
        .or_insert_with(|| "latest".into());
    fields.insert("name".into(), request.name.clone());
    let mut with_ext = |ext: &str| {
        fields.insert("ext".into(), ext.into());
        aci::discovery::render(template, &fields).ok_or_else(|| {
            format!(
                "{template:?} has a placeholder {request} gives no value for (known: {{name}}, {{ext}} and the request's labels: {})",
                request
                    .labels
                    .keys()
                    .chain(["version".to_string()].iter())
                    .map(|k| format!("{{{k}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    };
    let aci = with_ext("aci")?;
    let signature = with_ext("aci.minisig")?;
    let mut url = url::Url::parse(&aci).map_err(|e| format!("{aci:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!(
            "{aci} is not an https:// (or http://) URL; init fetches over HTTP(S) only"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{aci} names no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{aci} carries credentials; the image's files are readable, so none go into it"
        ));
    }
    if url.fragment().is_some() {
        return Err(format!(
            "{aci} has a #fragment, which is never sent to the server"
        ));
    }
    if url.path().ends_with('/') {
        return Err(format!("{aci} names a directory, not an .aci file"));
    }
    let signature = if template.contains("{ext}") {
        signature
    } else {
        // No {ext}: the image's own URL with `.minisig` after its path (a query stays).
        let path = format!("{}.minisig", url.path());
        url.set_path(&path);
        url.to_string()
    };
    Ok((aci, signature))
}

impl HostDecl {
    fn fetch_bad(&self, i: usize, j: usize, field: &str, reason: impl Into<String>) -> DeclError {
        DeclError::Invalid {
            at: self.site(&app_field(i, j, field)),
            reason: reason.into(),
        }
    }

    /// True when a `[[trust]]` key is trusted for image `name` (a root key, or one whose
    /// prefix covers it along `/` components).
    pub fn trust_covers(&self, name: &str) -> bool {
        self.trust.iter().any(|t| match &t.prefix {
            None => true,
            Some(p) => name_prefix(p).is_some_and(|p| TrustScope::Prefix(p.into()).covers(name)),
        })
    }

    /// The checks of app `j`'s `image_url` that need no build: one URL per built arch, and a
    /// URL for each (rendered as for x86_64 and aarch64).
    pub(crate) fn check_image_url(
        &self,
        i: usize,
        j: usize,
        request: &AppString,
    ) -> Result<(), DeclError> {
        let Some(template) = &self.pods[i].apps[j].image_url else {
            return Ok(());
        };
        if self.arch.len() > 1
            && !template.contains("{arch}")
            && !request.labels.contains_key("arch")
        {
            return Err(self.fetch_bad(
                i,
                j,
                "image_url",
                format!(
                    "is one file for the {} builds: put {{arch}} in it (rendered as amd64 or aarch64), or build one arch",
                    self.arch
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            ));
        }
        for arch in &self.arch {
            let r = request
                .clone()
                .with_default_os_arch("linux", arch.appc_arch());
            image_urls(template, &r).map_err(|why| self.fetch_bad(i, j, "image_url", why))?;
        }
        Ok(())
    }

    /// The fetch spec of app `j` of pod `i` on `arch`, whose image (`request`, with its `os`
    /// and `arch` labels) no embedded image is. `near` says why the closest embedded images
    /// did not match, for the error.
    pub(crate) fn fetch_spec(
        &self,
        (i, j): (usize, usize),
        request: &AppString,
        pin: Option<&ImageId>,
        arch: Arch,
        near: &str,
    ) -> Result<FetchSpec, DeclError> {
        let pod = &self.pods[i];
        let app = &pod.apps[j];
        if !self.trust_covers(&request.name) {
            return Err(self.fetch_bad(
                i,
                j,
                "image",
                format!(
                    "app {}/{}: {request} is not embedded in this {arch} build, so init would fetch it at boot, but no [[trust]] key covers {}: add a [[trust]] key whose prefix covers it (or with none, for every image), or embed the image with [[image]]{near}",
                    pod.name, app.name, request.name
                ),
            ));
        }
        let allow_http = self.http_allowed_for(&request.name);
        let (url, signature_url) = match &app.image_url {
            None => (None, None),
            Some(template) => {
                let (url, sig) = image_urls(template, request)
                    .map_err(|why| self.fetch_bad(i, j, "image_url", why))?;
                if url.starts_with("http://") && !allow_http {
                    return Err(self.fetch_bad(
                        i,
                        j,
                        "image_url",
                        format!(
                            "{url} is plain HTTP, but [fetch] allow_http does not cover {}: use https://, or add a prefix of it to allow_http",
                            request.name
                        ),
                    ));
                }
                (Some(url), Some(sig))
            }
        };
        Ok(FetchSpec {
            name: request.name.clone(),
            labels: request.labels.clone(),
            pinned_id: pin.map(|p| p.to_string()),
            url,
            signature_url,
            allow_http,
        })
    }
}
