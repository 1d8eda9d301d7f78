//! What a run reports: one [`Report`], printed as a table for people or as one JSON line for
//! scripts (`docs/benchmarks.md` is made from those lines).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::stats::Latency;

/// The result of one run of one scenario against one system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Which system was measured, as labelled by `--label` (default: the target).
    pub system: String,
    /// `iotpipe`, `rabbitmq` or `mosquitto`: how devices and consumers logged in.
    pub target: String,
    /// The scenario's name.
    pub scenario: String,
    /// Publishing devices (or idle connections in the idle scenario).
    pub devices: usize,
    /// Consumers.
    pub consumers: usize,
    /// Offered load in messages/s, all devices together; 0 = as fast as the server acknowledges.
    pub offered_rate: f64,
    /// Length of the measured window in seconds (after the warm-up).
    pub seconds: f64,
    /// PUBACKs received in the window.
    pub published: u64,
    /// Messages consumers received (and accepted) in the window.
    pub consumed: u64,
    /// `published` per second.
    pub published_per_sec: f64,
    /// `consumed` per second: the end-to-end throughput.
    pub consumed_per_sec: f64,
    /// Publish-to-consumer latency of the messages consumed in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// Publish-to-PUBACK latency of the messages PUBACKed in the window: how long a device
    /// waits for "stored".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub puback_latency: Option<Latency>,
    /// Server processes measured (several for a cluster; CPU and memory are their sums).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<usize>,
    /// The server process's CPU and memory, when its pid is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerUsage>,
    /// The backlog scenario's results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<Backlog>,
    /// The idle scenario's results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<Idle>,
}

/// The server's resources over the measured window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerUsage {
    /// User + system CPU time in the window.
    pub cpu_seconds: f64,
    /// `cpu_seconds` per second: how many cores it kept busy.
    pub cores: f64,
    /// CPU time per consumed message (per published one when nothing was consumed), in
    /// microseconds. When the backlog grows this includes storing messages not yet delivered.
    pub cpu_us_per_msg: f64,
    /// Largest resident set seen while the run lasted (sampled every 100 ms), MiB.
    pub peak_rss_mib: f64,
}

/// Backlog drain: consumers start once `messages` have accumulated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backlog {
    /// Messages accumulated (PUBACKed) before any consumer connected.
    pub messages: u64,
    /// How fast they were accepted, messages/s.
    pub fill_per_sec: f64,
    /// From the first consumer's connect until every message was consumed, seconds.
    pub drain_seconds: f64,
    /// `messages / drain_seconds`.
    pub drain_per_sec: f64,
}

/// Idle connections: memory per connected device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Idle {
    /// Devices connected and held.
    pub connections: usize,
    /// Time to connect them all (256 at a time), seconds.
    pub connect_seconds: f64,
    /// Connections per second while connecting.
    #[serde(default)]
    pub connects_per_sec: f64,
    /// Server resident memory before the first connect, MiB.
    pub rss_before_mib: f64,
    /// Server resident memory with every device connected, MiB.
    pub rss_after_mib: f64,
    /// `(after - before) / connections`, KiB.
    pub kib_per_connection: f64,
}

impl Report {
    /// One JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A few aligned lines for people.
    pub fn to_table(&self) -> String {
        let mut t = String::new();
        let load = if self.offered_rate > 0.0 {
            format!("{} msgs/s offered", thousands(self.offered_rate))
        } else {
            "full speed".to_string()
        };
        let what = match (&self.idle, &self.backlog) {
            (Some(i), _) => format!("{} idle connections", thousands(i.connections as f64)),
            (_, Some(b)) => format!(
                "{} devices fill a backlog of {}, then {} consumers drain it",
                self.devices,
                thousands(b.messages as f64),
                self.consumers
            ),
            _ => format!(
                "{} devices, {} consumers, {load}, {:.1} s measured",
                self.devices, self.consumers, self.seconds
            ),
        };
        let _ = writeln!(
            t,
            "iotpipe bench: {} ({}), scenario {}: {what}",
            self.system, self.target, self.scenario
        );
        let mut row = |k: &str, v: String| {
            let _ = writeln!(t, "  {k:<24}{v}");
        };
        if let Some(i) = &self.idle {
            row(
                "idle connections",
                format!("{} in {:.1} s", thousands(i.connections as f64), i.connect_seconds),
            );
            row("server RSS before/after", format!("{:.1} / {:.1} MiB", i.rss_before_mib, i.rss_after_mib));
            row("memory per connection", format!("{:.1} KiB", i.kib_per_connection));
        }
        if let Some(b) = &self.backlog {
            row(
                "backlog",
                format!(
                    "{} messages, filled at {} msgs/s",
                    thousands(b.messages as f64),
                    thousands(b.fill_per_sec)
                ),
            );
            row("drained", format!("in {:.2} s: {} msgs/s", b.drain_seconds, thousands(b.drain_per_sec)));
        }
        if self.idle.is_none() && self.backlog.is_none() {
            row("published (PUBACKed)", format!("{} msgs/s", thousands(self.published_per_sec)));
            row("consumed (accepted)", format!("{} msgs/s", thousands(self.consumed_per_sec)));
        }
        if let Some(l) = &self.latency {
            row(
                "latency p50/p99/p999",
                format!("{:.2} / {:.2} / {:.2} ms ({} samples)", l.p50_ms, l.p99_ms, l.p999_ms, l.samples),
            );
        }
        if let Some(l) = &self.puback_latency {
            row(
                "PUBACK p50/p99/max",
                format!("{:.2} / {:.2} / {:.2} ms ({} samples)", l.p50_ms, l.p99_ms, l.max_ms, l.samples),
            );
        }
        if let Some(n) = self.nodes {
            row("server processes", format!("{n} (CPU and memory summed)"));
        }
        if let Some(s) = &self.server {
            if self.idle.is_none() {
                row(
                    "server CPU per message",
                    format!("{:.2} µs ({:.2} cores busy)", s.cpu_us_per_msg, s.cores),
                );
            }
            row("server peak RSS", format!("{:.1} MiB", s.peak_rss_mib));
        }
        t
    }
}

/// 12345.6 -> "12,346".
pub fn thousands(v: f64) -> String {
    let n = v.round().max(0.0) as u64;
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            system: "iotpipe".into(),
            target: "iotpipe".into(),
            scenario: "rule".into(),
            devices: 20,
            consumers: 2,
            offered_rate: 5000.0,
            seconds: 10.0,
            published: 50_000,
            consumed: 49_990,
            published_per_sec: 5000.0,
            consumed_per_sec: 4999.0,
            latency: Some(Latency { samples: 49_990, p50_ms: 1.25, p99_ms: 2.5, p999_ms: 6.0, max_ms: 9.0 }),
            puback_latency: None,
            nodes: None,
            server: Some(ServerUsage {
                cpu_seconds: 4.5,
                cores: 0.45,
                cpu_us_per_msg: 90.0,
                peak_rss_mib: 80.5,
            }),
            backlog: None,
            idle: None,
        }
    }

    #[test]
    fn json_round_trips_and_leaves_out_empty_parts() {
        let r = sample();
        let line = r.to_json();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["consumed_per_sec"], 4999.0);
        assert_eq!(v["latency"]["p99_ms"], 2.5);
        assert_eq!(v["server"]["peak_rss_mib"], 80.5);
        assert!(v.get("backlog").is_none() && v.get("idle").is_none());
        assert_eq!(serde_json::from_str::<Report>(&line).unwrap(), r);
    }

    #[test]
    fn table_names_the_load_and_the_numbers() {
        let t = sample().to_table();
        assert!(
            t.starts_with("iotpipe bench: iotpipe (iotpipe), scenario rule: 20 devices, 2 consumers, 5,000 msgs/s offered"),
            "{t}"
        );
        assert!(t.contains("consumed (accepted)     4,999 msgs/s"), "{t}");
        assert!(t.contains("1.25 / 2.50 / 6.00 ms"), "{t}");
        assert!(t.contains("90.00 µs (0.45 cores busy)"), "{t}");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }
}
