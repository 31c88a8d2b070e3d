//! The wall clock's floor. HTTPS certificates are checked against the system clock, and a
//! machine without an RTC (or with a dead RTC battery) starts at 1970, where every certificate
//! is "not yet valid". The kernel sets the clock from the RTC before init runs
//! (`CONFIG_RTC_HCTOSYS`); after that, init raises a clock that is still before [`FLOOR`] to
//! it, as systemd does with its build-time epoch. A clock at the floor is wrong by however old
//! this init is, but it is past every certificate's start (certificates last months), and
//! minisign checks never depend on the clock. NTP is not done.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::time::TimeSpec;
use nix::time::{ClockId, clock_settime};

use crate::console;

/// 2026-12-01T00:00:00Z: no machine booting this init is earlier than this. Raise it with
/// each release.
pub const FLOOR: Duration = Duration::from_secs(1_796_083_200);

/// Where the clock should go: `Some(FLOOR)` when `now` is before it.
pub fn raise(now: Duration) -> Option<Duration> {
    (now < FLOOR).then_some(FLOOR)
}

/// Raises the system clock to [`FLOOR`] if it is earlier, and says so.
pub fn apply_floor() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let Some(to) = raise(now) else {
        return;
    };
    let spec = TimeSpec::from_duration(to);
    match clock_settime(ClockId::CLOCK_REALTIME, spec) {
        Ok(()) => console::warn(&format!(
            "the clock read {} s after 1970 (no RTC?); raised to this init's floor, {} s (2026-12-01), so HTTPS certificates can be checked",
            now.as_secs(),
            to.as_secs()
        )),
        Err(e) => console::warn(&format!(
            "the clock reads {} s after 1970 and cannot be raised ({e}): HTTPS fetches will fail until it is set",
            now.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_clock_before_the_floor_is_raised_to_it() {
        assert_eq!(raise(Duration::ZERO), Some(FLOOR));
        assert_eq!(raise(FLOOR - Duration::from_secs(1)), Some(FLOOR));
        assert_eq!(raise(FLOOR), None);
        assert_eq!(raise(FLOOR + Duration::from_secs(86_400)), None);
    }

    #[test]
    fn the_floor_is_2026_12_01_utc() {
        // 56 years of 365 days, 14 leap days (1972..=2024), then Jan..Nov 2026 (334 days).
        let days = 56 * 365 + 14 + 334;
        assert_eq!(FLOOR.as_secs(), days * 86_400);
    }
}
