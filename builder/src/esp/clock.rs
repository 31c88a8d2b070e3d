//! The one clock the ESP's timestamps come from: a `SOURCE_DATE_EPOCH`-style instant, encoded as
//! the DOS date and time FAT stores, handed to `fatfs` through its `TimeProvider` seam.

use std::cell::Cell;

use fatfs::{Date, DateTime, Time, TimeProvider};

/// 1980-01-01T00:00:00Z, the earliest instant a FAT timestamp can hold.
const DOS_MIN_EPOCH: i64 = 315_532_800;
/// 2107-12-31T23:59:58Z, the latest (the year is 7 bits from 1980, seconds are halved).
const DOS_MAX_EPOCH: i64 = 4_354_819_198;

/// The DOS date and time of `epoch` (seconds since 1970, UTC), clamped to what FAT can hold and
/// rounded down to an even second, so that creation time (10 ms resolution) and modification time
/// (2 s resolution) carry the same instant.
pub(super) fn dos_date_time(epoch: i64) -> DateTime {
    let t = epoch.clamp(DOS_MIN_EPOCH, DOS_MAX_EPOCH);
    let t = t - t.rem_euclid(2);
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    // The clamp keeps every field in range of u16: year 1980..=2107, the rest are small.
    let field = |v: i64| u16::try_from(v).unwrap_or(0);
    DateTime {
        date: Date {
            year: field(year),
            month: field(month),
            day: field(day),
        },
        time: Time {
            hour: field(secs / 3600),
            min: field(secs / 60 % 60),
            sec: field(secs % 60),
            millis: 0,
        },
    }
}

/// Gregorian (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

thread_local! {
    /// The instant `EPOCH_CLOCK` reports on this thread while an [`EpochGuard`] is alive.
    static NOW: Cell<Option<DateTime>> = const { Cell::new(None) };
}

/// `fatfs` wants a `&'static dyn TimeProvider`, but the instant is a per-build value: the static
/// clock reads it from a thread-local that [`EpochGuard`] sets for the duration of one write.
#[derive(Debug)]
pub(super) struct EpochClock;

pub(super) static EPOCH_CLOCK: EpochClock = EpochClock;

impl TimeProvider for EpochClock {
    fn get_current_date(&self) -> Date {
        self.get_current_date_time().date
    }

    fn get_current_date_time(&self) -> DateTime {
        // Outside a guard (never, in this module's use) it reports the DOS epoch rather than
        // anything derived from the wall clock.
        NOW.with(Cell::get)
            .unwrap_or_else(|| dos_date_time(DOS_MIN_EPOCH))
    }
}

/// Makes [`EPOCH_CLOCK`] report `now` on this thread until dropped (then restores the previous
/// value, so nested writes stay correct).
pub(super) struct EpochGuard {
    previous: Option<DateTime>,
}

impl EpochGuard {
    pub(super) fn set(now: DateTime) -> Self {
        let previous = NOW.with(|c| c.replace(Some(now)));
        EpochGuard { previous }
    }
}

impl Drop for EpochGuard {
    fn drop(&mut self) {
        NOW.with(|c| c.set(self.previous));
    }
}

/// The 16-bit DOS encodings of a date and a time, as stored in a directory entry.
pub(super) fn encode(dt: DateTime) -> (u16, u16) {
    let d = dt.date;
    let t = dt.time;
    let date = (d.year.saturating_sub(1980) << 9) | (d.month << 5) | d.day;
    let time = (t.hour << 11) | (t.min << 5) | (t.sec / 2);
    (date, time)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ymdhms(dt: DateTime) -> (u16, u16, u16, u16, u16, u16) {
        (
            dt.date.year,
            dt.date.month,
            dt.date.day,
            dt.time.hour,
            dt.time.min,
            dt.time.sec,
        )
    }

    #[test]
    fn epoch_converts_to_utc_calendar_time() {
        // 2024-02-29T13:37:42Z: a leap day, an even second.
        assert_eq!(
            ymdhms(dos_date_time(1_709_213_862)),
            (2024, 2, 29, 13, 37, 42)
        );
        // 2000-03-01T00:00:00Z, the day after a century leap day.
        assert_eq!(ymdhms(dos_date_time(951_868_800)), (2000, 3, 1, 0, 0, 0));
    }

    #[test]
    fn odd_second_rounds_down_to_fat_resolution() {
        assert_eq!(ymdhms(dos_date_time(1_709_213_863)).5, 42);
    }

    #[test]
    fn epoch_before_1980_clamps_to_dos_epoch() {
        assert_eq!(ymdhms(dos_date_time(0)), (1980, 1, 1, 0, 0, 0));
        assert_eq!(ymdhms(dos_date_time(-5)), (1980, 1, 1, 0, 0, 0));
    }

    #[test]
    fn epoch_after_2107_clamps_to_last_dos_instant() {
        assert_eq!(ymdhms(dos_date_time(i64::MAX)), (2107, 12, 31, 23, 59, 58));
    }

    #[test]
    fn dos_encoding_packs_fields() {
        let (date, time) = encode(dos_date_time(1_709_213_862));
        assert_eq!(date, (44 << 9) | (2 << 5) | 29);
        assert_eq!(time, (13 << 11) | (37 << 5) | 21);
    }

    #[test]
    fn guard_sets_and_restores_the_clock() {
        let a = dos_date_time(1_000_000_000);
        let b = dos_date_time(1_700_000_000);
        let _outer = EpochGuard::set(a);
        {
            let _inner = EpochGuard::set(b);
            assert_eq!(EPOCH_CLOCK.get_current_date_time(), b);
        }
        assert_eq!(EPOCH_CLOCK.get_current_date_time(), a);
    }
}
