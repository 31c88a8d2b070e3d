//! Kernel config fragments: parsing them, merging them over tinyconfig, and checking that
//! kconfig kept every option we asked for (it silently drops options with unmet dependencies).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// One requested setting, with where it was requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Symbol without the `CONFIG_` prefix.
    pub symbol: String,
    /// `None` means "is not set".
    pub value: Option<String>,
    pub file: PathBuf,
    pub line: usize,
}

impl Request {
    fn render(&self) -> String {
        match &self.value {
            Some(v) => format!("CONFIG_{}={v}", self.symbol),
            None => format!("# CONFIG_{} is not set", self.symbol),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}:{line}: not a kernel config line: {text:?}")]
    Syntax {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("{path}:{line}: CONFIG_{symbol} has no comment above it saying why it is set")]
    Uncommented {
        path: PathBuf,
        line: usize,
        symbol: String,
    },
    #[error("{}", dropped_message(.0))]
    Dropped(Vec<Dropped>),
}

/// A requested option that kconfig did not keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub request: Request,
    /// What the final config has (`None`: not set).
    pub actual: Option<String>,
}

fn dropped_message(d: &[Dropped]) -> String {
    let mut s = format!(
        "kconfig dropped {} requested option(s) (unknown symbol, unmet dependency or conflicting choice):",
        d.len()
    );
    for x in d {
        let actual = match &x.actual {
            Some(v) => format!("is {v}"),
            None => "is not set".to_string(),
        };
        s.push_str(&format!(
            "\n  {} ({}:{}): final config {actual}",
            x.request.render(),
            x.request.file.display(),
            x.request.line
        ));
    }
    s
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// Parses one `.config`-syntax line: `Some((symbol, Some(value)))` for `CONFIG_X=v`,
/// `Some((symbol, None))` for `# CONFIG_X is not set`, `None` for comments and blanks.
fn parse_line(line: &str) -> Result<Option<(String, Option<String>)>, ()> {
    let t = line.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if let Some(rest) = t.strip_prefix("# CONFIG_") {
        if let Some(sym) = rest.strip_suffix(" is not set") {
            return Ok(Some((sym.to_string(), None)));
        }
        return Ok(None);
    }
    if t.starts_with('#') {
        return Ok(None);
    }
    let rest = t.strip_prefix("CONFIG_").ok_or(())?;
    let (sym, value) = rest.split_once('=').ok_or(())?;
    if sym.is_empty() || !sym.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(());
    }
    Ok(Some((sym.to_string(), Some(value.to_string()))))
}

/// Parses a fragment's text; `path` only names it in errors. With `require_comments`, every
/// option must have a comment line directly above it (a preceding option line or blank line
/// does not count).
pub fn parse_fragment(
    text: &str,
    path: &Path,
    require_comments: bool,
) -> Result<Vec<Request>, ConfigError> {
    let mut out = Vec::new();
    let mut prev_is_comment = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let parsed = parse_line(raw).map_err(|()| ConfigError::Syntax {
            path: path.to_path_buf(),
            line,
            text: raw.to_string(),
        })?;
        match parsed {
            Some((symbol, value)) => {
                if require_comments && !prev_is_comment {
                    return Err(ConfigError::Uncommented {
                        path: path.to_path_buf(),
                        line,
                        symbol,
                    });
                }
                out.push(Request {
                    symbol,
                    value,
                    file: path.to_path_buf(),
                    line,
                });
                prev_is_comment = false;
            }
            None => prev_is_comment = raw.trim_start().starts_with('#'),
        }
    }
    Ok(out)
}

/// A parsed `.config`: symbol → value (`None` = explicitly not set), in file order.
#[derive(Debug, Default, Clone)]
pub struct KConfig {
    order: Vec<String>,
    values: BTreeMap<String, Option<String>>,
}

impl KConfig {
    pub fn parse(text: &str) -> KConfig {
        let mut c = KConfig::default();
        for raw in text.lines() {
            if let Ok(Some((sym, val))) = parse_line(raw) {
                c.set(&sym, val);
            }
        }
        c
    }

    pub fn set(&mut self, symbol: &str, value: Option<String>) {
        if self.values.insert(symbol.to_string(), value).is_none() {
            self.order.push(symbol.to_string());
        }
    }

    /// The effective value: `None` when unset or absent.
    pub fn get(&self, symbol: &str) -> Option<&str> {
        self.values.get(symbol).and_then(|v| v.as_deref())
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        for sym in &self.order {
            match self.values.get(sym) {
                Some(Some(v)) => s.push_str(&format!("CONFIG_{sym}={v}\n")),
                Some(None) => s.push_str(&format!("# CONFIG_{sym} is not set\n")),
                None => {}
            }
        }
        s
    }
}

/// Applies the requests over a base config (later requests win).
pub fn merge(base: &str, requests: &[Request]) -> String {
    let mut c = KConfig::parse(base);
    for r in requests {
        c.set(&r.symbol, r.value.clone());
    }
    c.render()
}

/// Checks the final config against every request; the last request for a symbol is the one
/// that counts.
pub fn check(final_config: &str, requests: &[Request]) -> Result<(), ConfigError> {
    let fin = KConfig::parse(final_config);
    let mut last: BTreeMap<&str, &Request> = BTreeMap::new();
    for r in requests {
        last.insert(&r.symbol, r);
    }
    let mut dropped = Vec::new();
    for r in requests {
        if !std::ptr::eq(last[r.symbol.as_str()], r) {
            continue;
        }
        let actual = fin.get(&r.symbol);
        let ok = match (&r.value, actual) {
            (None, None) => true,
            (None, Some(v)) => v == "n",
            (Some(want), Some(got)) => want == got,
            (Some(want), None) => want == "n",
        };
        if !ok {
            dropped.push(Dropped {
                request: r.clone(),
                actual: actual.map(str::to_string),
            });
        }
    }
    if dropped.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Dropped(dropped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(text: &str) -> Vec<Request> {
        parse_fragment(text, Path::new("f.config"), true).unwrap()
    }

    #[test]
    fn parses_set_and_unset_options_with_locations() {
        let r = frag(
            "# why\nCONFIG_A=y\n\n# why not\n# CONFIG_B is not set\n# why string\nCONFIG_C=\"x y\"\n",
        );
        assert_eq!(r.len(), 3);
        assert_eq!(
            (r[0].symbol.as_str(), r[0].value.as_deref(), r[0].line),
            ("A", Some("y"), 2)
        );
        assert_eq!((r[1].symbol.as_str(), r[1].value.as_deref()), ("B", None));
        assert_eq!(r[2].value.as_deref(), Some("\"x y\""));
    }

    #[test]
    fn rejects_option_without_comment() {
        let err =
            parse_fragment("# ok\nCONFIG_A=y\nCONFIG_B=y\n", Path::new("f"), true).unwrap_err();
        assert!(
            err.to_string().contains("f:3: CONFIG_B has no comment"),
            "{err}"
        );
    }

    #[test]
    fn rejects_garbage_line_naming_file_and_line() {
        let err = parse_fragment("# c\nCONFIG_A y\n", Path::new("x.config"), true).unwrap_err();
        assert!(err.to_string().starts_with("x.config:2:"), "{err}");
    }

    #[test]
    fn merge_overrides_base_and_appends_new() {
        let base = "CONFIG_A=y\n# CONFIG_B is not set\n";
        let out = merge(
            base,
            &frag("# c\n# CONFIG_A is not set\n# c\nCONFIG_B=y\n# c\nCONFIG_C=5\n"),
        );
        assert_eq!(out, "# CONFIG_A is not set\nCONFIG_B=y\nCONFIG_C=5\n");
    }

    #[test]
    fn check_names_every_dropped_option() {
        let req =
            frag("# c\nCONFIG_A=y\n# c\nCONFIG_B=y\n# c\n# CONFIG_C is not set\n# c\nCONFIG_D=y\n");
        let fin = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\n";
        let err = check(fin, &req).unwrap_err().to_string();
        assert!(err.contains("3 requested option(s)"), "{err}");
        assert!(
            err.contains("CONFIG_B=y (f.config:4): final config is not set"),
            "{err}"
        );
        assert!(
            err.contains("# CONFIG_C is not set (f.config:6): final config is y"),
            "{err}"
        );
        assert!(err.contains("CONFIG_D=y (f.config:8)"), "{err}");
        assert!(!err.contains("CONFIG_A=y"), "{err}");
    }

    #[test]
    fn later_request_for_same_symbol_wins_in_check() {
        let req = frag("# c\nCONFIG_A=y\n# c\n# CONFIG_A is not set\n");
        check("# CONFIG_A is not set\n", &req).unwrap();
    }

    #[test]
    fn shipped_fragments_parse_and_every_option_is_commented() {
        for arch in hostdecl::Arch::ALL {
            for (name, text) in super::super::fragments::builtin(arch) {
                let r = parse_fragment(text, Path::new(name), true).unwrap();
                assert!(!r.is_empty(), "{name} is empty");
            }
        }
    }
}
