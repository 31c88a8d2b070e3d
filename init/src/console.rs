//! Console output: every line init prints, and the marker contract tests rely on.
//!
//! # Console contract
//!
//! The QEMU boot tests and operators grep the serial console for these exact lines. Keep them
//! stable; a change here is a change to a public interface. `<...>` is a placeholder.
//!
//! ```text
//! init: hostos-init <version> (<arch>) started <secs, 3 decimals> s after kernel start
//! init: hostname set to <hostname>
//! init: disk <disk node> holds the payload (<partition node>) and data (<partition node>)
//! init: payload verified (<first 12 hex digits of the root hash>) and mounted read-only at /payload
//! init: data partition grown from <MiB> MiB to <MiB> MiB
//! init: data mounted at /var (<MiB> MiB)
//! init: first boot: created /var/.hostos-first-boot
//! init: not the first boot: /var/.hostos-first-boot exists
//! init: watching <path> (<device name>) for the power button
//! init: ready
//! init: shutdown requested by <reason>
//! init: sending SIGTERM to all processes
//! init: sending SIGKILL to all processes
//! init: syncing filesystems
//! init: unmounting filesystems
//! init: powering off
//! init: rebooting
//! init: fatal: <error chain joined with ": ">
//! init: warning: <message>
//! init: net <iface>: link up
//! init: net <iface>: link down
//! init: net <iface>: lease <addr>/<prefix>, gateway <ip>|no gateway, dns <ip ...>|none, <secs> s (<ms> ms after init start)
//! init: net <iface>: lease renewed <addr>/<prefix>, gateway <ip>|no gateway, dns <ip ...>|none, <secs> s
//! init: net <iface>: lease <addr>/<prefix> lost (the server said no|expired|released)
//! init: net <iface>: static <addr>/<prefix>, gateway <ip>|no gateway
//! init: net: <warning>
//! init: pod <pod>: preparing
//! init: pod <pod>/<app>: waiting for image <name>,<labels> (fetching it)
//! init: pod <pod>/<app>: image <id12> found in the store
//! init: pod <pod>/<app>: image <id12> fetched and verified (<bytes> bytes in <ms> ms, init peak resident memory <KiB> KiB)
//! init: pod <pod>/<app>: image <name> refused (<reason>[, key <key id>]): <error chain>
//! init: pod <pod>/<app>: fetching <name> failed (attempt <n>, <kind>); retrying in <ms> ms: <error chain>
//! init: pod <pod>: image <id12> (<name>) verified with key <key id> from <file>
//! init: pod <pod>: image <id12> (<name>) found in the store
//! init: pod <pod>: refused: <error chain naming the image, the key and the reason>
//! init: pod <pod>/<app>: isolator <name> ignored: <why>
//! init: pod <pod>/<app>: started pid <pid> <ms> ms after init start (<ms.t> ms after prepared)
//! init: pod <pod>/<app>: failed to start: <error chain>
//! init: pod <pod>/<app>: exited with status <n>
//! init: pod <pod>/<app>: killed by signal <SIGNAME>
//! init: pod <pod>/<app>: OOM-killed (memory limit <bytes> bytes)
//! init: pod <pod>/<app>: restarting in <ms> ms (restart <n>)
//! init: pod <pod>/<app>: stopped
//! init: pod all: all started: <n> apps running, init resident memory <KiB> KiB
//! <pod>/<app>: <a line the app wrote on stdout or stderr>
//! ```
//!
//! Pod lines: `<id12>` is `sha512-` and 12 hex digits; `<pid>` is in init's PID namespace;
//! "after prepared" runs from the app's plan being ready (image verified and rendered, root
//! mounted) to its `execve`. `started` is printed for the main process only; `exited`,
//! `killed`, `OOM-killed` (the kernel's OOM killer fired in the app's cgroup, printed after
//! `killed`) end a run; `restarting` follows per the app's restart policy; `stopped` is the
//! app's end (its policy says no more runs, or the host shuts down). A refused pod starts none
//! of its apps; other pods are not affected. Event handlers' output carries the app's prefix.
//!
//! `<reason>` is one of `SIGTERM`, `SIGINT (ctrl-alt-del)`, `SIGPWR` or
//! `power button (<device name>)`. `init: ready` comes after the early mounts, the hostname, the
//! disk and the first power-button scan.
//!
//! The disk lines appear only when the kernel command line carries `hostos.*` boot parameters
//! (a boot from the disk image; see `storage`), in the order listed. `grown` appears on the
//! first boot on a disk larger than the image; the size in `data mounted` is the ext4
//! filesystem's, after any growth (MiB are 2^20 bytes, rounded down). A payload that fails
//! verification ends the boot with `init: fatal: payload <partition node>: dm-verity refused
//! block <n> (<dm node>): the payload does not match the root hash <hex> on the kernel command
//! line: <errno>`. `init: sending SIGKILL to all processes` appears only when some
//! process outlived the grace period. A fatal error prints `init: fatal: ...` and then
//! `init: powering off` or `init: rebooting`, per the declaration's `init.on_fatal`.
//!
//! Each line reaches the console in a single `write(2)` so that lines from init and from
//! processes sharing the console never interleave mid-line.

use std::fmt;
use std::io::{self, Write};
use std::os::fd::{IntoRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};

/// The kernel console (the serial port, given `console=ttyS0` / `console=ttyAMA0`).
pub const CONSOLE: &str = "/dev/console";

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot make fd {fd} a copy of {path}")]
    Dup {
        fd: RawFd,
        path: PathBuf,
        #[source]
        source: Errno,
    },
}

/// Points any of fds 0, 1 and 2 that are closed at /dev/console; returns whether it had to.
///
/// The kernel opens /dev/console for init only if the initramfs has that node. Without it,
/// stdio starts closed and the next files init opens would become fds 0-2, so log lines would
/// land in them. Must run after devtmpfs is mounted.
pub fn attach_stdio() -> Result<bool, ConsoleError> {
    let missing: Vec<RawFd> = (0..=2)
        .filter(|&fd| fcntl(fd, FcntlArg::F_GETFD) == Err(Errno::EBADF))
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        // A console that becomes init's controlling terminal would deliver ^C as SIGINT.
        .custom_flags(nix::libc::O_NOCTTY)
        .open(CONSOLE)
        .map_err(|source| ConsoleError::Open {
            path: CONSOLE.into(),
            source,
        })?;
    // Owned from here on by fds 0-2 (or closed below), never by a `File`.
    let raw = file.into_raw_fd();
    let dup_error = |fd, source| ConsoleError::Dup {
        fd,
        path: CONSOLE.into(),
        source,
    };
    for &fd in &missing {
        if fd == raw {
            // open(2) reused the lowest free slot; std set close-on-exec, which stdio must
            // not have.
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).map_err(|e| dup_error(fd, e))?;
        } else {
            // dup2 clears close-on-exec on the copy.
            nix::unistd::dup2(raw, fd).map_err(|e| dup_error(fd, e))?;
        }
    }
    if raw > 2 {
        // Only the copies are needed; a failed close leaks one fd, not worth failing the boot.
        let _ = nix::unistd::close(raw);
    }
    Ok(true)
}

/// Why an orderly shutdown started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShutdownReason {
    Sigterm,
    /// The kernel turns ctrl-alt-del into SIGINT for PID1 once CAD is disabled.
    Sigint,
    Sigpwr,
    /// The device name as the kernel reports it (EVIOCGNAME).
    PowerButton(String),
}

impl fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sigterm => f.write_str("SIGTERM"),
            Self::Sigint => f.write_str("SIGINT (ctrl-alt-del)"),
            Self::Sigpwr => f.write_str("SIGPWR"),
            Self::PowerButton(name) => write!(f, "power button ({name})"),
        }
    }
}

/// One console line. The `Display` impl is the contract listed in the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    Started {
        version: &'a str,
        arch: &'a str,
        /// Milliseconds since the kernel started (CLOCK_BOOTTIME).
        boottime_ms: u64,
    },
    HostnameSet(&'a str),
    DiskFound {
        disk: &'a str,
        payload: &'a str,
        data: &'a str,
    },
    PayloadMounted {
        /// The root hash's first hex digits.
        root_hash: &'a str,
    },
    DataGrown {
        from_mib: u64,
        to_mib: u64,
    },
    DataMounted {
        mib: u64,
    },
    FirstBoot {
        first: bool,
        marker: &'a str,
    },
    Watching {
        path: &'a str,
        name: &'a str,
    },
    Ready,
    ShutdownRequested(&'a ShutdownReason),
    SendingSigterm,
    SendingSigkill,
    Syncing,
    Unmounting,
    PoweringOff,
    Rebooting,
    /// The whole error chain, already joined (see `fatal::chain`).
    Fatal(&'a str),
    Warning(&'a str),
    /// A network event, already one line (`net eth0: lease ...`, see `net::NetEvent`).
    Net(&'a str),
    /// Something about a pod or one of its apps: `who` is `<pod>` or `<pod>/<app>`.
    Pod {
        who: &'a str,
        event: PodEvent<'a>,
    },
}

/// What happened to a pod or app (the `init: pod ...` lines of the contract).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodEvent<'a> {
    Preparing,
    /// An `images` report: `image <id12> (<name>) verified with key ... from ...` or
    /// `... found in the store`.
    Image(&'a str),
    /// The pod does not start; the error chain names the image, the key and the reason.
    Refused(&'a str),
    /// The app's image is not in the store: init fetches it (`<name>,<labels>`) and starts
    /// the pod once every image of it is there.
    WaitingForImage(&'a str),
    /// A fetch at boot: found, fetched, refused or retrying (see `fetch::boot::say`).
    Fetch(&'a str),
    IsolatorIgnored {
        name: &'a str,
        why: &'a str,
    },
    Started {
        pid: i32,
        /// Since init started.
        init_ms: u128,
        /// From the plan being ready to the exec, tenths of a millisecond.
        prepared_tenths: u128,
    },
    FailedToStart(&'a str),
    Exited(i32),
    Killed(&'a str),
    OomKilled {
        limit: Option<u64>,
    },
    Restarting {
        ms: u128,
        restart: u32,
    },
    Stopped,
    /// Every app due to start has started: how many run and init's resident memory.
    AllStarted {
        running: usize,
        rss_kib: u64,
    },
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("init: ")?;
        match self {
            Self::Started {
                version,
                arch,
                boottime_ms,
            } => write!(
                f,
                "hostos-init {version} ({arch}) started {}.{:03} s after kernel start",
                boottime_ms / 1000,
                boottime_ms % 1000
            ),
            Self::HostnameSet(name) => write!(f, "hostname set to {name}"),
            Self::DiskFound {
                disk,
                payload,
                data,
            } => write!(
                f,
                "disk {disk} holds the payload ({payload}) and data ({data})"
            ),
            Self::PayloadMounted { root_hash } => write!(
                f,
                "payload verified ({root_hash}) and mounted read-only at {}",
                hostimg::PAYLOAD_MOUNT
            ),
            Self::DataGrown { from_mib, to_mib } => {
                write!(
                    f,
                    "data partition grown from {from_mib} MiB to {to_mib} MiB"
                )
            }
            Self::DataMounted { mib } => {
                write!(f, "data mounted at {} ({mib} MiB)", hostimg::DATA_MOUNT)
            }
            Self::FirstBoot {
                first: true,
                marker,
            } => write!(f, "first boot: created {marker}"),
            Self::FirstBoot {
                first: false,
                marker,
            } => write!(f, "not the first boot: {marker} exists"),
            Self::Watching { path, name } => {
                write!(f, "watching {path} ({name}) for the power button")
            }
            Self::Ready => f.write_str("ready"),
            Self::ShutdownRequested(reason) => write!(f, "shutdown requested by {reason}"),
            Self::SendingSigterm => f.write_str("sending SIGTERM to all processes"),
            Self::SendingSigkill => f.write_str("sending SIGKILL to all processes"),
            Self::Syncing => f.write_str("syncing filesystems"),
            Self::Unmounting => f.write_str("unmounting filesystems"),
            Self::PoweringOff => f.write_str("powering off"),
            Self::Rebooting => f.write_str("rebooting"),
            Self::Fatal(chain) => write!(f, "fatal: {}", one_line(chain)),
            Self::Warning(message) => write!(f, "warning: {}", one_line(message)),
            Self::Net(line) => f.write_str(&one_line(line)),
            Self::Pod { who, event } => {
                write!(f, "pod {who}: ")?;
                match event {
                    PodEvent::Preparing => f.write_str("preparing"),
                    PodEvent::Image(report) => f.write_str(report),
                    PodEvent::Refused(chain) => write!(f, "refused: {}", one_line(chain)),
                    PodEvent::Fetch(text) => f.write_str(&one_line(text)),
                    PodEvent::WaitingForImage(image) => {
                        write!(f, "waiting for image {image} (fetching it)")
                    }
                    PodEvent::IsolatorIgnored { name, why } => {
                        write!(f, "isolator {name} ignored: {why}")
                    }
                    PodEvent::Started {
                        pid,
                        init_ms,
                        prepared_tenths,
                    } => write!(
                        f,
                        "started pid {pid} {init_ms} ms after init start ({}.{} ms after prepared)",
                        prepared_tenths / 10,
                        prepared_tenths % 10
                    ),
                    PodEvent::FailedToStart(chain) => {
                        write!(f, "failed to start: {}", one_line(chain))
                    }
                    PodEvent::Exited(code) => write!(f, "exited with status {code}"),
                    PodEvent::Killed(signal) => write!(f, "killed by signal {signal}"),
                    PodEvent::OomKilled { limit: Some(l) } => {
                        write!(f, "OOM-killed (memory limit {l} bytes)")
                    }
                    PodEvent::OomKilled { limit: None } => f.write_str("OOM-killed"),
                    PodEvent::Restarting { ms, restart } => {
                        write!(f, "restarting in {ms} ms (restart {restart})")
                    }
                    PodEvent::Stopped => f.write_str("stopped"),
                    PodEvent::AllStarted { running, rss_kib } => write!(
                        f,
                        "all started: {running} apps running, init resident memory {rss_kib} KiB"
                    ),
                }
            }
        }
    }
}

/// Folds a multi-line message (TOML errors draw a caret under the offending text) into one
/// line, so each marker stays a single greppable line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Prints one line on stderr, which `stdio::attach_console` points at /dev/console.
///
/// Errors are dropped on purpose: there is nowhere else to report them, and PID1 must not stop
/// over a console it cannot write to.
pub fn emit(line: &Line<'_>) {
    let text = format!("{line}\n");
    // Stderr is unbuffered, so `write_all` of one buffer is one write(2) unless the console
    // accepts only part of it.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Shorthand for a warning line.
pub fn warn(message: &str) {
    emit(&Line::Warning(message));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn started_marker_has_three_decimals() {
        let line = Line::Started {
            version: "0.1.0",
            arch: "x86_64",
            boottime_ms: 2_045,
        };
        assert_eq!(
            line.to_string(),
            "init: hostos-init 0.1.0 (x86_64) started 2.045 s after kernel start"
        );
        let early = Line::Started {
            version: "0.1.0",
            arch: "aarch64",
            boottime_ms: 7,
        };
        assert_eq!(
            early.to_string(),
            "init: hostos-init 0.1.0 (aarch64) started 0.007 s after kernel start"
        );
    }

    #[test]
    fn fatal_and_warning_stay_on_one_line() {
        let chain = "malformed: host.toml: TOML parse error at line 1, column 8\n  |\n1 | name =\n  |        ^\ninvalid string\n";
        assert_eq!(
            Line::Fatal(chain).to_string(),
            "init: fatal: malformed: host.toml: TOML parse error at line 1, column 8 | 1 | name = | ^ invalid string"
        );
        assert_eq!(Line::Warning("a\nb").to_string(), "init: warning: a b");
    }

    #[test]
    fn shutdown_markers_match_contract() {
        let reasons = [
            (ShutdownReason::Sigterm, "SIGTERM"),
            (ShutdownReason::Sigint, "SIGINT (ctrl-alt-del)"),
            (ShutdownReason::Sigpwr, "SIGPWR"),
            (
                ShutdownReason::PowerButton("Power Button".into()),
                "power button (Power Button)",
            ),
        ];
        for (reason, text) in &reasons {
            assert_eq!(
                Line::ShutdownRequested(reason).to_string(),
                format!("init: shutdown requested by {text}")
            );
        }
        let fixed = [
            (Line::Ready, "init: ready"),
            (
                Line::SendingSigterm,
                "init: sending SIGTERM to all processes",
            ),
            (
                Line::SendingSigkill,
                "init: sending SIGKILL to all processes",
            ),
            (Line::Syncing, "init: syncing filesystems"),
            (Line::Unmounting, "init: unmounting filesystems"),
            (Line::PoweringOff, "init: powering off"),
            (Line::Rebooting, "init: rebooting"),
            (Line::HostnameSet("web-1"), "init: hostname set to web-1"),
            (
                Line::DiskFound {
                    disk: "/dev/vda",
                    payload: "/dev/vda2",
                    data: "/dev/vda5",
                },
                "init: disk /dev/vda holds the payload (/dev/vda2) and data (/dev/vda5)",
            ),
            (
                Line::PayloadMounted {
                    root_hash: "0123456789ab",
                },
                "init: payload verified (0123456789ab) and mounted read-only at /payload",
            ),
            (
                Line::DataGrown {
                    from_mib: 64,
                    to_mib: 164,
                },
                "init: data partition grown from 64 MiB to 164 MiB",
            ),
            (
                Line::DataMounted { mib: 164 },
                "init: data mounted at /var (164 MiB)",
            ),
            (
                Line::FirstBoot {
                    first: true,
                    marker: "/var/.hostos-first-boot",
                },
                "init: first boot: created /var/.hostos-first-boot",
            ),
            (
                Line::FirstBoot {
                    first: false,
                    marker: "/var/.hostos-first-boot",
                },
                "init: not the first boot: /var/.hostos-first-boot exists",
            ),
            (Line::Fatal("a: b"), "init: fatal: a: b"),
            (
                Line::Watching {
                    path: "/dev/input/event0",
                    name: "Power Button",
                },
                "init: watching /dev/input/event0 (Power Button) for the power button",
            ),
        ];
        for (line, text) in &fixed {
            assert_eq!(line.to_string(), *text);
        }
    }
}
