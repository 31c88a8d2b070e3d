//! The one ordering of `version` labels: SemVer 2.0.0 precedence (semver.org section 11),
//! extended to the looser versions appc images carry (`1.0`, `2`, `latest`).
//!
//! A version is a dot-separated numeric core, then an optional `-pre.release`, then optional
//! `+build` metadata (ignored). Cores compare number by number, missing numbers counting as
//! zero (`1.0` equals `1.0.0`); a version with a pre-release ranks below the same core without
//! one (`1.0.0-rc1` < `1.0.0`); pre-release identifiers compare one by one, numeric ones as
//! numbers and below alphanumeric ones, which compare as ASCII text (so, as SemVer says,
//! `rc10` < `rc2`, while `rc.10` > `rc.2`), and a longer list wins when all else is equal.
//! For two valid SemVer versions this is exactly SemVer precedence. `latest` ranks above
//! everything (appc discovery's default version label, meaning the newest); any other label
//! that is not a numeric version (`stable`, `dev`) ranks below every numeric version, and such
//! labels compare as plain text among themselves.

use std::cmp::Ordering;

/// Orders two `version` labels (see the module docs).
pub fn version_precedence(a: &str, b: &str) -> Ordering {
    const LATEST: &str = "latest";
    match (a == LATEST, b == LATEST) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        (false, false) => {}
    }
    match (Version::parse(a), Version::parse(b)) {
        (Some(x), Some(y)) => x.cmp_to(&y),
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => a.cmp(b),
    }
}

struct Version<'a> {
    core: Vec<&'a str>,
    pre: Option<&'a str>,
}

impl<'a> Version<'a> {
    fn parse(s: &'a str) -> Option<Version<'a>> {
        let rest = s.split_once('+').map_or(s, |(r, _)| r);
        let (core, pre) = match rest.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (rest, None),
        };
        let core: Vec<&str> = core.split('.').collect();
        if core.iter().any(|n| !is_numeric(n)) {
            return None;
        }
        Some(Version { core, pre })
    }

    fn cmp_to(&self, other: &Version<'_>) -> Ordering {
        let len = self.core.len().max(other.core.len());
        for i in 0..len {
            let x = self.core.get(i).copied().unwrap_or("0");
            let y = other.core.get(i).copied().unwrap_or("0");
            let ord = cmp_numeric(x, y);
            if ord != Ordering::Equal {
                return ord;
            }
        }
        match (self.pre, other.pre) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => cmp_pre_release(x, y),
        }
    }
}

fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Numbers of any length, compared without parsing (so no overflow): leading zeros
/// dropped, then the longer is larger, then digit by digit.
fn cmp_numeric(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn cmp_pre_release(a: &str, b: &str) -> Ordering {
    let (mut xs, mut ys) = (a.split('.'), b.split('.'));
    loop {
        let ord = match (xs.next(), ys.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => match (is_numeric(x), is_numeric(y)) {
                (true, true) => cmp_numeric(x, y),
                (true, false) => Ordering::Less,
                (false, true) => Ordering::Greater,
                (false, false) => x.cmp(y),
            },
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn a_release_ranks_above_its_release_candidates() {
        assert_eq!(version_precedence("1.0.0-rc1", "1.0.0"), Less);
        assert_eq!(version_precedence("1.0.0", "1.0.0-rc1"), Greater);
        assert_eq!(version_precedence("1.0.0-alpha", "0.9.9"), Greater);
    }

    #[test]
    fn follows_the_semver_spec_example_order() {
        // semver.org section 11's example, in increasing precedence.
        let order = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "2.0.0",
            "2.1.0",
            "2.1.1",
        ];
        for (i, a) in order.iter().enumerate() {
            for (j, b) in order.iter().enumerate() {
                assert_eq!(version_precedence(a, b), i.cmp(&j), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn numbers_compare_as_numbers_and_build_metadata_is_ignored() {
        assert_eq!(version_precedence("1.10.0", "1.9.0"), Greater);
        assert_eq!(version_precedence("1.0.0+build.5", "1.0.0+build.4"), Equal);
        assert_eq!(
            version_precedence("1.0.0-rc.10", "1.0.0-rc.2"),
            Greater,
            "numeric identifiers compare as numbers"
        );
        assert_eq!(
            version_precedence("1.0.0-rc10", "1.0.0-rc2"),
            Less,
            "alphanumeric identifiers compare as text, as SemVer says"
        );
        assert_eq!(
            version_precedence("99999999999999999999999.0", "1.0"),
            Greater
        );
    }

    #[test]
    fn loose_appc_versions_pad_their_core_latest_ranks_highest_and_other_words_lowest() {
        assert_eq!(version_precedence("1.0", "1.0.0"), Equal);
        assert_eq!(version_precedence("1.0", "1.0.1"), Less);
        assert_eq!(version_precedence("2", "1.9.9"), Greater);
        assert_eq!(version_precedence("latest", "99.0.0"), Greater);
        assert_eq!(version_precedence("stable", "0.0.1"), Less);
        assert_eq!(version_precedence("dev", "stable"), Less);
        assert_eq!(version_precedence("", "0.1"), Less);
    }
}
