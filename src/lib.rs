//! iotpipe: a self-hosted data path for IoT platforms.
//!
//! Devices connect over MQTT with signed credentials; every message carries a verified
//! identity and is stored durably before the device gets its PUBACK; rules and server-side
//! subscriptions route it to consumer groups that business servers read over AMQP 1.0.
//!
//! # Layout
//! - [`alerts`]: consumer-group alert rules: evaluation per scan period, HTTP callbacks.
//! - [`amqp`]: AMQP 1.0 server for consumers: signed logins, one receiver link, deliveries.
//! - [`api`]: HTTP API (`/healthz`, `/metrics`, `/api/v1` behind a bearer token).
//! - [`app`]: wires the components, owns shutdown.
//! - [`bench`]: `iotpipe bench`, the load tool (devices, consumers, scenarios, reports).
//! - [`catalog`]: who uses which consumer group; group deletion serialised with rule and
//!   subscription writes.
//! - [`commands`]: cloud to device: publish, broadcast, RRPC, property set, service invoke,
//!   behind the one interface a cluster can route.
//! - [`cluster`]: cluster mode on NATS JetStream: `[cluster]`, the NATS connection, the
//!   consumer-group queues on JetStream.
//! - [`check`]: the problems a component's configuration check returns (a leaf).
//! - [`config`]: the TOML file: the top-level struct naming each component's section, loading,
//!   the schema pass, references between sections, every problem at once with file:line. Each
//!   component owns its section's struct, defaults and check (`<component>::config`).
//! - [`devices`]: device administration (create, delete, enable, disable) and its lifecycle
//!   messages.
//! - [`downlink`]: the embedded rumqttd router: device subscriptions and downlink publishes.
//! - [`forwarding`]: rule actions (`amqp`, `republish`), their retries and the error action.
//! - [`registry`]: products, devices, access keys; run-time changes persisted.
//! - [`ingress`]: MQTT session layer on rumqttd (auth, ACL, status events, hand-off).
//! - [`logsafe`]: outside values on their way into a log (escaped, bounded), rate-limited refusals.
//! - [`listener`]: the listener keys (`listen`, `tls_listen`, `cert`, `key`) and their check, and
//!   the accept loop the MQTT and AMQP servers share: TLS and a bound on connections.
//! - [`message`]: the envelope every stage passes on, and thing-model (Alink) conversion.
//! - [`metrics`]: `/metrics`, the Prometheus text format of every counter the components keep.
//! - [`pipeline`]: the durable hand-off and routing to consumer groups.
//! - [`subscriptions`]: product-wide server-side subscriptions, editable at run time.
//! - [`rules`]: SQL rules compiled to an own IR: parse, compile, evaluate, functions, topic index.
//! - [`histogram`]: a latency histogram of atomics, for the store writer and `/metrics`.
//! - [`groups`]: consumer groups: backlogs, random delivery to clients, settlement, status.
//! - [`queues`]: the queue boundary at consumer-group semantics ([`queues::GroupQueues`]) and
//!   its embedded backend over [`groups`].
//! - [`store`]: the redb database (message ids, registry changes, queues).
//! - [`sign`]: HMAC signing shared by MQTT and AMQP credentials.
//! - [`cli`]: the command line.

pub mod alerts;
pub mod amqp;
pub(crate) mod api;
pub(crate) mod app;
pub mod bench;
pub(crate) mod catalog;
pub(crate) mod check;
pub mod cli;
pub mod cluster;
pub(crate) mod commands;
pub mod config;
pub(crate) mod devices;
pub(crate) mod downlink;
pub(crate) mod forwarding;
pub mod groups;
pub(crate) mod histogram;
pub mod ingress;
pub(crate) mod listener;
pub(crate) mod logsafe;
pub mod message;
pub(crate) mod metrics;
pub(crate) mod pipeline;
pub mod queues;
pub(crate) mod registry;
pub mod rules;
pub mod sign;
pub(crate) mod store;
pub(crate) mod subscriptions;

pub use app::{App, TokenSource};
