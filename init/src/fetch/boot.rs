//! The fetcher as init's boot runs it: its configuration from the image (store, trust keys,
//! the network plan's fetch policy and CAs, init's resolver), the waiting pods' fetch specs as
//! requests, and each outcome on the console.

use std::path::PathBuf;
use std::sync::Arc;

use aci::discovery::{Resolver, RootCertificates};
use aci::trust::TrustStore;
use hostdecl::{FetchSpec, NetworkPlan};

use super::{
    Backoff, FetchConfig, FetchError, FetchOutcome, FetchRequest, Fetcher, Limits, Refusal,
    Transient,
};
use crate::console::{self, Line, PodEvent};

/// The fetcher for this boot: trust keys from the initramfs, the store on the data partition,
/// the Mozilla roots plus the declaration's `[fetch] ca` certificates.
pub fn start(plan: &NetworkPlan, resolver: Arc<dyn Resolver>) -> Result<Fetcher, String> {
    let mut extra = Vec::new();
    for ca in &plan.fetch.ca {
        extra.push(ca.der_bytes().map_err(|e| {
            format!(
                "the network plan's CA from {} is not base64: {e}",
                ca.source
            )
        })?);
    }
    let roots = if extra.is_empty() {
        RootCertificates::WebPki
    } else {
        RootCertificates::WebPkiAnd(extra)
    };
    Fetcher::spawn(FetchConfig {
        store_dir: PathBuf::from(hostimg::STORE_DIR),
        trust: TrustStore::new(hostimg::TRUST_PATH),
        roots,
        resolver,
        backoff: Backoff::default(),
        limits: Limits::default(),
    })
    .map_err(|e: FetchError| crate::fatal::chain(&e))
}

/// The request for app `who`'s image.
pub fn request(who: &str, spec: &FetchSpec) -> FetchRequest {
    FetchRequest {
        app: who.to_owned(),
        name: spec.name.clone(),
        labels: spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        pinned_id: spec.pinned_id.clone(),
        url: spec.url.clone(),
        allow_http: spec.allow_http,
    }
}

fn refusal_words(r: Refusal) -> &'static str {
    match r {
        Refusal::Unsigned => "unsigned",
        Refusal::MalformedSignature => "malformed signature",
        Refusal::UntrustedKey => "untrusted key",
        Refusal::KeyNotForName => "key not trusted for this name",
        Refusal::BadSignature => "bad signature",
        Refusal::Mismatch => "name or labels do not match",
        Refusal::PinMismatch => "not the pinned image ID",
        Refusal::InvalidImage => "invalid image",
        Refusal::BadRequest => "bad request",
    }
}

fn transient_words(t: Transient) -> String {
    format!("{t:?}").to_lowercase()
}

/// Says `outcome` on the console, as its app's pod line.
pub fn say(outcome: &FetchOutcome) {
    let (who, text) = match outcome {
        FetchOutcome::Present { app, image_id } => (
            app,
            format!("image {} found in the store", id12(image_id.as_str())),
        ),
        FetchOutcome::Fetched {
            app,
            image_id,
            bytes,
            elapsed,
        } => (
            app,
            format!(
                "image {} fetched and verified ({bytes} bytes in {} ms, init peak resident memory {} KiB)",
                id12(image_id.as_str()),
                elapsed.as_millis(),
                crate::supervise::peak_resident_kib().unwrap_or(0)
            ),
        ),
        FetchOutcome::Refused {
            app,
            image,
            key,
            reason,
            detail,
        } => (
            app,
            format!(
                "image {image} refused ({}{}): {detail}",
                refusal_words(*reason),
                key.as_deref()
                    .map(|k| format!(", key {k}"))
                    .unwrap_or_default()
            ),
        ),
        FetchOutcome::Retrying {
            app,
            image,
            attempt,
            delay,
            kind,
            error,
        } => (
            app,
            format!(
                "fetching {image} failed (attempt {attempt}, {}); retrying in {} ms: {error}",
                transient_words(*kind),
                delay.as_millis()
            ),
        ),
    };
    console::emit(&Line::Pod {
        who,
        event: PodEvent::Fetch(&text),
    });
}

/// `sha512-` and the first 12 hex digits.
fn id12(id: &str) -> &str {
    id.get(..19).unwrap_or(id)
}
