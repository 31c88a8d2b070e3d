//! Running kbuild: the environment for a reproducible build, and a live progress line while a
//! multi-minute `make` runs (the full output goes to a log file).

use std::fs;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use hostdecl::Arch;

/// How to invoke kbuild for one architecture.
#[derive(Debug, Clone)]
pub struct Kbuild {
    pub arch: Arch,
    pub src: PathBuf,
    pub out: PathBuf,
    pub jobs: usize,
}

impl Kbuild {
    pub fn kernel_arch(&self) -> &'static str {
        match self.arch {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// The make target and the file it produces, relative to the output directory. On aarch64
    /// the gzipped `Image` (40% of the size; QEMU's -kernel and U-Boot's booti unpack it).
    /// The make targets, and the images they produce (relative to the build directory): the
    /// one the UKI carries (an EFI application) and the one QEMU's `-kernel` boots. They are
    /// the same bzImage on x86_64; on arm64 the UKI needs the EFI zboot `vmlinuz.efi`, which
    /// QEMU's loader cannot start, so the direct tier boots `Image.gz` of the same build.
    pub fn image_targets(&self) -> (&'static [&'static str], &'static str, &'static str) {
        match self.arch {
            Arch::X86_64 => (
                &["bzImage"],
                "arch/x86/boot/bzImage",
                "arch/x86/boot/bzImage",
            ),
            Arch::Aarch64 => (
                &["vmlinuz.efi", "Image.gz"],
                "arch/arm64/boot/vmlinuz.efi",
                "arch/arm64/boot/Image.gz",
            ),
        }
    }

    pub fn command(&self, targets: &[&str]) -> Command {
        let mut c = Command::new("make");
        c.arg("-C")
            .arg(&self.src)
            .arg(format!("O={}", self.out.display()))
            .arg(format!("ARCH={}", self.kernel_arch()))
            .arg(format!("-j{}", self.jobs));
        if self.arch == Arch::Aarch64 && Arch::current() != Some(Arch::Aarch64) {
            c.arg("CROSS_COMPILE=aarch64-linux-gnu-");
        }
        c.args(targets);
        // Reproducible builds: no timestamps, user or host names leak into the image.
        c.env("KBUILD_BUILD_TIMESTAMP", "1970-01-01")
            .env("KBUILD_BUILD_USER", "hostos")
            .env("KBUILD_BUILD_HOST", "hostos")
            .env("KBUILD_BUILD_VERSION", "1")
            .env("LC_ALL", "C");
        c
    }

    /// Runs a quick make step (config targets), failing with its output.
    pub fn run_quiet(&self, targets: &[&str]) -> Result<()> {
        let out = self
            .command(targets)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running make {}", targets.join(" ")))?;
        if !out.status.success() {
            bail!(
                "make {} failed ({}):\n{}{}",
                targets.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Runs the long build with a progress line on stderr and the full output in `log`.
    /// `history` keeps the step count and duration of the last full build of this arch, so
    /// the progress line can show a total and an estimate of the time left.
    pub fn run_with_progress(&self, targets: &[&str], log: &Path, history: &Path) -> Result<()> {
        let mut child = self
            .command(targets)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running make {}", targets.join(" ")))?;
        let (tx, rx) = mpsc::channel::<String>();
        let mut readers = Vec::new();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }));
        }
        drop(tx);
        let mut logf =
            fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut progress = Progress::new(self.arch, History::read(history));
        loop {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(line) => {
                    let _ = writeln!(logf, "{line}");
                    progress.line(&line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => progress.tick(),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        for r in readers {
            let _ = r.join();
        }
        let status = child.wait().context("waiting for make")?;
        progress.finish();
        if status.success() {
            progress.history().write(history);
        }
        if !status.success() {
            let text = fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "kernel build failed ({status}); last lines of {}:\n{}",
                log.display(),
                tail.join("\n")
            );
        }
        Ok(())
    }
}

/// A one-line live status: on a terminal it is redrawn in place, otherwise a line is printed
/// every 20 seconds so CI logs show the build is alive without flooding.
struct Progress {
    arch: Arch,
    /// The last build of this arch, if any: its step count and duration.
    expected: Option<History>,
    start: Instant,
    steps: usize,
    last: String,
    tty: bool,
    last_print: Instant,
}

impl Progress {
    fn new(arch: Arch, expected: Option<History>) -> Progress {
        let now = Instant::now();
        Progress {
            arch,
            expected,
            start: now,
            steps: 0,
            last: String::new(),
            tty: std::io::stderr().is_terminal(),
            last_print: now,
        }
    }

    fn line(&mut self, line: &str) {
        // kbuild's short-form lines look like "  CC      kernel/fork.o".
        let t = line.trim_start();
        if line.starts_with("  ") && t.split_whitespace().count() >= 2 {
            self.steps += 1;
            self.last = t.split_whitespace().collect::<Vec<_>>().join(" ");
        }
        self.tick();
    }

    fn tick(&mut self) {
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(20)
        };
        if self.last_print.elapsed() < every {
            return;
        }
        self.last_print = Instant::now();
        let secs = self.start.elapsed().as_secs();
        let mut msg = format!(
            "kernel {}: {}m{:02}s, {}, {}",
            self.arch,
            secs / 60,
            secs % 60,
            self.estimate(),
            self.last
        );
        if self.tty {
            msg.truncate(100);
            eprint!("\r\x1b[K{msg}");
        } else {
            eprintln!("{msg}");
        }
    }

    /// "N/TOTAL steps, about M min left" from the last build; without one, the typical
    /// duration of a first build on two cores.
    fn estimate(&self) -> String {
        match self.expected {
            Some(h) if h.steps > 0 => {
                let done = self.steps.min(h.steps);
                let left = h.secs * (h.steps - done) as u64 / h.steps as u64;
                format!(
                    "{}/{} steps, about {} min left",
                    self.steps,
                    h.steps,
                    left.div_ceil(60)
                )
            }
            _ => format!(
                "{} steps (a first build takes about {} min on 2 cores)",
                self.steps,
                // benches/kernel-build.py on this project's 2-core machine (README).
                match self.arch {
                    Arch::X86_64 => 10,
                    Arch::Aarch64 => 11,
                }
            ),
        }
    }

    fn history(&self) -> History {
        History {
            steps: self.steps,
            secs: self.start.elapsed().as_secs(),
        }
    }

    fn finish(&mut self) {
        if self.tty {
            eprint!("\r\x1b[K");
        }
        let secs = self.start.elapsed().as_secs();
        eprintln!(
            "kernel {}: built in {}m{:02}s ({} steps)",
            self.arch,
            secs / 60,
            secs % 60,
            self.steps
        );
    }
}

/// Step count and duration of a build, kept between builds for the progress estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct History {
    steps: usize,
    secs: u64,
}

impl History {
    fn read(path: &Path) -> Option<History> {
        let text = fs::read_to_string(path).ok()?;
        let mut words = text.split_whitespace();
        let steps = words.next()?.parse().ok()?;
        let secs = words.next()?.parse().ok()?;
        Some(History { steps, secs })
    }

    /// Best effort: a lost estimate only makes the next progress line less informative.
    fn write(self, path: &Path) {
        // Only full builds are worth remembering; an incremental rebuild of a few files would
        // make the next full build's estimate absurd.
        if self.steps >= 100 {
            let _ = fs::write(path, format!("{} {}\n", self.steps, self.secs));
        }
    }
}

#[cfg(test)]
mod progress_tests {
    use super::*;

    #[test]
    fn estimate_shows_the_total_and_time_left_from_the_last_build() {
        let mut p = Progress::new(
            Arch::X86_64,
            Some(History {
                steps: 2000,
                secs: 600,
            }),
        );
        p.steps = 1000;
        assert_eq!(p.estimate(), "1000/2000 steps, about 5 min left");
        let first = Progress::new(Arch::Aarch64, None);
        assert!(
            first.estimate().contains("about 11 min"),
            "{}",
            first.estimate()
        );
    }

    #[test]
    fn history_round_trips_and_ignores_small_rebuilds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h");
        History { steps: 50, secs: 9 }.write(&path);
        assert_eq!(History::read(&path), None);
        let h = History {
            steps: 2100,
            secs: 430,
        };
        h.write(&path);
        assert_eq!(History::read(&path), Some(h));
    }
}
