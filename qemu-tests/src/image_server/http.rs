//! One HTTP/1.1 exchange per connection: read the request head, answer with a
//! `Content-Length` and `Connection: close`, pacing the body when throttled.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// The longest request head accepted; a fetcher's is a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;

/// The request line of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Request {
    pub method: String,
    /// The request target as sent: path and query.
    pub target: String,
}

impl Request {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    /// Whether the query has `ac-discovery=1`.
    pub fn is_discovery(&self) -> bool {
        self.target
            .split_once('?')
            .is_some_and(|(_, q)| q.split('&').any(|kv| kv == "ac-discovery=1"))
    }
}

/// Reads up to the end of the head; `None` if the peer closed first.
pub(super) fn read_request(stream: &mut impl Read) -> io::Result<Option<Request>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too long",
            ));
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let line = text.lines().next().unwrap_or_default();
    let mut words = line.split(' ');
    match (words.next(), words.next(), words.next()) {
        (Some(method), Some(target), Some(version)) if version.starts_with("HTTP/1.") => {
            Ok(Some(Request {
                method: method.to_string(),
                target: target.to_string(),
            }))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an HTTP/1.x request line: {line:?}"),
        )),
    }
}

/// The status line and headers of a response whose body is `len` bytes long.
pub(super) fn head(status: u16, content_type: &str, len: u64) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n\
         Connection: close\r\n\r\n",
        reason(status)
    )
    .into_bytes()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// How the body is written: the rate (bytes per second, `None` for as fast as possible) is
/// asked before every chunk so a test can change it mid-download, and `keep_going` lets a
/// stopped server abandon the body.
pub(super) struct Pacing<'a> {
    pub rate: &'a dyn Fn() -> Option<u64>,
    pub keep_going: &'a dyn Fn() -> bool,
    /// Told the total written after each chunk.
    pub progress: &'a mut dyn FnMut(u64),
}

/// Copies `body` to `out` in chunks, sleeping so the average rate stays at most the current
/// one. Stops early (with an error) when `keep_going` says so.
pub(super) fn send_body(
    out: &mut impl Write,
    body: &mut impl Read,
    pacing: Pacing<'_>,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut sent = 0u64;
    // The pace restarts whenever the rate changes, so a new rate applies from then on.
    let mut pace: Option<(u64, Instant, u64)> = None;
    loop {
        if !(pacing.keep_going)() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the server stopped",
            ));
        }
        let rate = (pacing.rate)();
        let chunk = match rate {
            // About ten chunks a second, so a throttled body moves steadily.
            Some(r) => usize::try_from(r / 10)
                .unwrap_or(usize::MAX)
                .clamp(1, buf.len()),
            None => buf.len(),
        };
        let n = body.read(&mut buf[..chunk])?;
        if n == 0 {
            out.flush()?;
            return Ok(sent);
        }
        if let Some(r) = rate.filter(|&r| r > 0) {
            let (start, base) = match pace {
                Some((was, start, base)) if was == r => (start, base),
                _ => (Instant::now(), sent),
            };
            pace = Some((r, start, base));
            // This chunk goes when the bytes up to its end have taken their time at `r`.
            let due = Duration::from_secs_f64((sent + n as u64 - base) as f64 / r as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        } else {
            pace = None;
        }
        out.write_all(&buf[..n])?;
        out.flush()?;
        sent += n as u64;
        (pacing.progress)(sent);
    }
}
