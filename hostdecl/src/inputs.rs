//! The files a declaration names, resolved against its directory and checked to exist, each
//! kept with where the declaration named it so later stages (the kernel check, the ACI pin)
//! can report their errors at the right line.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::{Arch, DeclError, FileProblem, HostDecl, Located};

/// A file the declaration names, resolved and checked.
pub type FileRef = Located<PathBuf>;

/// An embedded image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInput {
    pub path: FileRef,
    /// The pinned image ID, if any.
    pub id: Option<Located<String>>,
    /// The detached signature: the declared one, or `path.minisig` if it exists, else none.
    pub signature: Option<FileRef>,
}

/// A trust key for init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustInput {
    pub key: FileRef,
    /// The image-name prefix it is trusted for; `None`: every image.
    pub prefix: Option<Located<String>>,
}

/// An extra payload file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInput {
    pub source: FileRef,
    /// Relative path inside the payload (checked: no `..`, not absolute).
    pub dest: String,
    pub mode: u32,
}

/// Every input file of a declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    /// The manifest's signing key: `--key` if given, else `[signing] key`, else none.
    pub signing_key: Option<FileRef>,
    /// The kernel source: a URL as written, or a path resolved against the directory.
    pub kernel_source: Option<Located<String>>,
    pub prebuilt_x86_64: Option<FileRef>,
    pub prebuilt_aarch64: Option<FileRef>,
    pub images: Vec<ImageInput>,
    pub trust: Vec<TrustInput>,
    pub files: Vec<FileInput>,
    /// `[fetch] ca`: extra CA certificate files, in declared order.
    pub ca: Vec<FileRef>,
}

impl Inputs {
    /// The prebuilt kernel declared for `arch`.
    pub fn prebuilt(&self, arch: Arch) -> Option<&FileRef> {
        match arch {
            Arch::X86_64 => self.prebuilt_x86_64.as_ref(),
            Arch::Aarch64 => self.prebuilt_aarch64.as_ref(),
        }
    }
}

/// Checks that `path` is a regular file; `expected` names it for a directory ("a kernel image").
pub fn check_file(path: &Path, expected: &'static str) -> Result<(), FileProblem> {
    match fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(m) if m.is_dir() => Err(FileProblem::Directory { expected }),
        Ok(_) => Err(FileProblem::NotAFile),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(FileProblem::Missing),
        Err(e) => Err(FileProblem::Unreadable(e)),
    }
}

impl HostDecl {
    /// Resolves every file the declaration names against `dir` (the declaration's directory;
    /// absolute paths stay as written) and checks each is a regular file. `key_override` is
    /// `builder build --key`: it replaces `[signing] key`, which is then not looked at.
    pub fn resolve_paths(
        &self,
        dir: &Path,
        key_override: Option<&Path>,
    ) -> Result<Inputs, DeclError> {
        let signing_key = match (key_override, &self.signing.key) {
            (Some(k), _) => Some(self.named_file(
                "--key",
                k.to_path_buf(),
                "signing key",
                "a secret key file",
                true,
            )?),
            (None, Some(k)) => {
                Some(self.file(dir, "signing.key", k, "signing key", "a key file")?)
            }
            (None, None) => None,
        };
        let kernel_source = match &self.kernel.source {
            None => None,
            Some(s) if s.starts_with("http://") || s.starts_with("https://") => Some(Located {
                value: s.clone(),
                site: self.site("kernel.source"),
            }),
            Some(s) => {
                let f = self.file(dir, "kernel.source", s, "kernel source", "a tarball")?;
                Some(Located {
                    value: f.value.display().to_string(),
                    site: f.site,
                })
            }
        };
        let prebuilt = |field: &str, p: &Option<String>| {
            p.as_ref()
                .map(|p| self.file(dir, field, p, "prebuilt kernel", "a kernel image"))
                .transpose()
        };
        let prebuilt_x86_64 = prebuilt("kernel.prebuilt.x86_64", &self.kernel.prebuilt.x86_64)?;
        let prebuilt_aarch64 = prebuilt("kernel.prebuilt.aarch64", &self.kernel.prebuilt.aarch64)?;

        let mut images = Vec::new();
        for (i, img) in self.images.iter().enumerate() {
            let path = self.file(
                dir,
                &format!("image[{i}].path"),
                &img.path,
                "image",
                "an .aci file",
            )?;
            let signature = match &img.signature {
                Some(s) => Some(self.file(
                    dir,
                    &format!("image[{i}].signature"),
                    s,
                    "signature",
                    "a .minisig file",
                )?),
                None => {
                    let mut default = path.value.clone().into_os_string();
                    default.push(".minisig");
                    let default = PathBuf::from(default);
                    default.is_file().then(|| Located {
                        value: default,
                        site: self.site(&format!("image[{i}].path")),
                    })
                }
            };
            images.push(ImageInput {
                id: img.id.as_ref().map(|id| Located {
                    value: id.clone(),
                    site: self.site(&format!("image[{i}].id")),
                }),
                path,
                signature,
            });
        }

        let mut trust = Vec::new();
        for (i, t) in self.trust.iter().enumerate() {
            trust.push(TrustInput {
                key: self.file(
                    dir,
                    &format!("trust[{i}].key"),
                    &t.key,
                    "trust key",
                    "a public key file",
                )?,
                prefix: t.prefix.as_ref().map(|p| Located {
                    value: p.clone(),
                    site: self.site(&format!("trust[{i}].prefix")),
                }),
            });
        }

        let mut files = Vec::new();
        for (i, f) in self.files.iter().enumerate() {
            files.push(FileInput {
                source: self.file(
                    dir,
                    &format!("file[{i}].source"),
                    &f.source,
                    "file",
                    "a file",
                )?,
                dest: f.dest.clone(),
                mode: f.mode(),
            });
        }

        let mut ca = Vec::new();
        for (i, c) in self.fetch.ca.iter().enumerate() {
            ca.push(self.file(
                dir,
                &format!("fetch.ca[{i}]"),
                c,
                "CA certificate file",
                "a PEM file",
            )?);
        }

        Ok(Inputs {
            signing_key,
            kernel_source,
            prebuilt_x86_64,
            prebuilt_aarch64,
            images,
            trust,
            files,
            ca,
        })
    }

    /// Checks every file the declaration names exists and is a file (see [`Self::resolve_paths`]).
    pub fn check_files(&self, dir: &Path) -> Result<(), DeclError> {
        self.resolve_paths(dir, None).map(|_| ())
    }

    fn file(
        &self,
        dir: &Path,
        field: &str,
        written: &str,
        what: &'static str,
        expected: &'static str,
    ) -> Result<FileRef, DeclError> {
        self.named_file(field, dir.join(written), what, expected, false)
    }

    fn named_file(
        &self,
        field: &str,
        path: PathBuf,
        what: &'static str,
        expected: &'static str,
        from_command_line: bool,
    ) -> Result<FileRef, DeclError> {
        let site = if from_command_line {
            // Not from the declaration: no line and column to name.
            crate::Site {
                origin: field.into(),
                line: 0,
                column: 0,
                field: String::new(),
            }
        } else {
            self.site(field)
        };
        match check_file(&path, expected) {
            Ok(()) => Ok(Located { value: path, site }),
            Err(problem) => Err(DeclError::File {
                at: site,
                what,
                path,
                problem,
            }),
        }
    }
}
