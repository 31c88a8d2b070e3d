//! appc meta discovery (`spec/discovery.md`): from an app string to the URLs of the image, its
//! signature and the publisher's keys, walking up the name's path; and fetching a discovered
//! image with its signature, checked against the trust store and the request.
//!
//! Signatures are minisign files: the signature URL is the template rendered with
//! `{ext}` = `aci.minisig`. The appc/rkt OpenPGP URL (`aci.asc`) is reported for later use.

mod app;
mod fetch;
mod http;
mod meta;
mod template;

use std::collections::BTreeMap;

pub use app::{App, AppError};
pub use fetch::{
    FetchError, FetchOptions, FetchedImage, FetchedIntoStore, fetch_discovered,
    fetch_discovered_into_store, fetch_image, fetch_into_store, fetch_pinned_into_store,
};
pub use http::{Fetched, HttpClient, HttpError, HttpOptions, Resolver, RootCertificates, Sink};
pub use meta::{MetaTag, parse_meta_tags};
pub use template::render;

/// Largest discovery page we read: meta tags live in the head of a small page.
pub const META_PAGE_LIMIT: u64 = 1 << 20;

/// Where one discovered copy of the image lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub aci: String,
    /// `{ext}` = `aci.minisig`: what we verify.
    pub signature: String,
    /// `{ext}` = `aci.asc`: appc's OpenPGP signature, not checked yet.
    pub asc: String,
}

/// The result of discovery for one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub images: Vec<Endpoint>,
    /// `ac-discovery-pubkeys` URLs whose prefix matches.
    pub public_keys: Vec<String>,
    /// The discovery page that answered (after walking up and redirects).
    pub page: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("discovery for {app} found no matching ac-discovery template; tried:\n  {}", tried.join("\n  "))]
    NotFound { app: String, tried: Vec<String> },
}

/// The endpoints `tags` give for `app`: templates whose prefix starts the name (a plain string
/// prefix, as appc's Go code does) and whose fields all render. `version` defaults to
/// `latest`.
pub fn endpoints_from_tags(app: &App, tags: &[MetaTag]) -> (Vec<Endpoint>, Vec<String>) {
    let mut fields: BTreeMap<String, String> = app.labels.clone();
    fields
        .entry("version".into())
        .or_insert_with(|| "latest".into());
    fields.insert("name".into(), app.name.clone());
    let mut images = Vec::new();
    let mut keys = Vec::new();
    for tag in tags {
        let mut parts = tag.content.split_whitespace();
        let (Some(prefix), Some(target), None) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if !app.name.starts_with(prefix) {
            continue;
        }
        match tag.name.as_str() {
            "ac-discovery" => {
                let mut with_ext = |ext: &str| {
                    fields.insert("ext".into(), ext.into());
                    render(target, &fields)
                };
                if let (Some(aci), Some(signature), Some(asc)) =
                    (with_ext("aci"), with_ext("aci.minisig"), with_ext("aci.asc"))
                    // A template without {ext} cannot tell the image from its signature.
                    && aci != signature
                {
                    images.push(Endpoint {
                        aci,
                        signature,
                        asc,
                    });
                }
            }
            "ac-discovery-pubkeys" => keys.push(target.to_string()),
            _ => {}
        }
    }
    (images, keys)
}

/// Runs meta discovery for `app`: `https://{name}?ac-discovery=1`, then each parent path on a
/// failed request (4xx, 5xx, transport error) or a page without matching templates. With
/// `allow_http` set on the client, each step tries `http://` after `https://`.
pub fn discover(app: &App, client: &HttpClient) -> Result<Discovered, DiscoveryError> {
    let schemes: &[&str] = if client.options().allow_http {
        &["https", "http"]
    } else {
        &["https"]
    };
    let mut tried = Vec::new();
    let mut candidate = app.name.as_str();
    loop {
        for scheme in schemes {
            let url = format!("{scheme}://{candidate}?ac-discovery=1");
            match client.get_bytes(&url, META_PAGE_LIMIT) {
                Ok((body, fetched)) => {
                    let html = String::from_utf8_lossy(&body);
                    let (images, public_keys) = endpoints_from_tags(app, &parse_meta_tags(&html));
                    if !images.is_empty() {
                        return Ok(Discovered {
                            images,
                            public_keys,
                            page: fetched.url,
                        });
                    }
                    tried.push(format!("{url}: no matching ac-discovery tag"));
                }
                Err(e) => tried.push(e.to_string()),
            }
        }
        match candidate.rsplit_once('/') {
            Some((parent, _)) => candidate = parent,
            None => {
                return Err(DiscoveryError::NotFound {
                    app: app.to_string(),
                    tried,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_skip_unrendered_and_non_matching_templates() {
        let app = App::parse("example.com/myapp:1.0.0,os=linux,arch=amd64").unwrap();
        let tags = parse_meta_tags(
            r#"<meta name="ac-discovery" content="example.com https://s.example.com/{name}-{version}-{os}-{arch}.{ext}">
               <meta name="ac-discovery" content="example.com https://s.example.com/{name}-{channel}.{ext}">
               <meta name="ac-discovery" content="other.com https://o/{name}.{ext}">
               <meta name="ac-discovery" content="example.com https://noext/{name}">
               <meta name="ac-discovery" content="example.com">
               <meta name="ac-discovery-pubkeys" content="example.com https://example.com/pubkeys.pub">
               <meta name="ac-discovery-pubkeys" content="other.com https://other.com/k.pub">"#,
        );
        let (images, keys) = endpoints_from_tags(&app, &tags);
        assert_eq!(
            images,
            vec![Endpoint {
                aci: "https://s.example.com/example.com/myapp-1.0.0-linux-amd64.aci".into(),
                signature: "https://s.example.com/example.com/myapp-1.0.0-linux-amd64.aci.minisig"
                    .into(),
                asc: "https://s.example.com/example.com/myapp-1.0.0-linux-amd64.aci.asc".into(),
            }]
        );
        assert_eq!(keys, vec!["https://example.com/pubkeys.pub".to_string()]);
    }

    #[test]
    fn missing_version_renders_as_latest() {
        let app = App::parse("a.com/x").unwrap();
        let tags = parse_meta_tags(
            r#"<meta name="ac-discovery" content="a.com https://a.com/{name}-{version}.{ext}">"#,
        );
        let (images, _) = endpoints_from_tags(&app, &tags);
        assert_eq!(images[0].aci, "https://a.com/a.com/x-latest.aci");
    }
}
