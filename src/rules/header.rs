//! The header of a rule file: the `-- key: value` comment lines before the statement.
//!
//! ```sql
//! -- name: high_temperature
//! -- description: Readings above 38 degrees.
//! -- enabled: true
//! -- data_type: json
//! -- action: amqp DEFAULT_GROUP tag=${dn}
//! -- error_action: amqp ERRORS
//! SELECT temperature AS t, deviceName() AS dn FROM "/a1demo/+/user/update" WHERE temperature > 38
//! ```
//!
//! Other comment lines are free text, but a line that looks like a header (`-- word: ...`,
//! lowercase word) with an unknown key is an error, so a typo such as `-- acton:` does not
//! silently drop an action.
//!
//! This is the one reader of headers: the rules directory (`Rule::from_file`), the API (which
//! writes its fields as a header and compiles the file) and the CLI's `rules create|update`
//! (which sends a file's header as the API's fields) all read a header here, so a header means
//! the same to each of them.

use super::action::Action;
use super::compile::DataType;
use super::error::Diagnostic;

/// Actions per rule: the platform's limit.
pub const MAX_ACTIONS: usize = 10;
/// Longest rule name: the platform's limit.
pub const MAX_NAME: usize = 30;
/// Longest description: the platform's limit.
pub const MAX_DESCRIPTION: usize = 100;

/// The keys a header line may have.
pub const KEYS: &[&str] = &["name", "description", "enabled", "data_type", "action", "error_action"];

/// The name rule: 1 to [`MAX_NAME`] letters, digits, `_` or `-`. Such a name is also a safe
/// file stem (no separator, no dot, at most 120 bytes), so `{name}.sql` is always a file of the
/// rules directory.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_NAME
        && name.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

/// The key and value of a line that reads as a header line (`-- key: value`, a lowercase key).
/// Whether it is one depends on where it is: only before the statement (see [`parse`]).
pub fn header_line(line: &str) -> Option<(&str, &str)> {
    let comment = line.trim_start().strip_prefix("--")?;
    let (key, value) = comment.split_once(':')?;
    let key = key.trim();
    let is_key = !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    is_key.then(|| (key, value.trim()))
}

/// What a line of a rule file is.
enum LineKind<'t> {
    /// A header line: key and value.
    Header(&'t str, &'t str),
    /// A blank line among the header lines.
    Blank,
    /// A line of the statement: SQL, or a free comment (which may come before the SQL).
    Statement,
}

/// The lines of `text` with their 1-based numbers and kinds; each line keeps its line break.
/// The header ends at the first line that is neither blank nor a comment.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str, LineKind<'_>)> {
    let mut in_header = true;
    text.split_inclusive('\n').enumerate().map(move |(i, raw)| {
        let kind = if !in_header {
            LineKind::Statement
        } else if raw.trim().is_empty() {
            LineKind::Blank
        } else if let Some((key, value)) = header_line(raw) {
            LineKind::Header(key, value)
        } else {
            in_header = raw.trim_start().starts_with("--");
            LineKind::Statement
        };
        (i + 1, raw, kind)
    })
}

/// The statement of a rule file with the 1-based line number of each of its lines: the text
/// without its header lines (and the blank lines among them). Free comment lines are kept, so
/// the statement written back under a new header is the same rule. Lines keep their line breaks.
pub fn statement_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    lines(text).filter_map(|(n, raw, kind)| matches!(kind, LineKind::Statement).then_some((n, raw)))
}

/// The statement of a rule file as one text (see [`statement_lines`]).
pub fn statement(text: &str) -> String {
    statement_lines(text).map(|(_, raw)| raw).collect()
}

/// What one header line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// `name`: the rule's name (checked against [`valid_name`]).
    Name(String),
    /// `description`: one line of free text.
    Description(String),
    /// `enabled`: `true`/`yes` or `false`/`no`, any case.
    Enabled(bool),
    /// `data_type`: `json` or `binary`, any case.
    DataType(DataType),
    /// `action`: one more action.
    Action(Action),
    /// `error_action`: the error action (one at most).
    ErrorAction(Action),
}

/// A header line that reads well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderLine<'t> {
    /// 1-based line number in the file.
    pub line: usize,
    /// The value as written (trimmed): what the API's fields carry.
    pub text: &'t str,
    /// What it says.
    pub field: Field,
}

/// A rule file's header, read and checked.
#[derive(Debug, Clone, Default)]
pub struct Header<'t> {
    /// The header lines that read well, in file order. A later `name`, `description`,
    /// `enabled` or `data_type` line overrides an earlier one.
    pub lines: Vec<HeaderLine<'t>>,
    /// Every problem of the header, in file order, each against the file `origin`.
    pub problems: Vec<Diagnostic>,
}

/// Reads the header of the rule file `text`; `origin` names the file in the problems.
pub fn parse<'t>(origin: &str, text: &'t str) -> Header<'t> {
    let mut header = Header::default();
    let (mut actions, mut error_action) = (0usize, false);
    for (line, raw, kind) in lines(text) {
        let LineKind::Header(key, value) = kind else { continue };
        let trimmed = raw.trim_start();
        let comment = &trimmed[2..];
        let col = raw.len() - trimmed.len() + 2 + comment.find(key).unwrap_or(0) + 1;
        let vcol = raw.find(value).map_or(col, |p| p + 1);
        let mut problem = |col: usize, message: String, hint: Option<String>| {
            header.problems.push(Diagnostic {
                file: origin.to_string(),
                line: line as u64,
                col: col as u64,
                message,
                hint,
            });
        };
        let field = match key {
            "name" if valid_name(value) => Field::Name(value.to_string()),
            "name" => {
                let m = format!("a rule name is 1-{MAX_NAME} letters, digits, '_' or '-', got {value:?}");
                problem(vcol, m, None);
                continue;
            }
            "description" => {
                if value.chars().count() > MAX_DESCRIPTION {
                    let m = format!("the description is longer than {MAX_DESCRIPTION} characters");
                    problem(vcol, m, None);
                }
                Field::Description(value.to_string())
            }
            "enabled" => match value.to_ascii_lowercase().as_str() {
                "true" | "yes" => Field::Enabled(true),
                "false" | "no" => Field::Enabled(false),
                _ => {
                    problem(vcol, format!("enabled is true or false, got {value:?}"), None);
                    continue;
                }
            },
            "data_type" => match value.to_ascii_lowercase().as_str() {
                "json" => Field::DataType(DataType::Json),
                "binary" => Field::DataType(DataType::Binary),
                _ => {
                    problem(vcol, format!("data_type is json or binary, got {value:?}"), None);
                    continue;
                }
            },
            "action" => match Action::parse(value) {
                Ok(_) if actions == MAX_ACTIONS => {
                    problem(col, format!("a rule has at most {MAX_ACTIONS} actions"), None);
                    continue;
                }
                Ok(a) => {
                    actions += 1;
                    Field::Action(a)
                }
                Err(m) => {
                    let hint = "actions are `amqp GROUP [tag=...]` or `republish /TOPIC`";
                    problem(vcol, m, Some(hint.into()));
                    continue;
                }
            },
            "error_action" => match Action::parse(value) {
                Ok(_) if error_action => {
                    problem(col, "a rule has at most one error_action".into(), None);
                    continue;
                }
                Ok(a) => {
                    error_action = true;
                    Field::ErrorAction(a)
                }
                Err(m) => {
                    problem(vcol, m, None);
                    continue;
                }
            },
            other => {
                let hint = format!("known keys: {}", KEYS.join(", "));
                problem(col, format!("unknown header key {other:?}"), Some(hint));
                continue;
            }
        };
        header.lines.push(HeaderLine { line, text: value, field });
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_problems() {
        let text = "-- name: hot\n-- A free comment: not a header\n\n-- enabled: YES\n-- data_type: Binary\n\
                    -- action: amqp G\n-- enabled: maybe\n-- acton: amqp G\nSELECT 1 FROM \"/a\"\n\
                    -- name: not a header here\n";
        let h = parse("r.sql", text);
        let fields: Vec<_> = h.lines.iter().map(|l| (l.line, l.field.clone())).collect();
        assert_eq!(
            fields,
            [
                (1, Field::Name("hot".into())),
                (4, Field::Enabled(true)),
                (5, Field::DataType(DataType::Binary)),
                (6, Field::Action(Action::parse("amqp G").unwrap())),
            ]
        );
        let problems: Vec<String> = h.problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0], "r.sql:7:13: enabled is true or false, got \"maybe\"");
        assert!(problems[1].starts_with("r.sql:8:4: unknown header key \"acton\""), "{problems:?}");
    }

    #[test]
    fn statement_drops_header_lines_only() {
        let text = "-- name: hot\n\n-- A free comment\n-- action: amqp G\nSELECT a\n-- key: not a header here\nFROM \"/t\"\n";
        assert_eq!(statement(text), "-- A free comment\nSELECT a\n-- key: not a header here\nFROM \"/t\"\n");
        let numbers: Vec<usize> = statement_lines(text).map(|(n, _)| n).collect();
        assert_eq!(numbers, [3, 5, 6, 7]);
        assert_eq!(statement("SELECT 1 FROM \"/t\""), "SELECT 1 FROM \"/t\"");
        assert_eq!(header_line("  -- data_type: binary "), Some(("data_type", "binary")));
        assert_eq!(header_line("-- Note: text"), None);
        assert!(
            valid_name("温度_hot-1") && !valid_name("a.b") && !valid_name("") && !valid_name(&"a".repeat(31))
        );
    }
}
