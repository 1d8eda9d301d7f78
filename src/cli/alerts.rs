//! `iotpipe alerts ...`: alert rules through `/api/v1/alert-rules`. A rule is written as the
//! JSON body of the contract ("Alert rule body") in a file.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use serde_json::Value;

use super::client::Client;
use super::table::{self, cell, time_cell, Table};

/// `iotpipe alerts ...`.
#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Lists the alert rules.
    List,
    /// Shows one alert rule.
    Show {
        /// Alert rule id.
        id: String,
    },
    /// Creates an alert rule from a JSON file.
    Create {
        /// The rule as JSON (`-`: standard input).
        #[arg(long)]
        file: PathBuf,
    },
    /// Replaces an alert rule with the one in a JSON file.
    Update {
        /// Alert rule id.
        id: String,
        /// The rule as JSON (`-`: standard input).
        #[arg(long)]
        file: PathBuf,
    },
    /// Deletes an alert rule.
    Delete {
        /// Alert rule id.
        id: String,
    },
}

/// The fields of an alert rule in the order a reader wants them.
const ORDER: &[&str] = &[
    "id",
    "name",
    "consumerGroupIds",
    "metric",
    "comparison",
    "threshold",
    "periodSeconds",
    "consecutivePeriods",
    "muteSeconds",
    "effective",
    "callbackUrl",
    "source",
    "lastEvaluatedAt",
    "delivery",
];

/// Runs an alerts command.
///
/// # Errors
/// An unreadable or malformed file, or the request's failure, as one line.
pub fn run(client: &Client, cmd: &AlertsCommand) -> anyhow::Result<()> {
    use AlertsCommand as C;
    let answer = match cmd {
        C::List => client.get(&["alert-rules"])?,
        C::Show { id } => client.get(&["alert-rules", id])?,
        C::Create { file } => client.post(&["alert-rules"], Some(&read_json(file)?))?,
        C::Update { id, file } => client.put(&["alert-rules", id], &read_json(file)?)?,
        C::Delete { id } => client.delete(&["alert-rules", id])?,
    };
    if client.json {
        answer.print_json();
        return Ok(());
    }
    match cmd {
        C::List => {
            let mut t =
                Table::new(&["ID", "NAME", "METRIC", "CONDITION", "PERIOD (S)", "CONSECUTIVE", "GROUPS"]);
            for r in answer.items() {
                t.row(vec![
                    cell(&r["id"]),
                    cell(&r["name"]),
                    cell(&r["metric"]),
                    format!("{} {}", cell(&r["comparison"]), cell(&r["threshold"])),
                    cell(&r["periodSeconds"]),
                    cell(&r["consecutivePeriods"]),
                    groups(&r["consumerGroupIds"]),
                ]);
            }
            t.print();
        }
        C::Show { .. } | C::Create { .. } | C::Update { .. } => print_rule(&answer.value),
        C::Delete { id } => table::emit(&format!("deleted alert rule {id}\n")),
    }
    Ok(())
}

/// The rule's fields, then (for `show`) each group's state and the last notifications as tables.
fn print_rule(v: &Value) {
    let mut pairs = table::object_fields(v, ORDER);
    pairs.retain(|(k, _)| !matches!(k.as_str(), "status" | "history"));
    for (k, val) in &mut pairs {
        match k.as_str() {
            "consumerGroupIds" => *val = groups(&v["consumerGroupIds"]),
            "effective" => *val = effective(&v["effective"]),
            "lastEvaluatedAt" => *val = time_cell(&v["lastEvaluatedAt"]),
            _ => {}
        }
    }
    let mut out = table::fields(&pairs);
    if let Some(status) = v["status"].as_array().filter(|a| !a.is_empty()) {
        let mut t = Table::new(&["GROUP", "STATE", "CONSECUTIVE", "LAST VALUE", "LAST NOTIFIED"]);
        for s in status {
            t.row(vec![
                cell(&s["groupId"]),
                cell(&s["state"]),
                cell(&s["consecutive"]),
                cell(&s["lastValue"]),
                time_cell(&s["lastNotifiedAt"]),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    if let Some(history) = v["history"].as_array().filter(|a| !a.is_empty()) {
        let mut t = Table::new(&["TIME", "GROUP", "STATE", "VALUE", "DELIVERY", "ATTEMPTS"]);
        for h in history {
            t.row(vec![
                time_cell(&h["time"]),
                cell(&h["groupId"]),
                cell(&h["state"]),
                cell(&h["value"]),
                cell(&h["delivery"]),
                cell(&h["attempts"]),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    table::emit(&out);
}

/// No groups means every group.
fn groups(v: &Value) -> String {
    match v.as_array() {
        Some(a) if !a.is_empty() => cell(v),
        _ => "(all)".into(),
    }
}

/// `mon,tue 08:00-18:00`.
fn effective(v: &Value) -> String {
    if v.is_null() {
        return "always".into();
    }
    format!("{} {}-{}", cell(&v["days"]), cell(&v["start"]), cell(&v["end"]))
}

/// Reads a JSON file (or standard input for `-`); errors name the file, line and column.
pub(super) fn read_json(path: &Path) -> anyhow::Result<Value> {
    let (name, text) = super::rules_api::read_input(path)?;
    serde_json::from_str(&text).with_context(|| format!("{name}: not valid JSON"))
}
