//! `builder aci discover|fetch` and the signature half of `builder aci extract --trust|--key`:
//! finding, downloading and extracting App Container images under a verified signature.

use std::fs;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aci::archive::{self, UnpackOptions};
use aci::discovery::{self, App, FetchOptions, HttpClient, HttpOptions, RootCertificates};
use aci::sign::{KeyVerifier, PublicKey, Signature};
use aci::store::Store;
use aci::trust::{InsecureOptions, TrustStore, Verified};
use anyhow::{Context, bail};
use clap::Subcommand;

use crate::sign_cmd::{read_text, with_suffix};

#[derive(Debug, Subcommand)]
pub enum FetchCommand {
    /// Discover an image by name (appc meta discovery) and print its URLs.
    #[command(
        after_help = "Example:\n  builder aci discover example.com/app:1.0.0,os=linux,arch=amd64\n\n\
        os and arch default to this machine's; version renders as `latest` when not given."
    )]
    Discover {
        /// name[:version][,label=value...]
        app: String,
        /// Allow plain HTTP (tried after HTTPS).
        #[arg(long)]
        insecure_http: bool,
    },
    /// Discover, download and verify an image and its signature; keep it only if trusted.
    #[command(
        after_help = "Example:\n  builder aci fetch example.com/app:1.0.0 --trust /etc/aci/trust -o app.aci\n  \
        builder aci fetch example.com/app:1.0.0 --trust /etc/aci/trust --store /var/lib/aci\n\n\
        One pass: the download is hashed for the signature, written and (with --store) unpacked\n\
        as it arrives; nothing is kept unless the signature and the manifest check out."
    )]
    Fetch {
        app: String,
        #[arg(long)]
        trust: PathBuf,
        /// Write the verified .aci here.
        #[arg(
            short,
            long,
            conflicts_with = "store",
            required_unless_present = "store"
        )]
        output: Option<PathBuf>,
        /// Put the verified image into this image store, unpacked and ready to run.
        #[arg(long)]
        store: Option<PathBuf>,
        /// With --store: keep only the blob; the tree is rendered when first needed.
        #[arg(long, requires = "store")]
        no_unpack: bool,
        /// ETag cache directory: unchanged images are not downloaded again.
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Allow plain HTTP (tried after HTTPS).
        #[arg(long)]
        insecure_http: bool,
        /// Also trust the CA certificates in this PEM file, beside the web roots (repeatable).
        #[arg(long, value_name = "PEM")]
        ca: Vec<PathBuf>,
        /// Connect to ADDR (ip:port) whenever a URL names HOST:PORT, as curl's --connect-to
        /// does; the TLS name stays HOST (repeatable). E.g. images.test:443:127.0.0.1:8443.
        #[arg(long, value_name = "HOST:PORT:ADDR", value_parser = parse_connect_to)]
        connect_to: Vec<ConnectTo>,
        /// INSECURE: accept an image that has no signature (a warning is printed).
        #[arg(long)]
        insecure_allow_unsigned: bool,
    },
}

pub fn run(cmd: FetchCommand) -> anyhow::Result<()> {
    match cmd {
        FetchCommand::Discover { app, insecure_http } => {
            let app = parse_app(&app)?;
            let client = client(insecure_http, None)?;
            let found = discovery::discover(&app, &client)?;
            println!("app: {app}");
            println!("discovered at: {}", found.page);
            for e in &found.images {
                println!("image: {}", e.aci);
                println!("signature: {}", e.signature);
                println!("signature (OpenPGP, not checked): {}", e.asc);
            }
            for k in &found.public_keys {
                println!("public key: {k}");
            }
            Ok(())
        }
        FetchCommand::Fetch {
            app,
            trust,
            output,
            store,
            no_unpack,
            cache,
            insecure_http,
            ca,
            connect_to,
            insecure_allow_unsigned,
        } => {
            let app = parse_app(&app)?;
            let client = fetch_client(insecure_http, cache, &ca, connect_to)?;
            let opts = FetchOptions {
                insecure: InsecureOptions {
                    allow_unsigned: insecure_allow_unsigned,
                    allow_http: insecure_http,
                },
                unpack: !no_unpack,
                ..FetchOptions::default()
            };
            let trust = TrustStore::new(trust);
            if let Some(dir) = store {
                let store = Store::open(&dir)
                    .with_context(|| format!("opening the image store {}", dir.display()))?;
                let fetched = discovery::fetch_into_store(&app, &client, &trust, &store, &opts)?;
                report(fetched.stored.record.id.as_str(), &fetched.verified);
                println!(
                    "stored {}",
                    store.blob_path(&fetched.stored.record.id).display()
                );
                if let Some(tree) = &fetched.stored.tree {
                    println!("tree {}", tree.path.display());
                }
                return Ok(());
            }
            let Some(output) = output else {
                bail!("give -o FILE or --store DIR");
            };
            let fetched = discovery::fetch_image(&app, &client, &trust, &output, &opts)?;
            report(&fetched.image_id, &fetched.verified);
            println!("wrote {}", fetched.path.display());
            Ok(())
        }
    }
}

/// What a verified extract checks the signature against.
pub(crate) enum Authority {
    /// A trust directory, for the given name or the manifest's.
    Trust { dir: PathBuf, name: Option<String> },
    /// One public key file.
    Key(PathBuf),
}

/// `builder aci extract FILE DIR --trust T|--key K`: one read of FILE feeds both the
/// signature's hash and the unpacker; DIR appears only if both pass.
pub(crate) fn extract_verified(
    file: &Path,
    dir: &Path,
    opts: &UnpackOptions,
    authority: Authority,
    signature: Option<PathBuf>,
) -> anyhow::Result<()> {
    let sig_path = signature.unwrap_or_else(|| with_suffix(file, ".minisig"));
    let sig_bytes = match fs::read(&sig_path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", sig_path.display())),
    };
    let parsed = sig_bytes
        .as_deref()
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|t| Signature::from_minisign(t).ok());
    let signed = match (&sig_bytes, &parsed) {
        (None, _) => format!("no signature at {}", sig_path.display()),
        (Some(_), Some(sig)) => format!("signature {} by key {}", sig_path.display(), sig.key_id),
        (Some(_), None) => format!("signature {}", sig_path.display()),
    };
    let against = match &authority {
        Authority::Trust { dir, .. } => format!("trust directory {}", dir.display()),
        Authority::Key(key) => format!("key file {}", key.display()),
    };
    let context = || {
        format!(
            "verified extract of {} into {} ({signed}, checked against {against}) refused; {} \
             was left as it was",
            file.display(),
            dir.display(),
            dir.display()
        )
    };
    let aci = fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    match authority {
        Authority::Trust { dir: trust, name } => {
            let store = TrustStore::new(trust);
            let verifier = store
                .stream_verifier(
                    name.as_deref(),
                    &file.display().to_string(),
                    sig_bytes.as_deref(),
                    InsecureOptions::default(),
                )
                .with_context(context)?;
            let done = archive::unpack_verified(aci, dir, opts, verifier).with_context(context)?;
            let name = name.unwrap_or(done.summary.manifest.name);
            match done.verified {
                Verified::Signed { key, scope, .. } => println!(
                    "{}: extracted {} ({name}) into {}; signed by {key}, trusted for {scope}",
                    file.display(),
                    done.summary.id,
                    dir.display()
                ),
                Verified::UnsignedAllowed => println!(
                    "{}: extracted {} ({name}) into {}; UNSIGNED",
                    file.display(),
                    done.summary.id,
                    dir.display()
                ),
            }
        }
        Authority::Key(key) => {
            let public = PublicKey::from_minisign(&read_text(&key)?)
                .with_context(|| format!("reading {}", key.display()))?;
            let id = public.id();
            let Some(sig_bytes) = sig_bytes else {
                bail!("{}: the image is not signed", context());
            };
            let sig = Signature::from_minisign(&String::from_utf8_lossy(&sig_bytes))
                .with_context(|| format!("reading {}", sig_path.display()))
                .with_context(context)?;
            let done = archive::unpack_verified(aci, dir, opts, KeyVerifier::new(public, sig))
                .with_context(context)?;
            println!(
                "{}: extracted {} into {}; signature by {id} verified",
                file.display(),
                done.summary.id,
                dir.display()
            );
        }
    }
    Ok(())
}

fn report(id: &str, verified: &Verified) {
    match verified {
        Verified::Signed { key, scope, .. } => {
            println!("{id}: signed by {key} (trusted for {scope})")
        }
        // `aci` has already logged the INSECURE warning when it let the image through.
        Verified::UnsignedAllowed => println!("{id}: UNSIGNED"),
    }
}

fn parse_app(s: &str) -> anyhow::Result<App> {
    let (os, arch) = App::host_os_arch();
    Ok(App::parse(s)?.with_default_os_arch(os, arch))
}

/// `--connect-to HOST:PORT:ADDR`.
#[derive(Debug, Clone)]
pub struct ConnectTo {
    host: String,
    port: u16,
    addr: SocketAddr,
}

fn parse_connect_to(s: &str) -> Result<ConnectTo, String> {
    let bad = || format!("{s:?} is not HOST:PORT:ADDR (e.g. images.test:443:127.0.0.1:8443)");
    let (host, rest) = s.split_once(':').ok_or_else(bad)?;
    let (port, addr) = rest.split_once(':').ok_or_else(bad)?;
    Ok(ConnectTo {
        host: host.to_ascii_lowercase(),
        port: port.parse().map_err(|_| bad())?,
        addr: addr.parse().map_err(|_| bad())?,
    })
}

/// Name resolution with the `--connect-to` overrides first, then the C library's.
struct Overrides(Vec<ConnectTo>);

impl aci::discovery::Resolver for Overrides {
    fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        let host = host.to_ascii_lowercase();
        if let Some(c) = self.0.iter().find(|c| c.host == host && c.port == port) {
            return Ok(vec![c.addr]);
        }
        Ok((host.as_str(), port).to_socket_addrs()?.collect())
    }
}

/// The certificates of the PEM files `paths`, as DER.
fn read_cas(paths: &[PathBuf]) -> anyhow::Result<Vec<Vec<u8>>> {
    use rustls_pki_types::pem::{PemObject, SectionKind};
    let mut out = Vec::new();
    for path in paths {
        let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let before = out.len();
        for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes) {
            let (kind, der) = item.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            if kind == SectionKind::Certificate {
                out.push(der);
            }
        }
        if out.len() == before {
            bail!("{}: no PEM certificate in it", path.display());
        }
    }
    Ok(out)
}

fn fetch_client(
    insecure_http: bool,
    cache: Option<PathBuf>,
    ca: &[PathBuf],
    connect_to: Vec<ConnectTo>,
) -> anyhow::Result<HttpClient> {
    if insecure_http {
        log::warn!("INSECURE: plain HTTP is allowed");
    }
    let extra = read_cas(ca)?;
    Ok(HttpClient::new(HttpOptions {
        allow_http: insecure_http,
        cache_dir: cache,
        roots: if extra.is_empty() {
            RootCertificates::WebPki
        } else {
            RootCertificates::WebPkiAnd(extra)
        },
        resolver: (!connect_to.is_empty())
            .then(|| Arc::new(Overrides(connect_to)) as Arc<dyn aci::discovery::Resolver>),
        ..HttpOptions::default()
    })?)
}

fn client(insecure_http: bool, cache: Option<PathBuf>) -> anyhow::Result<HttpClient> {
    if insecure_http {
        log::warn!("INSECURE: plain HTTP is allowed");
    }
    Ok(HttpClient::new(HttpOptions {
        allow_http: insecure_http,
        cache_dir: cache,
        ..HttpOptions::default()
    })?)
}
