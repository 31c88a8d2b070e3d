//! Errors in a declaration, each placed at a file, line, column and field, so a user can go
//! straight to what is wrong: `images/hello.toml:7:1: disk.esp_mib: ...`.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::Arch;

/// Where in a declaration something is: the file (or other origin), a 1-based line and column
/// (in characters; 0 when the value came from the command line), and the dotted field path (`kernel.prebuilt.x86_64`, `image[0].id`; empty
/// for errors that belong to no field, such as TOML syntax errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub origin: Arc<str>,
    pub line: usize,
    pub column: usize,
    pub field: String,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        // Line 0: not from a file (a command-line option), so no position to give.
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        Ok(())
    }
}

/// A value together with where the declaration wrote it, for errors found later (a kernel
/// that is not a kernel, an image whose ID does not match its pin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub site: Site,
}

/// What is wrong with a file a declaration names.
#[derive(Debug)]
pub enum FileProblem {
    Missing,
    /// A directory where a file was expected; the text names what was expected.
    Directory {
        expected: &'static str,
    },
    /// Neither a regular file nor a directory (a device, a socket, a dangling symlink...).
    NotAFile,
    Unreadable(io::Error),
    /// A PEM file expected to hold certificates holds none.
    NoCertificates,
    /// A PEM file that does not parse; the text says where.
    BadPem(String),
    /// A file that should hold certificates holds a private key (which must not go into an
    /// image).
    PrivateKey,
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileProblem::Missing => f.write_str("does not exist"),
            FileProblem::Directory { expected } => write!(f, "is a directory, not {expected}"),
            FileProblem::NotAFile => f.write_str("is not a regular file"),
            FileProblem::Unreadable(e) => write!(f, "cannot be read ({e})"),
            FileProblem::NoCertificates => f.write_str(
                "holds no PEM certificate (no -----BEGIN CERTIFICATE----- block)",
            ),
            FileProblem::BadPem(why) => write!(f, "is not valid PEM ({why})"),
            FileProblem::PrivateKey => f.write_str(
                "holds a private key: a CA file for the image holds certificates only, never secrets",
            ),
        }
    }
}

/// A hint after "unknown key".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyHint {
    /// A valid key here that is a small edit away.
    DidYouMean(&'static str),
    /// The key is valid, but in another table (`esp_mib` belongs in `[disk]`).
    BelongsIn(&'static str),
    /// Nothing close: the keys valid here.
    ValidKeys(Vec<&'static str>),
}

impl fmt::Display for KeyHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyHint::DidYouMean(k) => write!(f, "did you mean `{k}`?"),
            KeyHint::BelongsIn(t) => write!(f, "it belongs in the [{t}] table"),
            KeyHint::ValidKeys(keys) if keys.is_empty() => f.write_str("no keys are valid here"),
            KeyHint::ValidKeys(keys) => {
                f.write_str("valid keys here: ")?;
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "`{k}`")?;
                }
                Ok(())
            }
        }
    }
}

/// A declaration that cannot be used. Every variant but `Read` and `Render` starts its message
/// with the [`Site`].
#[derive(Debug, thiserror::Error)]
pub enum DeclError {
    #[error("cannot read the host declaration {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{at}: TOML syntax: {message}")]
    Syntax { at: Site, message: String },
    #[error("{at}: unknown key; {hint}")]
    UnknownKey { at: Site, hint: KeyHint },
    /// A part of the declaration this version knows of but does not build yet (the seam for
    /// what the next versions add, so it is not mistaken for a typo).
    #[error("{at}: {what} come in a later version of the builder; this one cannot build them")]
    NotYet { at: Site, what: &'static str },
    /// The wrong TOML type or a value outside the choices (from deserializing).
    #[error("{at}: {reason}")]
    Type { at: Site, reason: String },
    #[error("{at}: required, but missing")]
    Missing { at: Site },
    #[error("{at}: {reason}")]
    Invalid { at: Site, reason: String },
    #[error("{at}: {what} {} {problem}", path.display())]
    File {
        at: Site,
        /// What the file is meant to be ("prebuilt kernel", "trust key"...).
        what: &'static str,
        path: PathBuf,
        problem: FileProblem,
    },
    #[error(
        "{at}: the declaration does not build {requested} (it lists {}); add \"{requested}\" to `arch` to build it",
        list(declared)
    )]
    ArchNotDeclared {
        at: Site,
        requested: Arch,
        declared: Vec<Arch>,
    },
    #[error("rendering the declaration for init: {0}")]
    Render(String),
}

fn list(arches: &[Arch]) -> String {
    arches
        .iter()
        .map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl DeclError {
    /// Where the error is, when it belongs to a place in the declaration.
    pub fn site(&self) -> Option<&Site> {
        match self {
            DeclError::Read { .. } | DeclError::Render(_) => None,
            DeclError::Syntax { at, .. }
            | DeclError::UnknownKey { at, .. }
            | DeclError::NotYet { at, .. }
            | DeclError::Type { at, .. }
            | DeclError::Missing { at }
            | DeclError::Invalid { at, .. }
            | DeclError::File { at, .. }
            | DeclError::ArchNotDeclared { at, .. } => Some(at),
        }
    }
}
