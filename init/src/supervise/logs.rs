//! An app's output: split into whole lines, each printed on the console with the app's prefix
//! in one write(2), and appended to a size-capped log file on the data partition that rotates
//! to `.log.1` at the cap.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Longer lines are cut into pieces of this size (an app printing without newlines must not
/// make init buffer without bound).
pub const MAX_LINE: usize = 4096;
/// A log file rotates when the next line would take it past this size.
pub const LOG_CAP: u64 = 1 << 20;

/// Splits a byte stream into lines.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds `bytes`; returns the complete lines (without the newline).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                out.push(std::mem::take(&mut self.partial));
            } else {
                self.partial.push(b);
                if self.partial.len() == MAX_LINE {
                    out.push(std::mem::take(&mut self.partial));
                }
            }
        }
        out
    }

    /// At end of stream: what is left, as a last line.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.partial.is_empty()).then(|| std::mem::take(&mut self.partial))
    }
}

/// `<dir>/<app>.log`, rotated to `<app>.log.1`.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    cap: u64,
}

impl LogFile {
    pub fn new(dir: &Path, app: &str, cap: u64) -> LogFile {
        LogFile {
            path: dir.join(format!("{app}.log")),
            file: None,
            size: 0,
            cap,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line (a newline is added), rotating first if it would pass the cap.
    pub fn append(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.size = file.metadata()?.len();
            self.file = Some(file);
        }
        if self.size > 0 && self.size + len > self.cap {
            self.file = None;
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, &old)?;
            self.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
            self.size = 0;
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        if let Some(f) = self.file.as_mut() {
            f.write_all(&buf)?;
        }
        self.size += len;
        Ok(())
    }

    /// Closes the file (before /var is unmounted); a later line opens it again.
    pub fn close(&mut self) {
        self.file = None;
    }
}

/// `<prefix>: <line>\n` on the console in one write.
pub fn console_line(prefix: &str, line: &[u8]) {
    let mut buf = Vec::with_capacity(prefix.len() + line.len() + 3);
    buf.extend_from_slice(prefix.as_bytes());
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(line);
    buf.push(b'\n');
    let _ = io::stderr().lock().write_all(&buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitter_keeps_partial_lines_until_their_newline() {
        let mut s = LineSplitter::default();
        assert!(s.feed(b"hel").is_empty());
        assert_eq!(s.feed(b"lo\nwor"), vec![b"hello".to_vec()]);
        assert_eq!(s.feed(b"ld\n\n"), vec![b"world".to_vec(), Vec::new()]);
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn splitter_cuts_long_lines_and_flushes_the_rest_at_eof() {
        let mut s = LineSplitter::default();
        let long = vec![b'x'; MAX_LINE + 10];
        let lines = s.feed(&long);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(s.finish(), Some(vec![b'x'; 10]));
    }

    #[test]
    fn log_rotates_whole_lines_at_the_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = LogFile::new(&dir.path().join("pod"), "app", 20);
        log.append(b"0123456789").expect("append");
        log.append(b"abcdefghij").expect("append");
        let rotated = std::fs::read(dir.path().join("pod/app.log.1")).expect("rotated");
        assert_eq!(rotated, b"0123456789\n");
        assert_eq!(
            std::fs::read(dir.path().join("pod/app.log")).expect("log"),
            b"abcdefghij\n"
        );
        log.close();
        log.append(b"k").expect("append after close");
        assert_eq!(
            std::fs::read(dir.path().join("pod/app.log")).expect("log"),
            b"abcdefghij\nk\n"
        );
    }
}
