//! The error type: every way preparing, booting or watching a VM (or a helper command its
//! caller runs) can fail, as sentences that say which VM or command, what was awaited, and what
//! the console showed.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::Arch;
use crate::fdt::FdtError;
use crate::qmp::QmpError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} is missing: install the Debian package `{package}`{}", install_note(.package))]
    MissingTool { what: String, package: &'static str },

    #[error("{what} is not available for {arch} guests")]
    Unsupported { what: &'static str, arch: Arch },

    #[error("could not {action} {}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "could not make the device tree U-Boot boots with: `{command}` failed ({status}); \
         QEMU's stderr:{}", describe_stderr(.stderr)
    )]
    DeviceTreeDump {
        command: String,
        status: String,
        stderr: String,
    },

    #[error("could not add U-Boot's /config node to the device tree {}", .path.display())]
    DeviceTree {
        path: PathBuf,
        #[source]
        source: FdtError,
    },

    #[error(
        "the disk {} is {len} bytes: a copy of it can only grow, not shrink to {size}",
        .path.display()
    )]
    DiskShrink { path: PathBuf, len: u64, size: u64 },

    #[error("{} is a qcow2 image, not a raw one", .path.display())]
    NotRaw { path: PathBuf },

    #[error("could not start {}", .program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "{vm}: {marker} did not appear on the console within {timeout:.1?} \
         ({since_start:.1?} after QEMU started; full log in {}); last console lines:\n{tail}",
        .log.display()
    )]
    Timeout {
        vm: String,
        marker: String,
        timeout: Duration,
        since_start: Duration,
        log: PathBuf,
        tail: String,
    },

    #[error(
        "{vm}: QEMU exited ({}) {since_start:.1?} after it started, before {marker} appeared \
         (full log in {}); QEMU's stderr:{}last console lines:\n{tail}",
        describe_status(.status), .log.display(), describe_stderr(.stderr)
    )]
    QemuExited {
        vm: String,
        marker: String,
        status: Option<ExitStatus>,
        since_start: Duration,
        log: PathBuf,
        stderr: String,
        tail: String,
    },

    #[error(
        "{vm}: QEMU was still running {timeout:.1?} after the harness began waiting for it to exit \
         (full log in {}); last console lines:\n{tail}",
        .log.display()
    )]
    ExitTimeout {
        vm: String,
        timeout: Duration,
        log: PathBuf,
        tail: String,
    },

    #[error("{vm}: the QMP exchange failed")]
    Qmp {
        vm: String,
        #[source]
        source: QmpError,
    },

    #[error("{vm}: could not write to the serial console")]
    ConsoleWrite {
        vm: String,
        #[source]
        source: io::Error,
    },

    /// A helper program the caller ran (the test harness runs `builder`) failed; it passed its
    /// output through.
    #[error("`{command}` failed ({}); its output is above on stderr", describe_status(&Some(*.status)))]
    CommandFailed { command: String, status: ExitStatus },

    #[error("`{command}` succeeded but {problem}")]
    CommandOutput { command: String, problem: String },

    #[error("{what} already failed earlier in this test process: {message}")]
    EarlierFailure { what: String, message: String },
}

impl Error {
    /// The error and all its sources on one line, for errors remembered across tests.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

/// QEMU itself comes from backports on bookworm; plain bookworm's 7.2 conflicts with the
/// installed qemu-utils 10.0 (design.md §4).
fn install_note(package: &str) -> &'static str {
    if package.starts_with("qemu-system") {
        " from bookworm-backports (apt-get install -t bookworm-backports ...)"
    } else {
        " (apt-get install ...)"
    }
}

fn describe_status(status: &Option<ExitStatus>) -> String {
    match status {
        Some(status) => status.to_string(),
        None => "exit status unknown".to_string(),
    }
}

fn describe_stderr(stderr: &str) -> String {
    let mut out = String::from("\n");
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        out.push_str("    ! ");
        out.push_str(line);
        out.push('\n');
    }
    if out.len() == 1 {
        out = " (nothing); ".to_string();
    }
    out
}
