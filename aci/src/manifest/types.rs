//! The appc scalar types whose grammar is checked on construction: AC Identifier, AC Name,
//! AC Version (SemVer 2.0.0) and Image ID, plus the `acKind` tags of the two manifests. The one
//! AC Identifier check, [`is_ac_identifier`], is also what discovery and the trust store use.
//!
//! Decoding one of these from JSON checks it, so a value of these types is always well formed;
//! the manifest decoder reports a bad one with the JSON path of the field that held it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string that does not have the grammar its appc type requires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct InvalidValue {
    /// The appc type, e.g. "AC Identifier".
    pub what: &'static str,
    pub value: String,
    pub reason: String,
}

impl InvalidValue {
    pub(crate) fn new(what: &'static str, value: &str, reason: impl Into<String>) -> Self {
        InvalidValue {
            what,
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Checks `^[a-z0-9]+([SEP][a-z0-9]+)*$` by hand: the regex crate would cost the guest init more
/// bytes than every manifest check together. Unlike the Go reference, which only checks the
/// charset and both ends, this rejects doubled separators (`a..b`), as the spec's regex does.
///
/// One exception: `~` may follow `/`. The spec's own list of valid identifiers has
/// `example.com/~user/app_v1` (and the Go tests `example.com/~bob/database`), which its regex
/// would reject; home-directory style names are clearly meant to be valid.
fn check_separated(s: &str, separators: &[u8]) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    let mut after_separator = true;
    let mut prev = 0u8;
    for (i, b) in s.bytes().enumerate() {
        let prev_byte = std::mem::replace(&mut prev, b);
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            after_separator = false;
        } else if separators.contains(&b) {
            if i == 0 {
                return Err(format!(
                    "must start with a lowercase letter or digit, not {:?}",
                    b as char
                ));
            }
            if after_separator && !(prev_byte == b'/' && b == b'~') {
                return Err(format!(
                    "separator {:?} at byte {i} follows another separator",
                    b as char
                ));
            }
            after_separator = true;
        } else {
            let ch = s.get(i..).and_then(|t| t.chars().next()).unwrap_or('?');
            let allowed = String::from_utf8_lossy(separators);
            return Err(format!(
                "character {ch:?} at byte {i} is not allowed (only a-z, 0-9 and {allowed:?})"
            ));
        }
    }
    if after_separator {
        return Err("must end with a lowercase letter or digit".into());
    }
    Ok(())
}

macro_rules! checked_string {
    ($(#[$doc:meta])* $ty:ident, $what:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $ty(String);

        impl $ty {
            /// Checks `s` against the type's grammar.
            pub fn new(s: impl Into<String>) -> Result<Self, InvalidValue> {
                let s = s.into();
                let check: fn(&str) -> Result<(), String> = $check;
                match check(&s) {
                    Ok(()) => Ok($ty(s)),
                    Err(reason) => Err(InvalidValue::new($what, &s, reason)),
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, InvalidValue> {
                $ty::new(s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $ty::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

const AC_IDENTIFIER_SEPARATORS: &[u8] = b"-._~/";

/// Whether `s` is an AC Identifier, the one check for image names, label names and trust
/// prefixes. Because a separator never starts, ends or doubles, an identifier has no empty,
/// `.` or `..` component between its `/`s: the trust store relies on this to map a prefix to
/// a directory.
pub(crate) fn is_ac_identifier(s: &str) -> bool {
    check_separated(s, AC_IDENTIFIER_SEPARATORS).is_ok()
}

checked_string!(
    /// Image names, label, annotation and isolator names: `^[a-z0-9]+([-._~/][a-z0-9]+)*$`.
    AcIdentifier,
    "AC Identifier",
    |s| check_separated(s, AC_IDENTIFIER_SEPARATORS)
);

checked_string!(
    /// App, volume, mount point and port names: `^[a-z0-9]+(-[a-z0-9]+)*$`.
    AcName,
    "AC Name",
    |s| check_separated(s, b"-")
);

checked_string!(
    /// `sha512-<value>`. Like the Go reference, only the algorithm and a non-empty value are
    /// required: the spec's own `examples/image.json` writes `sha512-...`, and rkt shortens IDs.
    /// Code that needs the digest itself (the store) must use [`ImageId::sha512_hex`].
    ImageId,
    "Image ID",
    check_image_id
);

fn check_image_id(s: &str) -> Result<(), String> {
    match s.split_once('-') {
        Some(("sha512", "")) => Err("the hash value after \"sha512-\" is empty".into()),
        // The spec example's placeholder, kept so its own examples decode.
        Some(("sha512", "...")) => Ok(()),
        // Hex digits only (any case, any length, as rkt shortens IDs): an ID never carries a
        // `/` or `.` into a store path built from it.
        Some(("sha512", v)) if v.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(()),
        Some(("sha512", _)) => Err("the hash value after \"sha512-\" must be hex digits".into()),
        Some((alg, _)) => Err(format!(
            "hash algorithm {alg:?} is not allowed (only sha512)"
        )),
        None => Err("must have the form \"sha512-<hex digest>\"".into()),
    }
}

impl ImageId {
    /// The length in hex digits of a full SHA-512 digest.
    pub const FULL_HEX_LEN: usize = 128;

    /// The ID of the uncompressed image tar whose SHA-512 digest is `digest`.
    pub fn from_sha512(digest: &[u8; 64]) -> ImageId {
        let mut s = String::with_capacity(7 + Self::FULL_HEX_LEN);
        s.push_str("sha512-");
        for b in digest {
            s.push(hex_digit(b >> 4));
            s.push(hex_digit(b & 0x0f));
        }
        ImageId(s)
    }

    /// The digest part when it is lowercase hex of at most 128 digits (a full ID, or a prefix
    /// of one as rkt prints), else `None`.
    pub fn sha512_hex(&self) -> Option<&str> {
        let hex = self.0.strip_prefix("sha512-")?;
        let ok = !hex.is_empty()
            && hex.len() <= Self::FULL_HEX_LEN
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then_some(hex)
    }

    /// Whether this is a complete `sha512-` + 128 lowercase hex digits ID.
    pub fn is_full(&self) -> bool {
        self.sha512_hex()
            .is_some_and(|h| h.len() == Self::FULL_HEX_LEN)
    }

    /// A complete ID (`sha512-` and 128 lowercase hex digits), as the store names its images.
    pub fn parse_full(s: &str) -> Result<ImageId, InvalidValue> {
        let id = ImageId::new(s)?;
        if id.is_full() {
            Ok(id)
        } else {
            Err(InvalidValue::new(
                "Image ID",
                s,
                "must be \"sha512-\" followed by 128 lowercase hex digits",
            ))
        }
    }

    /// The value after `sha512-` (the whole digest for a full ID).
    pub fn hex(&self) -> &str {
        self.0.strip_prefix("sha512-").unwrap_or(&self.0)
    }

    /// rkt's display form: `sha512-` and the first 32 hex digits (all of a shorter ID).
    pub fn short(&self) -> &str {
        self.0.get(..7 + 32).unwrap_or(&self.0)
    }

    /// True when `prefix` (with or without `sha512-`) starts this ID.
    pub fn matches_prefix(&self, prefix: &str) -> bool {
        let hex = prefix.strip_prefix("sha512-").unwrap_or(prefix);
        !hex.is_empty() && self.hex().starts_with(&hex.to_ascii_lowercase())
    }
}

fn hex_digit(n: u8) -> char {
    char::from_digit(u32::from(n), 16).unwrap_or('0')
}

/// The appc spec version this crate implements and writes into new manifests.
pub const APPC_VERSION: &str = "0.8.11";

/// An `acVersion`: a SemVer 2.0.0 string whose core is not `0.0.0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AcVersion {
    text: String,
    core: (u64, u64, u64),
}

impl AcVersion {
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidValue> {
        let text = s.into();
        match parse_semver(&text) {
            Ok((0, 0, 0)) => Err(InvalidValue::new("AC Version", &text, "must not be 0.0.0")),
            Ok(core) => Ok(AcVersion { text, core }),
            Err(reason) => Err(InvalidValue::new("AC Version", &text, reason)),
        }
    }

    /// The version this crate writes, [`APPC_VERSION`].
    pub fn current() -> AcVersion {
        AcVersion {
            text: APPC_VERSION.to_owned(),
            core: (0, 8, 11),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn major(&self) -> u64 {
        self.core.0
    }

    pub fn minor(&self) -> u64 {
        self.core.1
    }

    pub fn patch(&self) -> u64 {
        self.core.2
    }
}

impl Default for AcVersion {
    fn default() -> Self {
        AcVersion::current()
    }
}

impl FromStr for AcVersion {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        AcVersion::new(s)
    }
}

impl fmt::Display for AcVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for AcVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for AcVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AcVersion::new(s).map_err(serde::de::Error::custom)
    }
}

/// Parses SemVer 2.0.0 (semver.org, section "Backus–Naur Form Grammar") and returns the
/// major, minor and patch numbers. A small checker rather than a crate: this code is in init.
fn parse_semver(s: &str) -> Result<(u64, u64, u64), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    let (rest, build) = match s.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (s, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let mut parts = core.split('.');
    let mut next = |name: &str| -> Result<u64, String> {
        let part = parts
            .next()
            .ok_or_else(|| "must have the form MAJOR.MINOR.PATCH".to_string())?;
        numeric_identifier(part).map_err(|e| format!("{name} version {e}"))
    };
    let major = next("major")?;
    let minor = next("minor")?;
    let patch = next("patch")?;
    if parts.next().is_some() {
        return Err("must have exactly three numbers in MAJOR.MINOR.PATCH".into());
    }
    if let Some(pre) = pre {
        for ident in pre.split('.') {
            check_alnum_identifier(ident, "pre-release")?;
            if ident.bytes().all(|b| b.is_ascii_digit())
                && ident.len() > 1
                && ident.starts_with('0')
            {
                return Err(format!(
                    "numeric pre-release identifier {ident:?} has a leading zero"
                ));
            }
        }
    }
    if let Some(build) = build {
        for ident in build.split('.') {
            check_alnum_identifier(ident, "build metadata")?;
        }
    }
    Ok((major, minor, patch))
}

fn numeric_identifier(part: &str) -> Result<u64, String> {
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{part:?} is not a number"));
    }
    if part.len() > 1 && part.starts_with('0') {
        return Err(format!("{part:?} has a leading zero"));
    }
    part.parse::<u64>()
        .map_err(|_| format!("{part:?} is too large"))
}

fn check_alnum_identifier(ident: &str, what: &str) -> Result<(), String> {
    if ident.is_empty() {
        return Err(format!("{what} has an empty identifier"));
    }
    if !ident
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(format!(
            "{what} identifier {ident:?} may hold only [0-9A-Za-z-]"
        ));
    }
    Ok(())
}

macro_rules! kind_tag {
    ($(#[$doc:meta])* $ty:ident, $text:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct $ty;

        impl $ty {
            pub const NAME: &'static str = $text;
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($text)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                if s == $text {
                    Ok($ty)
                } else {
                    Err(serde::de::Error::custom(format!(
                        "must be {:?}, found {s:?}",
                        $text
                    )))
                }
            }
        }
    };
}

kind_tag!(
    /// The `acKind` of an image manifest; decoding fails unless it is `"ImageManifest"`.
    ImageManifestKind,
    "ImageManifest"
);

kind_tag!(
    /// The `acKind` of a pod manifest; decoding fails unless it is `"PodManifest"`.
    PodManifestKind,
    "PodManifest"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ac_identifiers_from_spec_and_go_tests() {
        for ok in [
            "database",
            "example.com/database",
            "example.com/~user/app_v1",
            "sub-domain.example.com/org/product/release",
            "zab_rab_oof",
            "my~database",
            "example.com/~bob/database",
            "a",
            "0",
        ] {
            assert!(AcIdentifier::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_ac_identifiers() {
        for bad in [
            "", "BAR", "foo#", "/app", "app/", "-app", "_app", "app~", "a..b", "a/-b", "a b", "é",
            "a__b", "a~/b", "a/~~b", "a//b", "a/~", "a.~b",
        ] {
            assert!(
                AcIdentifier::new(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    /// Identifiers the three former checkers (discovery's app string, the trust store's
    /// prefixes, this module) disagreed on, and the path-like ones the trust store must refuse.
    /// `true` means the spec accepts it; the note says which old checker was wrong.
    const AC_IDENTIFIER_TABLE: &[(&str, bool, &str)] = &[
        ("coreos.com/etcd", true, ""),
        ("zab_rab_oof", true, ""),
        ("example.com/~bob/database", true, "discovery refused `/~`"),
        ("example.com/~user/app_v1", true, "discovery refused `/~`"),
        ("my~database", true, ""),
        ("0", true, ""),
        ("-app", false, "trust accepted a leading separator"),
        ("_app", false, "trust accepted a leading separator"),
        ("app~", false, "trust accepted a trailing separator"),
        ("a..b", false, "trust (and Go) accepted a doubled separator"),
        ("a__b", false, "trust accepted a doubled separator"),
        ("a/-b", false, "trust: a component may start with one"),
        ("a/.b", false, "trust: a component may start with one"),
        ("a~/b", false, "trust: a component may end with one"),
        ("a/~~b", false, ""),
        ("a/~", false, ""),
        ("a.~b", false, ""),
        ("", false, ""),
        (".", false, ""),
        ("..", false, ""),
        ("a/../b", false, ""),
        ("a/./b", false, ""),
        ("a//b", false, ""),
        ("/app", false, ""),
        ("app/", false, ""),
        ("BAR", false, ""),
        ("foo#", false, ""),
        ("a b", false, ""),
        ("\u{e9}", false, ""),
    ];

    #[test]
    fn one_ac_identifier_check_for_manifests_discovery_and_trust() {
        let dir = tempfile::tempdir().unwrap();
        let trust = crate::trust::TrustStore::new(dir.path().join("trust"));
        for &(id, ok, note) in AC_IDENTIFIER_TABLE {
            assert_eq!(is_ac_identifier(id), ok, "{id:?} {note}");
            assert_eq!(AcIdentifier::new(id).is_ok(), ok, "manifest: {id:?} {note}");
            assert_eq!(
                crate::discovery::App::parse(id).is_ok(),
                ok,
                "discovery: {id:?} {note}"
            );
            assert_eq!(trust.keys_for(id).is_ok(), ok, "trust: {id:?} {note}");
        }
    }

    #[test]
    fn rejects_doubled_separator_that_go_accepts() {
        let err = AcIdentifier::new("a..b").unwrap_err();
        assert!(
            err.to_string().contains("follows another separator"),
            "{err}"
        );
    }

    #[test]
    fn ac_name_allows_only_dashes() {
        assert!(AcName::new("product-database-release").is_ok());
        for bad in ["a.b", "a_b", "a/b", "a--b", "-a", "a-", "", "A"] {
            assert!(AcName::new(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn accepts_semver_versions() {
        for ok in [
            "0.8.11",
            "1.0.0",
            "0.3.0",
            "1.0.0-alpha.1",
            "1.0.0+20130313144700",
            "1.0.0-0.3.7",
            "1.0.0-x-y.z+b.001",
        ] {
            assert!(AcVersion::new(ok).is_ok(), "{ok}");
        }
        assert_eq!(AcVersion::new("10.20.30").unwrap().minor(), 20);
    }

    #[test]
    fn rejects_bad_semver() {
        for bad in [
            "",
            "1",
            "1.0",
            "1.0.0.0",
            "01.0.0",
            "1.02.0",
            "1.0.0-",
            "1.0.0-01",
            "1.0.0+",
            "1.0.0-a..b",
            "v1.0.0",
            "1.0.0-a_b",
            " 1.0.0",
            "1.0.x",
        ] {
            assert!(AcVersion::new(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn rejects_zero_version() {
        let err = AcVersion::new("0.0.0").unwrap_err();
        assert!(err.to_string().contains("0.0.0"), "{err}");
    }

    #[test]
    fn image_id_requires_sha512_and_a_value() {
        assert!(ImageId::new("sha512-abc").is_ok());
        assert!(
            ImageId::new("sha512-...").is_ok(),
            "the spec example's placeholder"
        );
        for bad in [
            "sha256-abc",
            "sha512-",
            "abc",
            "",
            "sha512-../x",
            "sha512-ab/cd",
            "sha512-..",
        ] {
            assert!(ImageId::new(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn image_id_hex_accessors_distinguish_full_short_and_placeholder() {
        let full = ImageId::from_sha512(&[0xab; 64]);
        assert!(full.is_full());
        assert_eq!(full.sha512_hex().map(str::len), Some(128));
        let short = ImageId::new("sha512-8d3fffddf79e9a232ffd19f9ccaa4d6b").unwrap();
        assert!(!short.is_full());
        assert!(short.sha512_hex().is_some());
        assert_eq!(ImageId::new("sha512-...").unwrap().sha512_hex(), None);
        assert_eq!(ImageId::new("sha512-ABCD").unwrap().sha512_hex(), None);
    }

    #[test]
    fn kind_tags_reject_the_other_kind() {
        let err = serde_json::from_str::<ImageManifestKind>("\"PodManifest\"").unwrap_err();
        assert!(
            err.to_string().contains("must be \"ImageManifest\""),
            "{err}"
        );
        assert!(serde_json::from_str::<PodManifestKind>("\"PodManifest\"").is_ok());
    }

    #[test]
    fn parse_full_accepts_only_full_lowercase_sha512_ids() {
        let good = format!("sha512-{}", "a".repeat(128));
        assert!(ImageId::parse_full(&good).is_ok());
        assert!(ImageId::parse_full(&format!("sha256-{}", "a".repeat(64))).is_err());
        assert!(ImageId::parse_full(&format!("sha512-{}", "A".repeat(128))).is_err());
        assert!(ImageId::parse_full("sha512-abc").is_err());
        // A manifest may still carry a shortened reference.
        assert!(ImageId::new("sha512-abc").is_ok());
    }

    #[test]
    fn prefix_matching_accepts_with_or_without_algorithm() {
        let id = ImageId::parse_full(&format!("sha512-ab{}", "0".repeat(126))).unwrap();
        assert!(id.matches_prefix("sha512-ab"));
        assert!(id.matches_prefix("ab0"));
        assert!(!id.matches_prefix("sha512-"));
        assert!(!id.matches_prefix("ac"));
        assert_eq!(id.short().len(), 39);
        assert_eq!(ImageId::new("sha512-ab").unwrap().short(), "sha512-ab");
    }
}
