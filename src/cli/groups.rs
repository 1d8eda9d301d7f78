//! `iotpipe groups ...`: consumer groups through `/api/v1/consumer-groups`.

use clap::Subcommand;

use super::client::Client;
use super::table::{self, cell, time_cell, Table};

/// `iotpipe groups ...`.
#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// Lists consumer groups.
    List {
        /// Only groups whose name contains this (case-insensitive).
        #[arg(long)]
        name: Option<String>,
    },
    /// Creates a group; the server generates its id.
    Create {
        /// 4-30 letters, digits or '_' (a Chinese or Japanese character counts 2).
        name: String,
    },
    /// Shows one group.
    Show {
        /// Group id.
        id: String,
    },
    /// Shows a group's backlog, consumption rate and online clients.
    Status {
        /// Group id.
        id: String,
    },
    /// Drops every message waiting in a group.
    Clear {
        /// Group id.
        id: String,
    },
    /// Deletes a group and its stored messages.
    Delete {
        /// Group id.
        id: String,
    },
    /// A group's dead letters: messages a consumer rejected.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
}

/// `iotpipe groups dead-letters ...`.
#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// Lists a group's dead letters, oldest first.
    List {
        /// Group id.
        id: String,
        /// At most this many (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Start at this seq (the `next` of the previous page).
        #[arg(long)]
        from: Option<u64>,
    },
    /// Moves every dead letter back to the group's queue, to be delivered again.
    Requeue {
        /// Group id.
        id: String,
    },
    /// Drops every dead letter of the group.
    Purge {
        /// Group id.
        id: String,
    },
}

/// Runs a groups command.
///
/// # Errors
/// The request's failure, as one line.
pub fn run(client: &Client, cmd: &GroupsCommand) -> anyhow::Result<()> {
    let answer = match cmd {
        GroupsCommand::List { name } => {
            let query: Vec<(&str, &str)> = name.iter().map(|n| ("name", n.as_str())).collect();
            client.get_query(&["consumer-groups"], &query)?
        }
        GroupsCommand::Create { name } => {
            client.post(&["consumer-groups"], Some(&serde_json::json!({ "name": name })))?
        }
        GroupsCommand::Show { id } => client.get(&["consumer-groups", id])?,
        GroupsCommand::Status { id } => client.get(&["consumer-groups", id, "status"])?,
        GroupsCommand::Clear { id } => client.post(&["consumer-groups", id, "clear"], None)?,
        GroupsCommand::Delete { id } => client.delete(&["consumer-groups", id])?,
        GroupsCommand::DeadLetters(DeadLettersCommand::List { id, limit, from }) => {
            let (limit, from) = (limit.to_string(), from.map(|f| f.to_string()));
            let mut query = vec![("limit", limit.as_str())];
            query.extend(from.as_deref().map(|f| ("from", f)));
            client.get_query(&["consumer-groups", id, "dead-letters"], &query)?
        }
        GroupsCommand::DeadLetters(DeadLettersCommand::Requeue { id }) => {
            client.post(&["consumer-groups", id, "dead-letters", "requeue"], None)?
        }
        GroupsCommand::DeadLetters(DeadLettersCommand::Purge { id }) => {
            client.delete(&["consumer-groups", id, "dead-letters"])?
        }
    };
    if client.json {
        answer.print_json();
        return Ok(());
    }
    let v = &answer.value;
    match cmd {
        GroupsCommand::List { .. } => {
            let mut t = Table::new(&["ID", "NAME"]);
            for g in answer.items() {
                t.row(vec![cell(&g["id"]), cell(&g["name"])]);
            }
            t.print();
        }
        GroupsCommand::Create { .. } | GroupsCommand::Show { .. } => {
            table::print_fields(&[("id", cell(&v["id"])), ("name", cell(&v["name"]))]);
        }
        GroupsCommand::Status { id } => print_status(id, v),
        GroupsCommand::Clear { id } => {
            table::emit(&format!("cleared {} message(s) from consumer group {id}\n", cell(&v["cleared"])));
        }
        GroupsCommand::Delete { id } => table::emit(&format!("deleted consumer group {id}\n")),
        GroupsCommand::DeadLetters(DeadLettersCommand::List { .. }) => {
            let mut t = Table::new(&["SEQ", "MESSAGE ID", "TOPIC", "DEAD SINCE", "BYTES"]);
            let items = v["items"].as_array().map_or(&[][..], Vec::as_slice);
            for d in items {
                let bytes = d["payloadBase64"].as_str().map_or(0, |b| b.len() / 4 * 3);
                t.row(vec![
                    cell(&d["seq"]),
                    cell(&d["messageId"]),
                    cell(&d["topic"]),
                    time_cell(&d["deadLetterTime"]),
                    format!("~{bytes}"),
                ]);
            }
            let mut out = t.render();
            if !v["next"].is_null() {
                out.push_str(&format!("more: --from {}\n", cell(&v["next"])));
            }
            table::emit(&out);
        }
        GroupsCommand::DeadLetters(DeadLettersCommand::Requeue { id }) => {
            table::emit(&format!(
                "re-queued {} dead letter(s) of consumer group {id}\n",
                cell(&v["requeued"])
            ));
        }
        GroupsCommand::DeadLetters(DeadLettersCommand::Purge { id }) => {
            table::emit(&format!("purged {} dead letter(s) of consumer group {id}\n", cell(&v["purged"])));
        }
    }
    Ok(())
}

/// Summary lines, then the online clients as a table.
fn print_status(id: &str, v: &serde_json::Value) {
    let clients = v["onlineClients"].as_array().map_or(&[][..], Vec::as_slice);
    let c = &v["counters"];
    let counters = [
        "appended",
        "delivered",
        "acked",
        "redelivered",
        "expired",
        "rejected",
        "cleared",
        "requeued",
        "purged",
    ]
    .iter()
    .filter(|k| !c[**k].is_null())
    .map(|k| format!("{k}={}", cell(&c[*k])))
    .collect::<Vec<_>>()
    .join(" ");
    let mut summary = table::fields(&[
        ("group", id.to_string()),
        ("accumulated", cell(&v["accumulatedCount"])),
        ("in flight", cell(&v["inFlightCount"])),
        ("rate", format!("{} msg/min", cell(&v["consumptionRate"]))),
        ("last consumed", time_cell(&v["lastConsumptionTime"])),
        ("dead letters", cell(&v["deadLetterCount"])),
        ("counters", if counters.is_empty() { "-".into() } else { counters }),
        ("online clients", clients.len().to_string()),
    ]);
    if !clients.is_empty() {
        let mut t = Table::new(&["CLIENT ID", "ADDRESS", "ONLINE SINCE", "RATE/MIN"]);
        for c in clients {
            t.row(vec![
                cell(&c["clientId"]),
                cell(&c["clientIpPort"]),
                time_cell(&c["onlineTime"]),
                cell(&c["consumptionRate"]),
            ]);
        }
        summary.push('\n');
        summary.push_str(&t.render());
    }
    table::emit(&summary);
}
