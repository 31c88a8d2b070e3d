//! Isolators: the well-known kinds of the spec (and the two the Go reference adds) decoded into
//! typed values and checked, Kubernetes-style resource quantities, and the once-only and
//! conflict rules. Unknown kinds are kept verbatim, since an executor may ignore them.
//!
//! Scope (app, pod or both) is not enforced here: the Go reference does not, and deciding what
//! to do with an isolator at the wrong level is the executor's report-and-ignore job.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::checks::{Errors, field, index};
use super::types::{AcIdentifier, InvalidValue};

/// A resource amount as in Kubernetes: `"128974848"`, `"125952Ki"`, `"1G"`, `"0.3"`, `"300m"`,
/// `"1e3"`. Kept as written so a manifest round-trips byte for byte; convert with
/// [`Quantity::to_units_ceil`] or [`Quantity::to_milli_ceil`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Quantity(String);

/// A quantity's value as `mantissa × 10^exp10 × 1024^exp1024`.
#[derive(Debug, Clone, Copy)]
struct Parsed {
    mantissa: u128,
    exp10: i32,
    exp1024: u32,
}

/// More digits than this cannot be exact in a u128 and no real resource needs them.
const MAX_DIGITS: usize = 30;

fn parse_quantity(s: &str) -> Result<Parsed, String> {
    let body = s.strip_prefix('+').unwrap_or(s);
    if body.starts_with('-') {
        return Err("must not be negative".into());
    }
    let int_len = body.bytes().take_while(u8::is_ascii_digit).count();
    let (int_part, rest) = body.split_at(int_len);
    let (frac_part, suffix) = match rest.strip_prefix('.') {
        Some(after) => {
            let n = after.bytes().take_while(u8::is_ascii_digit).count();
            after.split_at(n)
        }
        None => ("", rest),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err("must start with a number".into());
    }
    if int_part.len() + frac_part.len() > MAX_DIGITS {
        return Err(format!("has more than {MAX_DIGITS} digits"));
    }
    let mut mantissa: u128 = 0;
    for d in int_part.bytes().chain(frac_part.bytes()) {
        // Cannot overflow: at most 30 digits.
        mantissa = mantissa * 10 + u128::from(d - b'0');
    }
    let frac_len = i32::try_from(frac_part.len()).map_err(|_| "too many digits".to_string())?;
    let (exp10, exp1024) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        // Kubernetes writes kilo as "k"; the appc spec text lists "K". Both are accepted.
        "k" | "K" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 1),
        "Mi" => (0, 2),
        "Gi" => (0, 3),
        "Ti" => (0, 4),
        "Pi" => (0, 5),
        "Ei" => (0, 6),
        other => {
            let exp = other
                .strip_prefix(['e', 'E'])
                .filter(|e| {
                    let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                    !digits.is_empty()
                        && digits.len() <= 3
                        && digits.bytes().all(|b| b.is_ascii_digit())
                })
                .and_then(|e| e.parse::<i32>().ok());
            match exp {
                Some(e) => (e, 0),
                None => {
                    return Err(format!(
                        "unknown suffix {other:?} (use one of n u m k M G T P E Ki Mi Gi Ti Pi Ei, or an exponent like e3)"
                    ));
                }
            }
        }
    };
    Ok(Parsed {
        mantissa,
        exp10: exp10 - frac_len,
        exp1024,
    })
}

impl Parsed {
    /// `ceil(value × factor)`, or `None` when it does not fit in a u64.
    fn scaled_ceil(self, factor: u128) -> Option<u64> {
        let mut num = self.mantissa.checked_mul(factor)?;
        for _ in 0..self.exp1024 {
            num = num.checked_mul(1024)?;
        }
        if num == 0 {
            return Some(0);
        }
        if self.exp10 >= 0 {
            for _ in 0..self.exp10 {
                num = num.checked_mul(10)?;
            }
        } else {
            // ceil(ceil(x / a) / b) == ceil(x / (a·b)), so dividing digit by digit is exact.
            for _ in 0..self.exp10.unsigned_abs() {
                num = num.div_ceil(10);
            }
        }
        u64::try_from(num).ok()
    }
}

impl Quantity {
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidValue> {
        let s = s.into();
        match parse_quantity(&s) {
            Ok(_) => Ok(Quantity(s)),
            Err(reason) => Err(InvalidValue::new("quantity", &s, reason)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn parsed(&self) -> Option<Parsed> {
        parse_quantity(&self.0).ok()
    }

    /// The amount in base units (bytes, operations, cores), rounded up; `None` when it exceeds
    /// a u64. `"1Gi"` → 1073741824, `"0.5"` → 1.
    pub fn to_units_ceil(&self) -> Option<u64> {
        self.parsed()?.scaled_ceil(1)
    }

    /// The amount in thousandths of base units, rounded up; for CPU this is millicores:
    /// `"250m"` → 250, `"2"` → 2000.
    pub fn to_milli_ceil(&self) -> Option<u64> {
        self.parsed()?.scaled_ceil(1000)
    }
}

impl FromStr for Quantity {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        Quantity::new(s)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Quantity::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The value of the `resource/*` isolators.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resource {
    /// Must be false for cpu and memory, true for the block and network kinds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Quantity>,
}

/// The value of `os/linux/capabilities-{retain,remove}-set`: capability names like `CAP_CHOWN`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CapabilitySet {
    #[serde(default, deserialize_with = "super::null_as_default")]
    pub set: Vec<String>,
}

/// The value of `os/linux/seccomp-{retain,remove}-set`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SeccompSet {
    /// Syscall names, or wildcards such as `@appc.io/all` and `@appc.io/empty`.
    #[serde(default, deserialize_with = "super::null_as_default")]
    pub set: Vec<String>,
    /// The errno blocked calls return; absent or empty means they kill with SIGSYS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
}

/// The value of `os/linux/selinux-context`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SelinuxContext {
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub role: String,
    #[serde(default, rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub level: String,
}

/// The value of `os/linux/apparmor-profile`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ApparmorProfile {
    #[serde(default)]
    pub profile: String,
}

/// One isolator, decoded by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolator {
    ResourceCpu(Resource),
    ResourceMemory(Resource),
    ResourceBlockBandwidth(Resource),
    ResourceBlockIops(Resource),
    ResourceNetworkBandwidth(Resource),
    CapabilitiesRetainSet(CapabilitySet),
    CapabilitiesRemoveSet(CapabilitySet),
    NoNewPrivileges(bool),
    SeccompRetainSet(SeccompSet),
    SeccompRemoveSet(SeccompSet),
    SelinuxContext(SelinuxContext),
    ApparmorProfile(ApparmorProfile),
    /// `os/linux/cpu-shares`, 2..=262144 (Go reference only, not in the spec text).
    CpuShares(i64),
    /// `os/linux/oom-score-adj`, -1000..=1000 (Go reference only, not in the spec text).
    OomScoreAdj(i64),
    /// `os/unix/sysctl`: key → value.
    Sysctl(BTreeMap<String, String>),
    /// A kind this crate does not know, kept as written. The executor must report it ignored.
    Other {
        name: AcIdentifier,
        value: serde_json::Value,
    },
}

impl Isolator {
    pub const RESOURCE_CPU: &'static str = "resource/cpu";
    pub const RESOURCE_MEMORY: &'static str = "resource/memory";
    pub const RESOURCE_BLOCK_BANDWIDTH: &'static str = "resource/block-bandwidth";
    pub const RESOURCE_BLOCK_IOPS: &'static str = "resource/block-iops";
    pub const RESOURCE_NETWORK_BANDWIDTH: &'static str = "resource/network-bandwidth";
    pub const CAPABILITIES_RETAIN_SET: &'static str = "os/linux/capabilities-retain-set";
    pub const CAPABILITIES_REMOVE_SET: &'static str = "os/linux/capabilities-remove-set";
    pub const NO_NEW_PRIVILEGES: &'static str = "os/linux/no-new-privileges";
    pub const SECCOMP_RETAIN_SET: &'static str = "os/linux/seccomp-retain-set";
    pub const SECCOMP_REMOVE_SET: &'static str = "os/linux/seccomp-remove-set";
    pub const SELINUX_CONTEXT: &'static str = "os/linux/selinux-context";
    pub const APPARMOR_PROFILE: &'static str = "os/linux/apparmor-profile";
    pub const CPU_SHARES: &'static str = "os/linux/cpu-shares";
    pub const OOM_SCORE_ADJ: &'static str = "os/linux/oom-score-adj";
    pub const SYSCTL: &'static str = "os/unix/sysctl";

    /// Every isolator name this crate decodes.
    pub const KNOWN: &'static [&'static str] = &[
        Self::RESOURCE_CPU,
        Self::RESOURCE_MEMORY,
        Self::RESOURCE_BLOCK_BANDWIDTH,
        Self::RESOURCE_BLOCK_IOPS,
        Self::RESOURCE_NETWORK_BANDWIDTH,
        Self::CAPABILITIES_RETAIN_SET,
        Self::CAPABILITIES_REMOVE_SET,
        Self::NO_NEW_PRIVILEGES,
        Self::SECCOMP_RETAIN_SET,
        Self::SECCOMP_REMOVE_SET,
        Self::SELINUX_CONTEXT,
        Self::APPARMOR_PROFILE,
        Self::CPU_SHARES,
        Self::OOM_SCORE_ADJ,
        Self::SYSCTL,
    ];

    pub fn name(&self) -> &str {
        match self {
            Isolator::ResourceCpu(_) => Self::RESOURCE_CPU,
            Isolator::ResourceMemory(_) => Self::RESOURCE_MEMORY,
            Isolator::ResourceBlockBandwidth(_) => Self::RESOURCE_BLOCK_BANDWIDTH,
            Isolator::ResourceBlockIops(_) => Self::RESOURCE_BLOCK_IOPS,
            Isolator::ResourceNetworkBandwidth(_) => Self::RESOURCE_NETWORK_BANDWIDTH,
            Isolator::CapabilitiesRetainSet(_) => Self::CAPABILITIES_RETAIN_SET,
            Isolator::CapabilitiesRemoveSet(_) => Self::CAPABILITIES_REMOVE_SET,
            Isolator::NoNewPrivileges(_) => Self::NO_NEW_PRIVILEGES,
            Isolator::SeccompRetainSet(_) => Self::SECCOMP_RETAIN_SET,
            Isolator::SeccompRemoveSet(_) => Self::SECCOMP_REMOVE_SET,
            Isolator::SelinuxContext(_) => Self::SELINUX_CONTEXT,
            Isolator::ApparmorProfile(_) => Self::APPARMOR_PROFILE,
            Isolator::CpuShares(_) => Self::CPU_SHARES,
            Isolator::OomScoreAdj(_) => Self::OOM_SCORE_ADJ,
            Isolator::Sysctl(_) => Self::SYSCTL,
            Isolator::Other { name, .. } => name.as_str(),
        }
    }

    /// Whether this is a kind this crate understands (not [`Isolator::Other`]).
    pub fn is_known(&self) -> bool {
        !matches!(self, Isolator::Other { .. })
    }

    fn decode(name: AcIdentifier, value: serde_json::Value) -> Result<Isolator, String> {
        Ok(match name.as_str() {
            Self::RESOURCE_CPU => Isolator::ResourceCpu(typed(value)?),
            Self::RESOURCE_MEMORY => Isolator::ResourceMemory(typed(value)?),
            Self::RESOURCE_BLOCK_BANDWIDTH => Isolator::ResourceBlockBandwidth(typed(value)?),
            Self::RESOURCE_BLOCK_IOPS => Isolator::ResourceBlockIops(typed(value)?),
            Self::RESOURCE_NETWORK_BANDWIDTH => Isolator::ResourceNetworkBandwidth(typed(value)?),
            Self::CAPABILITIES_RETAIN_SET => Isolator::CapabilitiesRetainSet(typed(value)?),
            Self::CAPABILITIES_REMOVE_SET => Isolator::CapabilitiesRemoveSet(typed(value)?),
            Self::NO_NEW_PRIVILEGES => Isolator::NoNewPrivileges(typed(value)?),
            Self::SECCOMP_RETAIN_SET => Isolator::SeccompRetainSet(typed(value)?),
            Self::SECCOMP_REMOVE_SET => Isolator::SeccompRemoveSet(typed(value)?),
            Self::SELINUX_CONTEXT => Isolator::SelinuxContext(typed(value)?),
            Self::APPARMOR_PROFILE => Isolator::ApparmorProfile(typed(value)?),
            Self::CPU_SHARES => Isolator::CpuShares(typed(value)?),
            Self::OOM_SCORE_ADJ => Isolator::OomScoreAdj(typed(value)?),
            Self::SYSCTL => Isolator::Sysctl(typed(value)?),
            _ => Isolator::Other { name, value },
        })
    }
}

/// Decodes an isolator's value; the error names the path inside it (`value.limit: ...`), since
/// the decoder's own path stops at the isolator.
fn typed<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let at = if inner == "." {
            "value".to_owned()
        } else {
            format!("value.{inner}")
        };
        format!("{at}: {}", e.into_inner())
    })
}

impl<'de> Deserialize<'de> for Isolator {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            name: AcIdentifier,
            value: serde_json::Value,
        }
        let raw = Raw::deserialize(d)?;
        let name = raw.name.clone();
        Isolator::decode(raw.name, raw.value)
            .map_err(|e| serde::de::Error::custom(format!("isolator {:?}: {e}", name.as_str())))
    }
}

impl Serialize for Isolator {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a, T: Serialize> {
            name: &'a str,
            value: &'a T,
        }
        let name = self.name();
        match self {
            Isolator::ResourceCpu(v)
            | Isolator::ResourceMemory(v)
            | Isolator::ResourceBlockBandwidth(v)
            | Isolator::ResourceBlockIops(v)
            | Isolator::ResourceNetworkBandwidth(v) => Out { name, value: v }.serialize(s),
            Isolator::CapabilitiesRetainSet(v) | Isolator::CapabilitiesRemoveSet(v) => {
                Out { name, value: v }.serialize(s)
            }
            Isolator::NoNewPrivileges(v) => Out { name, value: v }.serialize(s),
            Isolator::SeccompRetainSet(v) | Isolator::SeccompRemoveSet(v) => {
                Out { name, value: v }.serialize(s)
            }
            Isolator::SelinuxContext(v) => Out { name, value: v }.serialize(s),
            Isolator::ApparmorProfile(v) => Out { name, value: v }.serialize(s),
            Isolator::CpuShares(v) | Isolator::OomScoreAdj(v) => {
                Out { name, value: v }.serialize(s)
            }
            Isolator::Sysctl(v) => Out { name, value: v }.serialize(s),
            Isolator::Other { value, .. } => Out { name, value }.serialize(s),
        }
    }
}

fn is_capability_name(s: &str) -> bool {
    s.strip_prefix("CAP_").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    })
}

fn is_errno_name(s: &str) -> bool {
    s.strip_prefix('E').is_some_and(|rest| {
        rest.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    })
}

/// Checks every isolator of one list (an app's or a pod's) at `path`, e.g. `app.isolators`.
pub(crate) fn check_isolators(list: &[Isolator], path: &str, errs: &mut Errors) {
    for (i, iso) in list.iter().enumerate() {
        let at = index(path, i);
        check_value(iso, &field(&at, "value"), errs);
        if let Isolator::Other { name, .. } = iso
            && Isolator::KNOWN.contains(&name.as_str())
        {
            errs.add(
                field(&at, "value"),
                format!(
                    "{:?} is a known isolator and must hold its typed value",
                    name.as_str()
                ),
            );
        }
        check_multiplicity(list, i, iso, &at, path, errs);
    }
}

fn check_multiplicity(
    list: &[Isolator],
    i: usize,
    iso: &Isolator,
    at: &str,
    path: &str,
    errs: &mut Errors,
) {
    use Isolator as I;
    // Kinds of which a list may hold only one (spec notes; Go's multipleAllowed = false).
    let once = matches!(
        iso,
        I::SeccompRetainSet(_)
            | I::SeccompRemoveSet(_)
            | I::CpuShares(_)
            | I::OomScoreAdj(_)
            | I::Sysctl(_)
            | I::SelinuxContext(_)
            | I::ApparmorProfile(_)
    );
    let conflicting: &[&str] = match iso {
        I::SeccompRetainSet(_) => &[I::SECCOMP_REMOVE_SET],
        I::SeccompRemoveSet(_) => &[I::SECCOMP_RETAIN_SET],
        // The spec forbids both capability sets together, though the Go reference allows it.
        I::CapabilitiesRetainSet(_) => &[I::CAPABILITIES_REMOVE_SET],
        I::CapabilitiesRemoveSet(_) => &[I::CAPABILITIES_RETAIN_SET],
        _ => &[],
    };
    let name = iso.name();
    for (j, earlier) in list.iter().enumerate().take(i) {
        let earlier_at = index(path, j);
        if once && earlier.name() == name {
            errs.add(
                field(at, "name"),
                format!("only one {name:?} isolator is allowed (another is at {earlier_at})"),
            );
            return;
        }
        if conflicting.contains(&earlier.name()) {
            errs.add(
                field(at, "name"),
                format!(
                    "{name:?} cannot be used together with {:?} at {earlier_at}",
                    earlier.name()
                ),
            );
            return;
        }
    }
}

fn check_value(iso: &Isolator, at: &str, errs: &mut Errors) {
    match iso {
        Isolator::ResourceCpu(r) => check_resource(r, at, false, true, errs),
        Isolator::ResourceMemory(r) => check_resource(r, at, false, false, errs),
        Isolator::ResourceBlockBandwidth(r)
        | Isolator::ResourceBlockIops(r)
        | Isolator::ResourceNetworkBandwidth(r) => check_resource(r, at, true, false, errs),
        Isolator::CapabilitiesRetainSet(c) | Isolator::CapabilitiesRemoveSet(c) => {
            let set_at = field(at, "set");
            if c.set.is_empty() {
                errs.add(set_at.clone(), "must not be empty");
            }
            for (k, cap) in c.set.iter().enumerate() {
                if !is_capability_name(cap) {
                    errs.add(
                        index(&set_at, k),
                        format!("{cap:?} is not a capability name like \"CAP_NET_ADMIN\""),
                    );
                }
            }
        }
        Isolator::SeccompRetainSet(s) | Isolator::SeccompRemoveSet(s) => {
            let set_at = field(at, "set");
            if s.set.is_empty() {
                errs.add(set_at.clone(), "must not be empty");
            }
            for (k, call) in s.set.iter().enumerate() {
                if call.is_empty() {
                    errs.add(index(&set_at, k), "syscall name must not be empty");
                }
            }
            if let Some(errno) = s.errno.as_deref()
                && !errno.is_empty()
                && !is_errno_name(errno)
            {
                errs.add(
                    field(at, "errno"),
                    format!("{errno:?} is not an errno name like \"EPERM\" (E and upper-case letters or digits)"),
                );
            }
        }
        Isolator::SelinuxContext(c) => {
            for (key, v, colon_ok) in [
                ("user", &c.user, false),
                ("role", &c.role, false),
                ("type", &c.type_, false),
                // MLS/MCS levels such as "s0:c1,c2" contain colons.
                ("level", &c.level, true),
            ] {
                if v.is_empty() {
                    errs.add(field(at, key), "must not be empty");
                } else if !colon_ok && v.contains(':') {
                    errs.add(field(at, key), format!("{v:?} must not contain ':'"));
                }
            }
        }
        Isolator::ApparmorProfile(p) => {
            if p.profile.is_empty() {
                errs.add(field(at, "profile"), "must not be empty");
            }
        }
        Isolator::CpuShares(n) => {
            if !(2..=262_144).contains(n) {
                errs.add(at, format!("must be between 2 and 262144, found {n}"));
            }
        }
        Isolator::OomScoreAdj(n) => {
            if !(-1000..=1000).contains(n) {
                errs.add(at, format!("must be between -1000 and 1000, found {n}"));
            }
        }
        Isolator::Sysctl(map) => {
            for key in map.keys() {
                if key.is_empty() {
                    errs.add(at, "sysctl names must not be empty");
                }
            }
        }
        Isolator::NoNewPrivileges(_) | Isolator::Other { .. } => {}
    }
}

fn check_resource(r: &Resource, at: &str, default_required: bool, milli: bool, errs: &mut Errors) {
    if default_required {
        if !r.default {
            errs.add(field(at, "default"), "must be true for this resource");
        }
        if r.request.is_some() {
            errs.add(
                field(at, "request"),
                "is not supported by this resource and must be absent",
            );
        }
    } else if r.default {
        errs.add(field(at, "default"), "must be false for this resource");
    }
    let amount = |q: &Quantity| {
        if milli {
            q.to_milli_ceil()
        } else {
            q.to_units_ceil()
        }
    };
    let mut amounts = [None, None];
    for (slot, (key, q)) in amounts
        .iter_mut()
        .zip([("request", &r.request), ("limit", &r.limit)])
    {
        if let Some(q) = q {
            *slot = amount(q);
            if slot.is_none() {
                errs.add(field(at, key), format!("{:?} is too large", q.as_str()));
            }
        }
    }
    if let [Some(request), Some(limit)] = amounts
        && request > limit
    {
        errs.add(field(at, "request"), "must not exceed limit");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::new(s).unwrap()
    }

    fn iso(json: &str) -> Isolator {
        serde_json::from_str(json).unwrap()
    }

    fn errors(list: &[Isolator]) -> Vec<String> {
        let mut errs = Errors::default();
        check_isolators(list, "app.isolators", &mut errs);
        match errs.into_result() {
            Ok(()) => vec![],
            Err(e) => e.errors().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn quantities_convert_to_base_units() {
        assert_eq!(q("128974848").to_units_ceil(), Some(128_974_848));
        assert_eq!(q("125952Ki").to_units_ceil(), Some(128_974_848));
        assert_eq!(q("123Mi").to_units_ceil(), Some(128_974_848));
        assert_eq!(q("1G").to_units_ceil(), Some(1_000_000_000));
        assert_eq!(q("512M").to_units_ceil(), Some(512_000_000));
        assert_eq!(q("2K").to_units_ceil(), Some(2000));
        assert_eq!(q("2k").to_units_ceil(), Some(2000));
        assert_eq!(q("1e3").to_units_ceil(), Some(1000));
        assert_eq!(q("1E").to_units_ceil(), Some(1_000_000_000_000_000_000));
        assert_eq!(q("0.5").to_units_ceil(), Some(1));
        assert_eq!(q(".5Gi").to_units_ceil(), Some(536_870_912));
        assert_eq!(q("+1").to_units_ceil(), Some(1));
        assert_eq!(q("0").to_units_ceil(), Some(0));
        assert_eq!(q("100E").to_units_ceil(), None, "exceeds u64");
    }

    #[test]
    fn quantities_convert_to_millis() {
        assert_eq!(q("500m").to_milli_ceil(), Some(500));
        assert_eq!(q("20m").to_milli_ceil(), Some(20));
        assert_eq!(q("2").to_milli_ceil(), Some(2000));
        assert_eq!(q("0.3").to_milli_ceil(), Some(300));
        assert_eq!(q("1500u").to_milli_ceil(), Some(2));
        assert_eq!(q("1n").to_milli_ceil(), Some(1));
    }

    #[test]
    fn rejects_malformed_quantities() {
        for bad in [
            "", "G", "-1", "1X", "1 G", "1.2.3", "1Gb", "1e", "1e1000", "0x10", "1ki", ".",
        ] {
            assert!(Quantity::new(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn decodes_every_known_isolator_into_its_variant() {
        let cases = [
            (
                r#"{"name":"resource/cpu","value":{"request":"250m","limit":"500m"}}"#,
                Isolator::RESOURCE_CPU,
            ),
            (
                r#"{"name":"resource/memory","value":{"limit":"1G"}}"#,
                Isolator::RESOURCE_MEMORY,
            ),
            (
                r#"{"name":"resource/block-bandwidth","value":{"default":true,"limit":"2M"}}"#,
                Isolator::RESOURCE_BLOCK_BANDWIDTH,
            ),
            (
                r#"{"name":"resource/block-iops","value":{"default":true,"limit":"1000"}}"#,
                Isolator::RESOURCE_BLOCK_IOPS,
            ),
            (
                r#"{"name":"resource/network-bandwidth","value":{"default":true,"limit":"1G"}}"#,
                Isolator::RESOURCE_NETWORK_BANDWIDTH,
            ),
            (
                r#"{"name":"os/linux/capabilities-retain-set","value":{"set":["CAP_NET_ADMIN"]}}"#,
                Isolator::CAPABILITIES_RETAIN_SET,
            ),
            (
                r#"{"name":"os/linux/capabilities-remove-set","value":{"set":["CAP_MKNOD"]}}"#,
                Isolator::CAPABILITIES_REMOVE_SET,
            ),
            (
                r#"{"name":"os/linux/no-new-privileges","value":true}"#,
                Isolator::NO_NEW_PRIVILEGES,
            ),
            (
                r#"{"name":"os/linux/seccomp-retain-set","value":{"errno":"","set":["read"]}}"#,
                Isolator::SECCOMP_RETAIN_SET,
            ),
            (
                r#"{"name":"os/linux/seccomp-remove-set","value":{"errno":"ENOTSUP","set":["reboot"]}}"#,
                Isolator::SECCOMP_REMOVE_SET,
            ),
            (
                r#"{"name":"os/linux/selinux-context","value":{"user":"system_u","role":"system_r","type":"dhcpc_t","level":"s0"}}"#,
                Isolator::SELINUX_CONTEXT,
            ),
            (
                r#"{"name":"os/linux/apparmor-profile","value":{"profile":"rkt-default"}}"#,
                Isolator::APPARMOR_PROFILE,
            ),
            (
                r#"{"name":"os/linux/cpu-shares","value":1024}"#,
                Isolator::CPU_SHARES,
            ),
            (
                r#"{"name":"os/linux/oom-score-adj","value":-500}"#,
                Isolator::OOM_SCORE_ADJ,
            ),
            (
                r#"{"name":"os/unix/sysctl","value":{"net.ipv4.tcp_mtu_probing":"1"}}"#,
                Isolator::SYSCTL,
            ),
        ];
        for (json, name) in cases {
            let i = iso(json);
            assert!(i.is_known(), "{json}");
            assert_eq!(i.name(), name);
            assert!(
                errors(std::slice::from_ref(&i)).is_empty(),
                "{json}: {:?}",
                errors(std::slice::from_ref(&i))
            );
            let back: Isolator = serde_json::from_slice(&serde_json::to_vec(&i).unwrap()).unwrap();
            assert_eq!(back, i, "round trip of {json}");
        }
        assert_eq!(
            iso(r#"{"name":"os/linux/no-new-privileges","value":true}"#),
            Isolator::NoNewPrivileges(true)
        );
    }

    #[test]
    fn keeps_unknown_isolator_verbatim() {
        let i = iso(r#"{"name":"example.com/frobnicate","value":{"x":[1,2]}}"#);
        assert!(!i.is_known());
        assert_eq!(i.name(), "example.com/frobnicate");
        assert!(errors(std::slice::from_ref(&i)).is_empty());
        assert_eq!(
            serde_json::to_string(&i).unwrap(),
            r#"{"name":"example.com/frobnicate","value":{"x":[1,2]}}"#
        );
    }

    #[test]
    fn isolator_value_type_error_names_inner_field() {
        let err = serde_json::from_str::<Isolator>(
            r#"{"name":"resource/memory","value":{"limit":"1X"}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("isolator \"resource/memory\": value.limit: invalid quantity \"1X\""),
            "{err}"
        );
        let err = serde_json::from_str::<Isolator>(
            r#"{"name":"os/linux/no-new-privileges","value":"yes"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("value: invalid type"), "{err}");
    }

    #[test]
    fn rejects_isolator_without_value_or_with_bad_name() {
        assert!(serde_json::from_str::<Isolator>(r#"{"name":"resource/memory"}"#).is_err());
        assert!(
            serde_json::from_str::<Isolator>(r#"{"name":"Resource/Memory","value":{}}"#).is_err()
        );
    }

    #[test]
    fn rejects_default_true_on_cpu_and_memory() {
        let e = errors(&[iso(
            r#"{"name":"resource/memory","value":{"default":true,"limit":"1G"}}"#,
        )]);
        assert_eq!(
            e,
            ["app.isolators[0].value.default: must be false for this resource"]
        );
    }

    #[test]
    fn rejects_block_and_network_limits_without_default_or_with_request() {
        let e = errors(&[
            iso(r#"{"name":"resource/block-bandwidth","value":{"limit":"2M"}}"#),
            iso(
                r#"{"name":"resource/network-bandwidth","value":{"default":true,"request":"1M","limit":"2M"}}"#,
            ),
        ]);
        assert_eq!(
            e,
            [
                "app.isolators[0].value.default: must be true for this resource",
                "app.isolators[1].value.request: is not supported by this resource and must be absent",
            ]
        );
    }

    #[test]
    fn rejects_request_above_limit() {
        let e = errors(&[iso(
            r#"{"name":"resource/cpu","value":{"request":"2","limit":"500m"}}"#,
        )]);
        assert_eq!(e, ["app.isolators[0].value.request: must not exceed limit"]);
    }

    #[test]
    fn rejects_quantity_too_large_for_u64() {
        let e = errors(&[iso(
            r#"{"name":"resource/memory","value":{"limit":"100E"}}"#,
        )]);
        assert_eq!(e, ["app.isolators[0].value.limit: \"100E\" is too large"]);
    }

    #[test]
    fn rejects_empty_capability_set_and_bad_capability_names() {
        let e = errors(&[
            iso(r#"{"name":"os/linux/capabilities-retain-set","value":{"set":[]}}"#),
            iso(
                r#"{"name":"os/linux/capabilities-retain-set","value":{"set":["CAP_CHOWN","net_admin"]}}"#,
            ),
        ]);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0], "app.isolators[0].value.set: must not be empty");
        assert!(
            e[1].starts_with("app.isolators[1].value.set[1]: \"net_admin\""),
            "{e:?}"
        );
    }

    #[test]
    fn rejects_capability_retain_and_remove_together() {
        let e = errors(&[
            iso(r#"{"name":"os/linux/capabilities-remove-set","value":{"set":["CAP_MKNOD"]}}"#),
            iso(r#"{"name":"os/linux/capabilities-retain-set","value":{"set":["CAP_CHOWN"]}}"#),
        ]);
        assert_eq!(
            e,
            [
                "app.isolators[1].name: \"os/linux/capabilities-retain-set\" cannot be used together with \"os/linux/capabilities-remove-set\" at app.isolators[0]"
            ]
        );
    }

    #[test]
    fn rejects_seccomp_retain_and_remove_together() {
        let e = errors(&[
            iso(r#"{"name":"os/linux/seccomp-retain-set","value":{"set":["read"]}}"#),
            iso(r#"{"name":"os/linux/seccomp-remove-set","value":{"set":["reboot"]}}"#),
        ]);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(
                "app.isolators[1].name: \"os/linux/seccomp-remove-set\" cannot be used together"
            ),
            "{e:?}"
        );
    }

    #[test]
    fn rejects_second_instance_of_once_only_isolators() {
        for json in [
            r#"{"name":"os/linux/seccomp-remove-set","value":{"set":["reboot"]}}"#,
            r#"{"name":"os/linux/cpu-shares","value":1024}"#,
            r#"{"name":"os/linux/oom-score-adj","value":0}"#,
            r#"{"name":"os/unix/sysctl","value":{}}"#,
            r#"{"name":"os/linux/selinux-context","value":{"user":"u","role":"r","type":"t","level":"s0"}}"#,
            r#"{"name":"os/linux/apparmor-profile","value":{"profile":"p"}}"#,
        ] {
            let e = errors(&[iso(json), iso(json)]);
            assert_eq!(e.len(), 1, "{json}: {e:?}");
            assert!(e[0].starts_with("app.isolators[1].name: only one"), "{e:?}");
        }
    }

    #[test]
    fn allows_repeated_resource_isolators_like_go() {
        let m = r#"{"name":"resource/memory","value":{"limit":"1G"}}"#;
        assert!(errors(&[iso(m), iso(m)]).is_empty());
    }

    #[test]
    fn rejects_seccomp_with_empty_set_or_bad_errno() {
        let e = errors(&[iso(
            r#"{"name":"os/linux/seccomp-remove-set","value":{"set":[],"errno":"eperm"}}"#,
        )]);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0], "app.isolators[0].value.set: must not be empty");
        assert!(
            e[1].starts_with("app.isolators[0].value.errno: \"eperm\""),
            "{e:?}"
        );
    }

    #[test]
    fn accepts_seccomp_wildcards_and_spec_example_errno() {
        let e = errors(&[iso(
            r#"{"name":"os/linux/seccomp-retain-set","value":{"set":["@appc.io/all"],"errno":"EACCESS"}}"#,
        )]);
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn rejects_cpu_shares_and_oom_score_adj_out_of_range() {
        let e = errors(&[
            iso(r#"{"name":"os/linux/cpu-shares","value":1}"#),
            iso(r#"{"name":"os/linux/oom-score-adj","value":1001}"#),
        ]);
        assert_eq!(
            e,
            [
                "app.isolators[0].value: must be between 2 and 262144, found 1",
                "app.isolators[1].value: must be between -1000 and 1000, found 1001",
            ]
        );
        assert!(errors(&[iso(r#"{"name":"os/linux/cpu-shares","value":262144}"#)]).is_empty());
        assert!(errors(&[iso(r#"{"name":"os/linux/oom-score-adj","value":-1000}"#)]).is_empty());
    }

    #[test]
    fn rejects_incomplete_selinux_context_and_empty_apparmor_profile() {
        let e = errors(&[
            iso(
                r#"{"name":"os/linux/selinux-context","value":{"user":"a:b","role":"r","type":"t"}}"#,
            ),
            iso(r#"{"name":"os/linux/apparmor-profile","value":{}}"#),
        ]);
        assert_eq!(
            e,
            [
                "app.isolators[0].value.user: \"a:b\" must not contain ':'",
                "app.isolators[0].value.level: must not be empty",
                "app.isolators[1].value.profile: must not be empty",
            ]
        );
    }

    #[test]
    fn rejects_known_name_held_as_other() {
        let i = Isolator::Other {
            name: AcIdentifier::new("resource/cpu").unwrap(),
            value: serde_json::json!({}),
        };
        assert_eq!(errors(&[i]).len(), 1);
    }
}
