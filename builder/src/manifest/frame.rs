//! The manifest partition's framing (see the parent module's doc) and the copies of the
//! manifest written beside the image.

use std::path::{Path, PathBuf};

use aci::sign::Signature;
use hostimg::{MANIFEST_FILE, MANIFEST_SIG_FILE};

use super::{ManifestError, io_err};

/// First line of the manifest partition.
pub const MAGIC: &str = "HOSTOS-MANIFEST/1";

/// Why the manifest partition's bytes are not a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the manifest partition is empty (all zeros)")]
    Empty,
    #[error("the manifest partition does not start with {MAGIC:?}")]
    NoMagic,
    #[error("the manifest partition's header is malformed: {0}")]
    Header(String),
    #[error("the manifest partition's signature is not UTF-8 text")]
    SignatureNotText,
}

/// The manifest file and its signature, as written beside the image and into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedManifest {
    pub json: Vec<u8>,
    /// The `.minisig` text; `None` for an unsigned image.
    pub minisig: Option<String>,
}

impl SignedManifest {
    /// The manifest partition's content (without the zero padding).
    pub fn frame(&self) -> Vec<u8> {
        let sig = self.minisig.as_deref().unwrap_or("");
        let mut out = format!(
            "{MAGIC}\n{MANIFEST_FILE} {}\n{MANIFEST_SIG_FILE} {}\n\n",
            self.json.len(),
            sig.len()
        )
        .into_bytes();
        out.extend_from_slice(&self.json);
        out.extend_from_slice(sig.as_bytes());
        out
    }

    /// Reads a manifest partition's content. Only the header and lengths are checked here;
    /// the verifier compares the whole partition with [`SignedManifest::frame`] of the result.
    pub fn unframe(bytes: &[u8]) -> Result<SignedManifest, FrameError> {
        if bytes.iter().all(|&b| b == 0) {
            return Err(FrameError::Empty);
        }
        let head_len = bytes
            .windows(2)
            .take(4096)
            .position(|w| w == b"\n\n")
            .ok_or(FrameError::NoMagic)?;
        let head = std::str::from_utf8(&bytes[..head_len]).map_err(|_| FrameError::NoMagic)?;
        let mut lines = head.split('\n');
        if lines.next() != Some(MAGIC) {
            return Err(FrameError::NoMagic);
        }
        let mut length = |file: &str| -> Result<usize, FrameError> {
            let line = lines
                .next()
                .ok_or_else(|| FrameError::Header(format!("no {file} line")))?;
            let n = line
                .strip_prefix(file)
                .and_then(|l| l.strip_prefix(' '))
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| {
                    FrameError::Header(format!("expected \"{file} <length>\", found {line:?}"))
                })?;
            Ok(n)
        };
        let json_len = length(MANIFEST_FILE)?;
        let sig_len = length(MANIFEST_SIG_FILE)?;
        if let Some(extra) = lines.next() {
            return Err(FrameError::Header(format!("unexpected line {extra:?}")));
        }
        let start = head_len + 2;
        let end = start
            .checked_add(json_len)
            .and_then(|e| e.checked_add(sig_len))
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| FrameError::Header("the lengths run past the partition".into()))?;
        let json = bytes[start..start + json_len].to_vec();
        let minisig = if sig_len == 0 {
            None
        } else {
            let s = std::str::from_utf8(&bytes[start + json_len..end])
                .map_err(|_| FrameError::SignatureNotText)?;
            Some(s.to_string())
        };
        Ok(SignedManifest { json, minisig })
    }

    /// Writes `NAME.manifest.json` and, when signed, `NAME.manifest.json.minisig` beside the
    /// image `NAME.img`; returns their paths.
    pub fn write_beside(&self, image: &Path) -> Result<(PathBuf, Option<PathBuf>), ManifestError> {
        let (json_path, sig_path) = detached_paths(image);
        std::fs::write(&json_path, &self.json).map_err(io_err("writing", &json_path))?;
        let sig = match &self.minisig {
            Some(s) => {
                std::fs::write(&sig_path, s).map_err(io_err("writing", &sig_path))?;
                Some(sig_path)
            }
            None => None,
        };
        Ok((json_path, sig))
    }

    /// The signature, parsed.
    pub fn signature(&self) -> Option<Result<Signature, aci::sign::SignError>> {
        self.minisig.as_deref().map(Signature::from_minisign)
    }
}

/// Where the copies beside `NAME.img` go: `NAME.manifest.json` and its `.minisig`.
pub fn detached_paths(image: &Path) -> (PathBuf, PathBuf) {
    let stem = image
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let json = image.with_file_name(format!("{stem}.{MANIFEST_FILE}"));
    let sig = image.with_file_name(format!("{stem}.{MANIFEST_SIG_FILE}"));
    (json, sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed() -> SignedManifest {
        SignedManifest {
            json: b"{\"format\": 1}\n".to_vec(),
            minisig: Some("untrusted comment: x\nsig\n".into()),
        }
    }

    #[test]
    fn framing_round_trips_with_zero_padding_after_it() {
        let s = signed();
        let mut part = s.frame();
        assert!(
            part.starts_with(b"HOSTOS-MANIFEST/1\nmanifest.json 14\nmanifest.json.minisig 25\n\n")
        );
        part.resize(4096, 0);
        assert_eq!(SignedManifest::unframe(&part).unwrap(), s);
        let unsigned = SignedManifest {
            minisig: None,
            ..signed()
        };
        let mut part = unsigned.frame();
        part.resize(4096, 0);
        assert_eq!(SignedManifest::unframe(&part).unwrap(), unsigned);
    }

    #[test]
    fn unframing_refuses_empty_foreign_and_overlong_partitions() {
        assert_eq!(SignedManifest::unframe(&[0; 512]), Err(FrameError::Empty));
        assert_eq!(
            SignedManifest::unframe(b"hello\n\nworld"),
            Err(FrameError::NoMagic)
        );
        let long = b"HOSTOS-MANIFEST/1\nmanifest.json 99\nmanifest.json.minisig 0\n\n{}";
        assert!(matches!(
            SignedManifest::unframe(long),
            Err(FrameError::Header(m)) if m.contains("run past")
        ));
        let swapped = b"HOSTOS-MANIFEST/1\nmanifest.json.minisig 0\nmanifest.json 2\n\n{}";
        assert!(matches!(
            SignedManifest::unframe(swapped),
            Err(FrameError::Header(_))
        ));
    }

    #[test]
    fn detached_copies_are_named_after_the_image() {
        let (j, s) = detached_paths(Path::new("out/hello-x86_64.img"));
        assert_eq!(j, Path::new("out/hello-x86_64.manifest.json"));
        assert_eq!(s, Path::new("out/hello-x86_64.manifest.json.minisig"));
    }
}
