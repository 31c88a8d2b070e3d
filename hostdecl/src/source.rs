//! Where each key and value of a declaration was written, and the keys valid at each place.
//!
//! The text is parsed twice: once with `toml_edit`, which keeps byte spans, to record the
//! position of every key and to refuse unknown keys (with a "did you mean" hint), and once with
//! `toml`'s serde deserializer into the plain structs. A deserializer error carries a span only;
//! the recorded positions turn it into a field path, and byte offsets into line and column.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use serde::Deserialize;
use toml_edit::{ImDocument, Item, TableLike, Value};

use crate::errors::{DeclError, KeyHint, Site};

/// The position of one key and its value in the text, as byte ranges.
#[derive(Debug, Clone, Default)]
struct Entry {
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
    /// The value is a table (header or inline), which a "missing field" error points into.
    table: bool,
}

/// Positions of every field of one declaration's text.
#[derive(Debug)]
pub(crate) struct SourceMap {
    origin: Arc<str>,
    text: String,
    entries: BTreeMap<String, Entry>,
}

/// A declaration's source map, carried inside [`crate::HostDecl`]. Where a declaration was read
/// from is not part of what it declares, so every two origins compare equal.
#[derive(Clone, Default)]
pub struct Origin(Option<Arc<SourceMap>>);

impl PartialEq for Origin {
    fn eq(&self, _: &Origin) -> bool {
        true
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(m) => write!(f, "Origin({:?})", m.origin),
            None => f.write_str("Origin(none)"),
        }
    }
}

impl Origin {
    pub(crate) fn new(map: SourceMap) -> Origin {
        Origin(Some(Arc::new(map)))
    }

    /// Where `field` was written (its value, else its key), else its nearest written ancestor,
    /// else the start of the file.
    pub(crate) fn site(&self, field: &str) -> Site {
        match &self.0 {
            Some(m) => m.site(field, Prefer::Value),
            None => Site {
                origin: "host declaration".into(),
                line: 1,
                column: 1,
                field: field.to_string(),
            },
        }
    }
}

#[derive(Clone, Copy)]
enum Prefer {
    Key,
    Value,
}

impl SourceMap {
    fn pos(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or(&self.text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = before.matches('\n').count() + 1;
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        (line, column)
    }

    pub(crate) fn site_at(&self, offset: usize, field: &str) -> Site {
        let (line, column) = self.pos(offset);
        Site {
            origin: self.origin.clone(),
            line,
            column,
            field: field.to_string(),
        }
    }

    fn site(&self, field: &str, prefer: Prefer) -> Site {
        let mut path = field;
        loop {
            if let Some(e) = self.entries.get(path) {
                let range = match prefer {
                    Prefer::Key => e.key.as_ref().or(e.value.as_ref()),
                    Prefer::Value => e.value.as_ref().or(e.key.as_ref()),
                };
                if let Some(r) = range {
                    return self.site_at(r.start, field);
                }
            }
            match parent(path) {
                Some(p) => path = p,
                None => return self.site_at(0, field),
            }
        }
    }

    /// The field whose key or value holds `offset` most tightly (only tables, if `tables`).
    fn field_at(&self, offset: usize, tables: bool) -> Option<&str> {
        self.entries
            .iter()
            .filter(|(_, e)| e.table || !tables)
            .filter_map(|(path, e)| {
                [&e.key, &e.value]
                    .into_iter()
                    .flatten()
                    .filter(|r| r.contains(&offset))
                    .map(|r| r.len())
                    .min()
                    .map(|len| (len, path))
            })
            .min_by_key(|(len, _)| *len)
            .map(|(_, p)| p.as_str())
    }

    /// Turns a deserializer error into one placed at its field.
    pub(crate) fn serde_error(&self, e: &toml::de::Error) -> DeclError {
        let offset = e.span().map_or(0, |s| s.start);
        let message = e.message().trim();
        if let Some(name) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'))
        {
            let table = self.field_at(offset, true).unwrap_or("");
            let field = join(table, name);
            return DeclError::Missing {
                at: self.site(&field, Prefer::Key),
            };
        }
        let at_field = self.field_at(offset, false).unwrap_or("").to_string();
        DeclError::Type {
            at: self.site_at(offset, &at_field),
            reason: plain(message),
        }
    }
}

fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    Some(match path.rfind(['.', '[']) {
        Some(i) => &path[..i],
        None => "",
    })
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// serde's wording, in the terms a TOML author uses.
fn plain(message: &str) -> String {
    // "expected struct KernelDecl": the Rust name means nothing to the author.
    let message = match message.find("expected struct ") {
        Some(i) => format!("{}expected a table", &message[..i]),
        None => message.to_string(),
    };
    message
        .replace(
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        )
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected a table")
        .replace("unknown variant", "unknown value")
}

/// The fields a serde struct accepts, read from its derived `Deserialize` (so the keys valid at
/// each place can never drift from the structs).
pub(crate) fn fields_of<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let mut found: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldRecorder { out: &mut found });
    found
}

struct FieldRecorder<'a> {
    out: &'a mut &'static [&'static str],
}

#[derive(Debug)]
struct Recorded;

impl fmt::Display for Recorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field names recorded")
    }
}

impl std::error::Error for Recorded {}

impl serde::de::Error for Recorded {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Recorded
    }
}

impl<'de> serde::Deserializer<'de> for FieldRecorder<'_> {
    type Error = Recorded;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Recorded> {
        Err(Recorded)
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Recorded> {
        *self.out = fields;
        Err(Recorded)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// The schema the walk checks keys against: for a place (a table path without array indices),
/// the keys valid there. Places not listed hold no keys of their own (plain values).
pub(crate) type KeysAt = fn(&str) -> Option<&'static [&'static str]>;

/// Keys this version reserves for what later versions add, with what they are.
/// Empty now that pods exist; kept as the seam for the next reserved section.
const NOT_YET: &[(&str, &str)] = &[];

/// Parses `text`, records every key's position and refuses unknown keys.
pub(crate) fn scan(
    text: &str,
    origin: &str,
    keys_at: KeysAt,
    places: &[&'static str],
) -> Result<SourceMap, DeclError> {
    let mut map = SourceMap {
        origin: origin.into(),
        text: text.to_string(),
        entries: BTreeMap::new(),
    };
    let doc = match ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let offset = e.span().map_or(0, |s| s.start);
            return Err(DeclError::Syntax {
                at: map.site_at(offset, ""),
                message: e.message().trim().to_string(),
            });
        }
    };
    let mut walk = Walk {
        map: &mut map,
        keys_at,
        places,
    };
    walk.table(doc.as_table(), "", "")?;
    Ok(map)
}

struct Walk<'a> {
    map: &'a mut SourceMap,
    keys_at: KeysAt,
    places: &'a [&'static str],
}

impl Walk<'_> {
    fn table(&mut self, t: &dyn TableLike, path: &str, place: &str) -> Result<(), DeclError> {
        let valid = (self.keys_at)(place).unwrap_or(&[]);
        for (name, item) in t.iter() {
            let key_span = t.key(name).and_then(|k| k.span());
            let field = join(path, name);
            let field_place = join(place, name);
            self.map.entries.insert(
                field.clone(),
                Entry {
                    key: key_span.clone(),
                    value: item.span(),
                    table: item.is_table_like(),
                },
            );
            let key_offset = key_span.map_or(0, |s| s.start);
            if place.is_empty()
                && let Some((_, what)) = NOT_YET.iter().find(|(k, _)| *k == name)
            {
                return Err(DeclError::NotYet {
                    at: self.map.site_at(key_offset, &field),
                    what,
                });
            }
            if !valid.contains(&name) {
                return Err(DeclError::UnknownKey {
                    at: self.map.site_at(key_offset, &field),
                    hint: self.hint(name, place, valid),
                });
            }
            self.item(item, &field, &field_place)?;
        }
        Ok(())
    }

    fn item(&mut self, item: &Item, path: &str, place: &str) -> Result<(), DeclError> {
        let is_table_place = (self.keys_at)(place).is_some();
        match item {
            // A table where a plain value belongs is a type error, the deserializer's to report.
            Item::Table(_) | Item::ArrayOfTables(_) if !is_table_place => Ok(()),
            Item::Table(t) => self.table(t, path, place),
            Item::ArrayOfTables(a) => {
                for (i, t) in a.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    self.map.entries.insert(
                        p.clone(),
                        Entry {
                            key: None,
                            value: t.span(),
                            table: true,
                        },
                    );
                    self.table(t, &p, place)?;
                }
                Ok(())
            }
            Item::Value(v) => self.value(v, path, place),
            Item::None => Ok(()),
        }
    }

    fn value(&mut self, v: &Value, path: &str, place: &str) -> Result<(), DeclError> {
        match v {
            // Inline tables are checked like tables, but only where a table belongs; a wrong
            // type elsewhere is the deserializer's to report.
            Value::InlineTable(t) if (self.keys_at)(place).is_some() => self.table(t, path, place),
            Value::Array(a) => {
                for (i, elem) in a.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    self.map.entries.insert(
                        p.clone(),
                        Entry {
                            key: None,
                            value: elem.span(),
                            table: elem.is_inline_table(),
                        },
                    );
                    self.value(elem, &p, place)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn hint(&self, name: &str, place: &str, valid: &[&'static str]) -> KeyHint {
        if let Some(k) = closest(name, valid) {
            return KeyHint::DidYouMean(k);
        }
        for &other in self.places {
            if other != place
                && (self.keys_at)(other).is_some_and(|keys| keys.contains(&name))
                && !other.is_empty()
            {
                return KeyHint::BelongsIn(other);
            }
        }
        KeyHint::ValidKeys(valid.to_vec())
    }
}

/// The valid key a small edit away from `name`, if there is one: at most one edit for short
/// keys, about one per three characters for longer ones.
pub(crate) fn closest(name: &str, valid: &[&'static str]) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    let limit = (name.chars().count() / 3).max(1);
    valid
        .iter()
        .map(|&k| (edit_distance(&lower, k), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, counting a swap of two neighbours as one edit (`hsotname`).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows: Vec<Vec<usize>> = (0..=a.len())
        .map(|i| (0..=b.len()).map(|j| if i == 0 { j } else { i }).collect())
        .collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}
