//! `builder key generate` and `builder aci sign|verify|trust`: signing keys, signatures over
//! App Container images, and the trust directory that says which keys count for which names.

use std::fs;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use aci::sign::{KdfLimits, PublicKey, SecretKey, Signature, default_trusted_comment};
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
    let sig = match fs::read(&sig_path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", sig_path.display())),
    };
    // The signature is checked over the raw bytes first; only a verified file is parsed, to
    // learn (or confirm) the name its manifest claims, which the key must be trusted for.
    let store = TrustStore::new(trust);
    let what = aci.display().to_string();
    let pending = match &name {
        Some(n) => store.prepare(n, sig.as_deref(), InsecureOptions::default())?,
        None => store.prepare_unnamed(&what, sig.as_deref(), InsecureOptions::default())?,
    };
    let accepted = pending.finish_reader(open()?)?;
    let summary = aci::archive::read_aci(open()?, &aci::archive::ReadOptions::default())
        .with_context(|| format!("reading the manifest of {what} (its signature verified)"))?;
    let name = summary.manifest.name;
    let verified = accepted
        .admit(&name)
        .with_context(|| format!("verifying {what}"))?;
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

pub(crate) fn read_text(path: &Path) -> anyhow::Result<String> {
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
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes an unencrypted key pair to new files (the secret one mode 0600); never overwrites.
pub fn write_new_key_pair(key: &SecretKey, secret: &Path, public: &Path) -> anyhow::Result<()> {
    write_new(secret, key.to_minisign_unencrypted().as_bytes(), 0o600)?;
    write_new(public, key.public_key().to_minisign().as_bytes(), 0o644)
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
