//! A minimal QMP client: connects to QEMU's monitor socket, negotiates capabilities, and runs
//! commands one at a time, setting aside the asynchronous events QEMU interleaves; it can also
//! wait for events, such as the `SHUTDOWN` that says how the guest stopped.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long one command may take to answer; QMP replies are immediate unless QEMU is wedged.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("could not connect to the QMP socket {} within {waited:.1?}", .path.display())]
    Connect {
        path: PathBuf,
        waited: Duration,
        #[source]
        source: io::Error,
    },

    #[error("could not {action} the QMP socket")]
    Io {
        action: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("QEMU closed the QMP connection while {context}")]
    Closed { context: String },

    #[error("QEMU sent a QMP message that is not JSON: {line:?}")]
    Json {
        line: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("QEMU's QMP greeting was unexpected: {0}")]
    Greeting(String),

    #[error("QMP command `{command}` failed: {class}: {desc}")]
    CommandFailed {
        command: String,
        class: String,
        desc: String,
    },

    #[error(
        "QEMU answered `{command}` with a message that is neither a return nor an error: {message}"
    )]
    UnexpectedReply { command: String, message: String },
}

/// A negotiated QMP connection.
pub struct Qmp {
    stream: UnixStream,
    /// Bytes read but not yet split into messages: a read that times out mid-line loses
    /// nothing.
    pending: Vec<u8>,
    events: Vec<Value>,
    /// Indices into `events` not yet handed out by [`Qmp::next_event`].
    unread: VecDeque<usize>,
}

/// How the guest stopped, from QEMU's `SHUTDOWN` event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shutdown {
    /// The guest asked for it (power-off, reset, panic), rather than the host (QMP `quit`,
    /// Ctrl-A X, a signal).
    pub guest: bool,
    /// QEMU's reason: `guest-shutdown`, `guest-reset` (a reboot, which `-no-reboot` turns into
    /// an exit; a kernel with `panic=-1` reboots on panic), `guest-panic`, `host-qmp-quit`,
    /// `host-ui` (Ctrl-A X), `host-signal`...
    pub reason: String,
}

impl Shutdown {
    /// The `SHUTDOWN` event's data, or `None` for any other message.
    pub fn from_event(event: &Value) -> Option<Shutdown> {
        if event.get("event").and_then(Value::as_str) != Some("SHUTDOWN") {
            return None;
        }
        let data = event.get("data");
        Some(Shutdown {
            guest: data
                .and_then(|d| d.get("guest"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            reason: data
                .and_then(|d| d.get("reason"))
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string(),
        })
    }

    /// The guest powered itself off: the only clean end of a run.
    pub fn is_guest_poweroff(&self) -> bool {
        self.guest && self.reason == "guest-shutdown"
    }

    /// The shutdown in words, for a person.
    pub fn describe(&self) -> String {
        match self.reason.as_str() {
            "guest-shutdown" => "the guest powered off".to_string(),
            "guest-reset" => "the guest reset instead of powering off (a reboot, or a kernel \
                              panic with panic=-1; QEMU runs with -no-reboot)"
                .to_string(),
            "guest-panic" => "the guest reported a panic".to_string(),
            "host-ui" => "QEMU was quit from the terminal (Ctrl-A X)".to_string(),
            "host-qmp-quit" => "QEMU was told to quit over QMP".to_string(),
            "host-signal" => "QEMU was stopped by a signal".to_string(),
            other => format!("QEMU shut down ({other})"),
        }
    }
}

impl Qmp {
    /// Connects to `path`, retrying until `timeout` because QEMU creates the socket shortly
    /// after it starts, then reads the greeting and leaves capabilities negotiation mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(stream) => break stream,
                Err(source) if start.elapsed() >= timeout => {
                    return Err(QmpError::Connect {
                        path: path.to_path_buf(),
                        waited: start.elapsed(),
                        source,
                    });
                }
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        };
        let mut qmp = Qmp {
            stream,
            pending: Vec::new(),
            events: Vec::new(),
            unread: VecDeque::new(),
        };
        let greeting = qmp.read_message("waiting for its greeting")?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Greeting(greeting.to_string()));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Runs `command` with optional `arguments` and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string();
        line.push('\n');
        self.stream
            .write_all(line.as_bytes())
            .map_err(|source| QmpError::Io {
                action: "write a command to",
                source,
            })?;
        let context = format!("waiting for the reply to `{command}`");
        loop {
            let message = self.read_message(&context)?;
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                let field = |name: &str| {
                    error
                        .get(name)
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_string()
                };
                return Err(QmpError::CommandFailed {
                    command: command.to_string(),
                    class: field("class"),
                    desc: field("desc"),
                });
            }
            if message.get("event").is_some() {
                self.push_event(message);
                continue;
            }
            return Err(QmpError::UnexpectedReply {
                command: command.to_string(),
                message: message.to_string(),
            });
        }
    }

    /// The run state QEMU reports, e.g. `running`, `paused`, `shutdown`.
    pub fn query_status(&mut self) -> Result<String, QmpError> {
        let reply = self.execute("query-status", None)?;
        match reply.get("status").and_then(Value::as_str) {
            Some(status) => Ok(status.to_string()),
            None => Err(QmpError::UnexpectedReply {
                command: "query-status".to_string(),
                message: reply.to_string(),
            }),
        }
    }

    /// Presses the virtual power button (ACPI on x86_64 and UEFI arm64, gpio-keys on arm64 with
    /// a device tree); the guest decides what to do with it.
    pub fn system_powerdown(&mut self) -> Result<(), QmpError> {
        self.execute("system_powerdown", None).map(drop)
    }

    /// Asks QEMU to exit at once. QEMU may close the socket before its reply arrives, which
    /// counts as success.
    pub fn quit(&mut self) -> Result<(), QmpError> {
        match self.execute("quit", None) {
            Ok(_) | Err(QmpError::Closed { .. }) => Ok(()),
            Err(QmpError::Io { source, .. })
                if source.kind() == io::ErrorKind::ConnectionReset
                    || source.kind() == io::ErrorKind::BrokenPipe =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Asynchronous events (`{"event": "SHUTDOWN", ...}`) received so far, oldest first.
    pub fn events(&self) -> &[Value] {
        &self.events
    }

    /// Whether an event named `name` (e.g. `POWERDOWN`, `SHUTDOWN`) has been received.
    pub fn saw_event(&self, name: &str) -> bool {
        self.events
            .iter()
            .any(|e| e.get("event").and_then(Value::as_str) == Some(name))
    }

    /// The next event not yet returned by this method (including those set aside while
    /// waiting for command replies), waiting up to `timeout` for one; `None` if none came.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Value>, QmpError> {
        if let Some(i) = self.unread.pop_front() {
            return Ok(self.events.get(i).cloned());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let Some(message) = self.try_read_message("waiting for an event", deadline)? else {
                return Ok(None);
            };
            if message.get("event").is_some() {
                self.events.push(message.clone());
                return Ok(Some(message));
            }
            // A reply with no command outstanding (one that timed out earlier): drop it.
        }
    }

    /// Waits up to `timeout` for QEMU's `SHUTDOWN` event (one already received counts).
    pub fn wait_shutdown(&mut self, timeout: Duration) -> Result<Option<Shutdown>, QmpError> {
        if let Some(shutdown) = self.events.iter().find_map(Shutdown::from_event) {
            return Ok(Some(shutdown));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left)? {
                Some(event) => {
                    if let Some(shutdown) = Shutdown::from_event(&event) {
                        return Ok(Some(shutdown));
                    }
                }
                None => return Ok(None),
            }
        }
    }

    fn push_event(&mut self, event: Value) {
        self.unread.push_back(self.events.len());
        self.events.push(event);
    }

    /// The next message, waiting up to [`REPLY_TIMEOUT`].
    fn read_message(&mut self, context: &str) -> Result<Value, QmpError> {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        match self.try_read_message(context, deadline)? {
            Some(message) => Ok(message),
            None => Err(QmpError::Io {
                action: "read from",
                source: io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no reply within {REPLY_TIMEOUT:?} while {context}"),
                ),
            }),
        }
    }

    /// The next message, or `None` if none is complete by `deadline`.
    fn try_read_message(
        &mut self,
        context: &str,
        deadline: Instant,
    ) -> Result<Option<Value>, QmpError> {
        loop {
            if let Some(newline) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=newline).collect();
                let text = String::from_utf8_lossy(&line);
                let text = text.trim();
                if text.is_empty() {
                    continue;
                }
                return serde_json::from_str(text)
                    .map(Some)
                    .map_err(|source| QmpError::Json {
                        line: text.to_string(),
                        source,
                    });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|source| QmpError::Io {
                    action: "set a read timeout on",
                    source,
                })?;
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    return Err(QmpError::Closed {
                        context: context.to_string(),
                    });
                }
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(QmpError::Io {
                        action: "read from",
                        source,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    /// A scripted QEMU: greets, then answers each request with the next canned lines.
    fn fake_qemu(dir: &Path, replies: Vec<&'static str>) -> (PathBuf, thread::JoinHandle<()>) {
        let path = dir.join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            writer
                .write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n")
                .unwrap();
            for reply in replies {
                let mut request = String::new();
                if reader.read_line(&mut request).unwrap() == 0 {
                    return;
                }
                writer.write_all(reply.as_bytes()).unwrap();
            }
        });
        (path, handle)
    }

    #[test]
    fn execute_skips_events_and_returns_the_reply() {
        let dir = std::env::temp_dir().join(format!("qmp-unit-{}-a", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (path, server) = fake_qemu(
            &dir,
            vec![
                "{\"return\": {}}\r\n",
                "{\"event\": \"POWERDOWN\", \"timestamp\": {}}\r\n{\"return\": {\"status\": \"running\", \"running\": true}}\r\n",
                "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command nope has not been found\"}}\r\n",
            ],
        );
        let mut qmp = Qmp::connect(&path, Duration::from_secs(5)).unwrap();
        assert_eq!(qmp.query_status().unwrap(), "running");
        assert!(qmp.saw_event("POWERDOWN"));
        let err = qmp.execute("nope", None).unwrap_err();
        assert!(err.to_string().contains("CommandNotFound"), "{err}");
        server.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_event_split_across_reads_and_timeouts_arrives_whole() {
        let dir = std::env::temp_dir().join(format!("qmp-unit-{}-b", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            writer.write_all(b"{\"QMP\": {}}\r\n").unwrap();
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            writer.write_all(b"{\"return\": {}}\r\n").unwrap();
            writer
                .write_all(b"{\"event\": \"POWERDOWN\"}\r\n{\"event\": \"SHUT")
                .unwrap();
            thread::sleep(Duration::from_millis(300));
            writer
                .write_all(
                    b"DOWN\", \"data\": {\"guest\": true, \"reason\": \"guest-shutdown\"}}\r\n",
                )
                .unwrap();
        });
        let mut qmp = Qmp::connect(&path, Duration::from_secs(5)).unwrap();
        let first = qmp.next_event(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(first["event"], "POWERDOWN");
        // The rest of the line is not there yet: a timeout, and the half line is kept.
        assert_eq!(qmp.next_event(Duration::from_millis(20)).unwrap(), None);
        let shutdown = qmp.wait_shutdown(Duration::from_secs(5)).unwrap().unwrap();
        assert!(shutdown.is_guest_poweroff(), "{shutdown:?}");
        server.join().unwrap();
        assert!(matches!(
            qmp.next_event(Duration::from_secs(5)),
            Err(QmpError::Closed { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shutdown_events_say_who_stopped_the_guest() {
        let event = |guest: bool, reason: &str| json!({"event": "SHUTDOWN", "data": {"guest": guest, "reason": reason}});
        let off = Shutdown::from_event(&event(true, "guest-shutdown")).unwrap();
        assert!(off.is_guest_poweroff());
        let reset = Shutdown::from_event(&event(true, "guest-reset")).unwrap();
        assert!(!reset.is_guest_poweroff());
        assert!(reset.describe().contains("reset"));
        let ui = Shutdown::from_event(&event(false, "host-ui")).unwrap();
        assert!(!ui.is_guest_poweroff() && ui.describe().contains("Ctrl-A X"));
        assert_eq!(Shutdown::from_event(&json!({"event": "POWERDOWN"})), None);
    }

    #[test]
    fn connect_gives_up_after_its_timeout() {
        let path =
            std::env::temp_dir().join(format!("qmp-unit-{}-absent.sock", std::process::id()));
        let err = Qmp::connect(&path, Duration::from_millis(100))
            .err()
            .unwrap();
        assert!(matches!(err, QmpError::Connect { .. }), "{err}");
    }
}
