//! The captured serial console: a reader thread appends QEMU's output to a shared buffer (and
//! the log file), and waiters search it for markers under a condition variable.

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Instant;

/// Lines of console kept in error messages: enough to see how far boot got.
pub(crate) const TAIL_LINES: usize = 40;

#[derive(Default)]
pub(crate) struct Console {
    inner: Mutex<Inner>,
    changed: Condvar,
}

#[derive(Default)]
struct Inner {
    bytes: Vec<u8>,
    /// (end offset of a chunk, when it arrived), in order: when a marker showed up.
    arrivals: Vec<(usize, Instant)>,
    /// QEMU closed its end: nothing more will arrive.
    closed: bool,
}

/// What a wait for markers ended with.
pub(crate) enum Found {
    /// `markers[index]` occupies `start..end` of the console.
    At {
        index: usize,
        start: usize,
        end: usize,
    },
    TimedOut,
    Closed,
}

impl Console {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A reader thread that panicked mid-append leaves valid bytes; keep using them.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn append(&self, chunk: &[u8]) {
        let mut inner = self.lock();
        inner.bytes.extend_from_slice(chunk);
        let end = inner.bytes.len();
        inner.arrivals.push((end, Instant::now()));
        drop(inner);
        self.changed.notify_all();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
        self.lock().bytes.clone()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Waits until one of `markers` appears at or after `from`, returning the one that starts
    /// first.
    pub(crate) fn wait_for(&self, markers: &[&[u8]], from: usize, deadline: Instant) -> Found {
        let longest = markers.iter().map(|m| m.len()).max().unwrap_or(0);
        let mut inner = self.lock();
        // Only bytes that arrived since the last look (plus a marker's length of overlap) need
        // searching again, so a long boot is not rescanned on every chunk.
        let mut scan_from = from;
        loop {
            if let Some(found) = find_first(&inner.bytes, markers, scan_from) {
                return found;
            }
            scan_from = inner
                .bytes
                .len()
                .saturating_sub(longest.saturating_sub(1))
                .max(from);
            if inner.closed {
                return Found::Closed;
            }
            let now = Instant::now();
            if now >= deadline {
                return Found::TimedOut;
            }
            inner = self
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits until the line containing offset `end` is complete (a `\n` at or after `end`),
    /// QEMU closes the console, or `deadline` passes; returns that line, cleaned for reading.
    pub(crate) fn line_at(&self, start: usize, end: usize, deadline: Instant) -> String {
        let mut inner = self.lock();
        while !inner.closed && !inner.bytes[end..].contains(&b'\n') {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            inner = self
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let bytes = &inner.bytes;
        let line_start = bytes[..start]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line_end = bytes[end..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| end + i);
        clean(&bytes[line_start..line_end])
    }

    /// When the chunk holding byte offset `end - 1` arrived.
    pub(crate) fn arrival_of(&self, end: usize) -> Option<Instant> {
        let inner = self.lock();
        let i = inner
            .arrivals
            .partition_point(|&(chunk_end, _)| chunk_end < end);
        inner.arrivals.get(i).map(|&(_, at)| at)
    }

    /// The first occurrence of `marker` anywhere in the console, as `start..end`.
    pub(crate) fn find(&self, marker: &[u8]) -> Option<(usize, usize)> {
        match find_first(&self.lock().bytes, &[marker], 0)? {
            Found::At { start, end, .. } => Some((start, end)),
            _ => None,
        }
    }

    /// The last `lines` lines of the console, without terminal escapes.
    pub(crate) fn tail(&self, lines: usize) -> String {
        tail(&self.lock().bytes, lines)
    }
}

fn find_first(bytes: &[u8], markers: &[&[u8]], from: usize) -> Option<Found> {
    let hay = bytes.get(from..)?;
    markers
        .iter()
        .enumerate()
        .filter(|(_, m)| !m.is_empty())
        .filter_map(|(index, m)| {
            let pos = hay.windows(m.len()).position(|w| w == *m)?;
            Some((pos, index, m.len()))
        })
        .min()
        .map(|(pos, index, len)| Found::At {
            index,
            start: from + pos,
            end: from + pos + len,
        })
}

/// The last `lines` lines of `bytes`, cleaned, each indented so they stand out in an error.
pub(crate) fn tail(bytes: &[u8], lines: usize) -> String {
    let text = clean(bytes);
    let all: Vec<&str> = text.lines().collect();
    let skip = all.len().saturating_sub(lines);
    let mut out = String::new();
    for line in &all[skip..] {
        out.push_str("    | ");
        out.push_str(line);
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str("    (the console printed nothing)\n");
    }
    out
}

/// Console bytes as text a person can read: lossy UTF-8, without ANSI escape sequences
/// (firmware paints its screen with them) or carriage returns.
pub(crate) fn clean(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ parameters... final byte in @..~; other escapes are two characters.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Copies `source` into `console` and `log` (and our stderr when `echo`) until EOF, then marks
/// the console closed so waiters stop waiting.
pub(crate) fn spawn_reader(
    name: String,
    mut source: impl Read + Send + 'static,
    console: Arc<Console>,
    mut log: Option<File>,
    echo: bool,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new().name(name).spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let chunk = &buf[..n];
                    console.append(chunk);
                    // A full disk must not stop the test, which only needs the buffer.
                    if let Some(file) = log.as_mut()
                        && file.write_all(chunk).is_err()
                    {
                        log = None;
                    }
                    if echo {
                        // Straight to fd 2, past libtest's capture: echo is for watching live.
                        let _ = io::stderr().write_all(chunk);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        console.close();
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn clean_strips_terminal_escapes_and_carriage_returns() {
        let raw = b"\x1b[2J\x1b[01;01HBdsDxe: loading\r\n\x1b[1m\x1b[33mShell> \x1b[0m";
        assert_eq!(clean(raw), "BdsDxe: loading\nShell> ");
    }

    #[test]
    fn wait_for_finds_the_earliest_marker_after_the_cursor() {
        let console = Console::default();
        console.append(b"one two\nthree two\n");
        let deadline = Instant::now() + Duration::from_millis(10);
        match console.wait_for(&[b"three", b"two"], 4, deadline) {
            Found::At { index, start, end } => {
                assert_eq!((index, start, end), (1, 4, 7));
                assert_eq!(console.line_at(start, end, deadline), "one two");
            }
            _ => panic!("marker not found"),
        }
        match console.wait_for(&[b"two"], 7, deadline) {
            Found::At { start, .. } => assert_eq!(start, 14),
            _ => panic!("second occurrence not found"),
        }
    }

    #[test]
    fn wait_for_sees_a_marker_split_across_chunks() {
        let console = Arc::new(Console::default());
        console.append(b"boot: rea");
        let writer = Arc::clone(&console);
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            writer.append(b"dy\n");
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        assert!(matches!(
            console.wait_for(&[b"ready"], 0, deadline),
            Found::At { start: 6, .. }
        ));
        t.join().unwrap();
    }

    #[test]
    fn wait_for_reports_closed_and_timed_out() {
        let console = Console::default();
        console.append(b"abc");
        let soon = Instant::now() + Duration::from_millis(10);
        assert!(matches!(
            console.wait_for(&[b"x"], 0, soon),
            Found::TimedOut
        ));
        console.close();
        let later = Instant::now() + Duration::from_secs(5);
        assert!(matches!(console.wait_for(&[b"x"], 0, later), Found::Closed));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let text: String = (0..100).map(|i| format!("line {i}\r\n")).collect();
        let t = tail(text.as_bytes(), 3);
        assert_eq!(t, "    | line 97\n    | line 98\n    | line 99\n");
    }
}
