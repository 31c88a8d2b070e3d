//! Verified unpacking of a local archive, signature first: the file's bytes are read once for
//! the signature check (a BLAKE2b prehash, say) and nothing parses them until the signature
//! verifies; only then is the file read again, decompressed, hashed (Image ID) and safely
//! unpacked into a hidden sibling of the target, and the manifest's name admitted by the
//! check. The tree is renamed into place only when both pass.
//!
//! The cost of this order is a second read of the file (from the page cache, for a file that
//! was just read) and no overlap between hashing and unpacking; what it buys is that a forged
//! or replayed signature is refused before a decompressor, tar parser or JSON decoder sees a
//! byte of the image.

use std::io::{self, BufReader, Read, Seek};
use std::path::Path;

use super::unpack::{Stage, UnpackOptions, unpack_in_place};
use super::{AciSummary, ArchiveError};

/// Read size for the signature pass (and the buffer for the unpacking pass).
const CHUNK: usize = 256 << 10;

/// A signature check fed an archive's raw bytes, decided before the archive is parsed, whose
/// verdict is then applied to the name the archive's manifest claims.
pub trait StreamVerifier {
    /// The verdict on the bytes alone: the signature verified (the key, its scopes).
    type Accepted;
    /// What an accepted and admitted image reports (the key and the scope that trusts it).
    type Verified;
    type Error: std::error::Error + Send + Sync + 'static;

    /// Every byte of the archive file, in order, exactly once.
    fn update(&mut self, data: &[u8]);

    /// Decides on the bytes, before anything parses them. `data` reads the file again from
    /// its start, for signatures over the bytes themselves rather than their hash; a check
    /// that streamed what it needs leaves it unread.
    fn verify(self, data: &mut dyn Read) -> Result<Self::Accepted, Self::Error>;

    /// Once the archive is parsed: whether the accepted signature covers the image its
    /// manifest describes (a key trusted for one prefix admits no name outside it).
    fn admit(accepted: Self::Accepted, summary: &AciSummary)
    -> Result<Self::Verified, Self::Error>;
}

/// Why a verified unpack left nothing at its target.
#[derive(Debug, thiserror::Error)]
pub enum VerifiedUnpackError<E: std::error::Error + Send + Sync + 'static> {
    /// The archive could not be read, was refused, or could not be placed.
    #[error(transparent)]
    Archive(ArchiveError),
    /// The signature check refused the image.
    #[error(transparent)]
    Verify(E),
}

/// What a verified unpack placed at its target.
#[derive(Debug, Clone)]
pub struct VerifiedUnpack<T> {
    pub summary: AciSummary,
    pub verified: T,
}

/// Checks the ACI in `r` (positioned at its start) with `verifier`, and only once the
/// signature verified unpacks it into a hidden sibling of `target`, renamed onto `target` when
/// the archive passed and `verifier` admitted its manifest. `target` must be missing or an
/// empty directory with a parent: on any failure it is left as it was.
pub fn unpack_verified<R: Read + Seek, V: StreamVerifier>(
    mut r: R,
    target: &Path,
    opts: &UnpackOptions,
    mut verifier: V,
) -> Result<VerifiedUnpack<V::Verified>, VerifiedUnpackError<V::Error>> {
    let archive_err = VerifiedUnpackError::Archive;
    // Checked before the file is read, so a busy target is refused at once; the stage is an
    // empty directory, removed again on any refusal.
    let stage = Stage::new(target).map_err(archive_err)?.ok_or_else(|| {
        archive_err(ArchiveError::TargetNotEmpty {
            path: target.to_path_buf(),
        })
    })?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => verifier.update(buf.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(archive_err(ArchiveError::ReadStream(e))),
        }
    }
    let accepted = verifier
        .verify(&mut FromStart {
            r: &mut r,
            rewound: false,
        })
        .map_err(VerifiedUnpackError::Verify)?;
    r.rewind()
        .map_err(|e| archive_err(ArchiveError::ReadStream(e)))?;
    let summary = unpack_in_place(BufReader::with_capacity(CHUNK, &mut r), &stage.path, opts)
        .map_err(archive_err)?;
    let verified = V::admit(accepted, &summary).map_err(VerifiedUnpackError::Verify)?;
    stage.place(target).map_err(archive_err)?;
    Ok(VerifiedUnpack { summary, verified })
}

/// `r` read again from its start, rewound on first use so an unread one costs nothing.
struct FromStart<'a, R> {
    r: &'a mut R,
    rewound: bool,
}

impl<R: Read + Seek> Read for FromStart<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if !self.rewound {
            self.r.rewind()?;
            self.rewound = true;
        }
        self.r.read(out)
    }
}
