//! `builder key generate`, `builder aci sign|verify|trust|discover|fetch` and the signature half
//! of `builder aci extract --trust|--key`: keys, signatures, trust, discovery and verified
//! fetching and extracting of App Container images.

use std::fs;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use aci::archive::{self, UnpackOptions};
use aci::discovery::{self, App, FetchOptions, HttpClient, HttpOptions};
use aci::sign::{KdfLimits, KeyVerifier, PublicKey, SecretKey, Signature, default_trusted_comment};
use aci::store::Store;
use aci::trust::{InsecureOptions, TrustScope, TrustStore, Verified};
use anyhow::{Context, bail};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum SignCommand {
    /// Sign an ACI: writes a detached minisign signature (X.aci.minisig) over its exact bytes.
    #[command(
        after_help = "Example:\n  builder aci sign hello.aci --key release.key\n  \
        minisign -V -p release.pub -m hello.aci   # the standard tool verifies it too"
    )]
    Sign {
        /// The image to sign.
        aci: PathBuf,
        /// Secret key file (minisign format, from `builder key generate` or `minisign -G`).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the signature (default: <ACI>.minisig).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The signed comment (default: timestamp and file name, as minisign writes it).
        #[arg(long)]
        trusted_comment: Option<String>,
        /// Sign the bytes themselves (minisign's legacy `Ed` form) instead of their BLAKE2b
        /// hash; only for verifiers older than minisign 0.10.
        #[arg(long)]
        legacy: bool,
        /// Read the secret key's password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Verify an ACI's signature with one public key, or with a trust directory.
    #[command(
        after_help = "Example:\n  builder aci verify hello.aci --key release.pub\n  \
        builder aci verify hello.aci --trust /etc/aci/trust   # name read from the manifest"
    )]
    Verify {
        aci: PathBuf,
        /// The public key to check against.
        #[arg(long, conflicts_with = "trust", required_unless_present = "trust")]
        key: Option<PathBuf>,
        /// A trust directory (see `builder aci trust`): the key must be trusted for the image's
        /// name.
        #[arg(long)]
        trust: Option<PathBuf>,
        /// Image name to check trust for (default: the name in the ACI's manifest).
        #[arg(long, requires = "trust", conflicts_with = "key")]
        name: Option<String>,
        /// Signature file (default: <ACI>.minisig).
        #[arg(long)]
        signature: Option<PathBuf>,
    },
    /// Trust a public key for every image (--root) or for an image-name prefix.
    #[command(
        after_help = "Example:\n  builder aci trust --trust /etc/aci/trust --prefix example.com release.pub\n  \
        builder aci trust --trust /etc/aci/trust --root ops.pub\n\n\
        Layout: TRUST/root.d/<KEYID>.pub and TRUST/prefix.d/<prefix>/<KEYID>.pub. A prefix\n\
        trusts names along path components: example.com trusts example.com/app, not\n\
        example.community/app."
    )]
    Trust {
        /// The public key file (minisign format).
        key: PathBuf,
        #[arg(long)]
        trust: PathBuf,
        #[arg(long, conflicts_with = "root", required_unless_present = "root")]
        prefix: Option<String>,
        #[arg(long)]
        root: bool,
    },
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
        /// INSECURE: accept an image that has no signature (a warning is printed).
        #[arg(long)]
        insecure_allow_unsigned: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate an ed25519 key pair in minisign's formats: NAME.pub and NAME.key.
    #[command(after_help = "Example:\n  builder key generate -o release\n  \
        builder aci sign hello.aci --key release.key\n\n\
        The secret key is written WITHOUT a password (like `minisign -G -W`) unless\n\
        --password-stdin is given; keep NAME.key private (it is created mode 0600).\n\
        Existing files are never overwritten.")]
    Generate {
        /// Output name: writes NAME.pub and NAME.key.
        #[arg(short, long)]
        output: PathBuf,
        /// Encrypt the secret key with the password on the first line of standard input
        /// (scrypt, minisign's parameters).
        #[arg(long)]
        password_stdin: bool,
    },
}

pub fn run(cmd: SignCommand) -> anyhow::Result<()> {
    match cmd {
        SignCommand::Sign {
            aci,
            key,
            output,
            trusted_comment,
            legacy,
            password_stdin,
        } => sign(&aci, &key, output, trusted_comment, legacy, password_stdin),
        SignCommand::Verify {
            aci,
            key,
            trust,
            name,
            signature,
        } => verify(&aci, key, trust, name, signature),
        SignCommand::Trust {
            key,
            trust,
            prefix,
            root,
        } => {
            let text = read_text(&key)?;
            let public = PublicKey::from_minisign(&text)
                .with_context(|| format!("reading {}", key.display()))?;
            let scope = match (root, prefix) {
                (true, _) => TrustScope::Root,
                (false, Some(p)) => TrustScope::Prefix(p),
                (false, None) => bail!("give --root or --prefix"),
            };
            let path = TrustStore::new(trust).add(&scope, &public)?;
            println!(
                "trusted key {} for {scope}: {}",
                public.id(),
                path.display()
            );
            Ok(())
        }
        SignCommand::Discover { app, insecure_http } => {
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
        SignCommand::Fetch {
            app,
            trust,
            output,
            store,
            no_unpack,
            cache,
            insecure_http,
            insecure_allow_unsigned,
        } => {
            let app = parse_app(&app)?;
            let client = client(insecure_http, cache)?;
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
                report(&app, fetched.stored.record.id.as_str(), &fetched.verified);
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
            report(&app, &fetched.image_id, &fetched.verified);
            println!("wrote {}", fetched.path.display());
            Ok(())
        }
    }
}

pub fn run_key(cmd: KeyCommand) -> anyhow::Result<()> {
    match cmd {
        KeyCommand::Generate {
            output,
            password_stdin,
        } => {
            let pub_path = with_suffix(&output, ".pub");
            let key_path = with_suffix(&output, ".key");
            for p in [&pub_path, &key_path] {
                if p.exists() {
                    bail!(
                        "{} already exists; refusing to overwrite a key",
                        p.display()
                    );
                }
            }
            let key = SecretKey::generate()?;
            let secret = if password_stdin {
                key.to_minisign_encrypted(&read_password()?, KdfLimits::SENSITIVE)?
            } else {
                key.to_minisign_unencrypted()
            };
            write_new(&key_path, secret.as_bytes(), 0o600)?;
            write_new(&pub_path, key.public_key().to_minisign().as_bytes(), 0o644)?;
            println!("key id: {}", key.id());
            println!("public key: {}", pub_path.display());
            println!(
                "secret key: {}{}",
                key_path.display(),
                if password_stdin { "" } else { " (no password)" }
            );
            Ok(())
        }
    }
}

fn sign(
    aci: &Path,
    key: &Path,
    output: Option<PathBuf>,
    trusted_comment: Option<String>,
    legacy: bool,
    password_stdin: bool,
) -> anyhow::Result<()> {
    let text = read_text(key)?;
    let password = if password_stdin {
        Some(read_password()?)
    } else {
        None
    };
    let secret = SecretKey::from_minisign(&text, password.as_deref())
        .with_context(|| format!("reading secret key {}", key.display()))?;
    let comment = match trusted_comment {
        Some(c) => c,
        None => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let name = aci
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let c = default_trusted_comment(&name, now);
            if legacy {
                c.trim_end_matches("\thashed").to_string()
            } else {
                c
            }
        }
    };
    let signature = if legacy {
        let data = fs::read(aci).with_context(|| format!("reading {}", aci.display()))?;
        secret.sign_legacy(&data, &comment)?
    } else {
        let file = fs::File::open(aci).with_context(|| format!("opening {}", aci.display()))?;
        secret.sign_reader(std::io::BufReader::new(file), &comment)?
    };
    let out = output.unwrap_or_else(|| with_suffix(aci, ".minisig"));
    fs::write(&out, signature.to_minisign())
        .with_context(|| format!("writing {}", out.display()))?;
    println!(
        "signed {} with key {}: {}",
        aci.display(),
        secret.id(),
        out.display()
    );
    Ok(())
}

fn verify(
    aci: &Path,
    key: Option<PathBuf>,
    trust: Option<PathBuf>,
    name: Option<String>,
    signature: Option<PathBuf>,
) -> anyhow::Result<()> {
    let sig_path = signature.unwrap_or_else(|| with_suffix(aci, ".minisig"));
    let open = || {
        fs::File::open(aci)
            .map(std::io::BufReader::new)
            .with_context(|| format!("opening {}", aci.display()))
    };
    if let Some(key) = key {
        let public = PublicKey::from_minisign(&read_text(&key)?)
            .with_context(|| format!("reading {}", key.display()))?;
        let sig = Signature::from_minisign(&read_text(&sig_path)?)
            .with_context(|| format!("reading {}", sig_path.display()))?;
        public
            .verify_reader(open()?, &sig)
            .with_context(|| format!("verifying {}", aci.display()))?;
        println!("{}: signature by {} verified", aci.display(), public.id());
        println!("trusted comment: {}", sig.trusted_comment);
        return Ok(());
    }
    let Some(trust) = trust else {
        bail!("give --key or --trust");
    };
    let name = match name {
        Some(n) => n,
        None => {
            let summary = aci::archive::read_aci(open()?, &aci::archive::ReadOptions::default())
                .with_context(|| format!("reading the manifest of {}", aci.display()))?;
            summary.manifest.name
        }
    };
    let sig = match fs::read(&sig_path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", sig_path.display())),
    };
    let verified = TrustStore::new(trust).verify(
        &name,
        open()?,
        sig.as_deref(),
        InsecureOptions::default(),
    )?;
    if let Verified::Signed {
        key,
        scope,
        trusted_comment,
    } = verified
    {
        println!(
            "{} ({name}): signed by {key}, trusted for {scope}",
            aci.display()
        );
        println!("trusted comment: {trusted_comment}");
    }
    Ok(())
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
                .stream_verifier(name.as_deref(), sig_bytes, InsecureOptions::default())
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

fn report(app: &App, id: &str, verified: &Verified) {
    match verified {
        Verified::Signed { key, scope, .. } => {
            println!("{id}: signed by {key} (trusted for {scope})")
        }
        Verified::UnsignedAllowed => {
            eprintln!("warning: INSECURE: {app} is not signed");
            println!("{id}: UNSIGNED")
        }
    }
}

fn parse_app(s: &str) -> anyhow::Result<App> {
    let (os, arch) = App::host_os_arch();
    Ok(App::parse(s)?.with_default_os_arch(os, arch))
}

fn client(insecure_http: bool, cache: Option<PathBuf>) -> anyhow::Result<HttpClient> {
    if insecure_http {
        eprintln!("warning: INSECURE: plain HTTP is allowed");
    }
    Ok(HttpClient::new(HttpOptions {
        allow_http: insecure_http,
        cache_dir: cache,
        ..HttpOptions::default()
    })?)
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let pw = line.trim_end_matches(['\n', '\r']).to_string();
    if pw.is_empty() {
        bail!("empty password on stdin");
    }
    Ok(pw)
}

/// `name` + `suffix` (appended, not an extension swap: `x.aci` → `x.aci.minisig`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Creates `path` only if it does not exist, so a key is never overwritten.
fn write_new(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
