//! What a component's configuration check returns: every [`Problem`] found, each at a key path
//! relative to the component's own section.
//!
//! Each component owns its configuration struct and a `check` that knows its rules (vector's
//! pattern); `config` adds the section in front of the path, finds the line in the file and
//! reports every problem of every section at once. This module is a leaf: it knows neither TOML
//! nor the components.

use std::collections::hash_map::{Entry, HashMap};
use std::fmt::{self, Write as _};

/// One step of a key path: a key of a table or an index of an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSeg {
    /// A key of a table.
    Key(String),
    /// An element of an array.
    Index(usize),
}

/// A key path such as `devices[0].name`; empty for the section itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path(Vec<PathSeg>);

/// The path of one key: `key("devices").index(0).key("name")`.
#[must_use]
pub fn key(key: impl Into<String>) -> Path {
    Path::default().key(key)
}

/// The path of one array element: `index(1).key("id")` inside an array section.
#[must_use]
pub fn index(index: usize) -> Path {
    Path::default().index(index)
}

impl Path {
    /// This path followed by `key`.
    #[must_use]
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.0.push(PathSeg::Key(key.into()));
        self
    }

    /// This path followed by `[index]`.
    #[must_use]
    pub fn index(mut self, index: usize) -> Self {
        self.0.push(PathSeg::Index(index));
        self
    }

    /// `self` followed by `rest`.
    #[must_use]
    pub fn join(mut self, rest: &Path) -> Self {
        self.0.extend(rest.0.iter().cloned());
        self
    }

    /// The steps of the path.
    pub fn segs(&self) -> &[PathSeg] {
        &self.0
    }

    /// Appends one step (for walks that push and pop as they descend).
    pub fn push(&mut self, seg: PathSeg) {
        self.0.push(seg);
    }

    /// Removes the last step.
    pub fn pop(&mut self) {
        self.0.pop();
    }
}

impl fmt::Display for Path {
    /// `products[1].devices[0].name`; keys that are not bare TOML keys are quoted, like
    /// `tags.""`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                PathSeg::Key(key) => {
                    if i > 0 {
                        f.write_char('.')?;
                    }
                    let bare = !key.is_empty()
                        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    if bare {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
                PathSeg::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// One thing wrong with a configuration section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The offending key, relative to the section.
    pub path: Path,
    /// What is wrong and what is expected; starts lowercase and does not repeat the key.
    pub message: String,
    /// The key whose line shows the problem when it is not `path`'s own: a missing key is
    /// shown where the key that needs it is written.
    pub line_of: Option<Path>,
    /// The key to blame instead when the file does not write `path` (its default applies):
    /// of two keys that contradict each other, the one the user wrote.
    pub unless_written: Option<Path>,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: Path, message: impl Into<String>) -> Self {
        Self { path, message: message.into(), line_of: None, unless_written: None }
    }

    /// Shown on the line of `other`.
    #[must_use]
    pub fn on_line_of(mut self, other: Path) -> Self {
        self.line_of = Some(other);
        self
    }

    /// Blamed on `other` when the file does not write `path`.
    #[must_use]
    pub fn or_at(mut self, other: Path) -> Self {
        self.unless_written = Some(other);
        self
    }

    /// The same problem seen from an enclosing section: every path behind `prefix`.
    #[must_use]
    pub fn within(self, prefix: &Path) -> Self {
        let prefixed = |path: Path| prefix.clone().join(&path);
        Self {
            path: prefixed(self.path),
            message: self.message,
            line_of: self.line_of.map(prefixed),
            unless_written: self.unless_written.map(prefixed),
        }
    }
}

/// Every problem of `problems` seen from the enclosing section at `prefix`.
pub fn within(prefix: &Path, problems: Vec<Problem>) -> impl Iterator<Item = Problem> + '_ {
    problems.into_iter().map(move |p| p.within(prefix))
}

/// Remembers which entry of a list first used each value, for "must be unique" rules.
#[derive(Debug, Default)]
pub struct Seen<'a>(HashMap<&'a str, usize>);

impl<'a> Seen<'a> {
    /// Records that entry `index` uses `value`; the index of an earlier entry that already
    /// did, if any.
    pub fn first(&mut self, value: &'a str, index: usize) -> Option<usize> {
        match self.0.entry(value) {
            Entry::Occupied(first) => Some(*first.get()),
            Entry::Vacant(slot) => {
                slot.insert(index);
                None
            }
        }
    }
}

/// `"a", "b", "c"`: values for a message.
pub fn quoted_list(values: &[&str]) -> String {
    values.iter().map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_as_toml_keys() {
        assert_eq!(
            key("products").index(1).key("devices").index(0).key("name").to_string(),
            "products[1].devices[0].name"
        );
        assert_eq!(key("tags").key("").to_string(), "tags.\"\"");
        assert_eq!(index(2).key("id").to_string(), "[2].id");
        assert_eq!(Path::default().to_string(), "");
    }

    #[test]
    fn within_prefixes_every_path() {
        let p = Problem::new(key("cert"), "missing").on_line_of(key("tls_listen")).within(&key("mqtt"));
        assert_eq!(p.path.to_string(), "mqtt.cert");
        assert_eq!(p.line_of.map(|l| l.to_string()).as_deref(), Some("mqtt.tls_listen"));
    }

    #[test]
    fn seen_finds_the_first_use() {
        let mut seen = Seen::default();
        assert_eq!(seen.first("a", 0), None);
        assert_eq!(seen.first("b", 1), None);
        assert_eq!(seen.first("a", 2), Some(0));
    }
}
