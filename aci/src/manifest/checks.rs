//! The error collector that validation threads through every field, and the small hand-written
//! format checkers (RFC 3339 timestamps, http(s) URLs, environment names) that would otherwise
//! pull a regex or date crate into the guest init.

use super::FieldError;

/// Collects every broken rule with its JSON path, so one run reports them all.
#[derive(Debug, Default)]
pub(crate) struct Errors(Vec<FieldError>);

impl Errors {
    pub(crate) fn add(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            reason: reason.into(),
        });
    }

    pub(crate) fn into_result(self) -> Result<(), super::ManifestError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(super::ManifestError::Invalid(self.0))
        }
    }
}

/// `base.field`, or `field` at the document root.
pub(crate) fn field(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_owned()
    } else {
        format!("{base}.{name}")
    }
}

/// `base[i]`.
pub(crate) fn index(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

pub(crate) fn is_absolute(path: &str) -> bool {
    path.starts_with('/')
}

/// `^[A-Za-z_][A-Za-z_0-9.-]*$`, the Go reference's rule for environment variable names.
pub(crate) fn is_env_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// RFC 3339 `date-time` (section 5.6), with the ranges of section 5.7 and real month lengths.
/// `T` and `Z` may be lower case, as the RFC's ABNF is case-insensitive.
pub(crate) fn check_rfc3339(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        part.iter()
            .try_fold(0u32, |acc, d| Some(acc * 10 + u32::from(d - b'0')))
    };
    let sep = |at: usize, want: &[u8]| b.get(at).is_some_and(|c| want.contains(c));
    let shape = "must be an RFC 3339 date-time like 2006-01-02T15:04:05Z";
    let (Some(year), Some(month), Some(day)) = (num(0, 4), num(5, 2), num(8, 2)) else {
        return Err(shape.into());
    };
    if !sep(4, b"-") || !sep(7, b"-") || !sep(10, b"Tt") || !sep(13, b":") || !sep(16, b":") {
        return Err(shape.into());
    }
    let (Some(hour), Some(minute), Some(second)) = (num(11, 2), num(14, 2), num(17, 2)) else {
        return Err(shape.into());
    };
    if !(1..=12).contains(&month) {
        return Err(format!("month {month} is out of range"));
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if day < 1 || day > days {
        return Err(format!("day {day} is out of range for month {month}"));
    }
    // Second 60 is a leap second, which RFC 3339 allows.
    if hour > 23 || minute > 59 || second > 60 {
        return Err("time of day is out of range".into());
    }
    let mut at = 19;
    if sep(at, b".") {
        at += 1;
        let digits = b
            .get(at..)
            .map_or(0, |t| t.iter().take_while(|c| c.is_ascii_digit()).count());
        if digits == 0 {
            return Err("fraction of a second has no digits".into());
        }
        at += digits;
    }
    match b.get(at) {
        Some(b'Z' | b'z') if at + 1 == b.len() => Ok(()),
        Some(b'+' | b'-') if at + 6 == b.len() && sep(at + 3, b":") => {
            match (num(at + 1, 2), num(at + 4, 2)) {
                (Some(h), Some(m)) if h <= 23 && m <= 59 => Ok(()),
                _ => Err("time zone offset is out of range".into()),
            }
        }
        _ => Err(format!(
            "{shape} (a time zone \"Z\" or \"+hh:mm\" must end it)"
        )),
    }
}

/// An absolute `http://` or `https://` URL with a host. The Go reference only checks the scheme;
/// requiring a host as well rejects `https:foo`, which no browser would open.
pub(crate) fn check_http_url(s: &str) -> Result<(), String> {
    if s.bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err("URL must not contain spaces or control characters".into());
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err("must be an absolute http or https URL".into());
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(format!("URL scheme {scheme:?} is not http or https"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let host = if host_port.starts_with('[') {
        // An IPv6 literal: its colons are not a port separator.
        host_port
            .split_once(']')
            .map_or("", |(h, _)| h.trim_start_matches('['))
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    if host.is_empty() {
        return Err("URL has no host".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_follow_go_regex() {
        for ok in ["PATH", "_x", "a.b-c", "A1"] {
            assert!(is_env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "-A", "A B", "A=B", ".a", "é"] {
            assert!(!is_env_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn accepts_rfc3339_timestamps() {
        for ok in [
            "2014-10-27T19:32:27.67021798Z",
            "2015-05-18T13:49:28.351729952-04:00",
            "2016-02-29T00:00:00Z",
            "2016-12-31T23:59:60Z",
            "2000-01-01t00:00:00z",
            "2000-01-01T00:00:00+23:59",
        ] {
            assert_eq!(check_rfc3339(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_malformed_rfc3339_timestamps() {
        for bad in [
            "",
            "2014-10-27",
            "2014-10-27 19:32:27Z",
            "2014-10-27T19:32:27",
            "2015-02-29T00:00:00Z",
            "2014-13-01T00:00:00Z",
            "2014-00-01T00:00:00Z",
            "2014-04-31T00:00:00Z",
            "2014-10-27T24:00:00Z",
            "2014-10-27T19:32:27.Z",
            "2014-10-27T19:32:27+0400",
            "2014-10-27T19:32:27+24:00",
            "2014-10-27T19:32:27Zjunk",
            "1900-02-29T00:00:00Z",
            "2014-1-27T19:32:27Z",
        ] {
            assert!(check_rfc3339(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn accepts_http_and_https_urls() {
        for ok in [
            "https://example.com",
            "http://example.com/docs?q=1#x",
            "HTTPS://user@example.com:8080/",
            "http://[::1]:80/",
        ] {
            assert_eq!(check_http_url(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_non_http_urls() {
        for bad in [
            "ftp://example.com",
            "example.com",
            "https:foo",
            "https://",
            "https:///x",
            "http://a b",
            "file:///etc",
        ] {
            assert!(check_http_url(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
