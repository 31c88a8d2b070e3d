//! What labels and annotations share: a list of `{name, value}` pairs in manifest order, looked
//! up and replaced by name, whose names must be unique.

use super::checks::{Errors, field};
use super::types::AcIdentifier;

/// One `{name, value}` pair.
pub(crate) trait NamedValue {
    fn new(name: AcIdentifier, value: String) -> Self;
    fn name(&self) -> &AcIdentifier;
    fn value_mut(&mut self) -> &mut String;
}

/// Reports `at.name` when an entry before index `i` has the same name (`what`: "label").
pub(crate) fn check_unique<T: NamedValue>(
    list: &[T],
    i: usize,
    at: &str,
    what: &str,
    errs: &mut Errors,
) {
    let Some(this) = list.get(i) else {
        return;
    };
    if list.iter().take(i).any(|b| b.name() == this.name()) {
        errs.add(
            field(at, "name"),
            format!("duplicate {what} {:?}", this.name().as_str()),
        );
    }
}

pub(crate) fn set<T: NamedValue>(list: &mut Vec<T>, name: AcIdentifier, value: String) {
    match list.iter_mut().find(|p| *p.name() == name) {
        Some(p) => *p.value_mut() = value,
        None => list.push(T::new(name, value)),
    }
}

/// The pair type's accessors and the list's `get`, `set`, `iter`, `is_empty`, `len` and
/// `IntoIterator`, the same for every such list.
macro_rules! named_value_list {
    ($list:ident, $item:ident) => {
        impl $crate::manifest::named_list::NamedValue for $item {
            fn new(name: AcIdentifier, value: String) -> Self {
                $item { name, value }
            }
            fn name(&self) -> &AcIdentifier {
                &self.name
            }
            fn value_mut(&mut self) -> &mut String {
                &mut self.value
            }
        }

        impl $list {
            /// The value of the entry called `name`.
            pub fn get(&self, name: &str) -> Option<&str> {
                self.0
                    .iter()
                    .find(|p| p.name == name)
                    .map(|p| p.value.as_str())
            }

            /// Sets `name` to `value`, replacing an existing entry of that name in place.
            pub fn set(&mut self, name: AcIdentifier, value: impl Into<String>) {
                $crate::manifest::named_list::set(&mut self.0, name, value.into())
            }

            pub fn iter(&self) -> std::slice::Iter<'_, $item> {
                self.0.iter()
            }

            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }

            pub fn len(&self) -> usize {
                self.0.len()
            }
        }

        impl<'a> IntoIterator for &'a $list {
            type Item = &'a $item;
            type IntoIter = std::slice::Iter<'a, $item>;
            fn into_iter(self) -> Self::IntoIter {
                self.0.iter()
            }
        }
    };
}

pub(crate) use named_value_list;
