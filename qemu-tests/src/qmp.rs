//! A minimal QMP client: connects to QEMU's monitor socket, negotiates capabilities, and runs
//! commands one at a time, setting aside the asynchronous events QEMU interleaves.

use std::io::{self, BufRead, BufReader, Write};
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
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    events: Vec<Value>,
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
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|source| QmpError::Io {
                action: "set a read timeout on",
                source,
            })?;
        let writer = stream.try_clone().map_err(|source| QmpError::Io {
            action: "clone",
            source,
        })?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
            events: Vec::new(),
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
        self.writer
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
                self.events.push(message);
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

    fn read_message(&mut self, context: &str) -> Result<Value, QmpError> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|source| QmpError::Io {
                    action: "read from",
                    source,
                })?;
            if n == 0 {
                return Err(QmpError::Closed {
                    context: context.to_string(),
                });
            }
            if !line.trim().is_empty() {
                break;
            }
        }
        serde_json::from_str(line.trim()).map_err(|source| QmpError::Json {
            line: line.trim().to_string(),
            source,
        })
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
    fn connect_gives_up_after_its_timeout() {
        let path =
            std::env::temp_dir().join(format!("qmp-unit-{}-absent.sock", std::process::id()));
        let err = Qmp::connect(&path, Duration::from_millis(100))
            .err()
            .unwrap();
        assert!(matches!(err, QmpError::Connect { .. }), "{err}");
    }
}
