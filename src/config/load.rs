//! Loading the configuration file and reporting *every* problem in it at once.
//!
//! Loading runs four passes; a pass runs only when the earlier ones found nothing, and
//! each pass reports all it finds, every problem with its file, line and key:
//!
//! 1. TOML syntax, parsed with `toml_edit`, which keeps the byte span of every key and value;
//! 2. a schema walk over that document against [`ROOT`], a static description of the keys of
//!    [`Config`] and what their values must be: unknown keys, missing required keys, values of
//!    the wrong type, unparsable listen addresses, unknown message types;
//! 3. `serde` deserialisation into [`Config`] (after pass 2 this should not fail);
//! 4. semantic checks on the [`Config`] (ranges, uniqueness, names, references between
//!    sections, TLS files), each problem pointing at the line of the offending value.
//!
//! Messages never repeat secret values (device and access key secrets, the admin token), and
//! syntax errors are reported without echoing the offending source line.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;

use toml_edit::{Array, Item, TableLike, Value};

use super::{Config, MessageType, ProductConfig};
use Seg::{Index as I, Key as K};

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
    let mut report = Report {
        origin,
        lines: &lines,
        problems: Vec::new(),
    };

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
    Validator {
        report: &mut report,
        root: doc.as_item(),
    }
    .config(&config);
    report.check()?;
    Ok(config)
}

// ---------------------------------------------------------------------------------------
// The schema: one `Field` per field of the serde structs in `mod.rs`, in the same order.
// The test `schema_matches_serde_structs` fails when the two disagree.
// ---------------------------------------------------------------------------------------

/// What a key's value must be.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A string, like `example`.
    Str { example: &'static str },
    /// An IP address and port written as a string, like `example`.
    Addr { example: &'static str },
    /// A non-negative integer of at most `max` (the limit of the field's Rust type).
    UInt { max: u64 },
    /// `true` or `false`.
    Bool,
    /// An array of strings, each one of `allowed` (any string when `allowed` is empty).
    Strings {
        allowed: &'static [&'static str],
        example: &'static str,
    },
    /// A table with free keys and string values, like `example`.
    StrMap { example: &'static str },
    /// A table (`[name]` or an inline table) with the given keys.
    Table(&'static [Field]),
    /// An array of tables (`[[name]]` or an array of inline tables) with the given keys.
    Tables(&'static [Field]),
}

/// One key of a table.
#[derive(Debug, Clone, Copy)]
struct Field {
    name: &'static str,
    kind: Kind,
    /// Whether serde has no default for it.
    required: bool,
}

/// An optional key (serde supplies a default).
const fn opt(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
    }
}

/// A required key.
const fn req(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: true,
    }
}

const fn string(example: &'static str) -> Kind {
    Kind::Str { example }
}

const fn addr(example: &'static str) -> Kind {
    Kind::Addr { example }
}

const USIZE: Kind = Kind::UInt {
    max: usize::MAX as u64,
};
const U16: Kind = Kind::UInt {
    max: u16::MAX as u64,
};
const U64: Kind = Kind::UInt { max: u64::MAX };

/// [`Config`]. `rules_dir` is valid both here and in `[storage]`: written after the
/// `[storage]` header, TOML puts it there.
const ROOT: &[Field] = &[
    opt("mqtt", Kind::Table(MQTT)),
    opt("amqp", Kind::Table(AMQP)),
    opt("http", Kind::Table(HTTP)),
    opt("storage", Kind::Table(STORAGE)),
    opt("rules_dir", string("rules")),
    opt("access_keys", Kind::Tables(ACCESS_KEY)),
    opt("products", Kind::Tables(PRODUCT)),
    opt("consumer_groups", Kind::Tables(CONSUMER_GROUP)),
    opt("subscriptions", Kind::Tables(SUBSCRIPTION)),
];

/// [`super::MqttConfig`].
const MQTT: &[Field] = &[
    opt("listen", addr("0.0.0.0:1883")),
    opt("tls_listen", addr("0.0.0.0:8883")),
    opt("cert", string("certs/server.pem")),
    opt("key", string("certs/server.key")),
    opt("max_payload_bytes", USIZE),
    opt("keep_alive_min_secs", U16),
    opt("keep_alive_max_secs", U16),
    opt("max_connections", USIZE),
    opt("max_inflight", USIZE),
    opt("connect_timeout_secs", U64),
];

/// [`super::AmqpConfig`].
const AMQP: &[Field] = &[
    opt("listen", addr("0.0.0.0:5672")),
    opt("tls_listen", addr("0.0.0.0:5671")),
    opt("cert", string("certs/server.pem")),
    opt("key", string("certs/server.key")),
];

/// [`super::HttpConfig`].
const HTTP: &[Field] = &[
    opt("listen", addr("127.0.0.1:8080")),
    opt("admin_token", string("change-me")),
];

/// [`super::StorageConfig`].
const STORAGE: &[Field] = &[
    opt("dir", string("data")),
    opt("rules_dir", string("rules")),
];

/// [`super::AccessKeyConfig`].
const ACCESS_KEY: &[Field] = &[
    req("id", string("LTAIdemo")),
    req("secret", string("demo-secret")),
];

/// [`super::ProductConfig`].
const PRODUCT: &[Field] = &[
    req("key", string("a1demo")),
    opt("name", string("Demo thermometer")),
    opt("devices", Kind::Tables(DEVICE)),
];

/// [`super::DeviceConfig`].
const DEVICE: &[Field] = &[
    req("name", string("dev1")),
    req("secret", string("dev1-secret")),
    opt("enabled", Kind::Bool),
    opt(
        "tags",
        Kind::StrMap {
            example: "{ room = \"lab\" }",
        },
    ),
];

/// [`super::ConsumerGroupConfig`].
const CONSUMER_GROUP: &[Field] = &[
    req("id", string("g_alerts")),
    req("name", string("alerts_group")),
];

/// [`super::SubscriptionConfig`].
const SUBSCRIPTION: &[Field] = &[
    req("product_key", string("a1demo")),
    req(
        "message_types",
        Kind::Strings {
            allowed: MESSAGE_TYPES,
            example: "upstream",
        },
    ),
    req(
        "consumer_groups",
        Kind::Strings {
            allowed: &[],
            example: DEFAULT_GROUP,
        },
    ),
];

/// The serde names of [`super::MessageType`].
const MESSAGE_TYPES: &[&str] = &["upstream", "status", "lifecycle"];

/// The serde name of a message type (one of [`MESSAGE_TYPES`]).
fn message_type_name(message_type: MessageType) -> &'static str {
    match message_type {
        MessageType::Upstream => "upstream",
        MessageType::Status => "status",
        MessageType::Lifecycle => "lifecycle",
    }
}

/// The consumer group that always exists.
const DEFAULT_GROUP: &str = "DEFAULT_GROUP";

// ---------------------------------------------------------------------------------------
// Positions and key paths
// ---------------------------------------------------------------------------------------

/// Byte offset → line and column.
struct Lines {
    /// Byte offset of the start of every line.
    starts: Vec<usize>,
}

impl Lines {
    fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { starts }
    }

    /// 1-based line of a byte offset.
    fn line(&self, offset: usize) -> usize {
        // `starts[0] == 0`, so this is at least 1.
        self.starts.partition_point(|&start| start <= offset)
    }

    /// 1-based column (in characters) of a byte offset.
    fn column(&self, text: &str, offset: usize) -> usize {
        let start = self.starts.get(self.line(offset) - 1).copied().unwrap_or(0);
        let chars = text
            .get(start..offset)
            .map_or(offset.saturating_sub(start), |s| s.chars().count());
        chars + 1
    }
}

/// One step of a key path.
#[derive(Debug, Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// `products[1].devices[0].name`; keys that are not bare TOML keys are quoted.
fn render(path: &[Seg<'_>]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !key.is_empty()
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
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

/// "an integer", "a table": the type of a value for messages.
fn a_type(item: &Item) -> String {
    with_article(item.type_name())
}

fn with_article(name: &str) -> String {
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}

fn quoted_list(values: &[&str]) -> String {
    values
        .iter()
        .map(|v| format!("\"{v}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------
// Collecting problems; pass 2, the schema walk
// ---------------------------------------------------------------------------------------

struct Report<'a> {
    origin: &'a str,
    lines: &'a Lines,
    problems: Vec<Problem>,
}

impl Report<'_> {
    fn push(&mut self, line: Option<usize>, key: String, message: String) {
        self.problems.push(Problem {
            file: self.origin.to_string(),
            line,
            key,
            message,
        });
    }

    /// A problem at `path`, on the line where `span` starts.
    fn at(&mut self, path: &[Seg<'_>], span: Option<Range<usize>>, message: impl Into<String>) {
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

    /// Checks the keys of a table against `fields`. `name` is its schema path
    /// (`products.devices`, empty for the root), `header` how messages name it
    /// (`[[products.devices]]`, empty for the root), `span` where it starts.
    fn table<'d>(
        &mut self,
        table: &'d dyn TableLike,
        fields: &[Field],
        path: &mut Vec<Seg<'d>>,
        (name, header): (&str, &str),
        span: Option<Range<usize>>,
    ) {
        for (key, item) in table.iter() {
            path.push(Seg::Key(key));
            match fields.iter().find(|f| f.name == key) {
                Some(field) => {
                    let sub = if name.is_empty() {
                        key.to_string()
                    } else {
                        format!("{name}.{key}")
                    };
                    self.item(item, field.kind, path, &sub);
                }
                None => {
                    let key_span = table
                        .key(key)
                        .and_then(toml_edit::Key::span)
                        .or_else(|| item.span());
                    self.at(path, key_span, unknown_key(key, fields, header));
                }
            }
            path.pop();
        }
        for field in fields
            .iter()
            .filter(|f| f.required && !table.contains_key(f.name))
        {
            path.push(Seg::Key(field.name));
            let place = if header.is_empty() {
                "at the top level"
            } else {
                header
            };
            self.at(
                path,
                span.clone(),
                format!("missing; `{}` is required in {place}", field.name),
            );
            path.pop();
        }
    }

    /// Checks one value against its kind; `name` is its schema path.
    fn item<'d>(&mut self, item: &'d Item, kind: Kind, path: &mut Vec<Seg<'d>>, name: &str) {
        let span = item.span();
        match kind {
            Kind::Str { .. } if item.is_str() => {}
            Kind::Bool if item.is_bool() => {}
            Kind::Addr { example } => match item.as_str() {
                Some(text) if text.parse::<SocketAddr>().is_err() => {
                    let message = format!(
                        "\"{text}\" is not an IP address and port; expected a string like \
                         \"{example}\""
                    );
                    self.at(path, span, message);
                }
                Some(_) => {}
                None => self.wrong_type(path, item, kind, name),
            },
            Kind::UInt { max } => match item.as_integer() {
                Some(n) if u64::try_from(n).is_ok_and(|n| n <= max) => {}
                Some(n) => {
                    let message = format!("{n} is out of range; expected {}", kind.expected(name));
                    self.at(path, span, message);
                }
                None => self.wrong_type(path, item, kind, name),
            },
            Kind::Strings { allowed, .. } => match item.as_array() {
                Some(array) => self.strings(array, allowed, path),
                None => self.wrong_type(path, item, kind, name),
            },
            Kind::StrMap { .. } => match item.as_table_like() {
                Some(table) => {
                    for (key, value) in table.iter().filter(|(_, value)| !value.is_str()) {
                        path.push(Seg::Key(key));
                        let message = format!("expected a string, found {}", a_type(value));
                        self.at(path, value.span(), message);
                        path.pop();
                    }
                }
                None => self.wrong_type(path, item, kind, name),
            },
            Kind::Table(fields) => match item.as_table_like() {
                Some(table) => self.table(table, fields, path, (name, &format!("[{name}]")), span),
                None => self.wrong_type(path, item, kind, name),
            },
            Kind::Tables(fields) => self.tables(item, fields, path, name),
            Kind::Str { .. } | Kind::Bool => self.wrong_type(path, item, kind, name),
        }
    }

    /// Reports a value of the wrong type.
    fn wrong_type(&mut self, path: &[Seg<'_>], item: &Item, kind: Kind, name: &str) {
        let message = format!("expected {}, found {}", kind.expected(name), a_type(item));
        self.at(path, item.span(), message);
    }

    /// Checks the elements of an array of strings, each one of `allowed` unless it is empty.
    fn strings<'d>(&mut self, array: &'d Array, allowed: &[&str], path: &mut Vec<Seg<'d>>) {
        for (i, value) in array.iter().enumerate() {
            path.push(Seg::Index(i));
            match value.as_str() {
                Some(text) if allowed.is_empty() || allowed.contains(&text) => {}
                Some(text) => {
                    let message = format!(
                        "\"{text}\" is unknown; expected one of {}",
                        quoted_list(allowed)
                    );
                    self.at(path, value.span(), message);
                }
                None => {
                    let message = format!(
                        "expected a string, found {}",
                        with_article(value.type_name())
                    );
                    self.at(path, value.span(), message);
                }
            }
            path.pop();
        }
    }

    /// Checks an array of tables: `[[name]]` sections or an array of inline tables.
    fn tables<'d>(
        &mut self,
        item: &'d Item,
        fields: &'static [Field],
        path: &mut Vec<Seg<'d>>,
        name: &str,
    ) {
        let header = format!("[[{name}]]");
        match item {
            Item::ArrayOfTables(tables) => {
                for (i, table) in tables.iter().enumerate() {
                    path.push(Seg::Index(i));
                    self.table(table, fields, path, (name, &header), table.span());
                    path.pop();
                }
            }
            Item::Value(Value::Array(array)) => {
                for (i, value) in array.iter().enumerate() {
                    path.push(Seg::Index(i));
                    if let Some(table) = value.as_inline_table() {
                        self.table(table, fields, path, (name, &header), value.span());
                    } else {
                        let found = with_article(value.type_name());
                        self.at(
                            path,
                            value.span(),
                            format!("expected a table, found {found}"),
                        );
                    }
                    path.pop();
                }
            }
            _ => self.wrong_type(path, item, Kind::Tables(fields), name),
        }
    }
}

impl Kind {
    /// What a value of this kind looks like, for messages; `name` is the key's schema path.
    fn expected(self, name: &str) -> String {
        match self {
            Kind::Str { example } | Kind::Addr { example } => {
                format!("a string like \"{example}\"")
            }
            Kind::UInt { max } if max < i64::MAX.unsigned_abs() => {
                format!("a whole number from 0 to {max}")
            }
            Kind::UInt { .. } => "a whole number, 0 or more".to_string(),
            Kind::Bool => "true or false".to_string(),
            Kind::Strings { example, .. } => format!("an array of strings like [\"{example}\"]"),
            Kind::StrMap { example } => format!("a table of strings like {example}"),
            Kind::Table(_) => format!("a table [{name}]"),
            Kind::Tables(_) => format!("an array of tables [[{name}]]"),
        }
    }
}

/// The message for an unknown `key` in the table named `header` (empty for the root).
fn unknown_key(key: &str, fields: &[Field], header: &str) -> String {
    let valid = fields.iter().map(|f| f.name).collect::<Vec<_>>().join(", ");
    if header.is_empty() {
        return format!("unknown key `{key}`; valid top-level keys are: {valid}");
    }
    let mut message = format!("unknown key `{key}`; valid keys in {header} are: {valid}");
    if ROOT.iter().any(|f| f.name == key) {
        let _ = write!(
            message,
            " (`{key}` is a top-level key: written after a [table] header it belongs to that \
             table, so move it above the first header)"
        );
    }
    message
}

// ---------------------------------------------------------------------------------------
// Pass 4: semantic validation
// ---------------------------------------------------------------------------------------

/// MQTT's largest packet (remaining length limit).
const MAX_MQTT_PACKET: usize = 268_435_455;
/// MQTT packet identifiers are 16 bits.
const MAX_INFLIGHT: usize = 65_535;
const MAX_PRODUCT_KEY_CHARS: usize = 20;
const DEVICE_NAME_CHARS: std::ops::RangeInclusive<usize> = 4..=32;
const MAX_DEVICE_SECRET_BYTES: usize = 64;
const MAX_SUBSCRIPTION_GROUPS: usize = 10;

struct Validator<'r, 'a, 'd> {
    report: &'r mut Report<'a>,
    root: &'d Item,
}

impl Validator<'_, '_, '_> {
    /// Looks `path` up in the document: the span of the deepest part of it written there,
    /// and whether all of it is (rather than defaulted).
    fn find(&self, path: &[Seg<'_>]) -> (Option<Range<usize>>, bool) {
        let mut item = self.root;
        let mut span = None;
        for seg in path {
            let next = match *seg {
                Seg::Key(key) => item.get(key),
                Seg::Index(i) => item.get(i),
            };
            let Some(next) = next else {
                return (span, false);
            };
            item = next;
            span = next.span().or(span);
        }
        (span, true)
    }

    /// A problem at `path`, on its line.
    fn at(&mut self, path: &[Seg<'_>], message: impl Into<String>) {
        self.at_line_of(path, path, message);
    }

    /// A problem at `path`, on the line of `line_path`.
    fn at_line_of(&mut self, path: &[Seg<'_>], line_path: &[Seg<'_>], message: impl Into<String>) {
        let (span, _) = self.find(line_path);
        self.report.at(path, span, message);
    }

    fn config(&mut self, config: &Config) {
        self.mqtt(config);
        let amqp = &config.amqp;
        self.tls(
            "amqp",
            amqp.tls_listen,
            amqp.cert.as_deref(),
            amqp.key.as_deref(),
        );
        if config.http.admin_token.trim().is_empty() {
            self.at(
                &[K("http"), K("admin_token")],
                "must not be empty; set the Bearer token of /api/v1",
            );
        }
        self.access_keys(config);
        self.products(config);
        self.consumer_groups(config);
        self.subscriptions(config);
    }

    fn mqtt(&mut self, config: &Config) {
        let mqtt = &config.mqtt;
        self.tls(
            "mqtt",
            mqtt.tls_listen,
            mqtt.cert.as_deref(),
            mqtt.key.as_deref(),
        );

        let min_path = [K("mqtt"), K("keep_alive_min_secs")];
        let max_path = [K("mqtt"), K("keep_alive_max_secs")];
        if mqtt.keep_alive_min_secs == 0 {
            self.at(
                &min_path,
                "0 is not supported (MQTT keep-alive 0 means no keep-alive); expected at least 1",
            );
        } else if mqtt.keep_alive_min_secs > mqtt.keep_alive_max_secs {
            let message = format!(
                "{} is larger than keep_alive_max_secs ({}); expected \
                 keep_alive_min_secs <= keep_alive_max_secs",
                mqtt.keep_alive_min_secs, mqtt.keep_alive_max_secs
            );
            let path = if self.find(&min_path).1 {
                min_path
            } else {
                max_path
            };
            self.at(&path, message);
        }
        if !(1..=MAX_MQTT_PACKET).contains(&mqtt.max_payload_bytes) {
            self.at(
                &[K("mqtt"), K("max_payload_bytes")],
                format!(
                    "{} is out of range; expected 1 to {MAX_MQTT_PACKET} (MQTT's largest packet)",
                    mqtt.max_payload_bytes
                ),
            );
        }
        if !(1..=MAX_INFLIGHT).contains(&mqtt.max_inflight) {
            self.at(
                &[K("mqtt"), K("max_inflight")],
                format!(
                    "{} is out of range; expected 1 to {MAX_INFLIGHT}",
                    mqtt.max_inflight
                ),
            );
        }
        if mqtt.max_connections == 0 {
            self.at(
                &[K("mqtt"), K("max_connections")],
                "0 would refuse every connection; expected at least 1",
            );
        }
    }

    /// `tls_listen` needs `cert` and `key`, and both files must exist.
    fn tls(
        &mut self,
        section: &str,
        tls_listen: Option<SocketAddr>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) {
        if tls_listen.is_none() {
            return;
        }
        for (name, what, file) in [
            ("cert", "PEM certificate chain", cert),
            ("key", "PEM private key", key),
        ] {
            let path = [K(section), K(name)];
            match file {
                None => self.at_line_of(
                    &path,
                    &[K(section), K("tls_listen")],
                    format!("missing; tls_listen needs `{name}`, the {what} file"),
                ),
                Some(file) => match std::fs::metadata(file) {
                    Ok(meta) if meta.is_file() => {}
                    Ok(_) => self.at(
                        &path,
                        format!(
                            "\"{}\" is not a file; expected the {what} file",
                            file.display()
                        ),
                    ),
                    Err(err) => self.at(
                        &path,
                        format!(
                            "cannot read \"{}\": {err}; expected the {what} file",
                            file.display()
                        ),
                    ),
                },
            }
        }
    }

    /// Records that entry `index` uses `value`; when an earlier entry already does, reports
    /// `duplicate(index of that entry)` at `path` instead.
    fn unique<'c>(
        &mut self,
        seen: &mut HashMap<&'c str, usize>,
        (value, index): (&'c str, usize),
        path: &[Seg<'_>],
        duplicate: impl FnOnce(usize) -> String,
    ) {
        match seen.entry(value) {
            Entry::Occupied(first) => self.at(path, duplicate(*first.get())),
            Entry::Vacant(slot) => {
                slot.insert(index);
            }
        }
    }

    fn access_keys(&mut self, config: &Config) {
        let mut seen = HashMap::new();
        for (i, access_key) in config.access_keys.iter().enumerate() {
            let id_path = [K("access_keys"), I(i), K("id")];
            if access_key.id.is_empty() {
                self.at(&id_path, "must not be empty");
            } else {
                self.unique(&mut seen, (&access_key.id, i), &id_path, |first| {
                    let id = &access_key.id;
                    format!("\"{id}\" is already used by access_keys[{first}]; ids must be unique")
                });
            }
            if access_key.secret.is_empty() {
                self.at(&[K("access_keys"), I(i), K("secret")], "must not be empty");
            }
        }
    }

    fn products(&mut self, config: &Config) {
        let mut seen = HashMap::new();
        for (p, product) in config.products.iter().enumerate() {
            let key_path = [K("products"), I(p), K("key")];
            let key = product.key.as_str();
            if key.is_empty() {
                self.at(
                    &key_path,
                    "must not be empty; expected up to 20 ASCII letters and digits",
                );
            } else if let Some(c) = key.chars().find(|c| !c.is_ascii_alphanumeric()) {
                let message = format!(
                    "\"{key}\" contains {c:?}; a product key may only contain ASCII letters and \
                     digits"
                );
                self.at(&key_path, message);
            } else if key.len() > MAX_PRODUCT_KEY_CHARS {
                let message = format!(
                    "\"{key}\" is {} characters long; a product key has at most \
                     {MAX_PRODUCT_KEY_CHARS}",
                    key.len()
                );
                self.at(&key_path, message);
            } else {
                self.unique(&mut seen, (key, p), &key_path, |first| {
                    format!(
                        "\"{key}\" is already used by products[{first}]; product keys must be \
                         unique"
                    )
                });
            }
            self.devices(p, product);
        }
    }

    fn devices(&mut self, p: usize, product: &ProductConfig) {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-._@:".contains(c);
        let mut seen = HashMap::new();
        for (d, device) in product.devices.iter().enumerate() {
            let name_path = [K("products"), I(p), K("devices"), I(d), K("name")];
            let name = device.name.as_str();
            if let Some(c) = name.chars().find(|&c| !allowed(c)) {
                let message = format!(
                    "\"{name}\" contains {c:?}; a device name may only contain ASCII letters, \
                     digits and - . _ @ :"
                );
                self.at(&name_path, message);
            } else if !DEVICE_NAME_CHARS.contains(&name.len()) {
                let message = format!(
                    "\"{name}\" is {} characters long; a device name has {} to {} characters",
                    name.len(),
                    DEVICE_NAME_CHARS.start(),
                    DEVICE_NAME_CHARS.end()
                );
                self.at(&name_path, message);
            } else {
                self.unique(&mut seen, (name, d), &name_path, |first| {
                    format!(
                        "\"{name}\" is already used by products[{p}].devices[{first}]; device \
                         names must be unique within a product"
                    )
                });
            }

            let secret_path = [K("products"), I(p), K("devices"), I(d), K("secret")];
            if device.secret.is_empty() {
                self.at(&secret_path, "must not be empty");
            } else if device.secret.len() > MAX_DEVICE_SECRET_BYTES {
                let message = format!(
                    "is {} bytes long; at most {MAX_DEVICE_SECRET_BYTES} bytes are allowed",
                    device.secret.len()
                );
                self.at(&secret_path, message);
            }

            if device.tags.contains_key("") {
                let path = [K("products"), I(p), K("devices"), I(d), K("tags"), K("")];
                self.at(&path, "tag keys must not be empty");
            }
        }
    }

    fn consumer_groups(&mut self, config: &Config) {
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        let mut seen = HashMap::new();
        for (g, group) in config.consumer_groups.iter().enumerate() {
            let id_path = [K("consumer_groups"), I(g), K("id")];
            let id = group.id.as_str();
            if id.is_empty() {
                self.at(
                    &id_path,
                    "must not be empty; expected ASCII letters, digits, _ and -",
                );
            } else if id == DEFAULT_GROUP {
                let message = "must not be DEFAULT_GROUP, which always exists implicitly; remove \
                               this entry or choose another id";
                self.at(&id_path, message);
            } else if let Some(c) = id.chars().find(|&c| !allowed(c)) {
                let message = format!(
                    "\"{id}\" contains {c:?}; a consumer group id may only contain ASCII \
                     letters, digits, _ and -"
                );
                self.at(&id_path, message);
            } else {
                self.unique(&mut seen, (id, g), &id_path, |first| {
                    format!(
                        "\"{id}\" is already used by consumer_groups[{first}]; ids must be unique"
                    )
                });
            }
        }
    }

    fn subscriptions(&mut self, config: &Config) {
        let products: HashSet<&str> = config.products.iter().map(|p| p.key.as_str()).collect();
        let groups: HashSet<&str> = config
            .consumer_groups
            .iter()
            .map(|g| g.id.as_str())
            .collect();
        let mut seen = HashMap::new();
        for (s, subscription) in config.subscriptions.iter().enumerate() {
            let product_path = [K("subscriptions"), I(s), K("product_key")];
            let product = subscription.product_key.as_str();
            if products.contains(product) {
                self.unique(&mut seen, (product, s), &product_path, |first| {
                    format!(
                        "product \"{product}\" already has a subscription \
                         (subscriptions[{first}]); expected at most one per product"
                    )
                });
            } else {
                let message = format!("product \"{product}\" is not defined in [[products]]");
                self.at(&product_path, message);
            }

            let types = &subscription.message_types;
            if types.is_empty() {
                let message = format!(
                    "must not be empty; expected some of {}",
                    quoted_list(MESSAGE_TYPES)
                );
                self.at(&[K("subscriptions"), I(s), K("message_types")], message);
            }
            for (t, message_type) in types.iter().enumerate() {
                if types[..t].contains(message_type) {
                    let message =
                        format!("\"{}\" is listed twice", message_type_name(*message_type));
                    self.at(
                        &[K("subscriptions"), I(s), K("message_types"), I(t)],
                        message,
                    );
                }
            }

            let names = &subscription.consumer_groups;
            if !(1..=MAX_SUBSCRIPTION_GROUPS).contains(&names.len()) {
                let message = format!(
                    "lists {} consumer groups; expected 1 to {MAX_SUBSCRIPTION_GROUPS}",
                    names.len()
                );
                self.at(&[K("subscriptions"), I(s), K("consumer_groups")], message);
            }
            for (g, name) in names.iter().enumerate() {
                let path = [K("subscriptions"), I(s), K("consumer_groups"), I(g)];
                if names[..g].contains(name) {
                    self.at(&path, format!("\"{name}\" is listed twice"));
                } else if name != DEFAULT_GROUP && !groups.contains(name.as_str()) {
                    let message = format!(
                        "consumer group \"{name}\" is not defined in [[consumer_groups]]; \
                         expected DEFAULT_GROUP or a defined id"
                    );
                    self.at(&path, message);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

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

    /// The problems of a file that must not load.
    fn problems_in(text: &str) -> Vec<Problem> {
        match load_str(text, "test.toml") {
            Ok(_) => panic!("expected problems in:\n{text}"),
            Err(err) => {
                assert!(!err.problems.is_empty());
                err.problems
            }
        }
    }

    fn lines_and_keys(problems: &[Problem]) -> Vec<(Option<usize>, &str)> {
        problems.iter().map(|p| (p.line, p.key.as_str())).collect()
    }

    #[test]
    fn demo_config_loads() {
        let config = load_str(super::super::DEMO_CONFIG, "demo.toml").expect("demo config loads");
        assert_eq!(config.products.len(), 1);
        assert_eq!(config.products[0].devices.len(), 2);
        assert_eq!(
            config.products[0].devices[0]
                .tags
                .get("room")
                .map(String::as_str),
            Some("lab")
        );
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
        let top =
            load_str("rules_dir = \"r1\"\n[storage]\ndir = \"d\"\n", "t.toml").expect("loads");
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
        assert!(
            problems[0].message.contains("column 16"),
            "{}",
            problems[0].message
        );
        assert!(
            problems[0]
                .to_string()
                .starts_with("test.toml:3: syntax error at column 16: "),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn every_schema_problem_is_reported_with_its_line() {
        let text = r#"consumer_groups = { id = "g1", name = "x" }
[mqtt]
listen = 5
lisen = "0.0.0.0:1883"
tls_listen = "localhost:8883"
keep_alive_max_secs = 70000
[http]
admin_token = "t"
rules_dir = "rules"
[[products]]
key = "a1"
[[products.devices]]
name = "dev1"
secrt = "s"
enabled = "yes"
tags = { room = 1 }
[[subscriptions]]
product_key = "a1"
message_types = ["upstream", "everything"]
consumer_groups = "DEFAULT_GROUP"
"#;
        let problems = problems_in(text);
        assert_eq!(
            lines_and_keys(&problems),
            vec![
                (Some(1), "consumer_groups"),
                (Some(3), "mqtt.listen"),
                (Some(4), "mqtt.lisen"),
                (Some(5), "mqtt.tls_listen"),
                (Some(6), "mqtt.keep_alive_max_secs"),
                (Some(9), "http.rules_dir"),
                (Some(12), "products[0].devices[0].secret"),
                (Some(14), "products[0].devices[0].secrt"),
                (Some(15), "products[0].devices[0].enabled"),
                (Some(16), "products[0].devices[0].tags.room"),
                (Some(19), "subscriptions[0].message_types[1]"),
                (Some(20), "subscriptions[0].consumer_groups"),
            ],
            "{problems:#?}"
        );
        let message = |key: &str| {
            problems
                .iter()
                .find(|p| p.key == key)
                .map(|p| p.message.clone())
                .unwrap_or_default()
        };
        assert_eq!(
            message("mqtt.listen"),
            "expected a string like \"0.0.0.0:1883\", found an integer"
        );
        assert!(
            message("consumer_groups").contains("expected an array of tables [[consumer_groups]]")
        );
        assert!(message("mqtt.tls_listen").contains("not an IP address and port"));
        assert!(message("http.rules_dir").contains("top-level key"));
        assert!(message("products[0].devices[0].secret").starts_with("missing"));
        assert!(message("subscriptions[0].message_types[1]")
            .contains("\"upstream\", \"status\", \"lifecycle\""));
    }

    #[test]
    fn table_where_array_of_tables_expected() {
        let problems = problems_in("[products]\nkey = \"a1\"\n");
        assert_eq!(lines_and_keys(&problems), vec![(Some(1), "products")]);
        assert_eq!(
            problems[0].message,
            "expected an array of tables [[products]], found a table"
        );
    }

    #[test]
    fn unknown_key_hint_lists_valid_keys() {
        let amqp = problems_in("[amqp]\nlisten = \"0.0.0.0:5672\"\ncertificate = \"c.pem\"\n");
        assert_eq!(amqp.len(), 1);
        assert_eq!(amqp[0].line, Some(3));
        assert_eq!(amqp[0].key, "amqp.certificate");
        assert_eq!(
            amqp[0].message,
            "unknown key `certificate`; valid keys in [amqp] are: listen, tls_listen, cert, key"
        );
        let top = problems_in("mqttt = 1\n");
        assert!(top[0]
            .message
            .contains("valid top-level keys are: mqtt, amqp, http, storage, rules_dir"));
    }

    #[test]
    fn every_semantic_problem_is_reported_with_its_line() {
        let text = r#"[mqtt]
keep_alive_min_secs = 600
keep_alive_max_secs = 60
max_payload_bytes = 0
max_inflight = 70000
max_connections = 0
tls_listen = "0.0.0.0:8883"
cert = "/nonexistent/iotpipe-test/cert.pem"
[http]
admin_token = ""
[[access_keys]]
id = "ak"
secret = ""
[[access_keys]]
id = "ak"
secret = "s"
[[products]]
key = "a1-demo"
[[products]]
key = "a1"
[[products.devices]]
name = "d1"
secret = "s"
[[products.devices]]
name = "dev 2"
secret = "s"
[[products.devices]]
name = "dev3"
secret = "s"
tags = { "" = "x" }
[[products.devices]]
name = "dev3"
secret = ""
[[products]]
key = "a1"
[[consumer_groups]]
id = "DEFAULT_GROUP"
name = "d"
[[consumer_groups]]
id = "g.1"
name = "g"
[[consumer_groups]]
id = "g2"
name = "g"
[[consumer_groups]]
id = "g2"
name = "g"
[[subscriptions]]
product_key = "nope"
message_types = []
consumer_groups = []
[[subscriptions]]
product_key = "a1"
message_types = ["status", "status"]
consumer_groups = ["g2", "g2", "g9"]
[[subscriptions]]
product_key = "a1"
message_types = ["status"]
consumer_groups = ["DEFAULT_GROUP", "g2", "g2"]
"#;
        let problems = problems_in(text);
        assert_eq!(
            lines_and_keys(&problems),
            vec![
                (Some(2), "mqtt.keep_alive_min_secs"),
                (Some(4), "mqtt.max_payload_bytes"),
                (Some(5), "mqtt.max_inflight"),
                (Some(6), "mqtt.max_connections"),
                (Some(7), "mqtt.key"),
                (Some(8), "mqtt.cert"),
                (Some(10), "http.admin_token"),
                (Some(13), "access_keys[0].secret"),
                (Some(15), "access_keys[1].id"),
                (Some(18), "products[0].key"),
                (Some(22), "products[1].devices[0].name"),
                (Some(25), "products[1].devices[1].name"),
                (Some(30), "products[1].devices[2].tags.\"\""),
                (Some(32), "products[1].devices[3].name"),
                (Some(33), "products[1].devices[3].secret"),
                (Some(35), "products[2].key"),
                (Some(37), "consumer_groups[0].id"),
                (Some(40), "consumer_groups[1].id"),
                (Some(46), "consumer_groups[3].id"),
                (Some(49), "subscriptions[0].product_key"),
                (Some(50), "subscriptions[0].message_types"),
                (Some(51), "subscriptions[0].consumer_groups"),
                (Some(54), "subscriptions[1].message_types[1]"),
                (Some(55), "subscriptions[1].consumer_groups[1]"),
                (Some(55), "subscriptions[1].consumer_groups[2]"),
                (Some(57), "subscriptions[2].product_key"),
                (Some(59), "subscriptions[2].consumer_groups[2]"),
            ],
            "{problems:#?}"
        );
        let message = |key: &str| {
            problems
                .iter()
                .find(|p| p.key == key)
                .map(|p| p.message.clone())
                .unwrap_or_default()
        };
        assert!(message("mqtt.keep_alive_min_secs").contains("larger than keep_alive_max_secs"));
        assert!(message("mqtt.key").starts_with("missing; tls_listen needs `key`"));
        assert!(message("products[1].devices[1].name").contains("' '"));
        assert!(message("products[1].devices[0].name").contains("4 to 32"));
        assert!(message("products[1].devices[3].name")
            .contains("already used by products[1].devices[2]"));
        assert!(message("consumer_groups[0].id").contains("always exists"));
        assert!(message("subscriptions[2].product_key").contains("already has a subscription"));
        assert!(message("subscriptions[1].consumer_groups[2]")
            .contains("not defined in [[consumer_groups]]"));
        for problem in &problems {
            let first = problem.message.chars().next().unwrap_or('x');
            assert!(!first.is_uppercase(), "{problem}");
        }
    }

    #[test]
    fn subscription_has_at_most_ten_groups() {
        let mut text = String::from("[[products]]\nkey = \"a1\"\n");
        let mut groups = vec![format!("{DEFAULT_GROUP:?}")];
        for g in 1..=10 {
            let _ = write!(text, "[[consumer_groups]]\nid = \"g{g}\"\nname = \"n\"\n");
            groups.push(format!("\"g{g}\""));
        }
        let _ = write!(
            text,
            "[[subscriptions]]\nproduct_key = \"a1\"\nmessage_types = [\"status\"]\n\
             consumer_groups = [{}]\n",
            groups.join(", ")
        );
        let problems = problems_in(&text);
        assert_eq!(
            lines_and_keys(&problems),
            vec![(Some(36), "subscriptions[0].consumer_groups")]
        );
        assert_eq!(
            problems[0].message,
            "lists 11 consumer groups; expected 1 to 10"
        );
        let text = text.replace(", \"g10\"]", "]");
        load_str(&text, "t.toml").expect("ten groups are fine");
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
        assert_eq!(
            lines_and_keys(&problems),
            vec![(Some(4), "products[0].devices[1].name")]
        );
        let text = text.replace(
            "{ name = \"dev1\", secret = \"s\" }]",
            "{ name = \"dev2\", secret = \"s\" }]",
        );
        let config = load_str(&text, "t.toml").expect("loads");
        assert_eq!(config.mqtt.listen.port(), 0);
        assert_eq!(config.products[0].devices[1].name, "dev2");

        let problems = problems_in("mqtt.lisen = 1\n[mqtt.tls]\ncert = \"c\"\n");
        assert_eq!(
            lines_and_keys(&problems),
            vec![(Some(1), "mqtt.lisen"), (Some(2), "mqtt.tls")]
        );
    }

    #[test]
    fn syntax_error_column_counts_characters() {
        let problems = problems_in("[[products]]\nname = \"Thermomètre\" x\n");
        assert_eq!(problems[0].line, Some(2));
        assert!(
            problems[0].message.contains("column 22"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn keep_alive_zero_is_refused() {
        let problems = problems_in("[mqtt]\nkeep_alive_min_secs = 0\n");
        assert_eq!(
            lines_and_keys(&problems),
            vec![(Some(2), "mqtt.keep_alive_min_secs")]
        );
    }

    #[test]
    fn tls_files_must_exist() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "pem").expect("write cert");
        let text = format!(
            "[amqp]\ntls_listen = \"0.0.0.0:5671\"\ncert = {:?}\nkey = {:?}\n",
            cert.display().to_string(),
            dir.path().join("missing.key").display().to_string()
        );
        let problems = problems_in(&text);
        assert_eq!(lines_and_keys(&problems), vec![(Some(4), "amqp.key")]);
        assert!(problems[0].message.starts_with("cannot read"));

        let key = dir.path().join("key.pem");
        std::fs::write(&key, "pem").expect("write key");
        let text = text.replace("missing.key", "key.pem");
        let config = load_str(&text, "t.toml").expect("loads once both files exist");
        assert_eq!(config.amqp.key.as_deref(), Some(key.as_path()));
    }

    #[test]
    fn no_secret_in_messages() {
        let long_secret = "S3cr3t".repeat(20);
        let text = format!(
            "[http]\nadmin_token = \"   \"\n[[products]]\nkey = \"a1\"\n\
             [[products.devices]]\nname = \"d1\"\nsecret = \"{long_secret}\"\n"
        );
        let err = load_str(&text, "t.toml").expect_err("problems");
        assert_eq!(
            lines_and_keys(&err.problems)[2],
            (Some(7), "products[0].devices[0].secret")
        );
        assert!(!err.to_string().contains("S3cr3t"), "{err}");

        // A syntax error on a secret's line does not echo the line.
        let err = load_str(
            "[[access_keys]]\nid = \"a\"\nsecret = \"TopSecret\" x\n",
            "t.toml",
        )
        .expect_err("syntax error");
        assert_eq!(err.problems[0].line, Some(3));
        assert!(!err.to_string().contains("TopSecret"), "{err}");

        // Neither does a wrong type.
        let err = load_str(
            "[[access_keys]]\nid = \"a\"\nsecret = [\"TopSecret\"]\n",
            "t.toml",
        )
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
        let err = ConfigError {
            problems: vec![problem.clone(), problem],
        };
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
        assert!(err.problems[0]
            .message
            .starts_with("cannot read the configuration file"));

        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[mqtt]\nlisten = \"127.0.0.1:0\"\nbogus = 1\n").expect("write");
        let err = load_file(&file).expect_err("unknown key");
        assert_eq!(err.to_string().lines().count(), 1);
        assert!(err
            .to_string()
            .starts_with(&format!("{}:3: mqtt.bogus: unknown key", file.display())));
        std::fs::write(&file, super::super::DEMO_CONFIG).expect("write");
        load_file(&file).expect("demo loads from a file");
    }

    /// How [`sample`] deviates from "every key of the schema, set to its example".
    #[derive(Default, Clone, Copy)]
    struct Variant<'a> {
        /// Also write a key `zz_unknown` into the table of this schema path (`""`: the root).
        unknown_at: Option<&'a str>,
        /// Write only required keys (and the tables holding them).
        required_only: bool,
        /// Leave out this key: (schema path of its table, key).
        omit: Option<(&'a str, &'a str)>,
    }

    /// A TOML document following the schema, one table per `[[...]]` schema entry.
    fn sample(fields: &[Field], name: &str, variant: Variant<'_>, out: &mut String) {
        if variant.unknown_at == Some(name) {
            out.push_str("zz_unknown = 1\n");
        }
        let wanted = |field: &Field| {
            (field.required || !variant.required_only) && variant.omit != Some((name, field.name))
        };
        for field in fields.iter().filter(|f| wanted(f)) {
            let value = match field.kind {
                Kind::Str { example } | Kind::Addr { example } => format!("{example:?}"),
                Kind::UInt { .. } => "1".to_string(),
                Kind::Bool => "true".to_string(),
                Kind::Strings {
                    allowed: [],
                    example,
                } => format!("[{example:?}]"),
                Kind::Strings { allowed, .. } => format!("[{}]", quoted_list(allowed)),
                Kind::StrMap { example } => example.to_string(),
                Kind::Table(_) | Kind::Tables(_) => continue,
            };
            let _ = writeln!(out, "{} = {value}", field.name);
        }
        for field in fields {
            let sub = if name.is_empty() {
                field.name.to_string()
            } else {
                format!("{name}.{}", field.name)
            };
            match field.kind {
                Kind::Table(sub_fields) => {
                    let _ = writeln!(out, "[{sub}]");
                    sample(sub_fields, &sub, variant, out);
                }
                Kind::Tables(sub_fields) => {
                    let _ = writeln!(out, "[[{sub}]]");
                    sample(sub_fields, &sub, variant, out);
                }
                _ => {}
            }
        }
    }

    fn sample_text(variant: Variant<'_>) -> String {
        let mut text = String::new();
        sample(ROOT, "", variant, &mut text);
        text
    }

    /// Every table of the schema, with its schema path.
    fn table_paths(
        fields: &'static [Field],
        name: &str,
        out: &mut Vec<(String, &'static [Field])>,
    ) {
        out.push((name.to_string(), fields));
        for field in fields {
            if let Kind::Table(sub) | Kind::Tables(sub) = field.kind {
                let path = if name.is_empty() {
                    field.name.to_string()
                } else {
                    format!("{name}.{}", field.name)
                };
                table_paths(sub, &path, out);
            }
        }
    }

    /// The schema and the serde structs agree: serde accepts a document using every schema
    /// key (so every schema key is a struct field, with a compatible type); for every table,
    /// the fields serde lists on an unknown key are exactly the schema's keys; and serde
    /// requires exactly the keys the schema marks required.
    #[test]
    fn schema_matches_serde_structs() {
        let text = sample_text(Variant::default());
        if let Err(err) = toml::from_str::<Config>(&text) {
            panic!("serde refuses the schema sample: {}\n{text}", err.message());
        }
        let doc = toml_edit::Document::parse(text.as_str()).expect("sample parses");
        let lines = Lines::new(&text);
        let mut report = Report {
            origin: "sample",
            lines: &lines,
            problems: Vec::new(),
        };
        report.table(doc.as_table(), ROOT, &mut Vec::new(), ("", ""), None);
        assert!(report.problems.is_empty(), "{:#?}", report.problems);

        let minimal = sample_text(Variant {
            required_only: true,
            ..Variant::default()
        });
        if let Err(err) = toml::from_str::<Config>(&minimal) {
            panic!(
                "serde wants more than the required keys: {}\n{minimal}",
                err.message()
            );
        }

        let mut tables = Vec::new();
        table_paths(ROOT, "", &mut tables);
        for (path, fields) in tables {
            let text = sample_text(Variant {
                unknown_at: Some(&path),
                ..Variant::default()
            });
            let err = toml::from_str::<Config>(&text).expect_err("serde refuses zz_unknown");
            let message = err.message();
            assert!(message.contains("zz_unknown"), "[{path}]: {message}");
            let expected = message.split_once("expected").map_or("", |(_, rest)| rest);
            let mut serde_keys: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            let mut schema_keys: Vec<&str> = fields.iter().map(|f| f.name).collect();
            serde_keys.sort_unstable();
            schema_keys.sort_unstable();
            assert_eq!(
                serde_keys, schema_keys,
                "fields of [{path}] differ between serde and the schema"
            );

            for field in fields.iter().filter(|f| f.required) {
                let variant = Variant {
                    required_only: true,
                    omit: Some((&path, field.name)),
                    ..Variant::default()
                };
                let text = sample_text(variant);
                let err = toml::from_str::<Config>(&text)
                    .expect_err("serde refuses a missing required key");
                assert!(
                    err.message()
                        .contains(&format!("missing field `{}`", field.name)),
                    "[{path}] {}: {}",
                    field.name,
                    err.message()
                );
            }
        }
    }
}
