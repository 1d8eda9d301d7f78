//! The command line: `iotpipe serve`, `iotpipe device sign`, ...
//!
//! Exit codes: 0 ok, 1 error (one line on stderr), 2 usage, 3 `no match`.

mod amqp_sign;
mod rules;
mod serve;
mod sign;

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
enum Command {
    /// Runs the platform. Without --config it runs the embedded demo configuration.
    Serve {
        /// TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// SQL rules: check files, dry-run a statement.
    Rules {
        #[command(subcommand)]
        command: rules::RulesCommand,
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
