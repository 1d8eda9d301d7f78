//! Loading the configuration file and reporting *every* problem in it at once.
//!
//! Loading runs four passes; a pass runs only when the earlier ones found nothing, and
//! each pass reports all it finds, every problem with its file, line and key:
//!
//! 1. TOML syntax, parsed with `toml_edit`, which keeps the byte span of every key and value;
//! 2. a schema walk over that document against [`ROOT`], a static description of the keys of
//!    [`Config`] and what their values must be: unknown keys, missing required keys, values of
//!    the wrong type, unparsable listen addresses, unknown message types (`schema.rs`);
//! 3. `serde` deserialisation into [`Config`] (after pass 2 this should not fail);
//! 4. semantic checks on the [`Config`] (ranges, uniqueness, names, references between
//!    sections, TLS files), each problem pointing at the line of the offending value
//!    (`validate.rs`).
//!
//! This file holds the passes' orchestration and what the other two share: the problem
//! collector [`Report`], line lookup ([`Lines`]) and key paths ([`Seg`], [`render`]).
//!
//! Messages never repeat secret values (device and access key secrets, the admin token), and
//! syntax errors are reported without echoing the offending source line.

use std::fmt::{self, Write as _};
use std::ops::Range;
use std::path::Path;

use super::schema::ROOT;
use super::validate::Validator;
use super::Config;

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, as given to [`load_file`] or as the `origin` of [`load_str`].
    pub file: String,
    /// 1-based line of the offending key or value, when known.
    pub line: Option<usize>,
    /// Dotted path of the offending key, like `products[1].devices[0].name` or `mqtt.listen`;
    /// empty when the problem concerns no particular key (a syntax error, an unreadable file).
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for Problem {
    /// `file:line: key: message`, without `:line` when the line is unknown and without
    /// `key: ` when the key is empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a configuration could not be loaded: every problem found, in line order within the
/// pass that found them. Its `Display` prints one problem per line.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The problems; never empty when returned by [`load_str`] or [`load_file`].
    pub problems: Vec<Problem>,
}

impl ConfigError {
    /// The error for a configuration file that cannot be read at all: a single problem
    /// with no line and no key.
    #[must_use]
    pub fn unreadable(file: &str, err: &std::io::Error) -> Self {
        Self {
            problems: vec![Problem {
                file: file.to_string(),
                line: None,
                key: String::new(),
                message: format!("cannot read the configuration file: {err}"),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Reads and loads the configuration file at `path`; problems name the file as given.
///
/// # Errors
///
/// Every problem found (see [`load_str`]), or a single one when the file cannot be read.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::unreadable(&origin, &e))?;
    load_str(&text, &origin)
}

/// Loads a configuration from TOML `text`; `origin` names it in problems (usually a path).
///
/// Relative `cert` and `key` paths are checked relative to the current directory, where
/// the server opens them.
///
/// # Errors
///
/// Every problem found, in line order, by the first of the four passes (syntax, schema,
/// deserialisation, semantic checks) that found any.
pub fn load_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let lines = Lines::new(text);
    let mut report = Report { origin, lines: &lines, problems: Vec::new() };

    // Pass 1: syntax.
    let doc = match toml_edit::Document::parse(text) {
        Ok(doc) => doc,
        Err(err) => {
            // `message()` rather than `Display`: the latter quotes the source line, which may
            // hold a secret.
            let (line, message) = match err.span() {
                Some(span) => (
                    Some(lines.line(span.start)),
                    format!(
                        "syntax error at column {}: {}",
                        lines.column(text, span.start),
                        err.message().trim()
                    ),
                ),
                None => (None, format!("syntax error: {}", err.message().trim())),
            };
            report.push(line, String::new(), message);
            return Err(report.into_error());
        }
    };

    // Pass 2: schema.
    let mut path = Vec::new();
    report.table(doc.as_table(), ROOT, &mut path, ("", ""), None);
    report.check()?;

    // Pass 3: serde.
    let config: Config = toml::from_str(text).map_err(|err| {
        let line = err.span().map(|span| lines.line(span.start));
        report.push(line, String::new(), err.message().trim().to_string());
        report.take_error()
    })?;

    // Pass 4: semantics.
    Validator { report: &mut report, root: doc.as_item() }.config(&config);
    report.check()?;
    Ok(config)
}

// ---------------------------------------------------------------------------------------
// Positions and key paths
// ---------------------------------------------------------------------------------------

/// Byte offset → line and column.
pub(super) struct Lines {
    /// Byte offset of the start of every line.
    starts: Vec<usize>,
}

impl Lines {
    pub(super) fn new(text: &str) -> Self {
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Self { starts }
    }

    /// 1-based line of a byte offset.
    pub(super) fn line(&self, offset: usize) -> usize {
        // `starts[0] == 0`, so this is at least 1.
        self.starts.partition_point(|&start| start <= offset)
    }

    /// 1-based column (in characters) of a byte offset.
    pub(super) fn column(&self, text: &str, offset: usize) -> usize {
        let start = self.starts.get(self.line(offset) - 1).copied().unwrap_or(0);
        let chars = text.get(start..offset).map_or(offset.saturating_sub(start), |s| s.chars().count());
        chars + 1
    }
}

/// One step of a key path.
#[derive(Debug, Clone, Copy)]
pub(super) enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// `products[1].devices[0].name`; keys that are not bare TOML keys are quoted.
pub(super) fn render(path: &[Seg<'_>]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !key.is_empty()
                    && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if bare {
                    out.push_str(key);
                } else {
                    let _ = write!(out, "{key:?}");
                }
            }
            Seg::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
        }
    }
    out
}

pub(super) fn quoted_list(values: &[&str]) -> String {
    values.iter().map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(", ")
}

// ---------------------------------------------------------------------------------------
// Collecting problems (the schema walk, pass 2, is in `schema.rs`)
// ---------------------------------------------------------------------------------------

pub(super) struct Report<'a> {
    pub(super) origin: &'a str,
    pub(super) lines: &'a Lines,
    pub(super) problems: Vec<Problem>,
}

impl Report<'_> {
    fn push(&mut self, line: Option<usize>, key: String, message: String) {
        self.problems.push(Problem { file: self.origin.to_string(), line, key, message });
    }

    /// A problem at `path`, on the line where `span` starts.
    pub(super) fn at(&mut self, path: &[Seg<'_>], span: Option<Range<usize>>, message: impl Into<String>) {
        let line = span.map(|span| self.lines.line(span.start));
        self.push(line, render(path), message.into());
    }

    /// The problems so far as an error, leaving none behind.
    fn take_error(&mut self) -> ConfigError {
        let mut problems = std::mem::take(&mut self.problems);
        problems.sort_by_key(|p| p.line.unwrap_or(0));
        ConfigError { problems }
    }

    fn into_error(mut self) -> ConfigError {
        self.take_error()
    }

    /// Fails with the problems found so far, if any.
    fn check(&mut self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(self.take_error())
        }
    }
}

/// The problems of a file that must not load.
#[cfg(test)]
pub(super) fn problems_in(text: &str) -> Vec<Problem> {
    match load_str(text, "test.toml") {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(err) => {
            assert!(!err.problems.is_empty());
            err.problems
        }
    }
}

/// The line and key of every problem, for comparing with an expected list.
#[cfg(test)]
pub(super) fn lines_and_keys(problems: &[Problem]) -> Vec<(Option<usize>, &str)> {
    problems.iter().map(|p| (p.line, p.key.as_str())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example file of CONTRACT.md, "Configuration file".
    const CONTRACT_EXAMPLE: &str = r#"
[mqtt]
listen = "0.0.0.0:1883"          # plain MQTT 3.1.1 and 5
# tls_listen = "0.0.0.0:8883"; cert = "..."; key = "..."

[amqp]
listen = "0.0.0.0:5672"          # AMQP 1.0, SASL PLAIN
# tls_listen = "0.0.0.0:5671"; cert = "..."; key = "..."   (plain TLS from the first byte, as amqps:// clients do)

[http]
listen = "127.0.0.1:8080"        # management API, /metrics, console
admin_token = "change-me"        # Bearer token for /api/v1

[storage]
dir = "data"                     # everything that must survive a restart lives here

rules_dir = "rules"              # *.sql rule files, watched for changes

[[access_keys]]                  # AMQP consumers sign with these
id = "LTAIdemo"
secret = "demo-secret"

[[products]]
key = "a1demo"
name = "Demo thermometer"

[[products.devices]]
name = "dev1"
secret = "dev1-secret"

[[consumer_groups]]              # optional; DEFAULT_GROUP always exists
id = "g_alerts"
name = "alerts_group"

[[subscriptions]]                # optional product-wide server-side subscription
product_key = "a1demo"
message_types = ["upstream", "status", "lifecycle"]
consumer_groups = ["DEFAULT_GROUP"]
"#;

    #[test]
    fn demo_config_loads() {
        let config = load_str(super::super::DEMO_CONFIG, "demo.toml").expect("demo config loads");
        assert_eq!(config.products.len(), 1);
        assert_eq!(config.products[0].devices.len(), 2);
        assert_eq!(config.products[0].devices[0].tags.get("room").map(String::as_str), Some("lab"));
        assert_eq!(config.rules_dir(), std::path::PathBuf::from("rules"));
        assert_eq!(config.subscriptions[0].message_types.len(), 3);
    }

    #[test]
    fn contract_example_loads() {
        let config = load_str(CONTRACT_EXAMPLE, "contract.toml").expect("contract example loads");
        assert_eq!(config.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.consumer_groups[0].id, "g_alerts");
        assert_eq!(config.storage.rules_dir, Some("rules".into()));
        assert_eq!(config.rules_dir(), std::path::PathBuf::from("rules"));
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = load_str("", "empty.toml").expect("an empty file loads");
        assert_eq!(config.mqtt.listen.port(), 1883);
        assert_eq!(config.mqtt.keep_alive_min_secs, 30);
    }

    #[test]
    fn rules_dir_top_level_or_in_storage() {
        let top = load_str("rules_dir = \"r1\"\n[storage]\ndir = \"d\"\n", "t.toml").expect("loads");
        assert_eq!(top.rules_dir(), std::path::PathBuf::from("r1"));
        let inside = load_str("[storage]\nrules_dir = \"r2\"\n", "t.toml").expect("loads");
        assert_eq!(inside.rules_dir(), std::path::PathBuf::from("r2"));
    }

    #[test]
    fn syntax_error_reports_line_and_column() {
        let problems = problems_in("[mqtt]\nlisten = \"0.0.0.0:1883\"\nmax_inflight = = 3\n");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, Some(3));
        assert_eq!(problems[0].key, "");
        assert!(problems[0].message.contains("column 16"), "{}", problems[0].message);
        assert!(
            problems[0].to_string().starts_with("test.toml:3: syntax error at column 16: "),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn inline_tables_and_dotted_keys() {
        let text = r#"mqtt.listen = "127.0.0.1:0"
http = { listen = "127.0.0.1:0", admin_token = "t" }
products = [
  { key = "a1", devices = [{ name = "dev1", secret = "s" }, { name = "dev1", secret = "s" }] },
]
"#;
        let problems = problems_in(text);
        assert_eq!(lines_and_keys(&problems), vec![(Some(4), "products[0].devices[1].name")]);
        let text =
            text.replace("{ name = \"dev1\", secret = \"s\" }]", "{ name = \"dev2\", secret = \"s\" }]");
        let config = load_str(&text, "t.toml").expect("loads");
        assert_eq!(config.mqtt.listen.port(), 0);
        assert_eq!(config.products[0].devices[1].name, "dev2");

        let problems = problems_in("mqtt.lisen = 1\n[mqtt.tls]\ncert = \"c\"\n");
        assert_eq!(lines_and_keys(&problems), vec![(Some(1), "mqtt.lisen"), (Some(2), "mqtt.tls")]);
    }

    #[test]
    fn syntax_error_column_counts_characters() {
        let problems = problems_in("[[products]]\nname = \"Thermomètre\" x\n");
        assert_eq!(problems[0].line, Some(2));
        assert!(problems[0].message.contains("column 22"), "{}", problems[0].message);
    }

    #[test]
    fn no_secret_in_messages() {
        let long_secret = "S3cr3t".repeat(20);
        let text = format!(
            "[http]\nadmin_token = \"   \"\n[[products]]\nkey = \"a1\"\n\
             [[products.devices]]\nname = \"d1\"\nsecret = \"{long_secret}\"\n"
        );
        let err = load_str(&text, "t.toml").expect_err("problems");
        assert_eq!(lines_and_keys(&err.problems)[2], (Some(7), "products[0].devices[0].secret"));
        assert!(!err.to_string().contains("S3cr3t"), "{err}");

        // A syntax error on a secret's line does not echo the line.
        let err = load_str("[[access_keys]]\nid = \"a\"\nsecret = \"TopSecret\" x\n", "t.toml")
            .expect_err("syntax error");
        assert_eq!(err.problems[0].line, Some(3));
        assert!(!err.to_string().contains("TopSecret"), "{err}");

        // Neither does a wrong type.
        let err = load_str("[[access_keys]]\nid = \"a\"\nsecret = [\"TopSecret\"]\n", "t.toml")
            .expect_err("wrong type");
        assert!(!err.to_string().contains("TopSecret"), "{err}");
    }

    #[test]
    fn display_formats() {
        let mut problem = Problem {
            file: "a.toml".into(),
            line: Some(3),
            key: "mqtt.listen".into(),
            message: "bad".into(),
        };
        assert_eq!(problem.to_string(), "a.toml:3: mqtt.listen: bad");
        problem.line = None;
        problem.key.clear();
        assert_eq!(problem.to_string(), "a.toml: bad");
        let err = ConfigError { problems: vec![problem.clone(), problem] };
        assert_eq!(err.to_string(), "a.toml: bad\na.toml: bad");
    }

    #[test]
    fn load_file_reads_and_reports_unreadable_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.toml");
        let err = load_file(&missing).expect_err("missing file");
        assert_eq!(err.problems.len(), 1);
        assert_eq!(err.problems[0].file, missing.display().to_string());
        assert_eq!(err.problems[0].line, None);
        assert!(err.problems[0].message.starts_with("cannot read the configuration file"));

        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[mqtt]\nlisten = \"127.0.0.1:0\"\nbogus = 1\n").expect("write");
        let err = load_file(&file).expect_err("unknown key");
        assert_eq!(err.to_string().lines().count(), 1);
        assert!(err.to_string().starts_with(&format!("{}:3: mqtt.bogus: unknown key", file.display())));
        std::fs::write(&file, super::super::DEMO_CONFIG).expect("write");
        load_file(&file).expect("demo loads from a file");
    }
}
