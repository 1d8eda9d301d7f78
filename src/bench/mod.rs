//! `iotpipe bench`: a load tool for iotpipe and the brokers users would pick instead.
//!
//! N devices publish QoS 1 256-byte JSON (carrying its send time) as fast as the server
//! acknowledges or at a fixed rate; M consumers accept every message: AMQP 1.0 receivers
//! (fe2o3-amqp) for iotpipe and RabbitMQ, an MQTT subscriber for Mosquitto. It reports
//! messages/s, latency percentiles, and the server's CPU per message and peak RSS read from
//! /proc/PID, as a table or one JSON line.
//!
//! Without a server address it starts iotpipe itself (the given binary serving a generated
//! configuration on loopback, fresh data directory), which is what `cargo bench --bench e2e`
//! and `scripts/bench-peers.sh` use. With `--mqtt`/`--amqp` it drives a running server.
//!
//! - `device.rs`: raw-socket devices (CONNECT, publish loop with a PUBACK window).
//! - `consumer.rs`: AMQP and MQTT consumers, latency from the payload.
//! - `server.rs`: the started iotpipe, the scenario's rules (files or HTTP API).
//! - `scenario.rs`: throughput, backlog drain, idle connections.
//! - `procfs.rs`: CPU and RSS of the server process; the descriptor limit.
//! - `payload.rs`, `stats.rs`, `report.rs`: the pure parts.

pub mod consumer;
mod device;
pub mod payload;
pub mod procfs;
pub mod report;
mod scenario;
pub mod server;
pub mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use report::Report;

use crate::amqp::auth::ConsumerCredentials;
use crate::ingress::auth::Credentials;
use crate::sign::SignMethod;

/// Why a run failed. Each message says what and where.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A device could not connect or was refused.
    #[error("device {device} at {addr}: {cause}")]
    Device {
        /// Its name.
        device: String,
        /// The MQTT address.
        addr: SocketAddr,
        /// What went wrong.
        cause: String,
    },
    /// A device or consumer failed during the run.
    #[error("{0}")]
    Run(String),
    /// Starting or stopping the iotpipe server.
    #[error("server: {0}")]
    Server(String),
    /// The HTTP API refused a rule.
    #[error("HTTP API: {0}")]
    Api(String),
    /// The settings do not fit together.
    #[error("{0}")]
    Settings(String),
}

/// What kind of server is measured: decides how devices and consumers log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Signed device logins (Link SDK scheme) and signed AMQP consumer logins.
    Iotpipe,
    /// Plain username/password for MQTT devices and AMQP 1.0 consumers on a queue.
    Rabbitmq,
    /// Plain (or anonymous) MQTT devices; consumers are MQTT subscribers.
    Mosquitto,
    /// nats-server's MQTT support: anonymous MQTT devices; QoS 1 messages are stored in
    /// JetStream; consumers are QoS 1 MQTT subscribers, each on its share of the devices' topics
    /// (nats-server has no shared subscriptions).
    Nats,
}

impl Target {
    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Iotpipe => "iotpipe",
            Self::Rabbitmq => "rabbitmq",
            Self::Mosquitto => "mosquitto",
            Self::Nats => "nats",
        }
    }
}

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Devices publish, consumers accept; messages reach the group through the server-side
    /// subscription (for peers: their one forwarding path).
    Subscription,
    /// The same through a rule with a filter and a projection (iotpipe only).
    Rule,
    /// Subscription and rule at once: every message reaches the group twice (iotpipe only).
    Both,
    /// The rule path with 999 non-matching rules loaded beside the one (iotpipe only).
    #[value(name = "rules-1000")]
    Rules1000,
    /// Consumers start after `--backlog` messages accumulated; reports the drain rate.
    Backlog,
    /// `--idle-devices` connections that only connect: memory per connection.
    Idle,
}

impl Scenario {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Subscription => "subscription",
            Self::Rule => "rule",
            Self::Both => "both",
            Self::Rules1000 => "rules-1000",
            Self::Backlog => "backlog",
            Self::Idle => "idle",
        }
    }

    /// How messages reach the consumers' group on iotpipe.
    pub fn route(self) -> Route {
        match self {
            Self::Rule => Route::Rule,
            Self::Both => Route::Both,
            Self::Rules1000 => Route::Rules1000,
            Self::Subscription | Self::Backlog | Self::Idle => Route::Subscription,
        }
    }
}

/// How messages reach the consumers' group on iotpipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// An upstream subscription of the product.
    Subscription,
    /// The bench rule.
    Rule,
    /// Both.
    Both,
    /// The bench rule and 999 rules that never match.
    Rules1000,
}

/// Names and keys of the devices and consumers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The devices' product.
    pub product_key: String,
    /// Device name pattern (`{i}`, `{i:05}`: the device number).
    pub device_name: String,
    /// Device secret pattern (iotpipe).
    pub device_secret: String,
    /// Number of the first device.
    pub first_device: usize,
    /// Access key the consumers sign with (iotpipe).
    pub access_key_id: String,
    /// Its secret.
    pub access_key_secret: String,
    /// The consumers' group (iotpipe).
    pub group: String,
    /// Plain login of devices and consumers (peers); none: anonymous MQTT.
    pub username: Option<String>,
    /// Its password.
    pub password: Option<String>,
    /// The AMQP source address consumers attach to (iotpipe ignores it; RabbitMQ 3.x
    /// `/amq/queue/NAME`, RabbitMQ 4 `/queues/NAME`).
    pub source: String,
}

impl Default for Identity {
    fn default() -> Self {
        Self {
            product_key: "a1bench".into(),
            device_name: "dev{i:05}".into(),
            device_secret: "s{i}".into(),
            first_device: 0,
            access_key_id: "LTAIbench".into(),
            access_key_secret: "bench-secret".into(),
            group: "DEFAULT_GROUP".into(),
            username: None,
            password: None,
            source: "default".into(),
        }
    }
}

impl Identity {
    /// Name of device `i`.
    pub fn device_name(&self, i: usize) -> String {
        payload::fill(&self.device_name, i)
    }

    /// Secret of device `i`.
    pub fn device_secret(&self, i: usize) -> String {
        payload::fill(&self.device_secret, i)
    }

    /// The topic filter covering every device's topic.
    pub fn topic_filter(&self) -> String {
        format!("/{}/+/user/update", self.product_key)
    }

    /// How device `i` logs in to `target`.
    pub fn device(&self, target: Target, i: usize) -> device::DeviceSpec {
        let name = self.device_name(i);
        let topic = format!("/{}/{name}/user/update", self.product_key);
        match target {
            Target::Iotpipe => {
                let c = Credentials {
                    client_id: name.clone(),
                    product_key: self.product_key.clone(),
                    device_name: name.clone(),
                    method: SignMethod::HmacSha256,
                    timestamp: None,
                };
                device::DeviceSpec {
                    client_id: c.mqtt_client_id(),
                    username: Some(c.username()),
                    password: Some(c.password(&self.device_secret(i))),
                    name,
                    topic,
                }
            }
            Target::Rabbitmq | Target::Mosquitto | Target::Nats => device::DeviceSpec {
                client_id: name.clone(),
                username: self.username.clone(),
                password: self.password.clone(),
                name,
                topic,
            },
        }
    }

    /// The topics of the `devices` publishing devices that consumer `i` of `consumers` takes
    /// when the broker cannot share one subscription: every `consumers`-th device's.
    pub fn topics_of_consumer(&self, i: usize, consumers: usize, devices: usize) -> Vec<String> {
        (self.first_device..self.first_device + devices)
            .filter(|d| d % consumers.max(1) == i)
            .map(|d| format!("/{}/{}/user/update", self.product_key, self.device_name(d)))
            .collect()
    }

    /// How consumer `i` of `consumers` connects to `target`, with `devices` devices publishing.
    pub fn consumer(
        &self,
        target: Target,
        i: usize,
        (consumers, devices): (usize, usize),
        endpoints: &Endpoints,
        credit: u32,
    ) -> Result<consumer::ConsumerSpec, BenchError> {
        let client_id = format!("bench-consumer-{i}");
        let amqp = || {
            endpoints
                .amqp_of(i)
                .ok_or_else(|| BenchError::Settings(format!("{} consumers need --amqp", target.name())))
        };
        Ok(match target {
            Target::Iotpipe => {
                let c = ConsumerCredentials {
                    client_id,
                    access_key_id: self.access_key_id.clone(),
                    group_id: self.group.clone(),
                    method: SignMethod::HmacSha1,
                    timestamp: crate::message::now_ms().to_string(),
                    instance_id: None,
                };
                consumer::ConsumerSpec::Amqp {
                    addr: amqp()?,
                    username: c.username(),
                    password: c.password(&self.access_key_secret),
                    source: self.source.clone(),
                    credit,
                }
            }
            Target::Rabbitmq => consumer::ConsumerSpec::Amqp {
                addr: amqp()?,
                username: self.username.clone().unwrap_or_default(),
                password: self.password.clone().unwrap_or_default(),
                source: self.source.clone(),
                credit,
            },
            Target::Mosquitto => {
                // Several subscribers share the messages the way a consumer group does.
                let filter = if consumers > 1 {
                    format!("$share/bench/{}", self.topic_filter())
                } else {
                    self.topic_filter()
                };
                consumer::ConsumerSpec::Mqtt {
                    addr: endpoints.mqtt_of(i),
                    client_id,
                    login: self.username.clone().map(|u| (u, self.password.clone().unwrap_or_default())),
                    filters: vec![filter],
                }
            }
            Target::Nats => consumer::ConsumerSpec::Mqtt {
                addr: endpoints.mqtt_of(i),
                client_id,
                login: self.username.clone().map(|u| (u, self.password.clone().unwrap_or_default())),
                filters: self.topics_of_consumer(i, consumers, devices),
            },
        })
    }
}

/// Where a running server listens: one address each, or a cluster's nodes. Device and consumer
/// `i` use the `i mod N`-th address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// MQTT (devices; Mosquitto's subscribers too); at least one.
    pub mqtt: Vec<SocketAddr>,
    /// AMQP 1.0 (consumers); empty for MQTT-only servers.
    pub amqp: Vec<SocketAddr>,
}

impl Endpoints {
    /// One server's addresses.
    pub fn one(mqtt: SocketAddr, amqp: Option<SocketAddr>) -> Self {
        Self { mqtt: vec![mqtt], amqp: amqp.into_iter().collect() }
    }

    /// The MQTT address of device (or MQTT subscriber) `i`.
    pub fn mqtt_of(&self, i: usize) -> SocketAddr {
        self.mqtt[i % self.mqtt.len()]
    }

    /// The AMQP address of consumer `i`.
    pub fn amqp_of(&self, i: usize) -> Option<SocketAddr> {
        (!self.amqp.is_empty()).then(|| self.amqp[i % self.amqp.len()])
    }
}

/// A cluster the load tool starts: `nodes` iotpipe processes, each with a `[cluster]` section
/// naming the given NATS servers (which someone else runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRun {
    /// NATS server URLs.
    pub nats: Vec<String>,
    /// iotpipe nodes to start.
    pub nodes: usize,
    /// JetStream replicas of the streams.
    pub replicas: usize,
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What kind of server.
    pub target: Target,
    /// `[storage]` options of a started iotpipe.
    pub storage: server::StorageOptions,
    /// Label in the report; default: the target's name.
    pub label: Option<String>,
    /// What to run.
    pub scenario: Scenario,
    /// A running server; none: start iotpipe.
    pub endpoints: Option<Endpoints>,
    /// The running server's processes (a cluster's nodes), for CPU and memory.
    pub server_pids: Vec<u32>,
    /// Start a cluster of iotpipe nodes on these NATS servers instead of one embedded node.
    pub cluster: Option<ClusterRun>,
    /// The running iotpipe's HTTP API, to install the scenario's rules.
    pub api: Option<server::Api>,
    /// The iotpipe binary to start when no server is given.
    pub binary: Option<PathBuf>,
    /// Where a started server keeps its data (a fresh directory inside); default: the temp dir.
    pub data_parent: Option<PathBuf>,
    /// Publishing devices.
    pub devices: usize,
    /// Consumers (0: nobody consumes; the backlog grows).
    pub consumers: usize,
    /// Messages/s offered by all devices together; 0 = as fast as acknowledged.
    pub rate: f64,
    /// Measured seconds.
    pub seconds: f64,
    /// Seconds of load before the measurement starts.
    pub warmup: f64,
    /// PUBACKs each device may wait for at once.
    pub window: u16,
    /// AMQP link credit per consumer.
    pub credit: u32,
    /// Messages accumulated before consumers start (backlog scenario).
    pub backlog: u64,
    /// Connections of the idle scenario.
    pub idle_devices: usize,
    /// Names and keys.
    pub identity: Identity,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            storage: server::StorageOptions::default(),
            target: Target::Iotpipe,
            label: None,
            scenario: Scenario::Subscription,
            endpoints: None,
            server_pids: Vec::new(),
            cluster: None,
            api: None,
            binary: None,
            data_parent: None,
            devices: 20,
            consumers: 2,
            rate: 0.0,
            seconds: 10.0,
            warmup: 2.0,
            window: 64,
            credit: 500,
            backlog: 100_000,
            idle_devices: 10_000,
            identity: Identity::default(),
        }
    }
}

impl Settings {
    /// Checks that the settings fit together.
    ///
    /// # Errors
    /// Every mismatch, one per line.
    pub fn validate(&self) -> Result<(), BenchError> {
        let mut problems = Vec::new();
        let iotpipe_only = matches!(self.scenario, Scenario::Rule | Scenario::Both | Scenario::Rules1000);
        if iotpipe_only && self.target != Target::Iotpipe {
            problems.push(format!(
                "scenario {} needs iotpipe's rules: only --target iotpipe",
                self.scenario.name()
            ));
        }
        if self.endpoints.is_none() && self.target != Target::Iotpipe {
            problems.push(format!(
                "--target {} needs the server's address: --mqtt (and --amqp)",
                self.target.name()
            ));
        }
        if self.scenario == Scenario::Backlog && matches!(self.target, Target::Mosquitto | Target::Nats) {
            problems.push(format!(
                "scenario backlog needs a broker that keeps messages for absent consumers (AMQP queues), not {}",
                self.target.name()
            ));
        }
        if self.devices == 0 && self.scenario != Scenario::Idle {
            problems.push("--devices must be at least 1".into());
        }
        if self.scenario == Scenario::Backlog && (self.consumers == 0 || self.backlog == 0) {
            problems.push("scenario backlog needs --consumers and --backlog of at least 1".into());
        }
        if self.window == 0 {
            problems.push("--window must be at least 1".into());
        }
        if !(self.seconds > 0.0 && self.warmup >= 0.0 && self.rate >= 0.0) {
            problems.push("--seconds must be positive, --warmup and --rate not negative".into());
        }
        if let Some(c) = &self.cluster {
            if self.endpoints.is_some() {
                problems.push("--cluster-nats starts nodes; it does not go with --mqtt".into());
            }
            if c.nats.is_empty() || c.nodes == 0 || !(1..=5).contains(&c.replicas) {
                problems
                    .push("--cluster-nats needs a NATS URL, --nodes at least 1 and --replicas 1 to 5".into());
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(BenchError::Settings(problems.join("\n")))
        }
    }

    /// Server processes measured: the started cluster's nodes, the given pids, or one.
    pub fn nodes(&self) -> usize {
        match &self.cluster {
            Some(c) => c.nodes,
            None => self.server_pids.len().max(1),
        }
    }

    fn label(&self) -> String {
        self.label.clone().unwrap_or_else(|| self.target.name().to_string())
    }
}

/// Runs one scenario and returns its report. Starts (and stops) iotpipe when no server is given.
///
/// # Errors
/// Bad settings, a server that does not start, devices or consumers that fail.
pub fn run(settings: &Settings) -> Result<Report, BenchError> {
    settings.validate()?;
    // Every device and consumer is a socket; a started server inherits the raised limit.
    let sockets = settings.devices.max(settings.idle_devices) + settings.consumers + 1024;
    let limit = procfs::raise_fd_limit(sockets as u64);
    if settings.scenario == Scenario::Idle && limit < (settings.idle_devices + 64) as u64 {
        return Err(BenchError::Settings(format!(
            "{} idle connections need that many open files; the limit is {limit} (raise the hard limit: ulimit -Hn)",
            settings.idle_devices
        )));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench")
        .build()
        .map_err(|e| BenchError::Settings(format!("cannot start the async runtime: {e}")))?;
    let started = match settings.endpoints {
        Some(_) => Vec::new(),
        None => {
            let binary = match &settings.binary {
                Some(b) => b.clone(),
                None => std::env::current_exe()
                    .map_err(|e| BenchError::Server(format!("cannot find the iotpipe binary: {e}")))?,
            };
            let parent = settings.data_parent.clone().unwrap_or_else(std::env::temp_dir);
            let devices = match settings.scenario {
                Scenario::Idle => settings.idle_devices,
                _ => settings.devices,
            };
            let mut nodes = Vec::new();
            // A fresh deployment name per run: its streams are new, whatever earlier runs left.
            let name = format!("bench{}x{}", std::process::id(), payload::now_us() % 1_000_000);
            for node in 0..settings.cluster.as_ref().map_or(1, |c| c.nodes) {
                let cluster = settings.cluster.as_ref().map(|c| server::ClusterSection {
                    nats: c.nats.clone(),
                    name: name.clone(),
                    replicas: c.replicas,
                    node: format!("b{}", node + 1),
                });
                nodes.push(server::ServerProcess::start(
                    &binary,
                    &parent,
                    devices,
                    settings.scenario.route(),
                    &settings.identity,
                    cluster.as_ref(),
                    &settings.storage,
                )?);
            }
            nodes
        }
    };
    let endpoints = match &settings.endpoints {
        Some(e) => e.clone(),
        None => Endpoints {
            mqtt: started.iter().map(|s| s.mqtt).collect(),
            amqp: started.iter().map(|s| s.amqp).collect(),
        },
    };
    let pids: Vec<u32> = if started.is_empty() {
        settings.server_pids.clone()
    } else {
        started.iter().map(server::ServerProcess::pid).collect()
    };
    let proc_ = (!pids.is_empty()).then_some(procfs::ServerProc { pids });
    let result = runtime.block_on(async {
        let installed = match (&settings.api, started.is_empty() && settings.target == Target::Iotpipe) {
            (Some(api), true) => api.install(settings.scenario.route(), &settings.identity).await?,
            _ => Vec::new(),
        };
        let result = scenario::run(settings, &endpoints, proc_.as_ref()).await;
        if let Some(api) = &settings.api {
            api.remove(&installed).await;
        }
        result
    });
    let report = result.map(|m| m.into_report(settings, settings.label()));
    for s in started {
        s.stop()?;
    }
    report
}

/// What `cargo bench --bench e2e|ingress` do with their settings: run, print the table and the
/// JSON line, or the error and exit 1.
pub fn run_benchmark(settings: &Settings) {
    match run(settings) {
        Ok(report) => {
            print!("{}", report.to_table());
            println!("{}", report.to_json());
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
