//! A rule file: header comments, then one SQL statement.
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
//! Header lines are SQL comments of the form `-- key: value` before the statement. Other comment
//! lines are free text, but a line that looks like a header (`-- word: ...`, lowercase word) with
//! an unknown key is an error, so a typo such as `-- acton:` does not silently drop an action.

use std::sync::Arc;

use super::action::Action;
use super::compile::{compile, DataType, Options};
use super::error::Diagnostic;
use super::ir::Query;
use super::metrics::RuleMetrics;
use super::script::Scripts;

/// Actions per rule: the platform's limit.
pub const MAX_ACTIONS: usize = 10;
/// Longest rule name: the platform's limit.
pub const MAX_NAME: usize = 30;
/// Longest description: the platform's limit.
pub const MAX_DESCRIPTION: usize = 100;

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// Unique name (the file stem unless the header says otherwise).
    pub name: String,
    /// Free text.
    pub description: String,
    /// Disabled rules are loaded and checked but match nothing.
    pub enabled: bool,
    /// JSON or binary payloads.
    pub data_type: DataType,
    /// The file's full text.
    pub source: String,
    /// Where it came from (a path, or `<sql>`).
    pub origin: String,
    /// Actions, in order.
    pub actions: Vec<Action>,
    /// The error action.
    pub error_action: Option<Action>,
    /// Counters; kept across reloads of the same rule.
    pub metrics: Arc<RuleMetrics>,
    pub(crate) query: Query,
}

/// The name rule: 1 to [`MAX_NAME`] letters, digits, `_` or `-`. Such a name is also a safe
/// file stem (no separator, no dot, at most 120 bytes), so `{name}.sql` is always a file of the
/// rules directory.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_NAME
        && name.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

/// The key and value of a line that reads as a header line (`-- key: value`, a lowercase key),
/// the test [`Rule::from_file`] applies to the comment lines before the statement.
pub fn header_line(line: &str) -> Option<(&str, &str)> {
    let comment = line.trim_start().strip_prefix("--")?;
    let (key, value) = comment.split_once(':')?;
    let key = key.trim();
    let is_key = !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    is_key.then(|| (key, value.trim()))
}

/// The statement of a rule file: the text without its header lines (and the blank lines among
/// them). Free comment lines are kept, so the statement written back under a new header is the
/// same rule.
pub fn statement(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_header = true;
    for line in text.split_inclusive('\n') {
        if in_header {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || header_line(line).is_some() {
                continue;
            }
            in_header = trimmed.starts_with("--");
        }
        out.push_str(line);
    }
    out
}

const KEYS: &[&str] = &["name", "description", "enabled", "data_type", "action", "error_action"];

impl Rule {
    /// True for a binary rule selecting `*` alone: it forwards the payload unchanged.
    pub fn forwards_raw(&self) -> bool {
        self.query.raw
    }

    /// The FROM topic filter as written.
    pub fn topic_filter(&self) -> &str {
        &self.query.filter.text
    }

    /// True when some topic matches both the FROM filter and `filter`, given as its levels in the
    /// normal form (without `/sys`; `+` and a final `#` allowed): the rule may see messages that
    /// `filter` names. Subscriptions ask this to find rules forwarding the same messages.
    pub fn from_intersects(&self, filter: &[&str]) -> bool {
        self.query.filter.intersects(filter)
    }

    /// Compiles a rule file. `origin` names it in diagnostics; `stem` is the default name.
    ///
    /// # Errors
    /// Every header problem, plus the first SQL problem, each as `file:line:col: message`.
    pub fn from_file(
        origin: &str,
        stem: &str,
        text: &str,
        scripts: Option<&Scripts>,
    ) -> Result<Rule, Vec<Diagnostic>> {
        let mut errors = Vec::new();
        let mut name = stem.to_string();
        let mut description = String::new();
        let mut enabled = true;
        let mut data_type = DataType::Json;
        let mut actions = Vec::new();
        let mut error_action = None;
        let mut diag = |line: usize, col: usize, msg: String, hint: Option<&str>| {
            errors.push(Diagnostic {
                file: origin.to_string(),
                line: line as u64,
                col: col as u64,
                message: msg,
                hint: hint.map(str::to_string),
            });
        };
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim_start();
            if trimmed.is_empty() {
                continue;
            }
            let Some(comment) = trimmed.strip_prefix("--") else { break };
            let Some((key, value)) = comment.split_once(':') else { continue };
            let key = key.trim();
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                continue;
            }
            let value = value.trim();
            let col = raw.len() - trimmed.len() + 2 + comment.find(key).unwrap_or(0) + 1;
            let vcol = raw.find(value).map_or(col, |p| p + 1);
            match key {
                "name" => {
                    if valid_name(value) {
                        name = value.to_string();
                    } else {
                        diag(
                            line,
                            vcol,
                            format!("a rule name is 1-{MAX_NAME} letters, digits, '_' or '-', got {value:?}"),
                            None,
                        );
                    }
                }
                "description" => {
                    if value.chars().count() > MAX_DESCRIPTION {
                        diag(
                            line,
                            vcol,
                            format!("the description is longer than {MAX_DESCRIPTION} characters"),
                            None,
                        );
                    }
                    description = value.to_string();
                }
                "enabled" => match value.to_ascii_lowercase().as_str() {
                    "true" | "yes" => enabled = true,
                    "false" | "no" => enabled = false,
                    _ => diag(line, vcol, format!("enabled is true or false, got {value:?}"), None),
                },
                "data_type" => match value.to_ascii_lowercase().as_str() {
                    "json" => data_type = DataType::Json,
                    "binary" => data_type = DataType::Binary,
                    _ => diag(line, vcol, format!("data_type is json or binary, got {value:?}"), None),
                },
                "action" => match Action::parse(value) {
                    Ok(a) if actions.len() < MAX_ACTIONS => actions.push(a),
                    Ok(_) => diag(line, col, format!("a rule has at most {MAX_ACTIONS} actions"), None),
                    Err(m) => {
                        diag(line, vcol, m, Some("actions are `amqp GROUP [tag=...]` or `republish /TOPIC`"))
                    }
                },
                "error_action" => match Action::parse(value) {
                    Ok(_) if error_action.is_some() => {
                        diag(line, col, "a rule has at most one error_action".into(), None)
                    }
                    Ok(a) => error_action = Some(a),
                    Err(m) => diag(line, vcol, m, None),
                },
                other => diag(
                    line,
                    col,
                    format!("unknown header key {other:?}"),
                    Some(&format!("known keys: {}", KEYS.join(", "))),
                ),
            }
        }
        let query = compile(text, Options { data_type, scripts }).map_err(|e| e.in_file(origin));
        let query = match query {
            Ok(q) if errors.is_empty() => q,
            Ok(_) => return Err(errors),
            Err(d) => {
                errors.push(d);
                errors.sort_by_key(|d| (d.line, d.col));
                return Err(errors);
            }
        };
        Ok(Rule {
            name,
            description,
            enabled,
            data_type,
            source: text.to_string(),
            origin: origin.to_string(),
            actions,
            error_action,
            metrics: Arc::new(RuleMetrics::default()),
            query,
        })
    }

    /// Compiles bare SQL (no header), as `rules test` does.
    ///
    /// # Errors
    /// The SQL's problems, reported against `<sql>`.
    pub fn from_sql(
        sql: &str,
        data_type: DataType,
        scripts: Option<&Scripts>,
    ) -> Result<Rule, Vec<Diagnostic>> {
        let header = if data_type == DataType::Binary { "-- data_type: binary\n" } else { "" };
        // A header line shifts positions by one line; bare SQL keeps its own.
        if header.is_empty() {
            Rule::from_file("<sql>", "sql", sql, scripts)
        } else {
            let mut r =
                Rule::from_file("<sql>", "sql", &format!("{header}{sql}"), scripts).map_err(|mut v| {
                    for d in &mut v {
                        d.line = d.line.saturating_sub(1).max(1);
                    }
                    v
                })?;
            r.source = sql.to_string();
            Ok(r)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_read() {
        let text =
            "-- name: hot\n-- description: Hot things\n-- enabled: false\n-- action: amqp G tag=${t}\n\
                    -- action: republish /a/${t}\n-- error_action: amqp ERR\n-- Free comment, not a header\n\
                    SELECT t FROM \"/a/+\"";
        let r = Rule::from_file("r.sql", "r", text, None).unwrap();
        assert_eq!(r.name, "hot");
        assert!(!r.enabled);
        assert_eq!(r.actions.len(), 2);
        assert!(r.error_action.is_some());
        assert_eq!(r.topic_filter(), "/a/+");
    }

    #[test]
    fn every_header_error_is_reported() {
        let text = "-- name: bad name!\n-- acton: amqp G\n-- data_type: xml\nSELECT a FROM \"/t\" WHERE\n";
        let errs = Rule::from_file("r.sql", "r", text, None).unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert_eq!(errs[1].to_string(), "r.sql:2:4: unknown header key \"acton\" (hint: known keys: name, description, enabled, data_type, action, error_action)");
        assert_eq!((errs[3].line, errs[3].col), (4, 25), "{errs:?}");
    }

    #[test]
    fn statement_drops_header_lines_only() {
        let text = "-- name: hot\n\n-- A free comment\n-- action: amqp G\nSELECT a\n-- key: not a header here\nFROM \"/t\"\n";
        assert_eq!(statement(text), "-- A free comment\nSELECT a\n-- key: not a header here\nFROM \"/t\"\n");
        assert_eq!(statement("SELECT 1 FROM \"/t\""), "SELECT 1 FROM \"/t\"");
        assert_eq!(header_line("  -- data_type: binary "), Some(("data_type", "binary")));
        assert_eq!(header_line("-- Note: text"), None);
        assert!(
            valid_name("温度_hot-1") && !valid_name("a.b") && !valid_name("") && !valid_name(&"a".repeat(31))
        );
    }

    #[test]
    fn action_limit() {
        let mut text = String::new();
        for _ in 0..11 {
            text.push_str("-- action: amqp G\n");
        }
        text.push_str("SELECT a FROM \"/t\"");
        let errs = Rule::from_file("r.sql", "r", &text, None).unwrap_err();
        assert!(errs[0].message.contains("at most 10"));
    }
}
