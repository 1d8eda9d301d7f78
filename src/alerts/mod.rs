//! Consumer-group alert rules: a rule watches a metric of some groups (backlog or consumption
//! rate), fires after N consecutive scan periods past a threshold, and notifies an HTTP callback
//! (docs/alerts.md).
//!
//! - `model.rs`: the rule as the API and the configuration write it, and its validation;
//! - `window.rs`: the effective period (days, local time of day);
//! - `evaluator.rs`: the pure state machine of one (rule, group);
//! - `notifier.rs`: delivery of notifications, retries, bounded queues;
//! - this file: the set of rules, one evaluation task per rule, state and history for the API.

pub mod config;
pub mod evaluator;
pub mod figures;
pub mod model;
pub mod notifier;
pub mod shared;
pub mod window;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::groups::Groups;
use crate::logsafe::Untrusted;
use crate::message::now_ms;
use crate::store::{Collection, Db, Encoding, StoreError};
use config::AlertRuleConfig;
use evaluator::{GroupState, Notify, State, Tick};
use model::{AlertRule, AlertRuleBody, LocalTime, Metric, Problem};
use notifier::{Job, Notification, NotificationState, Notifier, NotifierStats, Report, RetryPolicy};

/// Alert rules at most; each has a task and a state per group.
pub const MAX_RULES: usize = 1000;
/// Notifications a rule remembers for the API.
pub const HISTORY: usize = 100;

/// Why a rule could not be created, changed or deleted.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    /// Fields break the rules; every problem names its field.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
    /// A listed group does not exist.
    #[error("consumerGroupIds[{index}]: consumer group {id} does not exist")]
    UnknownGroup {
        /// Position in the list.
        index: usize,
        /// The id.
        id: String,
    },
    /// Another rule has the name.
    #[error("name: an alert rule named {0:?} exists already")]
    NameTaken(String),
    /// Too many rules.
    #[error("there are already {0} alert rules, the maximum")]
    Limit(usize),
    /// A rule of the configuration file.
    #[error("alert rule {0} is declared in the configuration file; change or remove it there")]
    Protected(String),
    /// No such rule.
    #[error("alert rule {0} does not exist")]
    NotFound(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Cluster mode: the shared state could not be read or written; nothing changed.
    #[error("the cluster's shared state is unavailable: {0}")]
    Cluster(String),
}

/// Where a rule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `[[alert_rules]]`: created at every start, not editable through the API.
    Config,
    /// Created through the API, stored in the database.
    Api,
}

/// One notification in a rule's history.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// What was sent.
    #[serde(flatten)]
    pub notification: Notification,
    /// How its delivery went so far.
    pub delivery: NotificationState,
    /// POSTs made (0 while queued or when dropped).
    pub attempts: u32,
    #[serde(skip)]
    seq: u64,
}

/// Delivery counters of one rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryCounts {
    /// Firing notifications made.
    pub firing: u64,
    /// Resolved notifications made.
    pub resolved: u64,
    /// Delivered (2xx).
    pub sent: u64,
    /// Given up after every try, or refused with a 4xx.
    pub failed: u64,
    /// POSTs tried again.
    pub retries: u64,
    /// Dropped (a queue was full, or shutdown).
    pub dropped: u64,
}

/// What outlives a change of the rule: its history and delivery counters.
#[derive(Debug, Default)]
struct Record {
    history: Mutex<VecDeque<HistoryEntry>>,
    next_seq: AtomicU64,
    firing: AtomicU64,
    resolved: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    dropped: AtomicU64,
}

impl Record {
    fn history(&self) -> MutexGuard<'_, VecDeque<HistoryEntry>> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a notification; returns its number.
    fn push(&self, notification: Notification) -> u64 {
        let seq = self.next_seq.fetch_add(1, Relaxed);
        match notification.state {
            Notify::Firing => self.firing.fetch_add(1, Relaxed),
            Notify::Resolved => self.resolved.fetch_add(1, Relaxed),
        };
        let mut h = self.history();
        if h.len() >= HISTORY {
            h.pop_front();
        }
        h.push_back(HistoryEntry { notification, delivery: NotificationState::Queued, attempts: 0, seq });
        seq
    }

    fn counts(&self) -> DeliveryCounts {
        DeliveryCounts {
            firing: self.firing.load(Relaxed),
            resolved: self.resolved.load(Relaxed),
            sent: self.sent.load(Relaxed),
            failed: self.failed.load(Relaxed),
            retries: self.retries.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
        }
    }
}

impl Report for Record {
    fn delivered(&self, seq: u64, how: NotificationState, attempts: u32) {
        let counter = match how {
            NotificationState::Sent => &self.sent,
            NotificationState::Failed => &self.failed,
            NotificationState::Dropped | NotificationState::Queued => &self.dropped,
        };
        counter.fetch_add(1, Relaxed);
        if let Some(e) = self.history().iter_mut().rev().find(|e| e.seq == seq) {
            e.delivery = how;
            e.attempts = attempts;
        }
    }

    fn retrying(&self, _seq: u64) {
        self.retries.fetch_add(1, Relaxed);
    }
}

/// One group's state as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupStatus {
    /// The group.
    pub group_id: String,
    /// ok, pending or firing.
    pub state: State,
    /// Periods in a row the condition held.
    pub consecutive: u32,
    /// The value at the last evaluation.
    #[serde(serialize_with = "optional_number")]
    pub last_value: Option<f64>,
    /// Epoch ms of the last notification.
    pub last_notified_at: Option<u64>,
}

fn optional_number<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => notifier::number(v, s),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Default)]
struct RuleState {
    groups: BTreeMap<String, GroupState>,
    last_evaluated_ms: Option<u64>,
}

/// A rule in force, with its evaluation state.
#[derive(Debug)]
pub struct RuleRuntime {
    /// Generated for API rules; the name for configuration rules.
    pub id: String,
    /// The rule.
    pub rule: AlertRule,
    /// Where it comes from.
    pub source: Source,
    state: Mutex<RuleState>,
    record: Arc<Record>,
    stop: CancellationToken,
}

impl RuleRuntime {
    fn state(&self) -> MutexGuard<'_, RuleState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every group evaluated so far, by id.
    pub fn status(&self) -> Vec<GroupStatus> {
        self.state()
            .groups
            .iter()
            .map(|(id, s)| GroupStatus {
                group_id: id.clone(),
                state: s.state(&self.rule),
                consecutive: s.consecutive,
                last_value: s.last_value,
                last_notified_at: s.last_notified_at,
            })
            .collect()
    }

    /// Groups firing now.
    pub fn firing(&self) -> usize {
        self.state().groups.values().filter(|s| s.state(&self.rule) == State::Firing).count()
    }

    /// Epoch ms of the last evaluation.
    pub fn last_evaluated_ms(&self) -> Option<u64> {
        self.state().last_evaluated_ms
    }

    /// The last [`HISTORY`] notifications, oldest first.
    pub fn history(&self) -> Vec<HistoryEntry> {
        self.record.history().iter().cloned().collect()
    }

    /// Delivery counters (kept across changes of the rule).
    pub fn delivery(&self) -> DeliveryCounts {
        self.record.counts()
    }
}

/// Alert rules created through the API: id -> the rule's JSON body.
const CREATED: Collection<AlertRuleBody> = Collection::new("alert_rules", Encoding::JsonBytes);

/// Every alert rule, each evaluated by its own task.
pub struct Alerts {
    rules: RwLock<BTreeMap<String, Arc<RuleRuntime>>>,
    /// Serialises create, update and delete (check, store, insert).
    edit: Mutex<()>,
    groups: Arc<Groups>,
    db: Arc<Db>,
    notifier: Notifier,
    evaluations: AtomicU64,
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Cluster mode: where the API's edits go first (set once at start-up).
    shared: std::sync::OnceLock<Arc<dyn shared::SharedAlerts>>,
    /// Cluster mode: evaluate only while this says so (the node holds the evaluator lease).
    gate: std::sync::OnceLock<Gate>,
    /// Cluster mode: where the groups' figures come from (set once at start-up); without it,
    /// this node's embedded groups.
    figures: std::sync::OnceLock<Arc<dyn figures::GroupFigures>>,
}

/// Whether this node may evaluate now (cluster mode: it holds the evaluator lease).
pub type Gate = Arc<dyn Fn() -> bool + Send + Sync>;

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts").field("rules", &self.read().len()).finish_non_exhaustive()
    }
}

/// A new rule id: `a` and 20 random letters and digits, like generated group ids.
fn generate_id() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    format!("a{}", Alphanumeric.sample_string(&mut rand::rng(), 20))
}

impl Alerts {
    /// The rules of the configuration (ids = names) and those stored by the API, each with its
    /// evaluation task started.
    ///
    /// # Errors
    /// When the stored rules cannot be read.
    pub fn start(
        config: &[AlertRuleConfig],
        groups: Arc<Groups>,
        db: Arc<Db>,
        policy: RetryPolicy,
    ) -> Result<Arc<Self>, StoreError> {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let notifier = Notifier::start(policy, stop.clone(), &tasks);
        let stored = CREATED.load(&db)?;
        let this = Arc::new(Self {
            rules: RwLock::new(BTreeMap::new()),
            edit: Mutex::new(()),
            groups,
            db,
            notifier,
            evaluations: AtomicU64::new(0),
            stop,
            tasks,
            shared: std::sync::OnceLock::new(),
            gate: std::sync::OnceLock::new(),
            figures: std::sync::OnceLock::new(),
        });
        let declared = config.iter().map(|c| (c.name.clone(), AlertRuleBody::from(c), Source::Config));
        let created = stored.into_iter().map(|(id, body)| (id, body, Source::Api));
        for (id, body, source) in declared.chain(created) {
            let rule = match body.validate() {
                Ok(rule) => rule,
                Err(problems) => {
                    let problems = AlertsError::Invalid(problems);
                    tracing::error!(rule_id = %id, error = %problems, "Alert rule not loaded");
                    continue;
                }
            };
            if this.read().values().any(|r| r.id == id || r.rule.name == rule.name) {
                tracing::warn!(rule_id = %id, name = %Untrusted(&rule.name), "An alert rule created through the API has the name of one in the configuration; the configuration wins");
                continue;
            }
            for g in rule.group_ids.iter().filter(|g| !this.groups.exists(g)) {
                tracing::warn!(rule_id = %id, group = %g, "An alert rule watches a consumer group that does not exist");
            }
            this.install(id, rule, source, Arc::default());
        }
        let n = this.read().len();
        if n > 0 {
            tracing::info!(rules = n, "Alert rules loaded");
        }
        Ok(this)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<RuleRuntime>>> {
        self.rules.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<RuleRuntime>>> {
        self.rules.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts a rule in force (replacing one with the same id) and starts its task.
    fn install(
        self: &Arc<Self>,
        id: String,
        rule: AlertRule,
        source: Source,
        record: Arc<Record>,
    ) -> Arc<RuleRuntime> {
        let runtime = Arc::new(RuleRuntime {
            id: id.clone(),
            rule,
            source,
            state: Mutex::default(),
            record,
            stop: self.stop.child_token(),
        });
        if let Some(old) = self.write().insert(id, runtime.clone()) {
            old.stop.cancel();
        }
        self.tasks.spawn(self.clone().evaluate(runtime.clone()));
        runtime
    }

    /// Every rule, by id.
    pub fn list(&self) -> Vec<Arc<RuleRuntime>> {
        self.read().values().cloned().collect()
    }

    /// The rule, if it exists.
    pub fn get(&self, id: &str) -> Option<Arc<RuleRuntime>> {
        self.read().get(id).cloned()
    }

    /// Validates `body` for rule `id` (`None`: a new rule).
    fn check(&self, body: &AlertRuleBody, id: Option<&str>) -> Result<AlertRule, AlertsError> {
        let rule = body.validate().map_err(AlertsError::Invalid)?;
        if let Some((index, g)) = rule.group_ids.iter().enumerate().find(|(_, g)| !self.groups.exists(g)) {
            return Err(AlertsError::UnknownGroup { index, id: g.clone() });
        }
        let rules = self.read();
        if rules.values().any(|r| r.rule.name == rule.name && Some(r.id.as_str()) != id) {
            return Err(AlertsError::NameTaken(rule.name));
        }
        if id.is_none() && rules.len() >= MAX_RULES {
            return Err(AlertsError::Limit(MAX_RULES));
        }
        Ok(rule)
    }

    fn lock_edits(&self) -> MutexGuard<'_, ()> {
        self.edit.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates a rule with a generated id; it is stored and survives restarts.
    ///
    /// # Errors
    /// Invalid fields, an unknown group, a taken name, the rule limit, or storage.
    pub fn create(self: &Arc<Self>, body: &AlertRuleBody) -> Result<Arc<RuleRuntime>, AlertsError> {
        let _edit = self.lock_edits();
        let rule = self.check(body, None)?;
        let id = loop {
            let id = generate_id();
            if self.get(&id).is_none() {
                break id;
            }
        };
        CREATED.put(&self.db, &id, &rule.to_body())?;
        tracing::info!(rule_id = %id, name = %Untrusted(&rule.name), "Alert rule created");
        Ok(self.install(id, rule, Source::Api, Arc::default()))
    }

    /// Replaces rule `id`. Its evaluation starts over (every group ok, a new first period);
    /// history and delivery counters are kept.
    ///
    /// # Errors
    /// Unknown or configured rule, invalid fields, an unknown group, a taken name, or storage.
    pub fn update(self: &Arc<Self>, id: &str, body: &AlertRuleBody) -> Result<Arc<RuleRuntime>, AlertsError> {
        let _edit = self.lock_edits();
        let old = self.get(id).ok_or_else(|| AlertsError::NotFound(id.to_string()))?;
        if old.source == Source::Config {
            return Err(AlertsError::Protected(id.to_string()));
        }
        let rule = self.check(body, Some(id))?;
        CREATED.put(&self.db, id, &rule.to_body())?;
        tracing::info!(rule_id = %id, name = %Untrusted(&rule.name), "Alert rule changed");
        Ok(self.install(id.to_string(), rule, Source::Api, old.record.clone()))
    }

    /// Deletes rule `id` and stops its evaluation.
    ///
    /// # Errors
    /// Unknown or configured rule, or storage.
    pub fn delete(&self, id: &str) -> Result<(), AlertsError> {
        let _edit = self.lock_edits();
        let rule = self.get(id).ok_or_else(|| AlertsError::NotFound(id.to_string()))?;
        if rule.source == Source::Config {
            return Err(AlertsError::Protected(id.to_string()));
        }
        CREATED.remove(&self.db, id)?;
        self.write().remove(id);
        rule.stop.cancel();
        tracing::info!(rule_id = %id, name = %Untrusted(&rule.rule.name), "Alert rule deleted");
        Ok(())
    }

    /// Evaluations made (one per rule and period).
    pub fn evaluations(&self) -> u64 {
        self.evaluations.load(Relaxed)
    }

    /// Delivery counters of every rule together.
    pub fn notifier_stats(&self) -> &Arc<NotifierStats> {
        self.notifier.stats()
    }

    /// From now on, evaluates only while `gate` says so (set once: cluster mode, where one
    /// node at a time evaluates so that each notification is sent once).
    pub fn evaluate_while(&self, gate: Gate) {
        let _ = self.gate.set(gate);
    }

    /// From now on, reads the groups' figures from `figures` instead of this node's embedded
    /// groups (set once: cluster mode, where the queues are the cluster's).
    pub fn read_figures_from(&self, figures: Arc<dyn figures::GroupFigures>) {
        let _ = self.figures.set(figures);
    }

    /// Stops every evaluation and the notifier; queued notifications are dropped (counted).
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Evaluates `rule` once per period until it is stopped. The first evaluation is one period
    /// after the start: a period is a span of time the condition must hold through.
    async fn evaluate(self: Arc<Self>, rule: Arc<RuleRuntime>) {
        let period = rule.rule.period;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        // A late tick (a busy runtime) is evaluated late, not twice.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = rule.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if self.gate.get().is_some_and(|may| !may()) {
                // Another node evaluates; this node's counts start afresh if it takes over.
                rule.state().groups.clear();
                continue;
            }
            let groups = self.scope(&rule);
            let values = match self.figures.get() {
                None => groups
                    .iter()
                    .map(|g| {
                        let status = g.status();
                        let value = match rule.rule.metric {
                            Metric::AccumulatedCount => status.accumulated as f64,
                            Metric::ConsumptionRate => status.consumption_rate_per_minute as f64,
                        };
                        (g.id.clone(), Some(value))
                    })
                    .collect(),
                Some(figures) => {
                    let mut values = Vec::with_capacity(groups.len());
                    for g in &groups {
                        let value = match figures.figures(&g.id).await {
                            Ok(f) => Some(match rule.rule.metric {
                                Metric::AccumulatedCount => f.accumulated as f64,
                                Metric::ConsumptionRate => f.consumption_rate_per_minute as f64,
                            }),
                            Err(error) => {
                                tracing::warn!(rule_id = %rule.id, group = %g.id, %error, "Alert rule: the group's figures could not be read; the group is skipped this period");
                                None
                            }
                        };
                        values.push((g.id.clone(), value));
                    }
                    values
                }
            };
            self.evaluate_once(&rule, &values, now_ms(), LocalTime::now());
        }
    }

    /// The groups `rule` watches that exist on this node.
    fn scope(&self, rule: &RuleRuntime) -> Vec<Arc<crate::groups::Group>> {
        let r = &rule.rule;
        if r.group_ids.is_empty() {
            self.groups.list()
        } else {
            r.group_ids.iter().filter_map(|id| self.groups.get(id)).collect()
        }
    }

    /// One period of `rule` over every group in its scope, with each group's value (`None`:
    /// not read this period, its state kept as it is).
    fn evaluate_once(
        &self,
        rule: &Arc<RuleRuntime>,
        values: &[(Arc<str>, Option<f64>)],
        now_ms: u64,
        local: LocalTime,
    ) {
        let r = &rule.rule;
        let mut notifications = Vec::new();
        {
            let mut state = rule.state();
            // Deleted groups are forgotten, without a notification.
            state.groups.retain(|id, _| values.iter().any(|(g, _)| **g == **id));
            for (group, value) in values {
                let Some(value) = *value else { continue };
                let s = state.groups.entry(group.to_string()).or_default();
                let Some(notify) = s.step(r, Tick { value, now_ms, local }) else { continue };
                notifications.push(Notification {
                    rule: r.name.clone(),
                    rule_id: rule.id.clone(),
                    group_id: group.to_string(),
                    metric: r.metric.as_str(),
                    comparison: r.comparison.as_str(),
                    value,
                    threshold: r.threshold,
                    state: notify,
                    consecutive: s.consecutive,
                    time: now_ms,
                });
            }
            state.last_evaluated_ms = Some(now_ms);
        }
        self.evaluations.fetch_add(1, Relaxed);
        for n in notifications {
            match n.state {
                Notify::Firing => {
                    tracing::warn!(rule = %n.rule, group = %n.group_id, metric = n.metric, value = n.value, comparison = n.comparison, threshold = n.threshold, consecutive = n.consecutive, "Alert firing")
                }
                Notify::Resolved => {
                    tracing::info!(rule = %n.rule, group = %n.group_id, metric = n.metric, value = n.value, comparison = n.comparison, threshold = n.threshold, "Alert resolved")
                }
            }
            let seq = rule.record.push(n.clone());
            let report: Arc<dyn Report> = rule.record.clone();
            self.notifier.send(Job { url: r.callback_url.as_str().into(), notification: n, seq, report });
        }
    }
}
