//! The command line: `iotpipe serve`, `iotpipe device sign`, ..., and the management commands
//! (`groups`, `subscriptions`, `rules list|show|...`, `devices`, `alerts`) that operate a running
//! server through its HTTP API (`client.rs`, output in `table.rs`).
//!
//! Exit codes: 0 ok, 1 error (one line on stderr), 2 usage, 3 `no match`.

mod alerts;
mod amqp_sign;
mod bench;
mod client;
mod cluster;
mod devices;
mod downlink;
mod groups;
mod rules;
mod rules_api;
mod rules_sync;
mod serve;
mod sign;
mod subscriptions;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// iotpipe: MQTT ingress, SQL rules and consumer groups over AMQP 1.0 in one binary.
#[derive(Debug, Parser)]
#[command(name = "iotpipe", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Command {
    /// Runs the platform. Without --config it runs the embedded demo configuration.
    Serve {
        /// TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// SQL rules: check files, dry-run a statement (no server needed); manage a server's rules.
    Rules {
        #[command(subcommand)]
        command: rules::RulesCommand,
    },
    /// Consumer groups of a running server.
    Groups {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(subcommand)]
        command: groups::GroupsCommand,
    },
    /// Server-side subscriptions of a running server.
    Subscriptions {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(subcommand)]
        command: subscriptions::SubscriptionsCommand,
    },
    /// Products and devices of a running server.
    Devices {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(subcommand)]
        command: devices::DevicesCommand,
    },
    /// Alert rules of a running server.
    Alerts {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(subcommand)]
        command: alerts::AlertsCommand,
    },
    /// The cluster a running node belongs to (`status`: its live nodes).
    Cluster {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Device credentials.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// AMQP consumer credentials.
    Amqp {
        #[command(subcommand)]
        command: AmqpCommand,
    },
    /// Load tool: devices publish, consumers accept; reports msgs/s, latency, server CPU and
    /// memory. Starts iotpipe itself unless --mqtt names a running server (docs/cli.md).
    Bench(bench::BenchArgs),
}

/// Runs a management command with a client for `server`.
fn remote(
    server: &client::ServerArgs,
    f: impl FnOnce(&client::Client) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    f(&client::Client::new(server)?)
}

#[derive(Debug, Subcommand)]
enum AmqpCommand {
    /// Prints the SASL PLAIN username and password a consumer logs in with.
    Sign(amqp_sign::AmqpSignArgs),
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Prints the MQTT clientId, username and password a device connects with.
    Sign(sign::SignArgs),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve::run(config.as_deref()),
        Command::Device { command: DeviceCommand::Sign(args) } => sign::run(&args),
        Command::Rules { command } => match rules::run(&command) {
            Ok(rules::Done::Ok) => Ok(()),
            Ok(rules::Done::NoMatch) => return ExitCode::from(3),
            Err(e) => Err(e),
        },
        Command::Amqp { command: AmqpCommand::Sign(args) } => amqp_sign::run(&args),
        Command::Groups { server, command } => remote(&server, |c| groups::run(c, &command)),
        Command::Subscriptions { server, command } => remote(&server, |c| subscriptions::run(c, &command)),
        Command::Devices { server, command } => remote(&server, |c| devices::run(c, &command)),
        Command::Alerts { server, command } => remote(&server, |c| alerts::run(c, &command)),
        Command::Cluster { server, command } => remote(&server, |c| cluster::run(c, &command)),
        Command::Bench(args) => bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
