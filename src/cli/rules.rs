//! `iotpipe rules check` and `iotpipe rules test`: the rules engine without a server. The
//! subcommands that operate a running server are declared here and run in `rules_api.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};

use super::rules_api;

use crate::rules::dry_run::{self, DryRun, Matched, Sample};
use crate::rules::files::{self, Loaded};
use crate::rules::{DataType, Diagnostic, EvalContext, Rule, RuleSet};

/// `iotpipe rules ...`.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Compiles rule files (default: ./rules) and prints every error as file:line:col: message.
    Check(CheckArgs),
    /// Runs one SQL statement against one message and prints the result as one JSON line.
    Test(TestArgs),
    /// Lists the rules of a running server.
    List(rules_api::ServerOnly),
    /// Shows one rule of a running server, with its SQL.
    Show(rules_api::NameArgs),
    /// Adds a rule file to a running server.
    Create(rules_api::FileArgs),
    /// Replaces a rule of a running server with a rule file (the rule named in the file).
    Update(rules_api::FileArgs),
    /// Enables a rule of a running server.
    Enable(rules_api::NameArgs),
    /// Disables a rule of a running server.
    Disable(rules_api::NameArgs),
    /// Deletes a rule of a running server.
    Delete(rules_api::NameArgs),
    /// Runs a rule of a running server on one message, like `rules test`.
    Try(rules_api::TryArgs),
    /// Writes every rule of a running server as a rule file into a directory.
    Export(super::rules_sync::DirArgs),
    /// Creates or replaces a running server's rules from the rule files of a directory (in a
    /// cluster: for every node).
    Import(super::rules_sync::DirArgs),
}

/// Arguments of `rules check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Rule files (*.sql, *.rhai) or directories; default: the `rules` directory.
    paths: Vec<PathBuf>,
}

/// Arguments of `rules test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// The SQL statement.
    #[arg(long)]
    sql: String,
    /// The topic the message arrives on.
    #[arg(long)]
    topic: String,
    /// The payload (JSON for json rules; any text for binary rules).
    #[arg(long)]
    payload: String,
    /// deviceName; defaults to the device level of the topic.
    #[arg(long)]
    device_name: Option<String>,
    /// productKey; defaults to the product level of the topic.
    #[arg(long)]
    product_key: Option<String>,
    /// The device's client id, for clientId().
    #[arg(long)]
    client_id: Option<String>,
    /// json (default) or binary.
    #[arg(long, value_enum, default_value_t = TestDataType::Json)]
    data_type: TestDataType,
    /// A device tag for attribute(), as key=value; repeatable.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
    /// A rhai script whose functions the SQL may call.
    #[arg(long)]
    script: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TestDataType {
    Json,
    Binary,
}

/// What a rules command ends with, for the exit code.
#[derive(Debug)]
pub enum Done {
    /// Exit 0.
    Ok,
    /// Exit 3: `no match`.
    NoMatch,
}

/// Runs a rules command.
///
/// # Errors
/// Compile errors (every one printed to stderr first), unreadable files, evaluation failures.
pub fn run(cmd: &RulesCommand) -> anyhow::Result<Done> {
    match cmd {
        RulesCommand::Check(a) => check(a),
        RulesCommand::Test(a) => test(a),
        RulesCommand::List(a) => rules_api::list(a).map(|()| Done::Ok),
        RulesCommand::Show(a) => rules_api::show(a).map(|()| Done::Ok),
        RulesCommand::Create(a) => rules_api::upload(a, false).map(|()| Done::Ok),
        RulesCommand::Export(a) => super::rules_sync::export(a).map(|()| Done::Ok),
        RulesCommand::Import(a) => super::rules_sync::import(a).map(|()| Done::Ok),
        RulesCommand::Update(a) => rules_api::upload(a, true).map(|()| Done::Ok),
        RulesCommand::Enable(a) => rules_api::set_enabled(a, true).map(|()| Done::Ok),
        RulesCommand::Disable(a) => rules_api::set_enabled(a, false).map(|()| Done::Ok),
        RulesCommand::Delete(a) => rules_api::delete(a).map(|()| Done::Ok),
        RulesCommand::Try(a) => {
            rules_api::try_rule(a).map(|matched| if matched { Done::Ok } else { Done::NoMatch })
        }
    }
}

fn check(args: &CheckArgs) -> anyhow::Result<Done> {
    let paths = if args.paths.is_empty() { vec![PathBuf::from("rules")] } else { args.paths.clone() };
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    let mut rules = 0usize;
    for p in &paths {
        if p.is_dir() {
            let loaded = files::load_dir(p);
            rules += loaded.rules.len();
            diagnostics.extend(loaded.diagnostics);
        } else if p.is_file() {
            let (n, d) = check_file(p);
            rules += n;
            diagnostics.extend(d);
        } else {
            diagnostics.push(Diagnostic {
                file: p.display().to_string(),
                line: 1,
                col: 1,
                message: "no such file or directory".into(),
                hint: None,
            });
        }
    }
    for d in &diagnostics {
        eprintln!("{d}");
    }
    if diagnostics.is_empty() {
        println!("{rules} rule(s) OK");
        Ok(Done::Ok)
    } else {
        anyhow::bail!("{} error(s) in rule files", diagnostics.len())
    }
}

/// Checks one file; scripts in the same directory are loaded so calls to them compile.
fn check_file(p: &Path) -> (usize, Vec<Diagnostic>) {
    let mut loaded = Loaded::default();
    if p.extension().and_then(|e| e.to_str()) == Some("rhai") {
        let text = match files::read_small(p) {
            Ok(t) => t,
            Err(d) => return (0, vec![d]),
        };
        return match crate::rules::script::Script::compile(&text) {
            Ok(_) => (0, Vec::new()),
            Err(e) => (
                0,
                vec![Diagnostic {
                    file: p.display().to_string(),
                    line: 1,
                    col: 1,
                    message: e.to_string(),
                    hint: None,
                }],
            ),
        };
    }
    if let Some(dir) = p.parent() {
        files::load_scripts(if dir.as_os_str().is_empty() { Path::new(".") } else { dir }, &mut loaded);
    }
    match files::load_rule(p, &loaded.scripts) {
        Ok(_) => (1, loaded.diagnostics),
        Err(mut d) => {
            loaded.diagnostics.append(&mut d);
            (0, loaded.diagnostics)
        }
    }
}

fn test(a: &TestArgs) -> anyhow::Result<Done> {
    let mut scripts = crate::rules::script::Scripts::default();
    if let Some(path) = &a.script {
        let text = files::read_small(path).map_err(|d| anyhow::anyhow!("{d}"))?;
        let s = crate::rules::script::Script::compile(&text)
            .map_err(|e| anyhow::anyhow!("{}:{e}", path.display()))?;
        scripts.add(&s);
    }
    let data_type = if a.data_type == TestDataType::Binary { DataType::Binary } else { DataType::Json };
    let rule = match Rule::from_sql(&a.sql, data_type, (!scripts.is_empty()).then_some(&scripts)) {
        Ok(r) => r,
        Err(diags) => {
            for d in diags.iter().skip(1) {
                eprintln!("{d}");
            }
            anyhow::bail!("{}", diags.first().map(ToString::to_string).unwrap_or_default());
        }
    };
    let msg = Sample {
        topic: a.topic.clone(),
        payload: Bytes::from(a.payload.clone().into_bytes()),
        product_key: a.product_key.clone(),
        device_name: a.device_name.clone(),
        client_id: a.client_id.clone(),
    }
    .message();
    let mut tags = BTreeMap::new();
    for t in &a.tags {
        let (k, v) = t.split_once('=').ok_or_else(|| anyhow::anyhow!("--tag {t:?}: write key=value"))?;
        tags.insert(k.to_string(), v.to_string());
    }
    let ctx = EvalContext { tags: Some(&tags) };
    let reason = match dry_run::run(&RuleSet::default(), &rule, &msg, &ctx) {
        DryRun::Matched(Matched::Raw(payload)) => {
            println!("{}", String::from_utf8_lossy(&payload));
            return Ok(Done::Ok);
        }
        DryRun::Matched(Matched::Row(row)) => {
            println!("{}", row.to_json());
            return Ok(Done::Ok);
        }
        DryRun::Failed(e) => anyhow::bail!("the rule failed for this message: {e}"),
        DryRun::Missed(why) => why,
    };
    println!("no match");
    eprintln!("{reason}");
    Ok(Done::NoMatch)
}
