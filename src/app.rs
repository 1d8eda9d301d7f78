//! Wires the components together, owns shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::alerts::notifier::RetryPolicy;
use crate::alerts::Alerts;
use crate::amqp::{AmqpError, AmqpServer};
pub use crate::api::token::TokenSource;
use crate::api::token::{self, TokenError};
use crate::api::{ApiServer, ApiStartError, ApiState};
use crate::catalog::Catalog;
use crate::cluster::clients::ClusterClients;
use crate::cluster::config::ClusterConfig;
use crate::cluster::nodes::{ClusterNodes, NodeInfo};
use crate::cluster::sessions::commands::ClusterCommands;
use crate::cluster::state::{ClusterState, Owners};
use crate::cluster::stats::NatsStats;
use crate::cluster::{ClusterError, ClusterSessions, JetStreamQueues};
use crate::commands::{DeviceCommands, LocalCommands};
use crate::config::Config;
use crate::devices::{DeviceAdmin, DeviceAdminError};
use crate::downlink::Downlink;
use crate::groups::{GroupOptions, Groups};
use crate::ingress::{Ingress, IngressError, OfflineReason};
use crate::metrics::{Metrics, Sources};
use crate::pipeline::{Pipeline, Stats};
use crate::queues::embedded::EmbeddedQueues;
use crate::queues::GroupQueues;
use crate::registry::shared::SharedDevices;
use crate::registry::{Registry, RegistryError};
use crate::rules::watch::{watch_live, LiveRules, Reloader, SharedRules, Watch};
use crate::store::{Db, RedbQueue, StoreError};
use crate::subscriptions::Subscriptions;

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Storage could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The registry could not be loaded.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The MQTT ingress did not start.
    #[error(transparent)]
    Ingress(#[from] IngressError),
    /// The AMQP server did not start.
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    /// The HTTP server did not start.
    #[error(transparent)]
    Http(#[from] ApiStartError),
    /// The generated admin token could not be read or stored.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Cluster mode could not start (NATS, JetStream).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

impl AppError {
    /// The configuration key (`mqtt.listen`, `amqp.tls_listen`, `http.listen`, ...) whose address
    /// could not be bound, when that is what failed.
    pub fn listen_key(&self, config: &Config) -> Option<&'static str> {
        let (failed, section, plain, tls) = match self {
            AppError::Ingress(IngressError::Listener(e)) => {
                (e, "mqtt", config.mqtt.listen, config.mqtt.tls_listen)
            }
            AppError::Amqp(AmqpError::Listener(e)) => (e, "amqp", config.amqp.listen, config.amqp.tls_listen),
            AppError::Http(ApiStartError(e)) => (e, "http", config.http.listen, None),
            _ => return None,
        };
        let addr = failed.addr()?;
        let tls_key = tls.filter(|t| *t == addr && *t != plain).map(|_| "tls_listen");
        Some(match (section, tls_key) {
            ("mqtt", None) => "mqtt.listen",
            ("mqtt", Some(_)) => "mqtt.tls_listen",
            ("amqp", None) => "amqp.listen",
            ("amqp", Some(_)) => "amqp.tls_listen",
            _ => "http.listen",
        })
    }
}

/// A running iotpipe.
pub struct App {
    shutdown: CancellationToken,
    ingress: Ingress,
    amqp: AmqpServer,
    http: ApiServer,
    devices: DeviceAdmin,
    groups: Arc<Groups>,
    registry: Arc<Registry>,
    rules: Arc<SharedRules>,
    _rules_watch: Option<Watch>,
    pipeline: Pipeline,
    pipeline_task: JoinHandle<()>,
    alerts: Arc<Alerts>,
    admin_token: (String, TokenSource),
    /// Cluster mode: the consumer groups' queues on JetStream.
    cluster: Option<Arc<dyn GroupQueues>>,
    /// Cluster mode: the state shared through KV buckets (its tasks stop when it is dropped).
    cluster_state: Option<ClusterState>,
    /// Cluster mode: the sessions of every node.
    cluster_sessions: Option<Arc<ClusterSessions>>,
}

/// Cluster mode: connects to NATS, sets up the JetStream queues of every group and sends the
/// groups' appends there. So far one node: groups, devices and rules still come from this
/// node's configuration and store (docs/cluster.md).
async fn start_cluster(
    cluster: &ClusterConfig,
    config: &Config,
    groups: &Arc<Groups>,
) -> Result<(Arc<dyn GroupQueues>, Arc<ClusterNodes>, Arc<NatsStats>), AppError> {
    let node = cluster.node.clone().unwrap_or_else(|| default_node(config.mqtt.listen.port()));
    // A warning in the log, not a refusal: the servers' setting is the operator's choice.
    let monitor = cluster.monitor.clone();
    tokio::spawn(async move { crate::cluster::sync_check::warn_unless_always(&monitor).await });
    let stats = Arc::new(NatsStats::default());
    let client = crate::cluster::connect_counted(cluster, &node, stats.clone()).await?;
    let jetstream = JetStreamQueues::open(client.clone(), cluster, config.amqp.group_settings()).await?;
    let clients =
        ClusterClients::open(client.clone(), cluster, &node, config.amqp.max_clients_per_group).await?;
    let nodes = ClusterNodes::open(client, cluster, &node).await?;
    jetstream.share_clients(clients);
    jetstream.share_stats(stats.clone());
    let queues: Arc<dyn GroupQueues> = jetstream;
    for group in groups.list() {
        let options = GroupOptions { max_delivery_attempts: group.max_delivery_attempts() };
        queues.ensure_group(&group.id, options).await.map_err(|e| ClusterError::JetStream(e.to_string()))?;
    }
    let to = queues.clone();
    groups.append_elsewhere(Arc::new(move |batch| {
        let to = to.clone();
        Box::pin(async move { to.append(batch).await.map_err(|e| StoreError::NotReplicated(e.to_string())) })
    }));
    tracing::info!(
        node = %node,
        servers = %cluster.nats.join(", "),
        name = %cluster.name,
        replicas = cluster.replicas,
        "Cluster mode: consumer-group queues on NATS JetStream"
    );
    Ok((queues, nodes, stats))
}

/// `/cluster/status` in cluster mode: the live nodes from their heartbeats.
fn cluster_status(nodes: Arc<ClusterNodes>) -> crate::api::cluster::ClusterStatus {
    Arc::new(move || {
        let nodes = nodes.clone();
        Box::pin(async move {
            let live = nodes.live().await?;
            Ok(serde_json::json!({"cluster": nodes.cluster(), "node": nodes.node(), "nodes": live}))
        })
    })
}

/// Cluster mode: the sessions of every node (a device connecting here takes over its session
/// on another node), on a NATS connection of their own.
async fn start_sessions(cluster: &ClusterConfig, config: &Config) -> Result<Arc<ClusterSessions>, AppError> {
    let node = cluster.node.clone().unwrap_or_else(|| default_node(config.mqtt.listen.port()));
    let client = crate::cluster::connect(cluster, &format!("{node}/sessions")).await?;
    Ok(ClusterSessions::open(client, cluster, &node).await?)
}

/// A node's default name: the host name and the MQTT port, in the characters names allow.
fn default_node(mqtt_port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_string());
    let host: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    format!("{host}-{mqtt_port}")
}

/// Loads the rules directory (reporting every broken file) and watches it when it exists. The
/// reloader is shared by the watch and the API, which applies its writes through it at once.
fn load_rules(dir: &std::path::Path) -> (Arc<SharedRules>, Arc<LiveRules>, Option<Watch>) {
    // A missing directory is created, so that rule files added later are picked up live.
    if !dir.exists() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "Cannot create the rules directory");
        }
    }
    let (reloader, set, diagnostics) = Reloader::load(dir);
    for d in &diagnostics {
        tracing::error!(problem = %d, "Rule file not loaded");
    }
    tracing::info!(dir = %dir.display(), rules = set.len(), "Rules loaded");
    let shared = Arc::new(SharedRules::new(set));
    let live = Arc::new(LiveRules::new(reloader, shared.clone()));
    if !dir.is_dir() {
        return (shared, live, None);
    }
    match watch_live(live.clone()) {
        Ok(w) => (shared, live, Some(w)),
        Err(e) => {
            tracing::error!(error = %e, "Rules directory not watched: changes need a restart");
            (shared, live, None)
        }
    }
}

impl App {
    /// Opens the storage, loads the registry and starts every listener.
    ///
    /// # Errors
    /// When storage, the registry or a listener fails.
    pub async fn start(config: &Config) -> Result<Self, AppError> {
        let db = Db::open(&config.storage.dir)?;
        let (token, token_source) = token::resolve(config.http.admin_token.as_deref(), &config.storage.dir)?;
        let registry = Arc::new(Registry::load(&config.products, &config.access_keys, db.clone())?);
        let queue = RedbQueue::open_with(db.clone(), config.storage.commit_interval())?;
        let store_stats = queue.stats().clone();
        let ids = queue.ids().clone();
        let groups = Groups::start(&config.consumer_groups, queue, config.amqp.group_settings(), db.clone())?;
        groups.set_early_delivery(config.storage.early_delivery);
        let cluster = match &config.cluster {
            Some(cluster) => Some(start_cluster(cluster, config, &groups).await?),
            None => None,
        };
        // Cluster mode: message ids come from the cluster's state (above this node's own).
        let (cluster_state, ids) = match &config.cluster {
            Some(c) => {
                let node = c.node.clone().unwrap_or_else(|| default_node(config.mqtt.listen.port()));
                let state = ClusterState::open(c, &node).await?;
                let ids = state.message_ids(ids.try_next().unwrap_or(1)).await?;
                (Some(state), ids)
            }
            None => (None, ids),
        };
        let started_at = crate::message::now_ms();
        let (cluster, nodes, nats) = match cluster {
            Some((queues, nodes, nats)) => (Some(queues), Some(nodes), Some(nats)),
            None => (None, None, None),
        };
        let queues: Arc<dyn GroupQueues> = match &cluster {
            Some(cluster) => cluster.clone(),
            None => EmbeddedQueues::new(groups.clone()),
        };
        let (rules, live_rules, rules_watch) = load_rules(&config.rules_dir());
        let downlink = Arc::new(Downlink::start(config.mqtt.max_connections).map_err(IngressError::from)?);
        let alerts = Alerts::start(&config.alert_rules, groups.clone(), db.clone(), RetryPolicy::default())?;
        if let Some(cluster) = &cluster {
            // The embedded groups hold no messages in cluster mode: the rules read the cluster's.
            alerts.read_figures_from(Arc::new(QueueFigures(cluster.clone())));
        }
        let db_file = db.path().to_path_buf();
        let subscriptions =
            Arc::new(Subscriptions::load(&config.subscriptions, db, groups.clone(), registry.clone())?);
        let shared = match &cluster_state {
            Some(state) => Some(
                state
                    .share(Owners {
                        registry: registry.clone(),
                        products: &config.products,
                        groups: groups.clone(),
                        declared_groups: &config.consumer_groups,
                        queues: cluster.clone(),
                        subscriptions: subscriptions.clone(),
                        declared_subscriptions: &config.subscriptions,
                        alerts: alerts.clone(),
                        rules: live_rules.clone(),
                    })
                    .await?,
            ),
            None => None,
        };
        let (pipeline, task) = Pipeline::new(
            ids,
            subscriptions.clone(),
            groups.clone(),
            rules.clone(),
            registry.clone(),
            downlink.clone(),
        );
        let pipeline_task = tokio::spawn(task);
        let shutdown = CancellationToken::new();
        let cluster_sessions = match &config.cluster {
            Some(c) => Some(start_sessions(c, config).await?),
            None => None,
        };
        let directory = cluster_sessions.clone().map(|s| s as Arc<dyn crate::ingress::Directory>);
        let ingress = Ingress::start(
            &config.mqtt,
            registry.clone(),
            pipeline.clone(),
            downlink.clone(),
            shutdown.clone(),
            directory,
        )
        .await?;
        if let (Some(sessions), Some(c)) = (&cluster_sessions, &config.cluster) {
            sessions.serve(ingress.sessions(), shutdown.clone()).await?;
            let client = sessions.client().clone();
            crate::cluster::sessions::republish::start(
                client,
                &c.name,
                sessions.node(),
                &downlink,
                shutdown.clone(),
            )
            .await?;
        }
        let amqp = AmqpServer::start(
            &config.amqp,
            registry.clone(),
            groups.clone(),
            cluster.clone(),
            shutdown.clone(),
        )
        .await?;
        let devices = DeviceAdmin::new(registry.clone(), ingress.sessions(), pipeline.clone()).with_shared(
            shared.as_ref().map(|s| {
                let sessions = ingress.sessions();
                s.devices.on_removed(Arc::new(move |pk, dn| {
                    let sessions = sessions.clone();
                    Box::pin(
                        async move { sessions.disconnect(&pk, &dn, OfflineReason::DeviceDisabled).await },
                    )
                }));
                s.devices.clone() as Arc<dyn SharedDevices>
            }),
        );
        let mut commands: Arc<dyn DeviceCommands> =
            Arc::new(LocalCommands::new(registry.clone(), ingress.sessions(), pipeline.clone()));
        if let Some(sessions) = &cluster_sessions {
            let cluster_commands = ClusterCommands::new(commands, ingress.sessions(), sessions.clone());
            cluster_commands.serve(shutdown.clone()).await?;
            commands = cluster_commands;
        }
        let metrics = Arc::new(Metrics::new(Sources {
            ingress: ingress.stats().clone(),
            amqp: amqp.stats().clone(),
            groups: groups.clone(),
            rules: rules.clone(),
            pipeline: pipeline.stats().clone(),
            store: store_stats,
            db_file,
            alerts: alerts.clone(),
            nats,
        }));
        let catalog = Arc::new(Catalog::new(groups.clone(), subscriptions.clone(), live_rules.clone()));
        if let Some(shared) = shared {
            catalog.share(shared.catalog);
        }
        let api = ApiState {
            catalog,
            groups: groups.clone(),
            subscriptions,
            rules: rules.clone(),
            live_rules,
            devices: devices.clone(),
            commands,
            token: token.as_str().into(),
            alerts: alerts.clone(),
            metrics,
            sessions: Arc::default(),
            queues,
            cluster: nodes.as_ref().map(|nodes| cluster_status(nodes.clone())),
            locator: cluster_sessions
                .clone()
                .map(|s| Arc::new(SessionsLocator(s)) as Arc<dyn crate::api::DeviceLocator>),
        };
        let http = ApiServer::start(&config.http, api, shutdown.clone()).await?;
        if let Some(nodes) = &nodes {
            let info = NodeInfo {
                node: nodes.node().to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                started_at,
                http: http.addr().to_string(),
                mqtt: ingress.addr().to_string(),
                amqp: amqp.addr().to_string(),
                device_connections: 0,
                consumer_connections: 0,
                heartbeat_at: 0,
            };
            let (devices, consumers) = (ingress.stats().clone(), amqp.stats().clone());
            let load = Box::new(move || {
                use std::sync::atomic::Ordering::Relaxed;
                (devices.connections.load(Relaxed), consumers.links.load(Relaxed))
            });
            nodes.beat(info, load, shutdown.clone());
            // One node at a time evaluates the alert rules, so each notification is sent once.
            let lease = nodes.lease("alerts", shutdown.clone()).await?;
            alerts.evaluate_while(Arc::new(move || lease.held()));
        }
        tracing::info!(
            mqtt = %ingress.addr(),
            mqtt_tls = ?ingress.tls_addr(),
            amqp = %amqp.addr(),
            amqp_tls = ?amqp.tls_addr(),
            http = %http.addr(),
            "iotpipe is serving"
        );
        Ok(Self {
            shutdown,
            ingress,
            amqp,
            http,
            devices,
            groups,
            registry,
            rules,
            _rules_watch: rules_watch,
            pipeline,
            pipeline_task,
            alerts,
            admin_token: (token, token_source),
            cluster,
            cluster_state,
            cluster_sessions,
        })
    }

    /// The bearer token of `/api/v1`.
    pub fn admin_token(&self) -> &str {
        &self.admin_token.0
    }

    /// Where the admin token came from (the configuration, the token file, or generated now).
    pub fn admin_token_source(&self) -> &TokenSource {
        &self.admin_token.1
    }

    /// The plain MQTT address.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.ingress.addr()
    }

    /// The MQTT over TLS address.
    pub fn mqtt_tls_addr(&self) -> Option<SocketAddr> {
        self.ingress.tls_addr()
    }

    /// The plain AMQP address.
    pub fn amqp_addr(&self) -> SocketAddr {
        self.amqp.addr()
    }

    /// The AMQP over TLS address.
    pub fn amqp_tls_addr(&self) -> Option<SocketAddr> {
        self.amqp.tls_addr()
    }

    /// The HTTP API address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.addr()
    }

    /// AMQP counters.
    pub fn amqp_stats(&self) -> &Arc<crate::amqp::AmqpStats> {
        self.amqp.stats()
    }

    /// The consumer groups.
    pub fn groups(&self) -> &Arc<Groups> {
        &self.groups
    }

    /// The rules currently in force.
    pub fn rules(&self) -> Arc<crate::rules::RuleSet> {
        self.rules.get()
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The ingress.
    pub fn ingress(&self) -> &Ingress {
        &self.ingress
    }

    /// Hand-off counters.
    pub fn pipeline_stats(&self) -> &Arc<Stats> {
        self.pipeline.stats()
    }

    /// The alert rules.
    pub fn alerts(&self) -> &Arc<Alerts> {
        &self.alerts
    }

    /// Every message once stored (see [`Pipeline::tap`]).
    pub fn tap(&self) -> tokio::sync::broadcast::Receiver<crate::message::Message> {
        self.pipeline.tap()
    }

    /// Device operations (create, enable/disable, delete), each announced by a lifecycle message.
    pub fn devices(&self) -> &DeviceAdmin {
        &self.devices
    }

    /// Enables or disables a device; disabling disconnects it (offline reason "device_disabled").
    ///
    /// # Errors
    /// Unknown device or a storage failure.
    pub async fn set_device_enabled(
        &self,
        product_key: &str,
        device_name: &str,
        enabled: bool,
    ) -> Result<(), DeviceAdminError> {
        self.devices.set_enabled(product_key, device_name, enabled).await.map(drop)
    }

    /// Stops accepting, lets connections finish what is in flight, drains the pipeline and
    /// closes the store. Gives up waiting after `grace`.
    pub async fn shutdown(self, grace: Duration) {
        let Self {
            shutdown,
            ingress,
            amqp,
            http,
            devices,
            groups,
            registry,
            rules,
            _rules_watch,
            pipeline,
            pipeline_task,
            alerts,
            admin_token: _,
            cluster,
            cluster_state,
            cluster_sessions,
        } = self;
        if let Some(state) = &cluster_state {
            state.close().await;
        }
        drop(_rules_watch);
        drop(rules);
        let stats = pipeline.stats().clone();
        shutdown.cancel();
        let drained = tokio::time::timeout(grace, async {
            // Evaluations and pending notifications stop at once (dropped ones are counted).
            alerts.shutdown().await;
            ingress.stopped().await;
            if let Some(sessions) = &cluster_sessions {
                sessions.close().await;
            }
            // The API holds pipeline senders too (lifecycle messages): it stops first.
            http.stopped().await;
            // The last senders go: the pipeline task drains its queue and ends.
            drop(devices);
            drop(ingress);
            drop(pipeline);
            let _ = pipeline_task.await;
            // Consumers are gone next (their unsettled messages go back), then the store closes.
            amqp.stopped().await;
            drop(amqp);
            groups.shutdown().await;
            if let Some(cluster) = &cluster {
                cluster.close().await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(grace_secs = grace.as_secs(), "Shutdown grace period ran out");
        }
        drop(groups);
        drop(registry);
        tracing::info!(
            messages = stats.messages.load(std::sync::atomic::Ordering::Relaxed),
            upstream = stats.upstream.load(std::sync::atomic::Ordering::Relaxed),
            "iotpipe stopped"
        );
    }
}

/// Cluster mode: the alert rules' group figures from the cluster's queues (`GroupQueues::status`).
struct QueueFigures(Arc<dyn GroupQueues>);

impl crate::alerts::figures::GroupFigures for QueueFigures {
    fn figures<'a>(
        &'a self,
        group: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<crate::alerts::figures::Figures, String>> {
        Box::pin(async move {
            let status = self.0.status(group).await.map_err(|e| e.to_string())?;
            Ok(crate::alerts::figures::Figures {
                accumulated: status.accumulated,
                consumption_rate_per_minute: status.consumption_rate_per_minute,
            })
        })
    }
}

/// Cluster mode: the device views' online state from the sessions bucket.
struct SessionsLocator(Arc<ClusterSessions>);

impl crate::api::DeviceLocator for SessionsLocator {
    fn node(&self) -> &str {
        self.0.node()
    }

    fn holder<'a>(
        &'a self,
        product_key: &'a str,
        device_name: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<(String, u64)>, String>> {
        Box::pin(async move {
            let owner = self.0.owner(product_key, device_name).await?;
            Ok(owner.map(|o| (o.node, o.connected_at_ms)))
        })
    }
}
