//! The test certificate authority and the server certificates it signs: made at test time,
//! valid from 2000 to 2100 because a guest's clock may be anything.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::ImageServerError;
use crate::target_dir;

/// A CA whose certificate is on disk as PEM, for declarations to trust (`[fetch] ca`).
pub(super) struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    pem_path: PathBuf,
}

/// A server certificate chain and its key, ready for rustls.
pub(super) struct Leaf {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Ca {
    /// The CA every server of this test process shares, so a test binary can build one image
    /// that trusts it: `target/qemu-tests-out/image-server/run-<pid>/ca.pem`.
    pub fn shared() -> Result<Arc<Ca>, ImageServerError> {
        static SHARED: OnceLock<Result<Arc<Ca>, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let root = target_dir().join("qemu-tests-out").join("image-server");
                fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
                crate::pods::remove_runs_of_gone_processes(&root).map_err(|e| e.to_string())?;
                let dir = root.join(format!("run-{}", std::process::id()));
                Ca::generate("hostos test CA", &dir)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(ImageServerError::SharedCa)
    }

    /// A new CA named `common_name`, its certificate written to `dir/ca.pem`.
    pub fn generate(common_name: &str, dir: &Path) -> Result<Ca, ImageServerError> {
        let cert_err = |what| move |source| ImageServerError::Certificate { what, source };
        let key = rcgen::KeyPair::generate().map_err(cert_err("CA key"))?;
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(cert_err("CA"))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        set_validity(&mut params);
        let cert = params.self_signed(&key).map_err(cert_err("CA"))?;
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let pem_path = dir.join("ca.pem");
        fs::write(&pem_path, cert.pem()).map_err(io_err("write the CA certificate", &pem_path))?;
        Ok(Ca {
            cert,
            key,
            pem_path,
        })
    }

    pub fn pem_path(&self) -> &Path {
        &self.pem_path
    }

    /// The CA certificate (DER), for clients in tests.
    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A certificate for `hostname` signed by this CA; the chain carries the CA too.
    pub fn leaf(&self, hostname: &str) -> Result<Leaf, ImageServerError> {
        let cert_err = |source| ImageServerError::Certificate {
            what: "server",
            source,
        };
        let key = rcgen::KeyPair::generate().map_err(cert_err)?;
        let mut params =
            rcgen::CertificateParams::new(vec![hostname.to_string()]).map_err(cert_err)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, hostname);
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params);
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(cert_err)?;
        Ok(Leaf {
            chain: vec![cert.der().clone(), self.der()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }
}

/// 2000-01-01 to 2100-01-01: a guest without a real-time clock, or with a wrong one, still
/// accepts the certificate.
fn set_validity(params: &mut rcgen::CertificateParams) {
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2100, 1, 1);
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ImageServerError {
    let path = path.to_path_buf();
    move |source| ImageServerError::Io {
        action,
        path,
        source,
    }
}
