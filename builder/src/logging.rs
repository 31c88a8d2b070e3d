//! The builder's logger: `log` records (ours and `aci`'s) on stderr, at the level `-q`/`-v`
//! chose, with the `warning:`/`error:` prefixes the rest of our output uses.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// The level for the global flags: warnings by default, `-q` errors only, `-v` info, `-vv` debug
/// and `-vvv` everything.
pub fn level(verbose: u8, quiet: bool) -> LevelFilter {
    match (quiet, verbose) {
        (true, _) => LevelFilter::Error,
        (false, 0) => LevelFilter::Warn,
        (false, 1) => LevelFilter::Info,
        (false, 2) => LevelFilter::Debug,
        (false, _) => LevelFilter::Trace,
    }
}

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // One locked write per record, so lines from threads do not interleave; a closed
        // stderr is nothing we can report anywhere.
        let mut err = std::io::stderr().lock();
        let _ = match record.level() {
            Level::Error => writeln!(err, "error: {}", record.args()),
            Level::Warn => writeln!(err, "warning: {}", record.args()),
            Level::Info => writeln!(err, "info: {}", record.args()),
            // Below info the source matters: it may be a dependency (ureq, rustls).
            Level::Debug => writeln!(err, "debug: {}: {}", record.target(), record.args()),
            Level::Trace => writeln!(err, "trace: {}: {}", record.target(), record.args()),
        };
    }

    fn flush(&self) {}
}

static LOGGER: Stderr = Stderr;

/// Installs the logger; the first call wins (a second has nothing left to do).
pub fn init(level: LevelFilter) {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_choose_the_level() {
        assert_eq!(level(0, false), LevelFilter::Warn);
        assert_eq!(level(1, false), LevelFilter::Info);
        assert_eq!(level(2, false), LevelFilter::Debug);
        assert_eq!(level(5, false), LevelFilter::Trace);
        assert_eq!(level(0, true), LevelFilter::Error);
    }
}
