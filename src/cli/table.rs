//! Human output of the management commands: aligned tables with a header row, `key  value`
//! views of one object, and JSON values rendered as table cells.

use std::io::Write as _;

use serde_json::Value;

/// Columns are separated by this many spaces.
const GAP: usize = 2;

/// An aligned table: `Table::new(&["ID", "NAME"])`, then `row`s, then `print`.
#[derive(Debug)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Self { header: header.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    /// Adds a row; missing cells are empty, extra cells are dropped.
    pub fn row(&mut self, mut cells: Vec<String>) {
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as text: the header, then one line per row; no trailing spaces.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    line.push_str(&" ".repeat(w - width(cell) + GAP));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table on stdout.
    pub fn print(&self) {
        emit(&self.render());
    }
}

/// One object as aligned `key  value` lines, in the order given.
pub fn fields<K: AsRef<str>>(pairs: &[(K, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| width(k.as_ref())).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let k = k.as_ref();
        // A value of several lines continues under its first line.
        for (i, part) in v.split('\n').enumerate() {
            let line = if i == 0 {
                format!("{k}{}{part}", " ".repeat(w - width(k) + GAP))
            } else {
                format!("{}{part}", " ".repeat(w + GAP))
            };
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out
}

/// Prints [`fields`] on stdout.
pub fn print_fields<K: AsRef<str>>(pairs: &[(K, String)]) {
    emit(&fields(pairs));
}

/// Every field of a JSON object as `(key, cell)`: the keys in `first` in that order, then the
/// others in the server's order, so fields a newer server adds still show.
pub fn object_fields(v: &Value, first: &[&str]) -> Vec<(String, String)> {
    let Some(map) = v.as_object() else { return Vec::new() };
    let mut out: Vec<(String, String)> =
        first.iter().filter(|k| map.contains_key(**k)).map(|k| (k.to_string(), cell(&map[*k]))).collect();
    for (k, val) in map {
        if !first.contains(&k.as_str()) {
            out.push((k.clone(), cell(val)));
        }
    }
    out
}

/// A JSON value as a cell: strings bare, arrays joined with `,`, objects as `k=v` pairs, null
/// (or absent) as `-`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".into(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Object(map) if map.is_empty() => "-".into(),
        Value::Object(map) => {
            map.iter().map(|(k, v)| format!("{k}={}", cell(v))).collect::<Vec<_>>().join(",")
        }
        // Whole numbers the server sends as floats (a threshold of 1000.0) read as 1000.
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// An epoch-milliseconds value as UTC time (`2025-01-31 14:05:09Z`); `-` for null.
pub fn time_cell(v: &Value) -> String {
    match v.as_i64().and_then(chrono::DateTime::from_timestamp_millis) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
        None => cell(v),
    }
}

/// Writes to stdout; a closed pipe (`iotpipe groups list | head -1`) is not an error worth a
/// panic.
pub fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Display width: wide (CJK) characters take two columns in a terminal.
fn width(s: &str) -> usize {
    s.chars().map(|c| if is_wide(c) { 2 } else { 1 }).sum()
}

fn is_wide(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x115F | 0x2E80..=0x303E | 0x3041..=0x33FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF | 0xFE30..=0xFE4F | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6 | 0x20000..=0x3FFFD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_are_aligned_without_trailing_spaces() {
        let mut t = Table::new(&["ID", "NAME"]);
        t.row(vec!["DEFAULT_GROUP".into(), "DEFAULT_GROUP".into()]);
        t.row(vec!["g1".into(), String::new()]);
        assert_eq!(t.render(), "ID             NAME\nDEFAULT_GROUP  DEFAULT_GROUP\ng1\n");
    }

    #[test]
    fn wide_characters_count_twice() {
        let mut t = Table::new(&["NAME", "X"]);
        t.row(vec!["告警组".into(), "1".into()]);
        assert_eq!(t.render(), "NAME    X\n告警组  1\n");
    }

    #[test]
    fn cells_and_fields() {
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!(["a", "b"])), "a,b");
        assert_eq!(cell(&json!({"k": "v", "n": 1})), "k=v,n=1");
        assert_eq!(cell(&json!(true)), "true");
        assert_eq!(
            (cell(&json!(1000.0)), cell(&json!(0.5)), cell(&json!(-3))),
            ("1000".into(), "0.5".into(), "-3".into())
        );
        assert_eq!(time_cell(&json!(0)), "1970-01-01 00:00:00Z");
        assert_eq!(fields(&[("id", "g1".into()), ("name", "x".into())]), "id    g1\nname  x\n");
        assert_eq!(fields(&[("k", "a\nb".into())]), "k  a\n   b\n");
        let v = json!({"b": 1, "a": 2, "id": "x"});
        let keys: Vec<String> = object_fields(&v, &["id", "zz"]).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["id", "a", "b"]);
    }
}
