//! `iotpipe rules list|show|create|update|enable|disable|delete|try`: the rules of a running
//! server through `/api/v1/rules`. `rules.rs` declares these commands beside the offline `check`
//! and `test` and calls in here; nothing here calls back.
//!
//! `create` and `update` read a rule file as `rules/*.sql` are written (`-- key: value` header
//! lines, then the SQL) and send it as the API's JSON body.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde_json::{json, Map, Value};

use super::client::{Client, ClientError, ServerArgs};
use super::table::{self, cell, Table};
use crate::rules::header::{self, Field};
use crate::rules::DataType;

/// The API takes bodies up to 64 KiB; a bigger file would only be refused after the upload.
const MAX_FILE: u64 = 64 * 1024;

/// Arguments of commands that need only the server.
#[derive(Debug, Args)]
pub struct ServerOnly {
    #[command(flatten)]
    server: ServerArgs,
}

/// Arguments of commands on one rule.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// Rule name.
    name: String,
    #[command(flatten)]
    server: ServerArgs,
}

/// Arguments of `rules create` and `rules update`.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// A rule file (`-- name:`, `-- action:` ... header lines, then the SQL); `-`: standard input.
    #[arg(long)]
    file: PathBuf,
    #[command(flatten)]
    server: ServerArgs,
}

/// Arguments of `rules try`.
#[derive(Debug, Args)]
pub struct TryArgs {
    /// Rule name.
    name: String,
    /// The topic the message arrives on.
    #[arg(long)]
    topic: String,
    /// The payload, as the device would send it (JSON for json rules).
    #[arg(long)]
    payload: String,
    #[command(flatten)]
    server: ServerArgs,
}

/// `rules list`.
///
/// # Errors
/// The request's failure, as one line.
pub fn list(a: &ServerOnly) -> anyhow::Result<()> {
    let client = Client::new(&a.server)?;
    let answer = client.get(&["rules"])?;
    if client.json {
        answer.print_json();
        return Ok(());
    }
    let mut t = Table::new(&["NAME", "ENABLED", "DATA TYPE", "ACTIONS", "DESCRIPTION"]);
    for r in answer.items() {
        t.row(vec![
            cell(&r["name"]),
            cell(&r["enabled"]),
            cell(&r["dataType"]),
            actions(&r["actions"]),
            cell(&r["description"]),
        ]);
    }
    t.print();
    Ok(())
}

/// `rules show NAME`.
///
/// # Errors
/// The request's failure, as one line.
pub fn show(a: &NameArgs) -> anyhow::Result<()> {
    let client = Client::new(&a.server)?;
    let answer = client.get(&["rules", &a.name])?;
    if client.json {
        answer.print_json();
    } else {
        print_rule(&answer.value);
    }
    Ok(())
}

/// `rules create --file F` (POST) and `rules update --file F` (PUT to the file's rule name).
/// A rule the server does not compile is reported at the file's own lines.
///
/// # Errors
/// An unreadable or malformed file, or the request's failure, as one line.
pub fn upload(a: &FileArgs, update: bool) -> anyhow::Result<()> {
    let (origin, text) = read_input(&a.file)?;
    let stem = if a.file.as_os_str() == "-" {
        None
    } else {
        a.file.file_stem().and_then(|s| s.to_str()).map(str::to_string)
    };
    let file = RuleFile::parse(&origin, stem.as_deref(), &text)?;
    let name = file.body["name"].as_str().unwrap_or_default().to_string();
    let client = Client::new(&a.server)?;
    let sent = if update {
        client.put(&["rules", &name], &file.body)
    } else {
        client.post(&["rules"], Some(&file.body))
    };
    let answer = match sent {
        Err(ClientError::Api { request, status, code, message, hint, body })
            if code == "InvalidRule" && body["diagnostics"].is_array() =>
        {
            let located: Vec<String> = body["diagnostics"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| file.locate(&origin, d))
                .collect();
            let message = if located.is_empty() {
                message
            } else {
                format!("the rule does not compile: {}", located.join("; "))
            };
            return Err(ClientError::Api { request, status, code, message, hint, body }.into());
        }
        other => other?,
    };
    answer.print_warnings();
    if client.json {
        answer.print_json();
    } else {
        print_rule(&answer.value);
    }
    Ok(())
}

/// `rules enable NAME` / `rules disable NAME`.
///
/// # Errors
/// The request's failure, as one line.
pub fn set_enabled(a: &NameArgs, enabled: bool) -> anyhow::Result<()> {
    let client = Client::new(&a.server)?;
    let answer = client.patch(&["rules", &a.name], &json!({ "enabled": enabled }))?;
    if client.json {
        answer.print_json();
    } else {
        table::emit(&format!("{} rule {}\n", if enabled { "enabled" } else { "disabled" }, a.name));
    }
    Ok(())
}

/// `rules delete NAME`.
///
/// # Errors
/// The request's failure, as one line.
pub fn delete(a: &NameArgs) -> anyhow::Result<()> {
    let client = Client::new(&a.server)?;
    let answer = client.delete(&["rules", &a.name])?;
    if client.json {
        answer.print_json();
    } else {
        table::emit(&format!("deleted rule {}\n", a.name));
    }
    Ok(())
}

/// `rules try NAME --topic T --payload P`: the server's rule on one message, printed as
/// `rules test` prints it (the result as one JSON line, or `no match` with the reason on stderr).
/// True when the rule matched.
///
/// # Errors
/// The request's failure, as one line.
pub fn try_rule(a: &TryArgs) -> anyhow::Result<bool> {
    let client = Client::new(&a.server)?;
    let body = json!({ "name": a.name, "topic": a.topic, "payload": a.payload });
    let answer = client.post(&["rules", "test"], Some(&body))?;
    let v = &answer.value;
    let matched = v["matched"].as_bool().unwrap_or(false);
    // A rule that fails for the message (division by zero, ...) is an error, as in `rules test`.
    let failed = v["error"].as_str().map(|e| anyhow::anyhow!("the rule failed for this message: {e}"));
    if client.json {
        answer.print_json();
        return match failed {
            Some(e) => Err(e),
            None => Ok(matched),
        };
    }
    if let Some(e) = failed {
        return Err(e);
    }
    if matched {
        // The result as the rule's output: an object as one JSON line, a raw payload as text.
        let result = match &v["result"] {
            Value::String(s) => s.clone(),
            other => raw_result(&answer.text).map_or_else(|| other.to_string(), str::to_string),
        };
        table::emit(&format!("{result}\n"));
    } else {
        table::emit("no match\n");
        eprintln!("{}", v["reason"].as_str().unwrap_or("the rule did not match this message"));
    }
    Ok(matched)
}

/// The result object exactly as the server wrote it, so its fields keep the SELECT order (a parsed
/// `Value` sorts them). The server writes `matched` first, then `result`.
fn raw_result(text: &str) -> Option<&str> {
    let rest = text.trim_start().strip_prefix(r#"{"matched":true,"result":"#)?;
    let mut values = serde_json::Deserializer::from_str(rest).into_iter::<serde::de::IgnoredAny>();
    values.next()?.ok()?;
    Some(&rest[..values.byte_offset()])
}

fn print_rule(v: &Value) {
    let order = ["name", "description", "enabled", "dataType", "actions", "errorAction", "file", "metrics"];
    let mut pairs = table::object_fields(v, &order);
    // The SQL goes below the fields; warnings went to stderr already.
    pairs.retain(|(k, _)| k != "sql" && k != "warnings");
    for (k, val) in &mut pairs {
        match k.as_str() {
            "actions" => *val = actions(&v["actions"]),
            "metrics" => *val = metrics(&v["metrics"]),
            _ => {}
        }
    }
    let mut out = table::fields(&pairs);
    if let Some(sql) = v["sql"].as_str() {
        out.push('\n');
        out.push_str(sql.trim_end());
        out.push('\n');
    }
    table::emit(&out);
}

/// The counters as `key=value` words, one line per family (`matched`/`failed...`,
/// `actions.*`, `error_action.*`, ...).
fn metrics(v: &Value) -> String {
    let Some(map) = v.as_object() else { return cell(v) };
    let mut lines: Vec<(&str, Vec<String>)> = Vec::new();
    for (k, val) in map {
        let family = match k.split_once('.') {
            Some((prefix, _)) if !map.contains_key(prefix) => prefix,
            _ => "",
        };
        let word = format!("{k}={}", cell(val));
        match lines.iter_mut().find(|(f, _)| *f == family) {
            Some((_, words)) => words.push(word),
            None => lines.push((family, vec![word])),
        }
    }
    // The rule's own counters first.
    lines.sort_by_key(|(f, _)| !f.is_empty());
    lines.iter().map(|(_, words)| words.join(" ")).collect::<Vec<_>>().join("\n")
}

/// Actions joined with `; ` (an action itself may contain commas).
fn actions(v: &Value) -> String {
    match v.as_array() {
        Some(a) if !a.is_empty() => a.iter().map(cell).collect::<Vec<_>>().join("; "),
        _ => "-".into(),
    }
}

/// Reads a file, or standard input for `-`: `(name for messages, text)`.
pub(super) fn read_input(path: &Path) -> anyhow::Result<(String, String)> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .take(MAX_FILE + 1)
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        anyhow::ensure!(text.len() as u64 <= MAX_FILE, "<stdin>: larger than the API's 64 KiB limit");
        return Ok(("<stdin>".into(), text));
    }
    let name = path.display().to_string();
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {name}"))?;
    file.take(MAX_FILE + 1).read_to_string(&mut text).with_context(|| format!("cannot read {name}"))?;
    anyhow::ensure!(text.len() as u64 <= MAX_FILE, "{name}: larger than the API's 64 KiB limit");
    Ok((name, text))
}

/// A rule file split into the API body, with where each part came from.
#[derive(Debug)]
pub(super) struct RuleFile {
    /// `{"name", "sql", "actions", "errorAction"?, "description"?, "enabled"?, "dataType"?}`.
    pub(super) body: Value,
    /// The file's line number of each line of `sql`.
    sql_lines: Vec<usize>,
    /// The file's line number of each header field (`actions[0]`, `errorAction`, `name`, ...).
    field_lines: BTreeMap<String, usize>,
}

impl RuleFile {
    /// Splits a rule file: the header lines, read by the rules engine's own reader, become fields;
    /// the rest (free comments included) is the SQL. The name is the header's, else the file
    /// stem. A header the server would refuse in a file is refused here, with every problem;
    /// values are sent as written, and the server checks them as it checks any body.
    pub(super) fn parse(origin: &str, stem: Option<&str>, text: &str) -> anyhow::Result<Self> {
        let header = header::parse(origin, text);
        if !header.problems.is_empty() {
            let problems: Vec<String> = header
                .problems
                .iter()
                .map(|d| {
                    let hint = d.hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default();
                    format!("{}:{}: {}{hint}", d.file, d.line, d.message)
                })
                .collect();
            anyhow::bail!("{}", problems.join("; "));
        }
        let mut body = Map::new();
        let mut actions = Vec::new();
        let mut field_lines = BTreeMap::new();
        for l in &header.lines {
            let (field, v) = match &l.field {
                Field::Name(_) => ("name".to_string(), json!(l.text)),
                Field::Description(_) => ("description".into(), json!(l.text)),
                Field::Enabled(enabled) => ("enabled".into(), json!(enabled)),
                Field::DataType(DataType::Json) => ("dataType".into(), json!("json")),
                Field::DataType(DataType::Binary) => ("dataType".into(), json!("binary")),
                Field::Action(_) => (format!("actions[{}]", actions.len()), json!(l.text)),
                Field::ErrorAction(_) => ("errorAction".into(), json!(l.text)),
            };
            if matches!(l.field, Field::Action(_)) {
                actions.push(v);
            } else {
                body.insert(field.clone(), v);
            }
            field_lines.insert(field, l.line);
        }
        if !body.contains_key("name") {
            let Some(stem) = stem else {
                anyhow::bail!(
                    "{origin}: no `-- name:` header line (needed when the rule comes from standard input)"
                )
            };
            body.insert("name".into(), json!(stem));
        }
        let mut sql: Vec<(usize, &str)> = header::statement_lines(text)
            .map(|(n, raw)| (n, raw.strip_suffix('\n').map_or(raw, |l| l.strip_suffix('\r').unwrap_or(l))))
            .collect();
        while sql.last().is_some_and(|(_, l)| l.trim().is_empty()) {
            sql.pop();
        }
        anyhow::ensure!(!sql.is_empty(), "{origin}: no SQL statement after the header");
        let text: Vec<&str> = sql.iter().map(|(_, l)| *l).collect();
        body.insert("sql".into(), json!(text.join("\n")));
        body.insert("actions".into(), Value::Array(actions));
        let sql_lines = sql.iter().map(|(n, _)| *n).collect();
        Ok(Self { body: Value::Object(body), sql_lines, field_lines })
    }

    /// One of the server's diagnostics (`{"field", "line"?, "col"?, "message", "hint"?}`, lines
    /// of the field's text) at the file's own line: `r.sql:7:25: message`.
    fn locate(&self, origin: &str, d: &Value) -> String {
        let field = d["field"].as_str().unwrap_or_default();
        let message = d["message"].as_str().unwrap_or_default();
        let hint = d["hint"].as_str().map(|h| format!(" (hint: {h})")).unwrap_or_default();
        let (line, col) = (d["line"].as_u64(), d["col"].as_u64());
        let place = match (field, line, col) {
            ("sql", Some(l), Some(c)) => {
                match usize::try_from(l).ok().and_then(|l| self.sql_lines.get(l.checked_sub(1)?)) {
                    Some(n) => format!("{origin}:{n}:{c}"),
                    None => format!("{origin}: sql:{l}:{c}"),
                }
            }
            _ => match self.field_lines.get(field) {
                Some(n) => format!("{origin}:{n}: {field}"),
                None => format!("{origin}: {field}"),
            },
        };
        format!("{place}: {message}{hint}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Rule;

    #[test]
    fn metrics_are_grouped_by_family() {
        let v = json!({"matched": 1, "failed": 0, "failed.exception": 0, "actions.success": 1, "actions.failed": 0});
        assert_eq!(metrics(&v), "failed=0 failed.exception=0 matched=1\nactions.failed=0 actions.success=1");
    }

    #[test]
    fn the_result_keeps_the_servers_field_order() {
        let text = r#"{"matched":true,"result":{"t":40,"dn":"d,}1"},"x":1}"#;
        assert_eq!(raw_result(text), Some(r#"{"t":40,"dn":"d,}1"}"#));
        assert_eq!(raw_result(r#"{"matched":false}"#), None);
    }

    fn body(origin: &str, stem: Option<&str>, text: &str) -> anyhow::Result<Value> {
        RuleFile::parse(origin, stem, text).map(|f| f.body)
    }

    #[test]
    fn a_rule_file_becomes_the_api_body() {
        let text = "-- name: high_temperature\n-- description: Hot.\n-- enabled: false\n\
                    -- data_type: JSON\n-- action: amqp DEFAULT_GROUP tag=${dn}\n-- action: republish /x\n\
                    -- error_action: amqp ERR\n-- a free comment\n\nSELECT t FROM \"/a/+\"\nWHERE t > 1\n\n";
        let file = RuleFile::parse("r.sql", Some("r"), text).unwrap();
        assert_eq!(
            file.body,
            json!({
                "name": "high_temperature", "description": "Hot.", "enabled": false, "dataType": "json",
                "actions": ["amqp DEFAULT_GROUP tag=${dn}", "republish /x"], "errorAction": "amqp ERR",
                "sql": "-- a free comment\nSELECT t FROM \"/a/+\"\nWHERE t > 1",
            })
        );
        assert_eq!(file.sql_lines, [8, 10, 11]);
        let d = json!({"field": "sql", "line": 3, "col": 9, "message": "bad", "hint": "fix"});
        assert_eq!(file.locate("r.sql", &d), "r.sql:11:9: bad (hint: fix)");
        let d = json!({"field": "actions[1]", "message": "no such group"});
        assert_eq!(file.locate("r.sql", &d), "r.sql:6: actions[1]: no such group");
        let d = json!({"field": "sql", "line": 9, "col": 1, "message": "m"});
        assert_eq!(file.locate("r.sql", &d), "r.sql: sql:9:1: m");
    }

    #[test]
    fn the_name_defaults_to_the_stem_and_optional_fields_stay_out() {
        let b = body("hot.sql", Some("hot"), "SELECT * FROM \"/a/#\"").unwrap();
        assert_eq!(b, json!({"name": "hot", "sql": "SELECT * FROM \"/a/#\"", "actions": []}));
        let e = body("<stdin>", None, "SELECT 1 FROM \"/a\"").unwrap_err().to_string();
        assert!(e.contains("-- name:"), "{e}");
    }

    /// A header means the same to `rules create` as to the server reading the file: refused by
    /// both, or sent as the fields the server reads from it.
    #[test]
    fn a_header_means_the_same_to_the_cli_and_the_server() {
        let long = format!("-- description: {}", "d".repeat(101));
        let eleven = "-- action: amqp G\n".repeat(11);
        let headers = [
            "-- enabled: yes",
            "-- enabled: No",
            "-- enabled: maybe",
            "-- enabled: 1",
            "-- data_type: BINARY",
            "-- data_type: xml",
            "-- name: hot\n-- name: hotter",
            "-- name: bad name!",
            "-- name: 温度_1",
            &long,
            "-- action: amqp G tag=${dn}\n-- action: republish /a/${deviceName()}",
            "-- action: smtp x",
            "-- action: amqp G tag=a b",
            &eleven,
            "-- error_action: amqp E",
            // The CLI once sent the last of two error actions; the server refuses the file.
            "-- error_action: amqp E\n-- error_action: amqp F",
            "-- acton: amqp G",
        ];
        for h in headers {
            let text = format!("{h}\n-- a free comment\nSELECT 1 AS one FROM \"/a/+/user/u\"\n");
            let server = Rule::from_file("r.sql", "r", &text, None);
            let cli = RuleFile::parse("r.sql", Some("r"), &text).map(|f| f.body);
            match (&server, &cli) {
                (Ok(rule), Ok(body)) => {
                    assert_eq!(body["name"], rule.name.as_str(), "{h}");
                    assert_eq!(body["description"].as_str().unwrap_or_default(), rule.description, "{h}");
                    assert_eq!(body["enabled"].as_bool().unwrap_or(true), rule.enabled, "{h}");
                    let binary = body["dataType"].as_str() == Some("binary");
                    assert_eq!(binary, rule.data_type == DataType::Binary, "{h}");
                    let actions: Vec<_> = body["actions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| crate::rules::Action::parse(a.as_str().unwrap()).unwrap())
                        .collect();
                    assert_eq!(actions, rule.actions, "{h}");
                    let error_action =
                        body["errorAction"].as_str().map(|a| crate::rules::Action::parse(a).unwrap());
                    assert_eq!(error_action, rule.error_action, "{h}");
                    assert_eq!(body["sql"], crate::rules::header::statement(&text).trim_end(), "{h}");
                }
                (Err(_), Err(_)) => {}
                _ => panic!("{h}: the server reads {server:?}, the CLI {cli:?}"),
            }
        }
    }

    #[test]
    fn header_mistakes_are_named_with_their_line() {
        let e = body("r.sql", Some("r"), "-- name: r\n-- acton: amqp G\nSELECT 1 FROM \"/a\"")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("r.sql:2: unknown header key \"acton\""), "{e}");
        let e = body("r.sql", Some("r"), "-- enabled: maybe\nSELECT 1 FROM \"/a\"").unwrap_err().to_string();
        assert!(e.starts_with("r.sql:1: enabled"), "{e}");
        assert!(body("r.sql", Some("r"), "-- name: r\n").is_err());
    }
}
