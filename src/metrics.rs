//! `/metrics`: every number iotpipe keeps, in the Prometheus text format (docs/metrics.md).
//!
//! The components count with plain atomics where they work (ingress, AMQP, groups, rules,
//! pipeline, store writer, alerts); nothing here runs on their paths. One
//! [`prometheus_client`] collector reads those counters when a scrape comes and encodes them.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::alerts::Alerts;
use crate::amqp::AmqpStats;
use crate::cluster::stats::NatsStats;
use crate::groups::Groups;
use crate::histogram::Histogram;
use crate::ingress::{IngressStats, Refusals};
use crate::pipeline::Stats;
use crate::rules::watch::SharedRules;
use crate::store::StoreStats;

/// The `Content-Type` of the answer (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Where the numbers come from; read at every scrape.
pub struct Sources {
    /// MQTT ingress counters.
    pub ingress: Arc<IngressStats>,
    /// AMQP server counters.
    pub amqp: Arc<AmqpStats>,
    /// Consumer groups (status and counters).
    pub groups: Arc<Groups>,
    /// The rules in force (per-rule counters).
    pub rules: Arc<SharedRules>,
    /// Pipeline hand-off counters.
    pub pipeline: Arc<Stats>,
    /// Store writer measurements.
    pub store: Arc<StoreStats>,
    /// The database file, whose size is reported.
    pub db_file: PathBuf,
    /// Alert rules.
    pub alerts: Arc<Alerts>,
    /// Cluster mode: the NATS connection and the JetStream publishes.
    pub nats: Option<Arc<NatsStats>>,
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources").field("db_file", &self.db_file).finish_non_exhaustive()
    }
}

/// The metrics endpoint's registry.
pub struct Metrics {
    registry: Registry,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry with one collector over `sources`.
    pub fn new(sources: Sources) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape(sources)));
        Self { registry }
    }

    /// The current values in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail; an encoder error would be a bug in a collector.
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "Encoding the metrics failed");
        }
        out
    }
}

#[derive(Debug)]
struct Scrape(Sources);

type Out<'a, 'b> = &'a mut DescriptorEncoder<'b>;

fn counter(out: Out<'_, '_>, name: &str, help: &str, value: u64) -> fmt::Result {
    let m = ConstCounter::new(value);
    m.encode(out.encode_descriptor(name, help, None, m.metric_type())?)
}

fn gauge(out: Out<'_, '_>, name: &str, help: &str, value: impl Into<Num>) -> fmt::Result {
    let m = out.encode_descriptor(name, help, None, MetricType::Gauge)?;
    match value.into() {
        Num::Int(v) => ConstGauge::new(v).encode(m),
        Num::Float(v) => ConstGauge::new(v).encode(m),
    }
}

fn load(c: &AtomicU64) -> u64 {
    c.load(Relaxed)
}

/// A sample value: counts print as integers, rates and seconds as floats.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(u64),
    Float(f64),
}

impl From<u64> for Num {
    fn from(v: u64) -> Self {
        Num::Int(v)
    }
}

impl From<usize> for Num {
    fn from(v: usize) -> Self {
        Num::Int(v as u64)
    }
}

impl From<f64> for Num {
    fn from(v: f64) -> Self {
        Num::Float(v)
    }
}

/// One family with one label: `name{label="value"}` for each item.
fn labelled<'v, N: Into<Num>>(
    out: Out<'_, '_>,
    (name, help, kind): (&str, &str, MetricType),
    label: &str,
    items: impl IntoIterator<Item = (&'v str, N)>,
) -> fmt::Result {
    let mut family = out.encode_descriptor(name, help, None, kind)?;
    for (value_of_label, value) in items {
        let labels = [(label, value_of_label)];
        let m = family.encode_family(&labels)?;
        match (kind, value.into()) {
            (MetricType::Counter, Num::Int(v)) => ConstCounter::new(v).encode(m)?,
            (MetricType::Counter, Num::Float(v)) => ConstCounter::new(v).encode(m)?,
            (_, Num::Int(v)) => ConstGauge::new(v).encode(m)?,
            (_, Num::Float(v)) => ConstGauge::new(v).encode(m)?,
        }
    }
    Ok(())
}

fn histogram(out: Out<'_, '_>, name: &str, help: &str, series: &[(&str, &str, &Histogram)]) -> fmt::Result {
    let mut family = out.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (label, value, h) in series {
        let s = h.snapshot();
        // The last bucket is +Inf: the encoder writes it from the count.
        let buckets = &s.buckets[..s.buckets.len() - 1];
        if label.is_empty() {
            family.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                s.sum_secs, s.count, buckets, None,
            )?;
        } else {
            let labels = [(*label, *value)];
            family.encode_family(&labels)?.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                s.sum_secs, s.count, buckets, None,
            )?;
        }
    }
    Ok(())
}

const COUNTER: MetricType = MetricType::Counter;
const GAUGE: MetricType = MetricType::Gauge;

impl Collector for Scrape {
    fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        let out = &mut out;
        {
            let labels = [("version", env!("CARGO_PKG_VERSION"))];
            let mut family = out.encode_descriptor(
                "iotpipe_build",
                "Always 1; the version as a label.",
                None,
                MetricType::Info,
            )?;
            family.encode_info(&labels)?;
        }
        ingress(out, &s.ingress)?;
        pipeline(out, &s.pipeline)?;
        rules(out, &s.rules)?;
        groups(out, &s.groups)?;
        store(out, &s.store, &s.db_file)?;
        amqp(out, &s.amqp)?;
        if let Some(n) = &s.nats {
            nats(out, n)?;
        }
        alerts(out, &s.alerts)
    }
}

/// Cluster mode only: a single node has no NATS families at all.
fn nats(out: Out<'_, '_>, n: &NatsStats) -> fmt::Result {
    histogram(
        out,
        "iotpipe_nats_puback_duration_seconds",
        "From a copy's JetStream publish to its PubAck (stored copies).",
        &[("", "", &n.puback)],
    )?;
    counter(
        out,
        "iotpipe_nats_publishes",
        "Copies published to JetStream, retries included.",
        load(&n.publishes),
    )?;
    counter(
        out,
        "iotpipe_nats_publish_retries",
        "Copies published again with the same id after a failure or a timeout.",
        load(&n.retries),
    )?;
    counter(
        out,
        "iotpipe_nats_failed_appends",
        "Appends given up after 20 s of retries (their devices got no PUBACK).",
        load(&n.failed_appends),
    )?;
    counter(out, "iotpipe_nats_reconnects", "NATS connections made after the first.", n.reconnects())?;
    counter(out, "iotpipe_nats_disconnects", "NATS connections lost.", load(&n.disconnects))?;
    gauge(
        out,
        "iotpipe_nats_connected",
        "1 while the NATS connection is up, else 0.",
        u64::from(n.connected()),
    )
}

fn ingress(out: Out<'_, '_>, i: &IngressStats) -> fmt::Result {
    gauge(out, "iotpipe_ingress_connections", "MQTT devices connected now.", load(&i.connections))?;
    counter(out, "iotpipe_ingress_connects", "MQTT connections accepted (CONNACK 0).", load(&i.connects))?;
    labelled(
        out,
        ("iotpipe_ingress_refusals", "MQTT connections refused at or before CONNECT, by reason.", COUNTER),
        "reason",
        Refusals::REASONS.iter().map(|(r, label)| (*label, load(i.refusals.counter(*r)))),
    )?;
    counter(out, "iotpipe_ingress_messages", "Publishes handed to the pipeline.", load(&i.publishes))?;
    counter(out, "iotpipe_ingress_bytes", "Payload bytes handed to the pipeline.", load(&i.bytes))?;
    counter(
        out,
        "iotpipe_ingress_acl_denied",
        "Publishes and subscriptions refused by the topic ACL.",
        load(&i.acl_denied),
    )?;
    counter(out, "iotpipe_ingress_oversized", "Publishes refused for their size.", load(&i.oversized))?;
    counter(
        out,
        "iotpipe_ingress_protocol_errors",
        "Connections closed for malformed packets or protocol violations.",
        load(&i.protocol_errors),
    )?;
    counter(
        out,
        "iotpipe_ingress_bad_thing_payloads",
        "Thing-model posts forwarded unconverted because they were not Alink JSON.",
        load(&i.bad_thing_payloads),
    )?;
    downlink(out, i)
}

/// `iotpipe_downlink_messages_total{product, result}`: cloud-to-device messages per product.
fn downlink(out: Out<'_, '_>, i: &IngressStats) -> fmt::Result {
    let mut family = out.encode_descriptor(
        "iotpipe_downlink_messages",
        "Cloud-to-device messages by product and result: sent (written to the device), acked \
         (QoS 1 PUBACK received), failed (refused or lost: offline, mailbox full, not subscribed).",
        None,
        COUNTER,
    )?;
    for (product, c) in i.downlink.snapshot() {
        for (result, value) in [("sent", &c.sent), ("acked", &c.acked), ("failed", &c.failed)] {
            let labels = [("product", product.as_str()), ("result", result)];
            ConstCounter::new(load(value)).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

fn pipeline(out: Out<'_, '_>, p: &Stats) -> fmt::Result {
    labelled(
        out,
        ("iotpipe_pipeline_messages", "Messages durably stored, by kind.", COUNTER),
        "kind",
        [
            ("upstream", load(&p.upstream)),
            ("status", load(&p.status)),
            ("lifecycle", load(&p.lifecycle)),
            ("thing_history", load(&p.thing_history)),
            ("tag_change", load(&p.tag_change)),
        ],
    )?;
    counter(
        out,
        "iotpipe_pipeline_group_copies",
        "Copies stored for consumer groups (a message for three groups counts three).",
        load(&p.group_copies),
    )
}

fn rules(out: Out<'_, '_>, rules: &SharedRules) -> fmt::Result {
    let set = rules.get();
    let rules = set.metrics();
    gauge(out, "iotpipe_rules", "SQL rules loaded.", rules.len())?;
    // Every counter of the rules' snapshot, under its EMQX name with dots as underscores
    // (`failed.no_result` -> `iotpipe_rule_failed_no_result_total`): counters the rules module
    // adds appear here without a change.
    let mut families: std::collections::BTreeMap<String, Vec<(&str, u64)>> = Default::default();
    for (rule, snapshot) in &rules {
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(snapshot) {
            for (name, value) in map {
                if let Some(v) = value.as_u64() {
                    families.entry(name).or_default().push((rule, v));
                }
            }
        }
    }
    for (name, samples) in families {
        let metric = format!("iotpipe_rule_{}", name.replace('.', "_"));
        let help = format!("Per-rule counter {name} (docs/rules.md).");
        labelled(out, (&metric, &help, COUNTER), "rule", samples)?;
    }
    Ok(())
}

fn groups(out: Out<'_, '_>, groups: &Groups) -> fmt::Result {
    let list = groups.list();
    let status: Vec<_> = list.iter().map(|g| (&*g.id, g.status(), &**g)).collect();
    gauge(out, "iotpipe_groups", "Consumer groups.", list.len())?;
    type G = fn(&crate::groups::Status) -> u64;
    let gauges: [(&str, &str, G); 5] = [
        (
            "iotpipe_group_accumulated",
            "Messages stored and not yet accepted, rejected or expired (in flight included).",
            |s| s.accumulated,
        ),
        ("iotpipe_group_in_flight", "Messages delivered and not yet settled.", |s| s.in_flight),
        ("iotpipe_group_consumption_rate", "Messages accepted in the last 60 seconds (per minute).", |s| {
            s.consumption_rate_per_minute
        }),
        ("iotpipe_group_online_clients", "AMQP clients online.", |s| s.online_clients.len() as u64),
        ("iotpipe_group_dead_letters", "Messages in the group's dead letters.", |s| s.dead_letters),
    ];
    for (name, help, get) in gauges {
        labelled(out, (name, help, GAUGE), "group", status.iter().map(|(id, s, _)| (*id, get(s))))?;
    }
    labelled(
        out,
        (
            "iotpipe_group_last_consumption_timestamp_seconds",
            "When a message was last accepted (epoch seconds).",
            GAUGE,
        ),
        "group",
        status.iter().filter_map(|(id, s, _)| s.last_consumption_ms.map(|ms| (*id, ms as f64 / 1000.0))),
    )?;
    type C = fn(&crate::groups::Group) -> &AtomicU64;
    let counters: [(&str, &str, C); 11] = [
        ("iotpipe_group_appended", "Messages stored for the group.", |g| &g.counters.appended),
        ("iotpipe_group_delivered", "Deliveries to clients (redeliveries included).", |g| {
            &g.counters.delivered
        }),
        ("iotpipe_group_acked", "Messages accepted by a client.", |g| &g.counters.acked),
        ("iotpipe_group_redelivered", "Messages put back after release, disconnect or ack timeout.", |g| {
            &g.counters.redelivered
        }),
        ("iotpipe_group_expired", "Messages dropped after the retention period.", |g| &g.counters.expired),
        ("iotpipe_group_rejected", "Messages rejected by a client (moved to the dead letters).", |g| {
            &g.counters.rejected
        }),
        ("iotpipe_group_cleared", "Messages dropped by a clear.", |g| &g.counters.cleared),
        (
            "iotpipe_group_retracted",
            "Messages handed to the group whose commit failed (never stored, devices not acknowledged).",
            |g| &g.counters.retracted,
        ),
        (
            "iotpipe_group_exhausted",
            "Messages moved to the dead letters after the last delivery attempt.",
            |g| &g.counters.exhausted,
        ),
        ("iotpipe_group_dead_letters_requeued", "Dead letters moved back to the queue.", |g| {
            &g.counters.requeued
        }),
        ("iotpipe_group_dead_letters_purged", "Dead letters purged or expired.", |g| &g.counters.purged),
    ];
    for (name, help, get) in counters {
        labelled(out, (name, help, COUNTER), "group", status.iter().map(|(id, _, c)| (*id, load(get(c)))))?;
    }
    Ok(())
}

fn store(out: Out<'_, '_>, s: &StoreStats, db_file: &std::path::Path) -> fmt::Result {
    histogram(
        out,
        "iotpipe_store_append_duration_seconds",
        "From an append batch being queued to its commit (with fsync) being done.",
        &[("", "", &s.append)],
    )?;
    histogram(
        out,
        "iotpipe_store_commit_duration_seconds",
        "Duration of one store commit, with fsync or without (removals only).",
        &[("durability", "fsync", &s.commit_fsync), ("durability", "none", &s.commit_nosync)],
    )?;
    counter(out, "iotpipe_store_commit_failures", "Store commits that failed.", load(&s.commit_failures))?;
    counter(
        out,
        "iotpipe_store_settled_before_commit",
        "Messages settled by their consumer before their commit (early delivery): never written.",
        load(&s.settled_before_commit),
    )?;
    // Unreadable (e.g. just being replaced): reported as 0 rather than failing the scrape.
    let size = std::fs::metadata(db_file).map(|m| m.len()).unwrap_or(0);
    gauge(out, "iotpipe_store_size_bytes", "Size of the database file on disk.", size)
}

fn amqp(out: Out<'_, '_>, a: &AmqpStats) -> fmt::Result {
    gauge(out, "iotpipe_amqp_connections", "AMQP connections open now.", load(&a.connections))?;
    counter(
        out,
        "iotpipe_amqp_connections_accepted",
        "AMQP connections accepted.",
        load(&a.connections_accepted),
    )?;
    counter(out, "iotpipe_amqp_logins_refused", "AMQP SASL logins refused.", load(&a.logins_refused))?;
    gauge(out, "iotpipe_amqp_links", "AMQP receiver links serving a consumer group now.", load(&a.links))?;
    counter(
        out,
        "iotpipe_amqp_links_refused",
        "AMQP links refused (sender links, second receiver links, full groups).",
        load(&a.links_refused),
    )
}

fn alerts(out: Out<'_, '_>, alerts: &Alerts) -> fmt::Result {
    let rules = alerts.list();
    let delivery: Vec<_> = rules.iter().map(|r| (r.rule.name.as_str(), r.delivery(), r.firing())).collect();
    gauge(out, "iotpipe_alert_rules", "Alert rules in force.", rules.len())?;
    counter(
        out,
        "iotpipe_alert_evaluations",
        "Alert rule evaluations (one per rule and period).",
        alerts.evaluations(),
    )?;
    labelled(
        out,
        ("iotpipe_alert_firing", "Consumer groups firing now, per alert rule.", GAUGE),
        "rule",
        delivery.iter().map(|(name, _, firing)| (*name, *firing)),
    )?;
    {
        let mut family = out.encode_descriptor(
            "iotpipe_alert_notifications",
            "Alert notifications made, per rule and state.",
            None,
            COUNTER,
        )?;
        for (name, d, _) in &delivery {
            for (state, n) in [("firing", d.firing), ("resolved", d.resolved)] {
                let labels = [("rule", *name), ("state", state)];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
    }
    type D = fn(&crate::alerts::DeliveryCounts) -> u64;
    let families: [(&str, &str, D); 4] = [
        ("iotpipe_alert_callbacks_sent", "Alert notifications delivered (2xx).", |d| d.sent),
        (
            "iotpipe_alert_callback_failures",
            "Alert notifications given up after every try, or refused with a 4xx.",
            |d| d.failed,
        ),
        ("iotpipe_alert_callback_retries", "Alert callback POSTs tried again after a failure.", |d| {
            d.retries
        }),
        (
            "iotpipe_alert_notifications_dropped",
            "Alert notifications dropped because a queue was full or the server stopped.",
            |d| d.dropped,
        ),
    ];
    for (name, help, get) in families {
        labelled(out, (name, help, COUNTER), "rule", delivery.iter().map(|(rule, d, _)| (*rule, get(d))))?;
    }
    Ok(())
}
