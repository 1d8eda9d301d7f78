//! Loading the configuration file and reporting *every* problem in it at once.
//!
//! Loading runs three passes, each reporting all it finds, every problem with its file, line
//! and key:
//!
//! 1. TOML syntax, parsed with `toml_edit`, which keeps the byte span of every key and value
//!    (nothing else runs on a file that does not parse);
//! 2. a schema walk over that document against `schema::ROOT`, a static description of the keys of
//!    [`Config`] and what their values must be: unknown keys, missing required keys, values of
//!    the wrong type, unparsable listen addresses, unknown message types (`schema.rs`);
//! 3. every top-level section in which pass 2 found nothing is deserialised (serde) and checked
//!    by the component that owns it (ranges, uniqueness, names, TLS files), then the references
//!    between sections are checked (`validate.rs`). A problem in one section does not hide
//!    those of another; a section with a schema problem is not checked further.
//!
//! This file holds the passes' orchestration; what they share (the problem collector
//! [`Report`] and line lookup) is in `report.rs`.
//!
//! Messages never repeat secret values (device and access key secrets, the admin token), and
//! syntax errors are reported without echoing the offending source line.

use std::path::Path;

use super::report::{ConfigError, Lines, Report};
use super::schema;
use super::validate::Validator;
use super::Config;

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
    let mut report = Report::new(origin, &lines);

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
            report.unkeyed(line, message);
            return Err(report.into_error());
        }
    };

    // Pass 2: schema.
    schema::walk(&mut report, doc.as_table());

    // Pass 3: the sections the schema found sound, deserialised and checked by their
    // components; the references between them.
    let table: toml::Table = match toml::from_str(text) {
        Ok(table) => table,
        Err(err) => {
            let line = err.span().map(|span| lines.line(span.start));
            report.unkeyed(line, err.message().trim().to_string());
            return Err(report.into_error());
        }
    };
    let mut validator = Validator { report: &mut report, root: doc.as_item() };
    let sections = validator.read(&table);
    validator.check(&sections);
    match sections.into_config() {
        Some(config) if report.is_empty() => Ok(config),
        _ => Err(report.into_error()),
    }
}

/// The line of the dotted `key` (`mqtt.listen`) in the configuration `text`, when it is written
/// there: errors found after loading (a listen address in use) point at it as loading does.
pub fn line_of(text: &str, key: &str) -> Option<usize> {
    let doc = toml_edit::Document::parse(text).ok()?;
    let path = key.split('.').fold(None::<crate::check::Path>, |path, seg| {
        Some(match path {
            None => crate::check::key(seg),
            Some(p) => p.key(seg),
        })
    })?;
    match super::report::find(doc.as_item(), &path) {
        (Some(span), true) => Some(Lines::new(text).line(span.start)),
        _ => None,
    }
}

/// The problems of a file that must not load.
#[cfg(test)]
pub(super) fn problems_in(text: &str) -> Vec<super::Problem> {
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
pub(super) fn lines_and_keys(problems: &[super::Problem]) -> Vec<(Option<usize>, &str)> {
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
    fn line_of_finds_a_written_key() {
        let text = "rules_dir = \"r\"\n[mqtt]\nkeep_alive_min_secs = 1\nlisten = \"127.0.0.1:1\"\n";
        assert_eq!(line_of(text, "mqtt.listen"), Some(4));
        assert_eq!(line_of(text, "amqp.listen"), None, "defaulted");
        assert_eq!(line_of("not toml [", "mqtt.listen"), None);
    }

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

    #[test]
    fn early_delivery_and_the_commit_interval() {
        let plain = load_str("", "t.toml").expect("loads");
        assert!(!plain.storage.early_delivery);
        assert_eq!(plain.storage.commit_interval(), std::time::Duration::ZERO);
        let early = load_str("[storage]\nearly_delivery = true\n", "t.toml").expect("loads");
        assert_eq!(early.storage.commit_interval(), std::time::Duration::from_millis(4));
        let set =
            load_str("[storage]\nearly_delivery = true\ncommit_interval_ms = 0\n", "t.toml").expect("loads");
        assert_eq!(set.storage.commit_interval(), std::time::Duration::ZERO);
        let problems = problems_in("[storage]\ncommit_interval_ms = 5000\nearly_delivery = \"yes\"\n");
        assert_eq!(
            lines_and_keys(&problems),
            vec![(Some(2), "storage.commit_interval_ms"), (Some(3), "storage.early_delivery")]
        );
    }
}
