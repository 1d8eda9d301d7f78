//! Pass 2 of loading (see `load.rs`): the static schema of the configuration file, one
//! [`Field`] per field of the components' serde structs (named by [`super::Config`]), and the walk that checks a parsed
//! document against it: unknown keys, missing required keys, values of the wrong type,
//! unparsable listen addresses, unknown message types.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::ops::Range;

use toml_edit::{Array, Item, TableLike, Value};

use super::report::Report;
use crate::alerts::model::DAYS;
use crate::check::{quoted_list, Path, PathSeg};
use crate::groups::DEFAULT_GROUP;
use crate::subscriptions::MessageType;

// ---------------------------------------------------------------------------------------
// The schema: one `Field` per field of the components' serde structs, in the same order.
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
    /// A number, integer or float.
    Number,
    /// `true` or `false`.
    Bool,
    /// An array of strings, each one of `allowed` (any string when `allowed` is empty).
    Strings { allowed: &'static [&'static str], example: &'static str },
    /// A table with free keys and string values, like `example`.
    StrMap { example: &'static str },
    /// A table (`[name]` or an inline table) with the given keys.
    Table(&'static [Field]),
    /// An array of tables (`[[name]]` or an array of inline tables) with the given keys.
    Tables(&'static [Field]),
}

/// One key of a table.
#[derive(Debug, Clone, Copy)]
pub(super) struct Field {
    name: &'static str,
    kind: Kind,
    /// Whether serde has no default for it.
    required: bool,
}

/// An optional key (serde supplies a default).
const fn opt(name: &'static str, kind: Kind) -> Field {
    Field { name, kind, required: false }
}

/// A required key.
const fn req(name: &'static str, kind: Kind) -> Field {
    Field { name, kind, required: true }
}

const fn string(example: &'static str) -> Kind {
    Kind::Str { example }
}

const fn addr(example: &'static str) -> Kind {
    Kind::Addr { example }
}

const USIZE: Kind = Kind::UInt { max: usize::MAX as u64 };
const U16: Kind = Kind::UInt { max: u16::MAX as u64 };
const U64: Kind = Kind::UInt { max: u64::MAX };
const U32: Kind = Kind::UInt { max: u32::MAX as u64 };

/// [`super::Config`]. `rules_dir` is valid both here and in `[storage]`: written after the
/// `[storage]` header, TOML puts it there.
pub(super) const ROOT: &[Field] = &[
    opt("mqtt", Kind::Table(MQTT)),
    opt("amqp", Kind::Table(AMQP)),
    opt("http", Kind::Table(HTTP)),
    opt("storage", Kind::Table(STORAGE)),
    opt("rules_dir", string("rules")),
    opt("access_keys", Kind::Tables(ACCESS_KEY)),
    opt("products", Kind::Tables(PRODUCT)),
    opt("consumer_groups", Kind::Tables(CONSUMER_GROUP)),
    opt("subscriptions", Kind::Tables(SUBSCRIPTION)),
    opt("alert_rules", Kind::Tables(ALERT_RULE)),
    opt("cluster", Kind::Table(CLUSTER)),
];

/// [`crate::ingress::config::MqttConfig`].
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
    opt("downlink_retry_secs", U64),
];

/// [`crate::amqp::config::AmqpConfig`].
const AMQP: &[Field] = &[
    opt("listen", addr("0.0.0.0:5672")),
    opt("tls_listen", addr("0.0.0.0:5671")),
    opt("cert", string("certs/server.pem")),
    opt("key", string("certs/server.key")),
    opt("ack_timeout_secs", U64),
    opt("retention_secs", U64),
    opt("max_clients_per_group", USIZE),
    opt("max_unsettled_per_client", USIZE),
    opt("auth_timeout_secs", U64),
    opt("timestamp_window_secs", U64),
    opt("max_consumer_groups", USIZE),
    opt("max_connections", USIZE),
];

/// [`crate::api::config::HttpConfig`].
const HTTP: &[Field] =
    &[opt("listen", addr("127.0.0.1:8080")), opt("admin_token", string("a-long-random-secret"))];

/// [`crate::store::config::StorageConfig`].
const STORAGE: &[Field] = &[
    opt("dir", string("data")),
    opt("rules_dir", string("rules")),
    opt("early_delivery", Kind::Bool),
    opt("commit_interval_ms", Kind::UInt { max: 1000 }),
];

/// [`crate::registry::config::AccessKeyConfig`].
const ACCESS_KEY: &[Field] = &[req("id", string("LTAIdemo")), req("secret", string("demo-secret"))];

/// [`crate::registry::config::ProductConfig`].
const PRODUCT: &[Field] = &[
    req("key", string("a1demo")),
    opt("name", string("Demo thermometer")),
    opt("category", string("Ammeter")),
    opt("devices", Kind::Tables(DEVICE)),
];

/// [`crate::registry::config::DeviceConfig`].
const DEVICE: &[Field] = &[
    req("name", string("dev1")),
    req("secret", string("dev1-secret")),
    opt("enabled", Kind::Bool),
    opt("tags", Kind::StrMap { example: "{ room = \"lab\" }" }),
];

/// [`crate::groups::config::ConsumerGroupConfig`].
const CONSUMER_GROUP: &[Field] =
    &[req("id", string("g_alerts")), req("name", string("alerts_group")), opt("max_delivery_attempts", U32)];

/// [`crate::subscriptions::config::SubscriptionConfig`].
const SUBSCRIPTION: &[Field] = &[
    req("product_key", string("a1demo")),
    req("message_types", Kind::Strings { allowed: &MessageType::NAMES, example: "upstream" }),
    req("consumer_groups", Kind::Strings { allowed: &[], example: DEFAULT_GROUP }),
];

/// [`crate::alerts::config::AlertRuleConfig`]. Values are checked by `alerts::config`, by the same rules as the API.
const ALERT_RULE: &[Field] = &[
    req("name", string("backlog_high")),
    opt("consumer_group_ids", Kind::Strings { allowed: &[], example: DEFAULT_GROUP }),
    req("metric", string("accumulatedCount")),
    req("comparison", string(">")),
    req("threshold", Kind::Number),
    req("period_seconds", U64),
    opt("consecutive_periods", U32),
    opt("mute_seconds", U64),
    opt("effective", Kind::Table(EFFECTIVE)),
    req("callback_url", string("http://ops.example/alert")),
];

/// [`crate::cluster::config::ClusterConfig`].
const CLUSTER: &[Field] = &[
    req("nats", Kind::Strings { allowed: &[], example: "nats://127.0.0.1:4222" }),
    opt("name", string("iotpipe")),
    opt("replicas", U64),
    opt("node", string("n1")),
    opt("credentials", string("nats/iotpipe.creds")),
    opt("token", string("a-long-random-secret")),
    opt("user", string("iotpipe")),
    opt("password", string("a-long-random-secret")),
    opt("tls_required", Kind::Bool),
    opt("tls_ca", string("certs/nats-ca.pem")),
    opt("tls_cert", string("certs/nats-client.pem")),
    opt("tls_key", string("certs/nats-client.key")),
    opt("monitor", Kind::Strings { allowed: &[], example: "http://127.0.0.1:8222" }),
];

/// [`crate::alerts::config::EffectiveConfig`].
const EFFECTIVE: &[Field] = &[
    opt("days", Kind::Strings { allowed: &DAYS, example: "mon" }),
    opt("start", string("09:00")),
    opt("end", string("18:00")),
];

// ---------------------------------------------------------------------------------------
// The schema walk
// ---------------------------------------------------------------------------------------

/// Pass 2: checks the document's top-level table against [`ROOT`].
pub(super) fn walk(report: &mut Report<'_>, root: &toml_edit::Table) {
    report.table(root, ROOT, &mut Path::default(), ("", ""), None);
}

impl Report<'_> {
    /// Checks the keys of a table against `fields`. `name` is its schema path
    /// (`products.devices`, empty for the root), `header` how messages name it
    /// (`[[products.devices]]`, empty for the root), `span` where it starts.
    fn table(
        &mut self,
        table: &dyn TableLike,
        fields: &[Field],
        path: &mut Path,
        (name, header): (&str, &str),
        span: Option<Range<usize>>,
    ) {
        for (key, item) in table.iter() {
            path.push(PathSeg::Key(key.to_string()));
            match fields.iter().find(|f| f.name == key) {
                Some(field) => {
                    let sub = if name.is_empty() { key.to_string() } else { format!("{name}.{key}") };
                    self.item(item, field.kind, path, &sub);
                }
                None => {
                    let key_span = table.key(key).and_then(toml_edit::Key::span).or_else(|| item.span());
                    self.at(path, key_span, unknown_key(key, fields, header));
                }
            }
            path.pop();
        }
        for field in fields.iter().filter(|f| f.required && !table.contains_key(f.name)) {
            path.push(PathSeg::Key(field.name.to_string()));
            let place = if header.is_empty() { "at the top level" } else { header };
            self.at(path, span.clone(), format!("missing; `{}` is required in {place}", field.name));
            path.pop();
        }
    }

    /// Checks one value against its kind; `name` is its schema path.
    fn item(&mut self, item: &Item, kind: Kind, path: &mut Path, name: &str) {
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
            Kind::Number if item.as_integer().is_some() || item.as_float().is_some() => {}
            Kind::Number => self.wrong_type(path, item, kind, name),
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
                        path.push(PathSeg::Key(key.to_string()));
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
    fn wrong_type(&mut self, path: &Path, item: &Item, kind: Kind, name: &str) {
        let message = format!("expected {}, found {}", kind.expected(name), a_type(item));
        self.at(path, item.span(), message);
    }

    /// Checks the elements of an array of strings, each one of `allowed` unless it is empty.
    fn strings(&mut self, array: &Array, allowed: &[&str], path: &mut Path) {
        for (i, value) in array.iter().enumerate() {
            path.push(PathSeg::Index(i));
            match value.as_str() {
                Some(text) if allowed.is_empty() || allowed.contains(&text) => {}
                Some(text) => {
                    let message = format!("\"{text}\" is unknown; expected one of {}", quoted_list(allowed));
                    self.at(path, value.span(), message);
                }
                None => {
                    let message = format!("expected a string, found {}", with_article(value.type_name()));
                    self.at(path, value.span(), message);
                }
            }
            path.pop();
        }
    }

    /// Checks an array of tables: `[[name]]` sections or an array of inline tables.
    fn tables(&mut self, item: &Item, fields: &'static [Field], path: &mut Path, name: &str) {
        let header = format!("[[{name}]]");
        match item {
            Item::ArrayOfTables(tables) => {
                for (i, table) in tables.iter().enumerate() {
                    path.push(PathSeg::Index(i));
                    self.table(table, fields, path, (name, &header), table.span());
                    path.pop();
                }
            }
            Item::Value(Value::Array(array)) => {
                for (i, value) in array.iter().enumerate() {
                    path.push(PathSeg::Index(i));
                    if let Some(table) = value.as_inline_table() {
                        self.table(table, fields, path, (name, &header), value.span());
                    } else {
                        let found = with_article(value.type_name());
                        self.at(path, value.span(), format!("expected a table, found {found}"));
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
            Kind::Number => "a number".to_string(),
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

/// "an integer", "a table": the type of a value for messages.
fn a_type(item: &Item) -> String {
    with_article(item.type_name())
}

fn with_article(name: &str) -> String {
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {name}")
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::super::load::{lines_and_keys, problems_in};
    use super::super::report::Lines;
    use super::super::Config;
    use super::*;

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
        let message =
            |key: &str| problems.iter().find(|p| p.key == key).map(|p| p.message.clone()).unwrap_or_default();
        assert_eq!(message("mqtt.listen"), "expected a string like \"0.0.0.0:1883\", found an integer");
        assert!(message("consumer_groups").contains("expected an array of tables [[consumer_groups]]"));
        assert!(message("mqtt.tls_listen").contains("not an IP address and port"));
        assert!(message("http.rules_dir").contains("top-level key"));
        assert!(message("products[0].devices[0].secret").starts_with("missing"));
        assert!(
            message("subscriptions[0].message_types[1]").contains("\"upstream\", \"status\", \"lifecycle\"")
        );
    }

    #[test]
    fn table_where_array_of_tables_expected() {
        let problems = problems_in("[products]\nkey = \"a1\"\n");
        assert_eq!(lines_and_keys(&problems), vec![(Some(1), "products")]);
        assert_eq!(problems[0].message, "expected an array of tables [[products]], found a table");
    }

    #[test]
    fn unknown_key_hint_lists_valid_keys() {
        let amqp = problems_in("[amqp]\nlisten = \"0.0.0.0:5672\"\ncertificate = \"c.pem\"\n");
        assert_eq!(amqp.len(), 1);
        assert_eq!(amqp[0].line, Some(3));
        assert_eq!(amqp[0].key, "amqp.certificate");
        assert_eq!(
            amqp[0].message,
            "unknown key `certificate`; valid keys in [amqp] are: listen, tls_listen, cert, key, \
             ack_timeout_secs, retention_secs, max_clients_per_group, max_unsettled_per_client, \
             auth_timeout_secs, timestamp_window_secs, max_consumer_groups, max_connections"
        );
        let top = problems_in("mqttt = 1\n");
        assert!(top[0].message.contains("valid top-level keys are: mqtt, amqp, http, storage, rules_dir"));
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
                Kind::UInt { .. } | Kind::Number => "1".to_string(),
                Kind::Bool => "true".to_string(),
                Kind::Strings { allowed: [], example } => format!("[{example:?}]"),
                Kind::Strings { allowed, .. } => format!("[{}]", quoted_list(allowed)),
                Kind::StrMap { example } => example.to_string(),
                Kind::Table(_) | Kind::Tables(_) => continue,
            };
            let _ = writeln!(out, "{} = {value}", field.name);
        }
        for field in fields {
            let sub = if name.is_empty() { field.name.to_string() } else { format!("{name}.{}", field.name) };
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
    fn table_paths(fields: &'static [Field], name: &str, out: &mut Vec<(String, &'static [Field])>) {
        out.push((name.to_string(), fields));
        for field in fields {
            if let Kind::Table(sub) | Kind::Tables(sub) = field.kind {
                let path =
                    if name.is_empty() { field.name.to_string() } else { format!("{name}.{}", field.name) };
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
        let mut report = Report::new("sample", &lines);
        walk(&mut report, doc.as_table());
        assert!(report.problems().is_empty(), "{:#?}", report.problems());

        let minimal = sample_text(Variant { required_only: true, ..Variant::default() });
        if let Err(err) = toml::from_str::<Config>(&minimal) {
            panic!("serde wants more than the required keys: {}\n{minimal}", err.message());
        }

        let mut tables = Vec::new();
        table_paths(ROOT, "", &mut tables);
        for (path, fields) in tables {
            let text = sample_text(Variant { unknown_at: Some(&path), ..Variant::default() });
            let err = toml::from_str::<Config>(&text).expect_err("serde refuses zz_unknown");
            let message = err.message();
            assert!(message.contains("zz_unknown"), "[{path}]: {message}");
            let expected = message.split_once("expected").map_or("", |(_, rest)| rest);
            let mut serde_keys: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            let mut schema_keys: Vec<&str> = fields.iter().map(|f| f.name).collect();
            serde_keys.sort_unstable();
            schema_keys.sort_unstable();
            assert_eq!(serde_keys, schema_keys, "fields of [{path}] differ between serde and the schema");

            for field in fields.iter().filter(|f| f.required) {
                let variant =
                    Variant { required_only: true, omit: Some((&path, field.name)), ..Variant::default() };
                let text = sample_text(variant);
                let err = toml::from_str::<Config>(&text).expect_err("serde refuses a missing required key");
                assert!(
                    err.message().contains(&format!("missing field `{}`", field.name)),
                    "[{path}] {}: {}",
                    field.name,
                    err.message()
                );
            }
        }
    }
}
