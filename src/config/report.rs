//! What loading reports: [`Problem`]s with file, line and key, collected by a [`Report`] that
//! the passes (`schema.rs`, `validate.rs`, orchestrated by `load.rs`) all write into.
//!
//! Messages never repeat secret values (device and access key secrets, the admin token).

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;

use toml_edit::Item;

use crate::check::{self, Path, PathSeg};

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, as given to [`super::load_file`] or as the `origin` of [`super::load_str`].
    pub file: String,
    /// 1-based line of the offending key or value, when known.
    pub line: Option<usize>,
    /// Dotted path of the offending key, like `products[1].devices[0].name` or `mqtt.listen`;
    /// empty when the problem concerns no particular key (a syntax error, an unreadable file).
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for Problem {
    /// `file:line: key: message`, without `:line` when the line is unknown and without
    /// `key: ` when the key is empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a configuration could not be loaded: every problem found, in line order. Its `Display`
/// prints one problem per line.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The problems; never empty when returned by [`super::load_str`] or [`super::load_file`].
    pub problems: Vec<Problem>,
}

impl ConfigError {
    /// The error for a configuration file that cannot be read at all: a single problem
    /// with no line and no key.
    #[must_use]
    pub fn unreadable(file: &str, err: &std::io::Error) -> Self {
        Self {
            problems: vec![Problem {
                file: file.to_string(),
                line: None,
                key: String::new(),
                message: format!("cannot read the configuration file: {err}"),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Byte offset → line and column.
pub(super) struct Lines {
    /// Byte offset of the start of every line.
    starts: Vec<usize>,
}

impl Lines {
    pub(super) fn new(text: &str) -> Self {
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Self { starts }
    }

    /// 1-based line of a byte offset.
    pub(super) fn line(&self, offset: usize) -> usize {
        // `starts[0] == 0`, so this is at least 1.
        self.starts.partition_point(|&start| start <= offset)
    }

    /// 1-based column (in characters) of a byte offset.
    pub(super) fn column(&self, text: &str, offset: usize) -> usize {
        let start = self.starts.get(self.line(offset) - 1).copied().unwrap_or(0);
        let chars = text.get(start..offset).map_or(offset.saturating_sub(start), |s| s.chars().count());
        chars + 1
    }
}

/// The problems found so far, each placed at its file, line and key.
pub(super) struct Report<'a> {
    origin: &'a str,
    lines: &'a Lines,
    problems: Vec<Problem>,
    /// Top-level keys with a problem in them: their sections are not deserialised or checked
    /// further.
    broken: HashSet<String>,
}

impl<'a> Report<'a> {
    pub(super) fn new(origin: &'a str, lines: &'a Lines) -> Self {
        Self { origin, lines, problems: Vec::new(), broken: HashSet::new() }
    }

    /// A problem with no key (syntax errors).
    pub(super) fn unkeyed(&mut self, line: Option<usize>, message: String) {
        self.problems.push(Problem { file: self.origin.to_string(), line, key: String::new(), message });
    }

    /// A problem at `path`, on the line where `span` starts.
    pub(super) fn at(&mut self, path: &Path, span: Option<Range<usize>>, message: impl Into<String>) {
        if let Some(PathSeg::Key(section)) = path.segs().first() {
            self.broken.insert(section.clone());
        }
        let line = span.map(|span| self.lines.line(span.start));
        self.problems.push(Problem {
            file: self.origin.to_string(),
            line,
            key: path.to_string(),
            message: message.into(),
        });
    }

    /// A component's problem (its path already behind its section), placed in the document
    /// `root`: on the line of the key it concerns, or of the nearest enclosing key written.
    pub(super) fn place(&mut self, root: &Item, problem: check::Problem) {
        let check::Problem { path, message, line_of, unless_written } = problem;
        let path = match unless_written {
            Some(other) if !find(root, &path).1 => other,
            _ => path,
        };
        let (span, _) = find(root, line_of.as_ref().unwrap_or(&path));
        self.at(&path, span, message);
    }

    /// Whether the top-level key `section` has a problem.
    pub(super) fn is_broken(&self, section: &str) -> bool {
        self.broken.contains(section)
    }

    /// Whether any problem was found.
    pub(super) fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// The problems as an error, in line order.
    pub(super) fn into_error(self) -> ConfigError {
        let mut problems = self.problems;
        problems.sort_by_key(|p| p.line.unwrap_or(0));
        ConfigError { problems }
    }

    /// The problems found so far (tests).
    #[cfg(test)]
    pub(super) fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

/// Looks `path` up in the document: the span of the deepest part of it written there, and
/// whether all of it is (rather than defaulted).
pub(super) fn find(root: &Item, path: &Path) -> (Option<Range<usize>>, bool) {
    let mut item = root;
    let mut span = None;
    for seg in path.segs() {
        let next = match seg {
            PathSeg::Key(key) => item.get(key.as_str()),
            PathSeg::Index(i) => item.get(*i),
        };
        let Some(next) = next else {
            return (span, false);
        };
        item = next;
        span = next.span().or(span);
    }
    (span, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_formats() {
        let mut problem = Problem {
            file: "a.toml".into(),
            line: Some(3),
            key: "mqtt.listen".into(),
            message: "bad".into(),
        };
        assert_eq!(problem.to_string(), "a.toml:3: mqtt.listen: bad");
        problem.line = None;
        problem.key.clear();
        assert_eq!(problem.to_string(), "a.toml: bad");
        let err = ConfigError { problems: vec![problem.clone(), problem] };
        assert_eq!(err.to_string(), "a.toml: bad\na.toml: bad");
    }
}
