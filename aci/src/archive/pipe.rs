//! A bounded in-process pipe to a worker thread: the writer side batches bytes into large
//! chunks and the worker reads them, so downloading and hashing on one core overlap with
//! decompressing and unpacking on the other. Chunk buffers travel back to be reused.

use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Bytes per chunk: large enough that channel hand-offs cost nothing next to the work per byte.
pub(crate) const CHUNK: usize = 256 * 1024;
/// Chunks in flight: enough to ride out bursts, small enough to bound memory (2 MiB).
const DEPTH: usize = 8;

/// The writing end. Dropping it without [`PipeWriter::finish`] ends the worker's input early
/// (it sees end of stream) and detaches the thread.
pub(crate) struct PipeWriter<T> {
    tx: Option<SyncSender<Vec<u8>>>,
    free: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    handle: Option<JoinHandle<T>>,
}

/// The reading end, handed to the worker.
pub(crate) struct PipeReader {
    rx: Receiver<Vec<u8>>,
    free: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

/// Starts `work` on a new thread reading from the pipe; its result comes back from `finish`.
pub(crate) fn spawn<T: Send + 'static>(
    name: &str,
    work: impl FnOnce(&mut PipeReader) -> T + Send + 'static,
) -> io::Result<PipeWriter<T>> {
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(DEPTH);
    let (free_tx, free_rx) = mpsc::sync_channel::<Vec<u8>>(DEPTH + 2);
    let handle = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let mut reader = PipeReader {
                rx,
                free: free_tx,
                cur: Vec::new(),
                pos: 0,
            };
            work(&mut reader)
        })?;
    Ok(PipeWriter {
        tx: Some(tx),
        free: free_rx,
        buf: Vec::with_capacity(CHUNK),
        handle: Some(handle),
    })
}

fn stopped() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the unpacking thread stopped reading (the archive was refused)",
    )
}

impl<T> PipeWriter<T> {
    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = match self.free.try_recv() {
            Ok(mut b) => {
                b.clear();
                b
            }
            Err(_) => Vec::with_capacity(CHUNK),
        };
        let full = std::mem::replace(&mut self.buf, next);
        match &self.tx {
            Some(tx) => tx.send(full).map_err(|_| stopped()),
            None => Err(stopped()),
        }
    }

    /// Sends what is buffered, closes the pipe and waits for the worker's result.
    pub(crate) fn finish(mut self) -> io::Result<T> {
        // A worker that already stopped has its own answer; a failed send does not hide it.
        let _ = self.send_buf();
        self.join()
    }

    /// Closes the pipe without sending what is buffered and waits for the worker.
    pub(crate) fn abort(mut self) -> io::Result<T> {
        self.buf.clear();
        self.join()
    }

    fn join(&mut self) -> io::Result<T> {
        self.tx = None;
        match self.handle.take() {
            Some(h) => h
                .join()
                .map_err(|_| io::Error::other("the unpacking thread panicked")),
            None => Err(io::Error::other("the unpacking thread was already joined")),
        }
    }
}

impl<T> Write for PipeWriter<T> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl PipeReader {
    /// Reads and drops the rest of the input, so the writer never blocks on a full pipe after
    /// the worker has what it needs (trailing bytes after a compressed stream).
    pub(crate) fn drain(&mut self) {
        self.cur.clear();
        self.pos = 0;
        while let Ok(b) = self.rx.recv() {
            let _ = self.free.try_send(b);
        }
    }
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(next) => {
                    let done = std::mem::replace(&mut self.cur, next);
                    self.pos = 0;
                    // The writer may have gone; then the buffer is simply freed.
                    let _ = self.free.try_send(done);
                }
                // Writer closed: end of stream.
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_reads_every_byte_in_order() {
        let data: Vec<u8> = (0..(3 * CHUNK + 123)).map(|i| (i % 251) as u8).collect();
        let mut w = spawn("test", |r| {
            let mut got = Vec::new();
            r.read_to_end(&mut got).map(|_| got)
        })
        .unwrap();
        for piece in data.chunks(10_000) {
            w.write_all(piece).unwrap();
        }
        assert_eq!(w.finish().unwrap().unwrap(), data);
    }

    #[test]
    fn writer_fails_once_the_worker_stops() {
        let mut w = spawn("test", |_r| 7).unwrap();
        let big = vec![0u8; CHUNK * (DEPTH + 4)];
        assert!(w.write_all(&big).is_err());
        assert_eq!(w.finish().unwrap(), 7);
    }
}
