//! `iotpipe cluster status`: the live nodes of a cluster through `/api/v1/cluster/status`.

use clap::Subcommand;

use super::client::Client;
use super::table::{self, cell, time_cell, Table};

/// `iotpipe cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Lists the cluster's live nodes (their heartbeats) with their connections.
    Status,
}

/// Runs a cluster command. On a node without `[cluster]` the server's `NotClustered` answer
/// is the error.
///
/// # Errors
/// The request's failure, as one line.
pub fn run(client: &Client, cmd: &ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Status => {
            let answer = client.get(&["cluster", "status"])?;
            if client.json {
                answer.print_json();
                return Ok(());
            }
            let v = &answer.value;
            let nodes = v["nodes"].as_array().map_or(&[][..], Vec::as_slice);
            let mut out = format!(
                "cluster {}: {} live node{} (answered by {})\n\n",
                cell(&v["cluster"]),
                nodes.len(),
                if nodes.len() == 1 { "" } else { "s" },
                cell(&v["node"])
            );
            let mut t = Table::new(&[
                "NODE",
                "VERSION",
                "STARTED",
                "HTTP",
                "MQTT",
                "AMQP",
                "DEVICES",
                "CONSUMERS",
                "HEARTBEAT",
            ]);
            for n in nodes {
                t.row(vec![
                    cell(&n["node"]),
                    cell(&n["version"]),
                    time_cell(&n["startedAt"]),
                    cell(&n["http"]),
                    cell(&n["mqtt"]),
                    cell(&n["amqp"]),
                    cell(&n["deviceConnections"]),
                    cell(&n["consumerConnections"]),
                    time_cell(&n["heartbeatAt"]),
                ]);
            }
            out.push_str(&t.render());
            table::emit(&out);
        }
    }
    Ok(())
}
