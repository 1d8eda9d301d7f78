//! A rule file: header comments ([`super::header`]), then one SQL statement, compiled into a
//! [`Rule`].

use std::sync::Arc;

use super::action::Action;
use super::compile::{compile, DataType, Options};
use super::error::Diagnostic;
use super::header::{self, Field};
use super::ir::Query;
use super::metrics::RuleMetrics;
use super::script::Scripts;

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

impl Rule {
    /// True for a binary rule selecting `*` alone: it forwards the payload unchanged.
    pub fn forwards_raw(&self) -> bool {
        self.query.raw
    }

    /// The FROM topic filter as written.
    pub fn topic_filter(&self) -> &str {
        &self.query.filter.text
    }

    /// The product key the FROM filter names (`/pk/dn/...`, `/sys/pk/...`,
    /// `/as/mqtt/status/pk/...`); `None` when that level is a wildcard or the filter has none.
    pub fn from_product(&self) -> Option<&str> {
        let levels: Vec<&str> = self.topic_filter().trim_start_matches('/').split('/').collect();
        let product = match levels.as_slice() {
            ["sys", pk, ..] | ["as", "mqtt", "status", pk, ..] | [pk, _, ..] => *pk,
            _ => return None,
        };
        (!product.contains(['+', '#'])).then_some(product)
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
        let header = header::parse(origin, text);
        let mut errors = header.problems;
        let mut name = stem.to_string();
        let mut description = String::new();
        let mut enabled = true;
        let mut data_type = DataType::Json;
        let mut actions = Vec::new();
        let mut error_action = None;
        for line in header.lines {
            match line.field {
                Field::Name(n) => name = n,
                Field::Description(d) => description = d,
                Field::Enabled(e) => enabled = e,
                Field::DataType(d) => data_type = d,
                Field::Action(a) => actions.push(a),
                Field::ErrorAction(a) => error_action = Some(a),
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
    fn the_product_of_the_from_filter() {
        let product = |from: &str| {
            let rule =
                Rule::from_sql(&format!("SELECT 1 AS x FROM \"{from}\""), DataType::Json, None).unwrap();
            rule.from_product().map(str::to_string)
        };
        assert_eq!(product("/a1demo/+/user/update").as_deref(), Some("a1demo"));
        assert_eq!(product("/sys/a1demo/+/thing/event/property/post").as_deref(), Some("a1demo"));
        assert_eq!(product("/as/mqtt/status/a1demo/+").as_deref(), Some("a1demo"));
        assert_eq!(product("/+/dev1/user/update"), None);
        assert_eq!(product("#"), None);
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
