//! Pass 3 of loading (see `load.rs`): every section the schema pass found sound is
//! deserialised and checked by the component that owns it (ranges, names, uniqueness, TLS
//! files); then the references between sections are checked here (a subscription naming a
//! product or a consumer group the file does not define, and so on). Each problem points at
//! the line of the offending value.

use std::collections::HashSet;

use serde::de::DeserializeOwned;
use toml_edit::Item;

use super::report::Report;
use super::Config;
use crate::alerts::config::{check_rules, AlertRuleConfig};
use crate::amqp::config::AmqpConfig;
use crate::api::config::HttpConfig;
use crate::check::{key, Problem};
use crate::cluster::config::ClusterConfig;
use crate::groups::config::{check_groups, ConsumerGroupConfig};
use crate::groups::DEFAULT_GROUP;
use crate::ingress::config::MqttConfig;
use crate::registry::config::{check_access_keys, check_products, AccessKeyConfig, ProductConfig};
use crate::store::config::StorageConfig;
use crate::subscriptions::config::{check_subscriptions, SubscriptionConfig};

/// The sections of a file, each deserialised when the schema pass found nothing wrong in it
/// (`None` otherwise), so that a problem in one section does not hide those of the others.
pub(super) struct Sections {
    mqtt: Option<MqttConfig>,
    amqp: Option<AmqpConfig>,
    http: Option<HttpConfig>,
    storage: Option<StorageConfig>,
    rules_dir: Option<Option<std::path::PathBuf>>,
    access_keys: Option<Vec<AccessKeyConfig>>,
    products: Option<Vec<ProductConfig>>,
    consumer_groups: Option<Vec<ConsumerGroupConfig>>,
    subscriptions: Option<Vec<SubscriptionConfig>>,
    alert_rules: Option<Vec<AlertRuleConfig>>,
    cluster: Option<Option<ClusterConfig>>,
}

/// Reads and checks the sections of `table` (the file, already through the schema pass).
pub(super) struct Validator<'r, 'a, 'd> {
    pub(super) report: &'r mut Report<'a>,
    /// The document, for finding lines.
    pub(super) root: &'d Item,
}

impl Validator<'_, '_, '_> {
    /// Every section of `table` that the schema pass found sound, deserialised.
    pub(super) fn read(&mut self, table: &toml::Table) -> Sections {
        Sections {
            mqtt: self.section(table, "mqtt"),
            amqp: self.section(table, "amqp"),
            http: self.section(table, "http"),
            storage: self.section(table, "storage"),
            rules_dir: self.section(table, "rules_dir"),
            access_keys: self.section(table, "access_keys"),
            products: self.section(table, "products"),
            consumer_groups: self.section(table, "consumer_groups"),
            subscriptions: self.section(table, "subscriptions"),
            alert_rules: self.section(table, "alert_rules"),
            cluster: self.section(table, "cluster"),
        }
    }

    /// The section `name`: its default when absent, `None` when it has a problem.
    fn section<T: DeserializeOwned + Default>(&mut self, table: &toml::Table, name: &str) -> Option<T> {
        if self.report.is_broken(name) {
            return None;
        }
        let Some(value) = table.get(name) else {
            return Some(T::default());
        };
        // After the schema pass this should not fail; if it does, serde's message says why.
        match value.clone().try_into() {
            Ok(section) => Some(section),
            Err(err) => {
                self.report.place(self.root, Problem::new(key(name), err.message().trim()));
                None
            }
        }
    }

    /// Runs every sound section's own check, then the references between sections.
    pub(super) fn check(&mut self, s: &Sections) {
        if let Some(mqtt) = &s.mqtt {
            self.place("mqtt", mqtt.check());
        }
        if let Some(amqp) = &s.amqp {
            self.place("amqp", amqp.check());
        }
        if let Some(http) = &s.http {
            self.place("http", http.check());
        }
        if let Some(access_keys) = &s.access_keys {
            self.place("access_keys", check_access_keys(access_keys));
        }
        if let Some(products) = &s.products {
            self.place("products", check_products(products));
        }
        if let Some(groups) = &s.consumer_groups {
            self.place("consumer_groups", check_groups(groups));
        }
        if let Some(subscriptions) = &s.subscriptions {
            self.place("subscriptions", check_subscriptions(subscriptions));
        }
        if let Some(alert_rules) = &s.alert_rules {
            self.place("alert_rules", check_rules(alert_rules));
        }
        if let Some(Some(cluster)) = &s.cluster {
            self.place("cluster", cluster.check());
        }
        self.references(s);
    }

    /// A component's problems, in the section `name`.
    fn place(&mut self, name: &str, problems: Vec<Problem>) {
        let prefix = key(name);
        for problem in problems {
            self.report.place(self.root, problem.within(&prefix));
        }
    }

    /// What one section names in another: products and consumer groups must be defined, and
    /// the groups fit under `[amqp] max_consumer_groups`. Checked when both sections are sound.
    fn references(&mut self, s: &Sections) {
        let groups: Option<HashSet<&str>> =
            s.consumer_groups.as_ref().map(|groups| groups.iter().map(|g| g.id.as_str()).collect());
        let undefined_group = |id: &str| {
            format!(
                "consumer group \"{id}\" is not defined in [[consumer_groups]]; expected DEFAULT_GROUP or \
                 a defined id"
            )
        };
        let mut problems = Vec::new();

        if let (Some(subscriptions), Some(products)) = (&s.subscriptions, &s.products) {
            let products: HashSet<&str> = products.iter().map(|p| p.key.as_str()).collect();
            for (i, subscription) in subscriptions.iter().enumerate() {
                let product = subscription.product_key.as_str();
                if !products.contains(product) {
                    let path = key("subscriptions").index(i).key("product_key");
                    problems.push(Problem::new(
                        path,
                        format!("product \"{product}\" is not defined in [[products]]"),
                    ));
                }
            }
        }
        if let (Some(subscriptions), Some(groups)) = (&s.subscriptions, &groups) {
            for (i, subscription) in subscriptions.iter().enumerate() {
                let names = &subscription.consumer_groups;
                for (g, id) in names.iter().enumerate() {
                    // A name listed twice is the subscription's own problem, reported once.
                    if id != DEFAULT_GROUP && !groups.contains(id.as_str()) && !names[..g].contains(id) {
                        let path = key("subscriptions").index(i).key("consumer_groups").index(g);
                        problems.push(Problem::new(path, undefined_group(id)));
                    }
                }
            }
        }
        if let (Some(rules), Some(groups)) = (&s.alert_rules, &groups) {
            for (r, rule) in rules.iter().enumerate() {
                for (g, id) in rule.consumer_group_ids.iter().enumerate() {
                    // An empty id is the rule's own problem.
                    if !id.is_empty() && id != DEFAULT_GROUP && !groups.contains(id.as_str()) {
                        let path = key("alert_rules").index(r).key("consumer_group_ids").index(g);
                        problems.push(Problem::new(path, undefined_group(id)));
                    }
                }
            }
        }
        if let (Some(declared), Some(amqp)) = (&s.consumer_groups, &s.amqp) {
            // DEFAULT_GROUP counts, as it does for groups created through the API.
            let max = amqp.max_consumer_groups;
            if max > 0 && declared.len() + 1 > max {
                let message = format!(
                    "is consumer group number {} counting DEFAULT_GROUP; [amqp] max_consumer_groups \
                     allows {max}",
                    max + 1
                );
                problems.push(Problem::new(key("consumer_groups").index(max - 1), message));
            }
        }
        for problem in problems {
            self.report.place(self.root, problem);
        }
    }
}

impl Sections {
    /// The configuration, when every section was read.
    pub(super) fn into_config(self) -> Option<Config> {
        Some(Config {
            mqtt: self.mqtt?,
            amqp: self.amqp?,
            http: self.http?,
            storage: self.storage?,
            rules_dir: self.rules_dir?,
            access_keys: self.access_keys?,
            products: self.products?,
            consumer_groups: self.consumer_groups?,
            subscriptions: self.subscriptions?,
            alert_rules: self.alert_rules?,
            cluster: self.cluster?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::super::load::{lines_and_keys, load_str, problems_in};
    use super::*;

    #[test]
    fn cluster_section_is_optional_checked_and_kept() {
        let plain = load_str("[mqtt]\nlisten = \"127.0.0.1:0\"\n", "test.toml").expect("loads");
        assert!(plain.cluster.is_none(), "no [cluster]: the embedded store");

        let good = load_str(
            "[cluster]\nnats = [\"nats://127.0.0.1:4222\"]\nreplicas = 1\nnode = \"n1\"\n",
            "test.toml",
        )
        .expect("loads");
        let cluster = good.cluster.expect("[cluster] kept");
        assert_eq!(cluster.name, "iotpipe");
        assert_eq!(cluster.replicas, 1);
        assert_eq!(cluster.node.as_deref(), Some("n1"));

        let text = r#"[cluster]
nats = ["nats://127.0.0.1"]
name = "a.b"
replicas = 7
token = "s3cr3t"
user = "u"
password = "p"
"#;
        let problems = problems_in(text);
        assert_eq!(
            lines_and_keys(&problems),
            vec![
                (Some(2), "cluster.nats[0]"),
                (Some(3), "cluster.name"),
                (Some(4), "cluster.replicas"),
                (Some(6), "cluster.user"),
            ],
            "{problems:#?}"
        );
        assert!(problems.iter().all(|p| !p.message.contains("s3cr3t")));

        let unknown = problems_in("[cluster]\nnats = [\"nats://127.0.0.1:4222\"]\nreplica = 3\n");
        assert_eq!(lines_and_keys(&unknown), vec![(Some(3), "cluster.replica")]);
        assert!(unknown[0].message.contains("valid keys in [cluster] are: nats, name, replicas, node"));
        let missing = problems_in("[cluster]\nname = \"x\"\n");
        assert_eq!(lines_and_keys(&missing), vec![(Some(1), "cluster.nats")]);
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
name = "group_zero"
[[consumer_groups]]
id = "g.1"
name = "group_one"
[[consumer_groups]]
id = "g2"
name = "group_two"
[[consumer_groups]]
id = "g2"
name = "group_three"
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
            let _ = write!(text, "[[consumer_groups]]\nid = \"g{g}\"\nname = \"group_{g}\"\n");
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

    /// Drift: the file accepted group names the API refuses. Both now use `groups::name`.
    #[test]
    fn group_names_follow_the_api_rule() {
        let text = "[[consumer_groups]]\nid = \"g1\"\nname = \"n\"\n\
                    [[consumer_groups]]\nid = \"g2\"\nname = \"alerts_group\"\n\
                    [[consumer_groups]]\nid = \"g3\"\nname = \"alerts_group\"\n\
                    [[consumer_groups]]\nid = \"g4\"\nname = \"DEFAULT_GROUP\"\n";
        let problems = problems_in(text);
        assert_eq!(
            lines_and_keys(&problems),
            vec![
                (Some(3), "consumer_groups[0].name"),
                (Some(9), "consumer_groups[2].name"),
                (Some(12), "consumer_groups[3].name"),
            ]
        );
        let api = crate::groups::name::validate("n").expect_err("the API refuses \"n\"");
        assert_eq!(problems[0].message, api);
        assert!(problems[1].message.contains("already used by consumer_groups[1]"), "{}", problems[1]);
        assert!(crate::groups::name::validate("alerts_group").is_ok());
    }

    /// Drift: a duplicate device was not reported when another section had a problem (the
    /// checks stopped at the first pass that found one).
    #[test]
    fn a_duplicate_device_is_reported_with_the_other_problems() {
        let text = r#"[mqtt]
listen = "127.0.0.1:0"
lisen = "127.0.0.1:0"
keep_alive_min_secs = 0
[http]
admin_token = 5
[[products]]
key = "a1"
[[products.devices]]
name = "dev1"
secret = "s"
[[products.devices]]
name = "dev1"
secret = "s"
[[subscriptions]]
product_key = "a2"
message_types = ["status"]
consumer_groups = ["DEFAULT_GROUP"]
"#;
        let problems = problems_in(text);
        assert_eq!(
            lines_and_keys(&problems),
            vec![
                (Some(3), "mqtt.lisen"),
                (Some(6), "http.admin_token"),
                (Some(13), "products[0].devices[1].name"),
                (Some(16), "subscriptions[0].product_key"),
            ],
            "{problems:#?}"
        );
        assert!(problems[2].message.contains("already used by products[0].devices[0]"));
        // `[mqtt]` has a schema problem, so its values are not checked further (keep-alive 0
        // is reported once the key is fixed).
        let fixed = text.replace("lisen = \"127.0.0.1:0\"\n", "");
        let keys: Vec<String> = problems_in(&fixed).iter().map(|p| p.key.clone()).collect();
        assert!(keys.contains(&"mqtt.keep_alive_min_secs".to_string()), "{keys:?}");
    }

    #[test]
    fn declared_groups_fit_under_max_consumer_groups() {
        let mut text = String::from("[amqp]\nmax_consumer_groups = 3\n");
        for g in 1..=3 {
            let _ = write!(text, "[[consumer_groups]]\nid = \"g{g}\"\nname = \"group_{g}\"\n");
        }
        let problems = problems_in(&text);
        assert_eq!(lines_and_keys(&problems), vec![(Some(9), "consumer_groups[2]")]);
        assert!(problems[0].message.contains("counting DEFAULT_GROUP"), "{}", problems[0]);
        let text = text.replace("max_consumer_groups = 3", "max_consumer_groups = 4");
        load_str(&text, "t.toml").expect("three groups and DEFAULT_GROUP fit in four");
    }
}
