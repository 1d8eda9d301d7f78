//! `iotpipe rules export` and `iotpipe rules import`: a running server's rules to rule files
//! and back. In a cluster the rules API writes the cluster's state, so an import reaches every
//! node; an export of one node and an import into another moves hand-written rule files into
//! the cluster.

use std::path::{Path, PathBuf};

use clap::Args;
use reqwest::StatusCode;
use serde_json::Value;

use super::client::{Client, ClientError, ServerArgs};
use super::rules_api::{read_input, RuleFile};
use crate::rules::edit::RuleSpec;
use crate::rules::DataType;

/// Arguments of `rules export` and `rules import`.
#[derive(Debug, Args)]
pub struct DirArgs {
    /// The directory of the rule files (`NAME.sql`); export creates it if missing.
    #[arg(long)]
    dir: PathBuf,
    #[command(flatten)]
    server: ServerArgs,
}

/// The rule file of one rule as the API shows it.
fn file_text(rule: &Value) -> anyhow::Result<(String, String)> {
    let text = |key: &str| rule[key].as_str().unwrap_or_default().to_string();
    let name = text("name");
    anyhow::ensure!(!name.is_empty(), "the server listed a rule without a name: {rule}");
    let spec = RuleSpec {
        name: name.clone(),
        description: text("description"),
        enabled: rule["enabled"].as_bool().unwrap_or(true),
        data_type: if rule["dataType"] == "binary" { DataType::Binary } else { DataType::Json },
        actions: rule["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        error_action: rule["errorAction"].as_str().map(String::from),
        sql: text("sql"),
    };
    let file = spec.file_text().map_err(|e| anyhow::anyhow!("rule {name}: {e}"))?;
    Ok((name, file))
}

/// `rules export --dir D`: every rule as `D/NAME.sql`, overwriting files of the same name.
///
/// # Errors
/// The request's failure, or a file that cannot be written, as one line.
pub fn export(a: &DirArgs) -> anyhow::Result<()> {
    let client = Client::new(&a.server)?;
    let answer = client.get(&["rules"])?;
    std::fs::create_dir_all(&a.dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", a.dir.display()))?;
    let mut written = 0;
    for rule in answer.items() {
        let (name, text) = file_text(rule)?;
        let path = a.dir.join(format!("{name}.sql"));
        std::fs::write(&path, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        written += 1;
    }
    println!("{written} rules written to {}", a.dir.display());
    Ok(())
}

/// The `.sql` files of `dir`, by name.
fn rule_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    Ok(files)
}

/// `rules import --dir D`: each `D/*.sql` created, or replaced when the server has the rule.
/// Every file is tried; the failures are reported together at the end.
///
/// # Errors
/// Any file that was not imported (each named, with the server's reason).
pub fn import(a: &DirArgs) -> anyhow::Result<()> {
    let client = Client::new(&a.server)?;
    let mut failed = Vec::new();
    let mut done = 0;
    for path in rule_files(&a.dir)? {
        let imported = (|| -> anyhow::Result<&'static str> {
            let (origin, text) = read_input(&path)?;
            let stem = path.file_stem().and_then(|s| s.to_str());
            let file = RuleFile::parse(&origin, stem, &text)?;
            let name = file.body["name"].as_str().unwrap_or_default().to_string();
            match client.get(&["rules", &name]) {
                Ok(_) => client.put(&["rules", &name], &file.body).map(|_| "replaced").map_err(Into::into),
                Err(ClientError::Api { status, .. }) if status == StatusCode::NOT_FOUND => {
                    client.post(&["rules"], Some(&file.body)).map(|_| "created").map_err(Into::into)
                }
                Err(e) => Err(e.into()),
            }
        })();
        match imported {
            Ok(what) => {
                done += 1;
                println!("{}: {what}", path.display());
            }
            Err(e) => failed.push(format!("{}: {e}", path.display())),
        }
    }
    anyhow::ensure!(
        failed.is_empty(),
        "{} of {} rule files not imported: {}",
        failed.len(),
        failed.len() + done,
        failed.join("; ")
    );
    println!("{done} rules imported from {}", a.dir.display());
    Ok(())
}
