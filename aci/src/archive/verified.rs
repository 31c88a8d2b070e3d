//! Verified unpacking of a local archive in one read: each chunk of the file goes to the
//! signature check (a BLAKE2b prehash, say) and, through a pipe, to a worker thread that
//! decompresses, hashes (Image ID) and safely unpacks it into a hidden sibling of the target.
//! The tree is renamed into place only when both the archive and the signature pass.

use std::io::{self, Read, Seek};
use std::path::Path;

use super::pipe::{self, CHUNK};
use super::unpack::{Stage, UnpackOptions, unpack_in_place};
use super::{AciSummary, ArchiveError};

/// A signature check fed an archive's bytes as they are read, decided once the archive's
/// manifest is known (the trust store picks keys by the image's name).
pub trait StreamVerifier {
    /// What an accepted check reports (the key, say).
    type Verified;
    type Error: std::error::Error + Send + Sync + 'static;

    /// Every byte of the archive file, in order, exactly once.
    fn update(&mut self, data: &[u8]);

    /// Decides, once the archive passed every check and before anything is placed. `data`
    /// reads the file again from its start, for signatures over the bytes themselves rather
    /// than their hash; a check that streamed what it needs leaves it unread.
    fn finish(
        self,
        summary: &AciSummary,
        data: &mut dyn Read,
    ) -> Result<Self::Verified, Self::Error>;

    /// The archive was refused. Returns the signature's verdict when one can be reached without
    /// the manifest, to be reported in the archive error's place (so a tampered image is called
    /// tampered rather than corrupt); `None` reports the archive error.
    fn refused(self, data: &mut dyn Read) -> Option<Self::Error>;
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

/// Reads the ACI in `r` (positioned at its start) once, checking it with `verifier` while it is
/// unpacked into a hidden sibling of `target`; the tree is renamed onto `target` only when the
/// archive passed and `verifier` accepted it. `target` must be missing or an empty directory
/// with a parent: on any failure it is left as it was.
///
/// Reading and the signature's hash run on this thread, decompression, the Image ID and
/// writing on a worker, so the two halves overlap. The whole file is read even when the
/// archive is refused early, so the signature can still be judged (see
/// [`StreamVerifier::refused`]). `r` is read a second time only when `verifier` asks for the
/// bytes again (a legacy signature over the bytes themselves).
pub fn unpack_verified<R: Read + Seek, V: StreamVerifier>(
    mut r: R,
    target: &Path,
    opts: &UnpackOptions,
    mut verifier: V,
) -> Result<VerifiedUnpack<V::Verified>, VerifiedUnpackError<V::Error>> {
    let archive_err = VerifiedUnpackError::Archive;
    let stage = Stage::new(target).map_err(archive_err)?.ok_or_else(|| {
        archive_err(ArchiveError::TargetNotEmpty {
            path: target.to_path_buf(),
        })
    })?;
    let stage_path = stage.path.clone();
    let worker_opts = opts.clone();
    let mut worker = pipe::spawn("aci-unpack", move |pr| {
        let res = unpack_in_place(&mut *pr, &stage_path, &worker_opts);
        // Keeps the reader unblocked after a refusal: the rest still goes to the verifier.
        pr.drain();
        res
    })
    .map_err(|source| {
        archive_err(ArchiveError::OpenTarget {
            path: target.to_path_buf(),
            source,
        })
    })?;

    let mut buf = vec![0u8; CHUNK];
    let mut worker_open = true;
    let read_result = loop {
        match r.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                let data = &buf[..n];
                verifier.update(data);
                // A failed send means the worker stopped; its own error says why.
                if worker_open && io::Write::write_all(&mut worker, data).is_err() {
                    worker_open = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    if let Err(e) = read_result {
        // Joined before the stage is dropped, so nothing writes into it while it is removed.
        let _ = worker.abort();
        return Err(archive_err(ArchiveError::ReadStream(e)));
    }
    let archive = match worker.finish() {
        Ok(res) => res,
        Err(source) => Err(ArchiveError::ReadStream(source)),
    };
    let mut again = FromStart {
        r: &mut r,
        rewound: false,
    };
    match archive {
        Ok(summary) => {
            let verified = verifier
                .finish(&summary, &mut again)
                .map_err(VerifiedUnpackError::Verify)?;
            stage.place(target).map_err(archive_err)?;
            Ok(VerifiedUnpack { summary, verified })
        }
        Err(refused) => Err(match verifier.refused(&mut again) {
            Some(e) => VerifiedUnpackError::Verify(e),
            None => archive_err(refused),
        }),
    }
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
