//! Which failures of a fetch are worth another attempt: a refusal of the image's authenticity
//! or identity (or a request that can never work) is permanent; the network, the server and
//! local I/O are transient.
//!
//! The rule: permanent is what would fail the same way on every retry until someone changes
//! the declaration, the trust store or the published image. Everything else may heal on its
//! own at boot (the network comes up, DNS answers, the server finishes starting, the clock is
//! set) and is retried with backoff.

use aci::discovery::{FetchError as AciFetchError, HttpError};
use aci::store::StoreError;
use aci::trust::TrustError;

use super::worker::AttemptError;

/// Why an image was refused for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No signature was published for it.
    Unsigned,
    /// The signature file cannot be parsed.
    MalformedSignature,
    /// Signed by a key the trust store does not hold.
    UntrustedKey,
    /// Signed by a key the trust store holds only for other name prefixes.
    KeyNotForName,
    /// The signature does not match the bytes (tampered or truncated image).
    BadSignature,
    /// The verified manifest's name or labels are not the requested ones.
    Mismatch,
    /// The verified image's ID is not the pinned one.
    PinMismatch,
    /// Signed, but not a valid ACI (or its dependencies do not fit it).
    InvalidImage,
    /// The request itself cannot work: not an image name, a bad URL, plain HTTP not allowed,
    /// a TLS root that does not parse, or dependencies nested too deep or in a cycle.
    BadRequest,
}

/// What kind of transient failure an attempt met (for the console line and for tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transient {
    /// No network, name resolution, connection refused or reset, TLS handshake (including
    /// a certificate not valid yet because the clock is wrong).
    Network,
    /// No complete answer within the request timeout (a stalled or too slow server).
    Timeout,
    /// The server answered with this HTTP status.
    Status(u16),
    /// The body was larger than the limit: a misconfigured or hostile server.
    TooLarge,
    /// Discovery found no usable template on any page it tried (which includes every page
    /// failing to load: the detail is in the message).
    Discovery,
    /// Reading or writing the store or the trust store failed.
    Local,
}

/// The verdict on one failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Permanent(Refusal),
    Transient(Transient),
}

/// Whether `e` means the image is refused for good (no retry).
pub fn is_permanent(e: &AciFetchError) -> bool {
    matches!(classify_aci(e), Class::Permanent(_))
}

pub(super) fn classify(e: &AttemptError) -> Class {
    match e {
        AttemptError::Fetch { source, .. } => classify_aci(source),
        AttemptError::Lookup { source, .. } => classify_store(source),
        AttemptError::Request { .. }
        | AttemptError::DependencyTooDeep { .. }
        | AttemptError::DependencyCycle { .. } => Class::Permanent(Refusal::BadRequest),
        AttemptError::Manifest { .. } => Class::Permanent(Refusal::InvalidImage),
    }
}

pub(super) fn classify_aci(e: &AciFetchError) -> Class {
    match e {
        AciFetchError::Discovery(_) => Class::Transient(Transient::Discovery),
        AciFetchError::Download { last, .. } => classify_http(last),
        AciFetchError::Trust(t) => classify_trust(t),
        AciFetchError::Archive { .. } => Class::Permanent(Refusal::InvalidImage),
        AciFetchError::Mismatch { .. } => Class::Permanent(Refusal::Mismatch),
        AciFetchError::PinMismatch { .. } => Class::Permanent(Refusal::PinMismatch),
        AciFetchError::Open { .. } | AciFetchError::Write { .. } => {
            Class::Transient(Transient::Local)
        }
        AciFetchError::Store { source, .. } => classify_store(source),
    }
}

fn classify_trust(e: &TrustError) -> Class {
    match e {
        TrustError::Unsigned { .. } => Class::Permanent(Refusal::Unsigned),
        TrustError::MalformedSignature { .. } => Class::Permanent(Refusal::MalformedSignature),
        TrustError::UntrustedKey { .. } => Class::Permanent(Refusal::UntrustedKey),
        TrustError::KeyNotTrustedForImage { .. } => Class::Permanent(Refusal::KeyNotForName),
        TrustError::BadSignature { .. } => Class::Permanent(Refusal::BadSignature),
        TrustError::NameMismatch { .. } => Class::Permanent(Refusal::Mismatch),
        TrustError::InvalidPrefix(_) | TrustError::InvalidImageName(_) => {
            Class::Permanent(Refusal::BadRequest)
        }
        // Only `add` conflicts; reading the trust directory failing is local I/O.
        TrustError::Read { .. } | TrustError::Write { .. } | TrustError::Conflict { .. } => {
            Class::Transient(Transient::Local)
        }
    }
}

fn classify_http(e: &HttpError) -> Class {
    match e {
        HttpError::Url(_) | HttpError::InsecureScheme { .. } | HttpError::Tls(_) => {
            Class::Permanent(Refusal::BadRequest)
        }
        // Any status, 404 included: at boot a server (or its reverse proxy) may answer before
        // its content is in place, and 403s come and go with misconfigurations too.
        HttpError::Status { status, .. } => Class::Transient(Transient::Status(*status)),
        // Retried, but reported as what it is: a body over the limit is an attack or a
        // misconfiguration, never a slow network.
        HttpError::TooLarge { .. } => Class::Transient(Transient::TooLarge),
        HttpError::TimedOut { .. } => Class::Transient(Transient::Timeout),
        HttpError::Transport { .. }
        | HttpError::BadRedirect { .. }
        | HttpError::TooManyRedirects { .. } => Class::Transient(Transient::Network),
        HttpError::Body { .. } | HttpError::NotModifiedWithoutCache { .. } => {
            Class::Transient(Transient::Local)
        }
        HttpError::Cache { .. } => Class::Transient(Transient::Local),
    }
}

fn classify_store(e: &StoreError) -> Class {
    match e {
        StoreError::InsertInvalid { .. }
        | StoreError::StoredManifest { .. }
        | StoreError::DependencyMismatch { .. }
        | StoreError::Render { .. } => Class::Permanent(Refusal::InvalidImage),
        StoreError::DependencyTooDeep(_) => Class::Permanent(Refusal::BadRequest),
        _ => Class::Transient(Transient::Local),
    }
}

/// The signing key a refusal names, when it names one.
pub(super) fn refused_key(e: &AttemptError) -> Option<String> {
    let AttemptError::Fetch { source, .. } = e else {
        return None;
    };
    let AciFetchError::Trust(t) = &**source else {
        return None;
    };
    match t {
        TrustError::UntrustedKey { key, .. }
        | TrustError::KeyNotTrustedForImage { key, .. }
        | TrustError::BadSignature { key, .. } => Some(key.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::time::Duration;

    use aci::discovery::{AppError, DiscoveryError};
    use aci::sign::KeyId;

    use super::*;

    fn http(e: HttpError) -> AciFetchError {
        AciFetchError::Download {
            app: "a.com/x".into(),
            last: e,
        }
    }

    fn url() -> String {
        "https://a.com/x.aci".into()
    }

    #[test]
    fn refusals_are_permanent_and_network_and_server_failures_are_not() {
        let key = KeyId([1; 8]);
        let image = || "a.com/x".to_string();
        let cases: Vec<(AciFetchError, Class)> = vec![
            (
                TrustError::Unsigned { image: image() }.into(),
                Class::Permanent(Refusal::Unsigned),
            ),
            (
                TrustError::UntrustedKey {
                    image: image(),
                    key,
                }
                .into(),
                Class::Permanent(Refusal::UntrustedKey),
            ),
            (
                TrustError::KeyNotTrustedForImage {
                    image: image(),
                    key,
                    prefixes: vec!["b.com".into()],
                }
                .into(),
                Class::Permanent(Refusal::KeyNotForName),
            ),
            (
                TrustError::NameMismatch {
                    expected: image(),
                    manifest: "a.com/y".into(),
                }
                .into(),
                Class::Permanent(Refusal::Mismatch),
            ),
            (
                AciFetchError::Mismatch {
                    url: url(),
                    source: AppError::ManifestName {
                        wanted: image(),
                        found: "a.com/y".into(),
                    },
                },
                Class::Permanent(Refusal::Mismatch),
            ),
            (
                AciFetchError::PinMismatch {
                    app: image(),
                    url: url(),
                    pinned: "sha512-aa".into(),
                    found: "sha512-bb".into(),
                },
                Class::Permanent(Refusal::PinMismatch),
            ),
            (
                http(HttpError::InsecureScheme { url: url() }),
                Class::Permanent(Refusal::BadRequest),
            ),
            (
                http(HttpError::Url("::".into())),
                Class::Permanent(Refusal::BadRequest),
            ),
            (
                AciFetchError::Discovery(DiscoveryError::NotFound {
                    app: image(),
                    tried: vec![],
                }),
                Class::Transient(Transient::Discovery),
            ),
            (
                http(HttpError::Status {
                    url: url(),
                    status: 404,
                }),
                Class::Transient(Transient::Status(404)),
            ),
            (
                http(HttpError::Status {
                    url: url(),
                    status: 503,
                }),
                Class::Transient(Transient::Status(503)),
            ),
            (
                http(HttpError::Status {
                    url: url(),
                    status: 429,
                }),
                Class::Transient(Transient::Status(429)),
            ),
            (
                http(HttpError::TimedOut {
                    url: url(),
                    timeout: Duration::from_secs(1),
                }),
                Class::Transient(Transient::Timeout),
            ),
            (
                http(HttpError::Transport {
                    url: url(),
                    attempts: 1,
                    message: "Network is unreachable".into(),
                    transient: true,
                }),
                Class::Transient(Transient::Network),
            ),
            // Refused connections are final for aci's own retries (HTTPS then HTTP), not at
            // boot, where the server may simply not listen yet.
            (
                http(HttpError::Transport {
                    url: url(),
                    attempts: 1,
                    message: "Connection refused".into(),
                    transient: false,
                }),
                Class::Transient(Transient::Network),
            ),
            (
                http(HttpError::TooLarge {
                    url: url(),
                    limit: 10,
                }),
                Class::Transient(Transient::TooLarge),
            ),
            (
                AciFetchError::Write {
                    path: "/x".into(),
                    source: io::Error::other("disk full"),
                },
                Class::Transient(Transient::Local),
            ),
        ];
        for (e, want) in &cases {
            assert_eq!(classify_aci(e), *want, "{e:?}");
            assert_eq!(
                is_permanent(e),
                matches!(want, Class::Permanent(_)),
                "{e:?}"
            );
        }
    }

    #[test]
    fn a_trust_refusal_names_its_key() {
        let key = KeyId([7; 8]);
        let e = AttemptError::Fetch {
            image: "a.com/x".into(),
            source: Box::new(
                TrustError::UntrustedKey {
                    image: "a.com/x".into(),
                    key,
                }
                .into(),
            ),
        };
        assert_eq!(refused_key(&e), Some(key.to_string()));
    }
}
