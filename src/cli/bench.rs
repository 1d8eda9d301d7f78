//! `iotpipe bench`: the load tool's command line (the tool itself is [`crate::bench`]).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::bench::{self, server::Api, ClusterRun, Endpoints, Identity, Scenario, Settings, Target};

/// Options of `iotpipe bench`. Without --mqtt it starts this iotpipe binary on a generated
/// configuration (loopback, fresh data directory) and stops it afterwards.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to run.
    #[arg(long, value_enum, default_value = "subscription")]
    scenario: Scenario,
    /// The kind of server: how devices and consumers log in, and what consumes.
    #[arg(long, value_enum, default_value = "iotpipe")]
    target: Target,
    /// Name of the system in the report (default: the target).
    #[arg(long)]
    label: Option<String>,
    /// MQTT address (host:port) of a running server; without it iotpipe is started. A cluster's
    /// nodes: several, comma-separated (device i connects to the i mod N-th).
    #[arg(long, value_delimiter = ',')]
    mqtt: Vec<String>,
    /// AMQP 1.0 address (host:port) of the running server's consumers (not for Mosquitto);
    /// several, comma-separated, for a cluster (consumer i attaches to the i mod N-th).
    #[arg(long, value_delimiter = ',')]
    amqp: Vec<String>,
    /// Process id of the running server, for its CPU time and memory; several,
    /// comma-separated, for a cluster's nodes (summed).
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Start a cluster instead of one embedded node: these NATS servers (URLs, comma-separated,
    /// running with JetStream) carry the queues of --nodes iotpipe nodes.
    #[arg(long, value_delimiter = ',')]
    cluster_nats: Vec<String>,
    /// iotpipe nodes started with --cluster-nats.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// JetStream replicas of the started cluster's streams.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// HTTP API of a running iotpipe: the rule scenarios create their rules there (and delete
    /// them at the end). Without it the server must already forward to --group.
    #[arg(long)]
    http: Option<String>,
    /// Bearer token of --http.
    #[arg(long, env = "IOTPIPE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The iotpipe binary to start (default: this one).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// `[storage] early_delivery = true` for the iotpipe it starts.
    #[arg(long)]
    early_delivery: bool,
    /// `[storage] commit_interval_ms` of the iotpipe it starts (default: iotpipe's default).
    #[arg(long)]
    commit_interval_ms: Option<u64>,
    /// Directory in which a started iotpipe gets its fresh data directory (default: the temp dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Publishing devices [default: 20]; in scenario idle the connections [default: 10,000].
    #[arg(long)]
    devices: Option<usize>,
    /// Consumers, each accepting every message it gets.
    #[arg(long, default_value_t = 2)]
    consumers: usize,
    /// Messages per second offered by all devices together; 0: as fast as the server acknowledges.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds of load before the measurement.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// QoS 1 publishes a device may have unacknowledged.
    #[arg(long, default_value_t = 64)]
    window: u16,
    /// AMQP link credit per consumer.
    #[arg(long, default_value_t = 500)]
    credit: u32,
    /// Messages accumulated before the consumers start (scenario backlog).
    #[arg(long, default_value_t = 100_000)]
    backlog: u64,
    /// Connections of scenario idle (the same as --devices there; kept for older scripts).
    #[arg(long, default_value_t = 10_000, hide = true)]
    idle_devices: usize,
    /// Product of the devices (topics /PK/NAME/user/update).
    #[arg(long, default_value = "a1bench")]
    product_key: String,
    /// Device name pattern: {i} is the device number, {i:05} the same padded to 5 digits.
    #[arg(long, default_value = "dev{i:05}")]
    device_name: String,
    /// Device secret pattern (iotpipe).
    #[arg(long, default_value = "s{i}")]
    device_secret: String,
    /// Number of the first device.
    #[arg(long, default_value_t = 0)]
    first_device: usize,
    /// Access key the consumers sign with (iotpipe).
    #[arg(long, default_value = "LTAIbench")]
    access_key_id: String,
    /// Secret of the access key.
    #[arg(long, default_value = "bench-secret")]
    access_key_secret: String,
    /// Consumer group (iotpipe).
    #[arg(long, default_value = "DEFAULT_GROUP")]
    group: String,
    /// Plain username of devices and consumers (rabbitmq: default guest; mosquitto: none).
    #[arg(long)]
    username: Option<String>,
    /// Plain password (rabbitmq: default guest).
    #[arg(long)]
    password: Option<String>,
    /// AMQP source address the consumers attach to (rabbitmq: default /amq/queue/bench, the
    /// 3.x form; RabbitMQ 4 wants /queues/bench).
    #[arg(long)]
    source: Option<String>,
    /// Print the report as one JSON line instead of a table.
    #[arg(long)]
    json: bool,
}

fn address(flag: &str, value: &str) -> anyhow::Result<SocketAddr> {
    value
        .to_socket_addrs()
        .with_context(|| format!("--{flag} {value:?}: not host:port"))?
        .next()
        .with_context(|| format!("--{flag} {value:?}: no address"))
}

impl BenchArgs {
    /// The load tool's settings.
    fn settings(&self) -> anyhow::Result<Settings> {
        let endpoints = if !self.mqtt.is_empty() {
            Some(Endpoints {
                mqtt: self.mqtt.iter().map(|m| address("mqtt", m)).collect::<anyhow::Result<_>>()?,
                amqp: self.amqp.iter().map(|a| address("amqp", a)).collect::<anyhow::Result<_>>()?,
            })
        } else if !self.amqp.is_empty() {
            anyhow::bail!("--amqp needs --mqtt: give both addresses of the server")
        } else {
            None
        };
        let cluster = (!self.cluster_nats.is_empty()).then(|| ClusterRun {
            nats: self.cluster_nats.clone(),
            nodes: self.nodes,
            replicas: self.replicas,
        });
        let api = match &self.http {
            Some(url) => {
                let url = if url.contains("://") { url.clone() } else { format!("http://{url}") };
                let token = self.token.clone().context("--http needs --token (or IOTPIPE_TOKEN)")?;
                Some(Api { url: url.trim_end_matches('/').to_string(), token })
            }
            None => None,
        };
        let rabbit = self.target == Target::Rabbitmq;
        let default_login = |v: &Option<String>| v.clone().or_else(|| rabbit.then(|| "guest".to_string()));
        let source = self
            .source
            .clone()
            .unwrap_or_else(|| if rabbit { "/amq/queue/bench" } else { "default" }.to_string());
        Ok(Settings {
            target: self.target,
            storage: crate::bench::server::StorageOptions {
                early_delivery: self.early_delivery,
                commit_interval_ms: self.commit_interval_ms,
            },
            label: self.label.clone(),
            scenario: self.scenario,
            endpoints,
            server_pids: self.server_pid.clone(),
            cluster,
            api,
            binary: self.binary.clone(),
            data_parent: self.data_dir.clone(),
            devices: self.devices.unwrap_or(20),
            consumers: self.consumers,
            rate: self.rate,
            seconds: self.seconds,
            warmup: self.warmup,
            window: self.window,
            credit: self.credit,
            backlog: self.backlog,
            idle_devices: match (self.scenario, self.devices) {
                (Scenario::Idle, Some(n)) => n,
                _ => self.idle_devices,
            },
            identity: Identity {
                product_key: self.product_key.clone(),
                device_name: self.device_name.clone(),
                device_secret: self.device_secret.clone(),
                first_device: self.first_device,
                access_key_id: self.access_key_id.clone(),
                access_key_secret: self.access_key_secret.clone(),
                group: self.group.clone(),
                username: default_login(&self.username),
                password: default_login(&self.password),
                source,
            },
        })
    }
}

/// Runs `iotpipe bench`.
pub(super) fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let report = bench::run(&settings)?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn settings(args: &[&str]) -> anyhow::Result<Settings> {
        let cli = Cli::try_parse_from(["iotpipe", "bench"].iter().chain(args))?;
        match cli.command {
            Command::Bench(b) => b.settings(),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn defaults_start_iotpipe_with_the_subscription_path() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.target, Target::Iotpipe);
        assert_eq!(s.scenario, Scenario::Subscription);
        assert!(s.endpoints.is_none() && s.api.is_none());
        assert_eq!((s.devices, s.consumers, s.rate, s.seconds, s.window), (20, 2, 0.0, 10.0, 64));
        assert_eq!(s.identity, Identity::default());
        s.validate().unwrap();
    }

    #[test]
    fn a_running_rabbitmq_gets_guest_and_a_queue_source() {
        let s = settings(&[
            "--target",
            "rabbitmq",
            "--scenario",
            "backlog",
            "--mqtt",
            "127.0.0.1:1884",
            "--amqp",
            "127.0.0.1:5673",
            "--server-pid",
            "42",
            "--rate",
            "5000",
            "--label",
            "RabbitMQ 3.10",
        ])
        .unwrap();
        let e = s.endpoints.clone().unwrap();
        assert_eq!(e.mqtt_of(0).to_string(), "127.0.0.1:1884");
        assert_eq!(e.amqp_of(0).unwrap().to_string(), "127.0.0.1:5673");
        assert_eq!(s.server_pids, [42]);
        assert_eq!(s.rate, 5000.0);
        assert_eq!(s.identity.username.as_deref(), Some("guest"));
        assert_eq!(s.identity.source, "/amq/queue/bench");
        let d = s.identity.device(Target::Rabbitmq, 7);
        assert_eq!((d.client_id.as_str(), d.topic.as_str()), ("dev00007", "/a1bench/dev00007/user/update"));
        s.validate().unwrap();
    }

    #[test]
    fn a_cluster_spreads_devices_and_consumers_over_its_nodes() {
        let s = settings(&[
            "--mqtt",
            "127.0.0.1:1883,127.0.0.1:1884,127.0.0.1:1885",
            "--amqp",
            "127.0.0.1:5672,127.0.0.1:5673",
            "--server-pid",
            "7,8,9",
        ])
        .unwrap();
        s.validate().unwrap();
        let e = s.endpoints.clone().unwrap();
        let ports: Vec<u16> = (0..4).map(|i| e.mqtt_of(i).port()).collect();
        assert_eq!(ports, [1883, 1884, 1885, 1883]);
        assert_eq!(e.amqp_of(3).map(|a| a.port()), Some(5673));
        assert_eq!((s.server_pids.len(), s.nodes()), (3, 3));

        let s = settings(&[
            "--cluster-nats",
            "nats://127.0.0.1:4222,nats://127.0.0.1:4223",
            "--nodes",
            "3",
            "--replicas",
            "3",
        ])
        .unwrap();
        s.validate().unwrap();
        let c = s.cluster.clone().unwrap();
        assert_eq!((c.nats.len(), c.nodes, c.replicas), (2, 3, 3));
        let both =
            settings(&["--cluster-nats", "nats://127.0.0.1:4222", "--mqtt", "127.0.0.1:1883"]).unwrap();
        assert!(both.validate().is_err(), "a started cluster has its own addresses");
        let none = settings(&["--cluster-nats", "nats://127.0.0.1:4222", "--nodes", "0"]).unwrap();
        assert!(none.validate().is_err());
    }

    #[test]
    fn the_idle_scenario_takes_its_connections_from_devices() {
        let s = settings(&["--scenario", "idle", "--devices", "18000"]).unwrap();
        assert_eq!(s.idle_devices, 18_000);
        let s = settings(&["--scenario", "idle"]).unwrap();
        assert_eq!(s.idle_devices, 10_000);
        let s = settings(&["--scenario", "idle", "--idle-devices", "500"]).unwrap();
        assert_eq!(s.idle_devices, 500, "the older flag still works");
        let s = settings(&["--scenario", "rule", "--devices", "7"]).unwrap();
        assert_eq!((s.devices, s.idle_devices), (7, 10_000));
    }

    #[test]
    fn nats_consumers_share_the_device_topics_out() {
        let s = settings(&["--target", "nats", "--mqtt", "127.0.0.1:1886", "--devices", "5"]).unwrap();
        s.validate().unwrap();
        let e = s.endpoints.unwrap();
        let topics = |i| match s.identity.consumer(Target::Nats, i, (2, 5), &e, 500).unwrap() {
            bench::consumer::ConsumerSpec::Mqtt { filters, .. } => filters,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            topics(0),
            [
                "/a1bench/dev00000/user/update",
                "/a1bench/dev00002/user/update",
                "/a1bench/dev00004/user/update"
            ]
        );
        assert_eq!(topics(1), ["/a1bench/dev00001/user/update", "/a1bench/dev00003/user/update"]);
        let backlog =
            settings(&["--target", "nats", "--scenario", "backlog", "--mqtt", "127.0.0.1:1886"]).unwrap();
        assert!(backlog.validate().is_err(), "nats keeps no queue for absent MQTT consumers");
    }

    #[test]
    fn iotpipe_devices_sign_their_logins() {
        let s =
            settings(&["--mqtt", "127.0.0.1:1883", "--amqp", "127.0.0.1:5672", "--product-key", "a1test"])
                .unwrap();
        let d = s.identity.device(Target::Iotpipe, 3);
        assert_eq!(d.username.as_deref(), Some("dev00003&a1test"));
        assert_eq!(d.client_id, "dev00003|securemode=3,signmethod=hmacsha256|");
        let creds = crate::ingress::auth::parse(&d.client_id, d.username.as_deref()).unwrap();
        assert!(creds.verify("s3", d.password.unwrap().as_bytes()));
    }

    #[test]
    fn mismatches_are_refused() {
        assert!(settings(&["--scenario", "nope"]).is_err());
        assert!(settings(&["--amqp", "127.0.0.1:5672"]).is_err(), "--amqp alone");
        assert!(
            settings(&["--http", "127.0.0.1:8080", "--mqtt", "127.0.0.1:1"]).is_err()
                || std::env::var("IOTPIPE_TOKEN").is_ok()
        );
        let rule_on_mosquitto =
            settings(&["--target", "mosquitto", "--scenario", "rule", "--mqtt", "127.0.0.1:1883"]).unwrap();
        let e = rule_on_mosquitto.validate().unwrap_err().to_string();
        assert!(e.contains("scenario rule needs iotpipe's rules"), "{e}");
        let peer_without_address = settings(&["--target", "rabbitmq"]).unwrap();
        assert!(peer_without_address.validate().unwrap_err().to_string().contains("--mqtt"));
        let backlog =
            settings(&["--target", "mosquitto", "--scenario", "backlog", "--mqtt", "127.0.0.1:1883"])
                .unwrap();
        assert!(backlog.validate().is_err());
    }
}
