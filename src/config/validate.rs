//! Pass 4 of loading (see `load.rs`): semantic checks on a deserialised [`Config`] (ranges,
//! uniqueness, names, references between sections, TLS files), each problem pointing at the
//! line of the offending value.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::ops::Range;

use toml_edit::Item;

use super::report::{find, Report};
use super::schema::{message_type_name, DEFAULT_GROUP, MESSAGE_TYPES};
use super::{Config, ProductConfig};
use crate::check::{quoted_list, Path};
use Seg::{Index as I, Key as K};

/// One step of a key path.
#[derive(Debug, Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn path(segs: &[Seg<'_>]) -> Path {
    segs.iter().fold(Path::default(), |path, seg| match *seg {
        Seg::Key(key) => path.key(key),
        Seg::Index(i) => path.index(i),
    })
}

/// MQTT's largest packet (remaining length limit).
const MAX_MQTT_PACKET: usize = 268_435_455;
/// MQTT packet identifiers are 16 bits.
const MAX_INFLIGHT: usize = 65_535;
const MAX_PRODUCT_KEY_CHARS: usize = 20;
const DEVICE_NAME_CHARS: std::ops::RangeInclusive<usize> = 4..=32;
const MAX_DEVICE_SECRET_BYTES: usize = 64;
const MAX_SUBSCRIPTION_GROUPS: usize = 10;

pub(super) struct Validator<'r, 'a, 'd> {
    pub(super) report: &'r mut Report<'a>,
    pub(super) root: &'d Item,
}

impl Validator<'_, '_, '_> {
    /// Looks `path` up in the document (see [`find`]).
    fn find(&self, segs: &[Seg<'_>]) -> (Option<Range<usize>>, bool) {
        find(self.root, &path(segs))
    }

    /// A problem at `path`, on its line.
    fn at(&mut self, path: &[Seg<'_>], message: impl Into<String>) {
        self.at_line_of(path, path, message);
    }

    /// A problem at `path`, on the line of `line_path`.
    fn at_line_of(&mut self, path: &[Seg<'_>], line_path: &[Seg<'_>], message: impl Into<String>) {
        let problem = crate::check::Problem::new(self::path(path), message).on_line_of(self::path(line_path));
        self.report.place(self.root, problem);
    }

    pub(super) fn config(&mut self, config: &Config) {
        self.mqtt(config);
        self.amqp(config);
        if config.http.admin_token.trim().is_empty() {
            self.at(&[K("http"), K("admin_token")], "must not be empty; set the Bearer token of /api/v1");
        }
        self.access_keys(config);
        self.products(config);
        self.consumer_groups(config);
        self.subscriptions(config);
        self.alert_rules(config);
    }

    fn mqtt(&mut self, config: &Config) {
        let mqtt = &config.mqtt;
        self.section("mqtt", mqtt.listener().check());

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
            let path = if self.find(&min_path).1 { min_path } else { max_path };
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
                format!("{} is out of range; expected 1 to {MAX_INFLIGHT}", mqtt.max_inflight),
            );
        }
        if mqtt.max_connections == 0 {
            self.at(
                &[K("mqtt"), K("max_connections")],
                "0 would refuse every connection; expected at least 1",
            );
        }
    }

    fn amqp(&mut self, config: &Config) {
        let amqp = &config.amqp;
        self.section("amqp", amqp.listener().check());
        let at_least_one = [
            ("ack_timeout_secs", amqp.ack_timeout_secs as u128),
            ("retention_secs", amqp.retention_secs as u128),
            ("max_clients_per_group", amqp.max_clients_per_group as u128),
            ("max_unsettled_per_client", amqp.max_unsettled_per_client as u128),
            ("auth_timeout_secs", amqp.auth_timeout_secs as u128),
            ("max_consumer_groups", amqp.max_consumer_groups as u128),
            ("max_connections", amqp.max_connections as u128),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                self.at(&[K("amqp"), K(key)], "0 is not allowed; expected at least 1");
            }
        }
    }

    /// A component's problems, in the section `name`.
    fn section(&mut self, name: &str, problems: Vec<crate::check::Problem>) {
        let prefix = crate::check::key(name);
        for problem in problems {
            self.report.place(self.root, problem.within(&prefix));
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
                self.at(&key_path, "must not be empty; expected up to 20 ASCII letters and digits");
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
                self.at(&id_path, "must not be empty; expected ASCII letters, digits, _ and -");
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
                    format!("\"{id}\" is already used by consumer_groups[{first}]; ids must be unique")
                });
            }
        }
    }

    fn subscriptions(&mut self, config: &Config) {
        let products: HashSet<&str> = config.products.iter().map(|p| p.key.as_str()).collect();
        let groups: HashSet<&str> = config.consumer_groups.iter().map(|g| g.id.as_str()).collect();
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
                let message = format!("must not be empty; expected some of {}", quoted_list(MESSAGE_TYPES));
                self.at(&[K("subscriptions"), I(s), K("message_types")], message);
            }
            for (t, message_type) in types.iter().enumerate() {
                if types[..t].contains(message_type) {
                    let message = format!("\"{}\" is listed twice", message_type_name(*message_type));
                    self.at(&[K("subscriptions"), I(s), K("message_types"), I(t)], message);
                }
            }

            let names = &subscription.consumer_groups;
            if !(1..=MAX_SUBSCRIPTION_GROUPS).contains(&names.len()) {
                let message =
                    format!("lists {} consumer groups; expected 1 to {MAX_SUBSCRIPTION_GROUPS}", names.len());
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

impl Validator<'_, '_, '_> {
    /// The API's checks (`alerts::model`), plus unique names and groups that the file defines.
    fn alert_rules(&mut self, config: &Config) {
        let groups: HashSet<&str> = config.consumer_groups.iter().map(|g| g.id.as_str()).collect();
        let mut seen = HashMap::new();
        for (r, rule) in config.alert_rules.iter().enumerate() {
            let body = crate::alerts::model::AlertRuleBody::from(rule);
            if let Err(problems) = body.validate() {
                for p in problems {
                    let mut path = vec![K("alert_rules"), I(r)];
                    path.extend(p.field.config().iter().map(|k| K(k)));
                    path.extend(p.index.map(I));
                    self.at(&path, p.message);
                }
            } else {
                let name = rule.name.as_str();
                self.unique(&mut seen, (name, r), &[K("alert_rules"), I(r), K("name")], |first| {
                    format!("\"{name}\" is already used by alert_rules[{first}]; names must be unique")
                });
            }
            for (g, id) in rule.consumer_group_ids.iter().enumerate() {
                if !id.is_empty() && id != DEFAULT_GROUP && !groups.contains(id.as_str()) {
                    let message = format!(
                        "consumer group \"{id}\" is not defined in [[consumer_groups]]; expected \
                         DEFAULT_GROUP or a defined id"
                    );
                    self.at(&[K("alert_rules"), I(r), K("consumer_group_ids"), I(g)], message);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::super::load::{lines_and_keys, load_str, problems_in};
    use super::*;

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
        let message =
            |key: &str| problems.iter().find(|p| p.key == key).map(|p| p.message.clone()).unwrap_or_default();
        assert!(message("mqtt.keep_alive_min_secs").contains("larger than keep_alive_max_secs"));
        assert!(message("mqtt.key").starts_with("missing; tls_listen needs `key`"));
        assert!(message("products[1].devices[1].name").contains("' '"));
        assert!(message("products[1].devices[0].name").contains("4 to 32"));
        assert!(message("products[1].devices[3].name").contains("already used by products[1].devices[2]"));
        assert!(message("consumer_groups[0].id").contains("always exists"));
        assert!(message("subscriptions[2].product_key").contains("already has a subscription"));
        assert!(message("subscriptions[1].consumer_groups[2]").contains("not defined in [[consumer_groups]]"));
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
        assert_eq!(lines_and_keys(&problems), vec![(Some(36), "subscriptions[0].consumer_groups")]);
        assert_eq!(problems[0].message, "lists 11 consumer groups; expected 1 to 10");
        let text = text.replace(", \"g10\"]", "]");
        load_str(&text, "t.toml").expect("ten groups are fine");
    }

    #[test]
    fn alert_rule_problems_are_reported_with_their_lines() {
        let text = r#"[[consumer_groups]]
id = "g1"
name = "group_one"
[[alert_rules]]
name = "backlog"
consumer_group_ids = ["g1", "g9"]
metric = "backlog"
comparison = "=>"
threshold = -1
period_seconds = 0
consecutive_periods = 0
callback_url = "ftp://x"
[alert_rules.effective]
days = ["mon"]
start = "9:00"
end = "25:00"
[[alert_rules]]
name = "ok"
metric = "consumptionRate"
comparison = "<"
threshold = 0.5
period_seconds = 60
callback_url = "http://127.0.0.1:9/hook"
[[alert_rules]]
name = "ok"
metric = "accumulatedCount"
comparison = ">"
threshold = 10
period_seconds = 300
callback_url = "https://ops.example/alert"
"#;
        let problems = problems_in(text);
        assert_eq!(
            lines_and_keys(&problems),
            vec![
                (Some(6), "alert_rules[0].consumer_group_ids[1]"),
                (Some(7), "alert_rules[0].metric"),
                (Some(8), "alert_rules[0].comparison"),
                (Some(9), "alert_rules[0].threshold"),
                (Some(10), "alert_rules[0].period_seconds"),
                (Some(11), "alert_rules[0].consecutive_periods"),
                (Some(12), "alert_rules[0].callback_url"),
                (Some(15), "alert_rules[0].effective.start"),
                (Some(16), "alert_rules[0].effective.end"),
                (Some(25), "alert_rules[2].name"),
            ],
            "{problems:#?}"
        );
        let problems = problems_in("[[alert_rules]]\nname = \"x\"\nmetric = \"consumptionRate\"\ncomparison = \">\"\nthreshold = \"1\"\nperiod_seconds = 60\ncallback_url = \"http://h/\"\n[alert_rules.effective]\ndays = [\"monday\"]\n");
        assert_eq!(
            lines_and_keys(&problems),
            vec![(Some(5), "alert_rules[0].threshold"), (Some(9), "alert_rules[0].effective.days[0]")]
        );
        let valid = &text[text.find("[[alert_rules]]\nname = \"ok\"").unwrap_or(0)..];
        let valid = &valid[..valid.rfind("[[alert_rules]]").unwrap_or(valid.len())];
        let config = load_str(valid, "t.toml").expect("the valid rule loads");
        assert_eq!(config.alert_rules.len(), 1);
        assert_eq!(config.alert_rules[0].consecutive_periods, 1);
        assert!(config.alert_rules[0].effective.is_none());
    }

    #[test]
    fn keep_alive_zero_is_refused() {
        let problems = problems_in("[mqtt]\nkeep_alive_min_secs = 0\n");
        assert_eq!(lines_and_keys(&problems), vec![(Some(2), "mqtt.keep_alive_min_secs")]);
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
}
