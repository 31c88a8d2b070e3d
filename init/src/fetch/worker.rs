//! One request's thread: the store first, else discovery (or the plain URL) and aci's
//! signature-first fetch into the store, then the image's dependencies the same way; each
//! failed attempt classified, and transient ones retried with backoff until the fetch
//! succeeds, is refused, or the fetcher stops.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Instant;

use aci::archive::ImageId;
use aci::archive::manifest_view::DependencyRef;
use aci::discovery::{
    self, App, AppError, Discovered, Endpoint, FetchError as AciFetchError, FetchOptions,
    HttpClient, HttpOptions,
};
use aci::store::{ImageRecord, Store, StoreError};
use aci::trust::InsecureOptions;

use super::classify::{Class, classify, refused_key};
use super::{FetchOutcome, FetchRequest, Shared};
use crate::fatal::chain;

/// Dependencies nest at most this deep below the requested image (the store renders up to
/// 32; real images use one or two levels).
pub(super) const MAX_DEPTH: usize = 16;

/// Why one attempt at a request failed; `image` is the image it failed on (the requested
/// one or a dependency).
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("{image:?} is not a valid image name")]
    Request {
        image: String,
        #[source]
        source: AppError,
    },
    #[error("fetching image {image}")]
    Fetch {
        image: String,
        #[source]
        source: Box<AciFetchError>,
    },
    #[error("looking image {image} up in the store")]
    Lookup {
        image: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("reading the stored manifest of {image}")]
    Manifest {
        image: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("image {image}: dependencies nest deeper than {MAX_DEPTH} levels")]
    DependencyTooDeep { image: String },
    #[error("image {image} depends on itself: {}", chain.join(" -> "))]
    DependencyCycle { image: String, chain: Vec<String> },
}

impl AttemptError {
    pub(super) fn image(&self) -> &str {
        match self {
            AttemptError::Request { image, .. }
            | AttemptError::Fetch { image, .. }
            | AttemptError::Lookup { image, .. }
            | AttemptError::Manifest { image, .. }
            | AttemptError::DependencyTooDeep { image }
            | AttemptError::DependencyCycle { image, .. } => image,
        }
    }
}

/// One image to make present: the request, or a dependency of it.
#[derive(Debug, Clone)]
struct Want {
    name: String,
    labels: Vec<(String, String)>,
    pinned: Option<String>,
    url: Option<String>,
}

impl Want {
    fn of_request(req: &FetchRequest) -> Want {
        Want {
            name: req.name.clone(),
            labels: req.labels.clone(),
            pinned: req.pinned_id.clone(),
            url: req.url.clone(),
        }
    }

    /// A dependency is discovered by its name and labels (no os/arch added, as appc says),
    /// pinned by its `imageID` when the manifest gives one.
    fn of_dependency(dep: &DependencyRef) -> Want {
        Want {
            name: dep.image_name.clone(),
            labels: dep.labels.clone(),
            pinned: dep.image_id.clone(),
            url: None,
        }
    }

    /// `name,label=value...` (and `@id` when pinned): how messages and cycles name it.
    fn key(&self) -> String {
        let mut s = self.name.clone();
        for (k, v) in &self.labels {
            s.push_str(&format!(",{k}={v}"));
        }
        if let Some(pin) = &self.pinned {
            s.push_str(&format!("@{pin}"));
        }
        s
    }

    fn app(&self) -> Result<App, AttemptError> {
        // Parsing the bare name checks it is an AC identifier; labels are set as given, since
        // their values may hold the `,` and `:` an app string cannot.
        let app = App::parse(&self.name).map_err(|source| AttemptError::Request {
            image: self.key(),
            source,
        })?;
        Ok(App {
            name: app.name,
            labels: self.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        })
    }
}

/// The two clients of one request: short timeouts for discovery pages, long ones for the
/// signature and the image.
pub(super) struct Clients {
    pub(super) meta: HttpClient,
    pub(super) image: HttpClient,
}

impl Clients {
    pub(super) fn new(shared: &Shared, allow_http: bool) -> Result<Clients, discovery::HttpError> {
        let l = &shared.limits;
        let opts = |timeout| HttpOptions {
            allow_http,
            connect_timeout: l.connect_timeout,
            timeout,
            // The worker retries with its own backoff; aci's in-call retries would sleep
            // inside the attempt and hide the failures from the console.
            retries: 0,
            cache_dir: None,
            roots: shared.roots.clone(),
            resolver: Some(shared.resolver.clone()),
            ..HttpOptions::default()
        };
        Ok(Clients {
            meta: HttpClient::new(opts(l.page_timeout))?,
            image: HttpClient::new(opts(l.image_timeout))?,
        })
    }
}

/// What one successful attempt did.
#[derive(Debug, Default)]
struct Progress {
    /// Bytes downloaded into the store (image and dependencies).
    bytes: u64,
    fetched: bool,
}

/// Runs `req` to an outcome: `Present`/`Fetched`/`Refused` end it, `Retrying` is reported
/// before each wait. Returns early when the fetcher stops or nobody listens any more.
pub(super) fn run(req: FetchRequest, shared: Arc<Shared>, tx: Sender<FetchOutcome>) {
    let started = Instant::now();
    let report = |o: FetchOutcome| -> bool {
        let ok = tx.send(o).is_ok();
        shared.wake.notify();
        ok
    };
    let clients = match Clients::new(&shared, req.allow_http) {
        Ok(c) => c,
        Err(e) => {
            report(FetchOutcome::Refused {
                app: req.app.clone(),
                image: req.name.clone(),
                key: None,
                reason: super::Refusal::BadRequest,
                detail: chain(&e),
            });
            return;
        }
    };
    let top = Want::of_request(&req);
    let mut attempt: u32 = 0;
    loop {
        attempt = attempt.saturating_add(1);
        let mut progress = Progress::default();
        let result = ensure(&shared, &clients, &top, &mut Vec::new(), &mut progress);
        let outcome = match result {
            Ok(image_id) if progress.fetched => FetchOutcome::Fetched {
                app: req.app.clone(),
                image_id,
                bytes: progress.bytes,
                elapsed: started.elapsed(),
            },
            Ok(image_id) => FetchOutcome::Present {
                app: req.app.clone(),
                image_id,
            },
            Err(e) => match classify(&e) {
                Class::Permanent(reason) => FetchOutcome::Refused {
                    app: req.app.clone(),
                    image: e.image().to_string(),
                    key: refused_key(&e),
                    reason,
                    detail: chain(&e),
                },
                Class::Transient(kind) => {
                    let delay = shared.backoff.delay(attempt);
                    let o = FetchOutcome::Retrying {
                        app: req.app.clone(),
                        image: e.image().to_string(),
                        attempt,
                        delay,
                        kind,
                        error: chain(&e),
                    };
                    if !report(o) || shared.stop.wait(delay) {
                        return;
                    }
                    continue;
                }
            },
        };
        report(outcome);
        return;
    }
}

/// Makes `want` and its dependencies present in the store; returns its ID. `path` holds the
/// images above this one, to refuse cycles.
fn ensure(
    shared: &Shared,
    clients: &Clients,
    want: &Want,
    path: &mut Vec<String>,
    progress: &mut Progress,
) -> Result<ImageId, AttemptError> {
    let key = want.key();
    if path.contains(&key) {
        let mut chain = path.clone();
        chain.push(key.clone());
        return Err(AttemptError::DependencyCycle { image: key, chain });
    }
    if path.len() > MAX_DEPTH {
        return Err(AttemptError::DependencyTooDeep { image: key });
    }
    let record = match stored(&shared.store, want)? {
        Some(record) => record,
        None => {
            let record = fetch(shared, clients, want)?;
            progress.bytes += record.size;
            progress.fetched = true;
            record
        }
    };
    let manifest = record
        .manifest_view()
        .map_err(|source| AttemptError::Manifest {
            image: key.clone(),
            source: Box::new(source),
        })?;
    path.push(key);
    for dep in &manifest.dependencies {
        ensure(shared, clients, &Want::of_dependency(dep), path, progress)?;
    }
    path.pop();
    Ok(record.id)
}

/// The stored image `want` names: by its pin (which must also carry the name and labels), or
/// the highest version with the name and labels.
fn stored(store: &Store, want: &Want) -> Result<Option<ImageRecord>, AttemptError> {
    let found = match &want.pinned {
        Some(pin) => store.get(pin).map(|r| {
            let fits = r.name == want.name
                && want
                    .labels
                    .iter()
                    .all(|(n, v)| r.label(n) == Some(v.as_str()));
            // An image with the pinned ID but another name is not what was asked for;
            // fetching by name then refuses whatever does not carry the pin.
            fits.then_some(r)
        }),
        None => store.find(&want.name, &want.labels).map(Some),
    };
    match found {
        Ok(r) => Ok(r),
        Err(StoreError::NotFound(_) | StoreError::NoMatch { .. }) => Ok(None),
        Err(source) => Err(AttemptError::Lookup {
            image: want.key(),
            source: Box::new(source),
        }),
    }
}

/// Downloads `want` into the store through aci: signature checked against the trust store
/// before the body is parsed, name, labels and pin checked before anything is visible.
fn fetch(shared: &Shared, clients: &Clients, want: &Want) -> Result<ImageRecord, AttemptError> {
    let app = want.app()?;
    let err = |source| AttemptError::Fetch {
        image: want.key(),
        source: Box::new(source),
    };
    let discovered = match &want.url {
        Some(url) => plain_url(url),
        None => discovery::discover(&app, &clients.meta).map_err(|e| err(e.into()))?,
    };
    let opts = FetchOptions {
        insecure: InsecureOptions {
            allow_unsigned: false,
            allow_http: clients.image.options().allow_http,
        },
        max_image_size: shared.limits.max_image_size,
        max_signature_size: shared.limits.max_signature_size,
        unpack: true,
    };
    discovery::fetch_pinned_into_store(
        &app,
        &discovered,
        &clients.image,
        &shared.trust,
        &shared.store,
        &opts,
        want.pinned.as_deref(),
    )
    .map(|got| got.stored.record)
    .map_err(err)
}

/// The endpoint of a plain image URL: the signature beside it as discovery derives it (the
/// template's `{ext}` `aci` becomes `aci.minisig`), so `…/app.aci` is signed by
/// `…/app.aci.minisig`.
fn plain_url(url: &str) -> Discovered {
    Discovered {
        images: vec![Endpoint {
            aci: url.to_string(),
            signature: format!("{url}.minisig"),
            asc: format!("{url}.asc"),
        }],
        public_keys: Vec::new(),
        page: url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_url_is_signed_by_the_file_beside_it() {
        let d = plain_url("https://a.com/x-1.0.aci");
        assert_eq!(d.images[0].signature, "https://a.com/x-1.0.aci.minisig");
    }

    #[test]
    fn the_key_of_an_image_names_labels_and_pin() {
        let w = Want {
            name: "a.com/x".into(),
            labels: vec![("version".into(), "1".into())],
            pinned: Some("sha512-ab".into()),
            url: None,
        };
        assert_eq!(w.key(), "a.com/x,version=1@sha512-ab");
    }
}
