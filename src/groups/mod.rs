//! Consumer groups: durable backlogs, online clients, random delivery, settlement, status.
//!
//! `group.rs` holds one group's logic; this file the set of groups, the settings, the append
//! path used by the pipeline and the background tasks (one dispatcher per group, one sweeper).

pub mod config;
mod group;
pub mod history;
pub mod name;
mod rate;
mod retry;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use group::{ClientInfo, Delivery, Group, JoinError, Membership, Settlement, Status};

pub use config::{ConsumerGroupConfig, DEFAULT_MAX_GROUPS};
/// A per-minute rate (the cluster backend keeps its consumption rate with it).
pub use rate::RateWindow;
/// How long a released message waits before its next delivery (the JetStream backend naks with it).
pub use retry::backoff as release_backoff;

use crate::store::{Append, Collection, Db, Encoding, Extent, QueueStore, StoreError};

/// Why a group could not be created or deleted.
#[derive(Debug, thiserror::Error)]
pub enum GroupsError {
    /// The name breaks the name rule.
    #[error("name: {0}")]
    InvalidName(String),
    /// Another group has the name.
    #[error("name: a consumer group named {0:?} exists already")]
    NameTaken(String),
    /// An option is out of range.
    #[error("{0}")]
    InvalidOption(String),
    /// The id breaks the id rule.
    #[error("id: {0}")]
    InvalidId(String),
    /// Another group has the id.
    #[error("id: a consumer group with the id {0} exists already")]
    IdTaken(String),
    /// Too many groups.
    #[error("there are already {0} consumer groups, the maximum")]
    Limit(usize),
    /// DEFAULT_GROUP or a group of the configuration file.
    #[error("{0}")]
    Protected(String),
    /// No such group.
    #[error("consumer group {0} does not exist")]
    NotFound(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Cluster mode: the shared state could not be read or written (NATS or JetStream down).
    #[error("the cluster's shared state is unavailable: {0}")]
    Cluster(String),
}

/// A new group id: `g` and 20 random letters and digits, like the platform's generated ids.
pub fn generate_id() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    format!("g{}", Alphanumeric.sample_string(&mut rand::rng(), 20))
}

/// The checks of a new group that need no other group: the name rule, the options, the id
/// rule.
fn check_new(name: &str, id: Option<&str>, options: GroupOptions) -> Result<(), GroupsError> {
    name::validate(name).map_err(GroupsError::InvalidName)?;
    if options.max_delivery_attempts == Some(0) {
        return Err(GroupsError::InvalidOption(
            "maxDeliveryAttempts: must be at least 1; leave it out for no limit".into(),
        ));
    }
    if let Some(id) = id {
        name::validate_id(id).map_err(GroupsError::InvalidId)?;
    }
    Ok(())
}

/// The group that always exists.
pub const DEFAULT_GROUP: &str = "DEFAULT_GROUP";

/// Delivery settings shared by every group.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Unsettled deliveries go back after this long.
    pub ack_timeout: Duration,
    /// Undelivered messages expire after this long.
    pub retention: Duration,
    /// Online clients per group.
    pub max_clients_per_group: usize,
    /// Unsettled deliveries per client.
    pub max_unsettled_per_client: usize,
    /// Consumer groups in all.
    pub max_groups: usize,
}

/// Every consumer group.
pub struct Groups {
    groups: RwLock<HashMap<String, Arc<Group>>>,
    /// Ids declared in the configuration file (and DEFAULT_GROUP): not deletable at run time.
    declared: Vec<String>,
    store: Arc<dyn QueueStore>,
    db: Arc<Db>,
    settings: Settings,
    stop: CancellationToken,
    tasks: TaskTracker,
    create: std::sync::Mutex<()>,
    /// Where appends go instead of the embedded store (cluster mode), when set.
    elsewhere: std::sync::OnceLock<AppendElsewhere>,
    /// Hand staged messages to clients before their commit (`[storage] early_delivery`).
    early: std::sync::atomic::AtomicBool,
}

/// A group's records of one batch, `(seq, record)` in seq order.
type Records = Vec<(u64, bytes::Bytes)>;

/// Resolves once a staged batch is stored (see [`Groups::stage`]).
pub type Commit = futures::future::BoxFuture<'static, Result<(), StoreError>>;

/// Stores a batch of copies somewhere other than the embedded store (the cluster's queues);
/// resolves when every copy is stored.
pub type AppendElsewhere =
    Arc<dyn Fn(Vec<Append>) -> futures::future::BoxFuture<'static, Result<(), StoreError>> + Send + Sync>;

/// Consumer groups created at run time: id -> name.
const CREATED: Collection<String> = Collection::new("consumer_groups", Encoding::Text);
/// Options of groups created at run time: id -> options.
const OPTIONS: Collection<GroupOptions> = Collection::new("consumer_group_options", Encoding::JsonBytes);

/// What a group may set besides its name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupOptions {
    /// Deliveries of a message at most before it goes to the dead letters (none: no limit).
    pub max_delivery_attempts: Option<u32>,
}

/// Each group's `lastConsumptionTime` (epoch ms), so that it survives a restart.
const LAST_CONSUMPTION: Collection<u64> = Collection::new("group_last_consumption", Encoding::JsonBytes);
/// How often changed `lastConsumptionTime`s are written: one small transaction per active group
/// and period; after a crash the time shown may be this much older than the last accept.
const PERSIST_LAST_CONSUMPTION: Duration = Duration::from_secs(5);

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Groups {
    /// The `declared` groups (the configuration file's) plus `DEFAULT_GROUP` and those created
    /// through the API, with the backlogs found in `store`, and their background tasks started.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn start(
        declared: &[ConsumerGroupConfig],
        store: Arc<dyn QueueStore>,
        settings: Settings,
        db: Arc<Db>,
    ) -> Result<Arc<Self>, StoreError> {
        let extents = store.extents()?;
        let dead = store.dead_counts()?;
        let last: HashMap<String, u64> = LAST_CONSUMPTION.load(&db)?.into_iter().collect();
        let mut options: HashMap<String, GroupOptions> = OPTIONS.load(&db)?.into_iter().collect();
        for g in declared {
            options.insert(g.id.clone(), GroupOptions { max_delivery_attempts: g.max_delivery_attempts });
        }
        let declared: Vec<(String, String)> =
            std::iter::once((DEFAULT_GROUP.to_string(), DEFAULT_GROUP.to_string()))
                .chain(declared.iter().map(|g| (g.id.clone(), g.name.clone())))
                .collect();
        let created = CREATED.load(&db)?;
        let this = Arc::new(Self {
            groups: RwLock::new(HashMap::new()),
            declared: declared.iter().map(|(id, _)| id.clone()).collect(),
            store,
            db,
            settings,
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            create: std::sync::Mutex::new(()),
            elsewhere: std::sync::OnceLock::new(),
            early: std::sync::atomic::AtomicBool::new(false),
        });
        for (id, name) in declared.iter().chain(created.iter()) {
            if this.exists(id) {
                tracing::warn!(group = %id, "A group created through the API is also declared in the configuration; the configuration wins");
                continue;
            }
            let extent = extents.get(id.as_str()).copied().unwrap_or_default();
            let group = this.add(id, name, extent, dead.get(id.as_str()).copied().unwrap_or(0));
            group.restore_last_consumption(last.get(id.as_str()).copied());
            group.set_max_delivery_attempts(options.get(id.as_str()).and_then(|o| o.max_delivery_attempts));
            if extent.count > 0 {
                tracing::info!(group = %id, backlog = extent.count, "Consumer group backlog restored");
            }
        }
        for (id, extent) in &extents {
            if !this.exists(id) {
                tracing::warn!(group = %id, backlog = extent.count, "Stored messages of a group that no longer exists are kept but not served");
            }
        }
        let sweeper = this.clone();
        this.tasks.spawn(async move { sweeper.sweep_loop().await });
        let sampler = this.clone();
        this.tasks.spawn(async move { sampler.history_loop().await });
        Ok(this)
    }

    fn add(&self, id: &str, name: &str, extent: Extent, dead: u64) -> Arc<Group> {
        let stop = self.stop.child_token();
        let group = Group::new(id, name, self.store.clone(), self.settings, extent, dead, stop.clone());
        self.tasks.spawn(group.clone().dispatch(stop));
        self.write().insert(id.to_string(), group.clone());
        group
    }

    /// Creates a group, with the given id or a generated one; it is stored and survives
    /// restarts.
    ///
    /// # Errors
    /// A name that breaks the name rule or is taken, a bad or taken id, the group limit, or
    /// storage.
    pub fn create(
        &self,
        name: &str,
        id: Option<&str>,
        options: GroupOptions,
    ) -> Result<Arc<Group>, GroupsError> {
        check_new(name, id, options)?;
        // Held to the insert, so that two creations cannot take the same name or id.
        let _create = self.create.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.check_free(name, id)?;
        let id = match id {
            Some(id) => id.to_string(),
            None => loop {
                let id = generate_id();
                if !self.exists(&id) {
                    break id;
                }
            },
        };
        if options != GroupOptions::default() {
            OPTIONS.put(&self.db, &id, &options)?;
        }
        CREATED.put(&self.db, &id, &name.to_string())?;
        tracing::info!(group = %id, %name, "Consumer group created");
        let group = self.add(&id, name, Extent::default(), 0);
        group.set_max_delivery_attempts(options.max_delivery_attempts);
        Ok(group)
    }

    /// Whether a group with `name` (and `id`, when given) could be created now: the checks of
    /// [`Self::create`] without the creation (cluster mode checks before it writes the bucket).
    ///
    /// # Errors
    /// As [`Self::create`], storage aside.
    pub fn check_create(
        &self,
        name: &str,
        id: Option<&str>,
        options: GroupOptions,
    ) -> Result<(), GroupsError> {
        check_new(name, id, options)?;
        self.check_free(name, id)
    }

    /// The name is free, the id (when given) too, and the limit not reached.
    fn check_free(&self, name: &str, id: Option<&str>) -> Result<(), GroupsError> {
        let groups = self.read();
        if groups.values().any(|g| g.name == name) {
            return Err(GroupsError::NameTaken(name.to_string()));
        }
        if groups.len() >= self.settings.max_groups {
            return Err(GroupsError::Limit(self.settings.max_groups));
        }
        match id {
            Some(id) if groups.contains_key(id) => Err(GroupsError::IdTaken(id.to_string())),
            _ => Ok(()),
        }
    }

    /// Whether `id` may be deleted: it exists and is neither `DEFAULT_GROUP` nor declared in the
    /// configuration file.
    ///
    /// # Errors
    /// [`GroupsError::Protected`], [`GroupsError::NotFound`].
    pub fn check_delete(&self, id: &str) -> Result<(), GroupsError> {
        if id == DEFAULT_GROUP {
            return Err(GroupsError::Protected("DEFAULT_GROUP cannot be deleted".into()));
        }
        if self.is_declared(id) {
            return Err(GroupsError::Protected(format!(
                "consumer group {id} is declared in the configuration file; remove it there"
            )));
        }
        if !self.exists(id) {
            return Err(GroupsError::NotFound(id.to_string()));
        }
        Ok(())
    }

    /// Whether `id` is `DEFAULT_GROUP` or declared in this node's configuration file.
    pub fn is_declared(&self, id: &str) -> bool {
        self.declared.iter().any(|d| d == id)
    }

    /// Sets a group's options (cluster mode: another node changed them) and stores them.
    ///
    /// # Errors
    /// Unknown group or storage.
    pub fn set_options(&self, id: &str, options: GroupOptions) -> Result<(), GroupsError> {
        let group = self.get(id).ok_or_else(|| GroupsError::NotFound(id.to_string()))?;
        if group.max_delivery_attempts() == options.max_delivery_attempts {
            return Ok(());
        }
        if !self.is_declared(id) {
            OPTIONS.put(&self.db, id, &options)?;
        }
        group.set_max_delivery_attempts(options.max_delivery_attempts);
        Ok(())
    }

    /// Deletes a group created at run time, with its stored messages. The caller checks that no
    /// subscription or rule uses it.
    ///
    /// # Errors
    /// Unknown group, `DEFAULT_GROUP` or a configured group, or storage.
    pub async fn delete(&self, id: &str) -> Result<(), GroupsError> {
        self.check_delete(id)?;
        let group = self.get(id).ok_or_else(|| GroupsError::NotFound(id.to_string()))?;
        CREATED.remove(&self.db, id)?;
        LAST_CONSUMPTION.remove(&self.db, id)?;
        OPTIONS.remove(&self.db, id)?;
        self.write().remove(id);
        group.stop();
        let removed = self.store.clear(id).await?;
        self.store.purge_dead(id, None).await?;
        tracing::info!(group = %id, dropped = removed, "Consumer group deleted");
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Group>>> {
        self.groups.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Group>>> {
        self.groups.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The group, if it exists.
    pub fn get(&self, id: &str) -> Option<Arc<Group>> {
        self.read().get(id).cloned()
    }

    /// Whether the group exists.
    pub fn exists(&self, id: &str) -> bool {
        self.read().contains_key(id)
    }

    /// Every group, ordered by id.
    pub fn list(&self) -> Vec<Arc<Group>> {
        let mut v: Vec<_> = self.read().values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// The settings.
    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// Stores `batch` durably and makes it deliverable. Resolves when every record is on disk.
    ///
    /// # Errors
    /// When the store fails; then nothing of the batch is stored.
    pub async fn append(&self, batch: Vec<Append>) -> Result<(), StoreError> {
        self.stage(batch).await?.await
    }

    /// With early delivery on, staged messages go to clients before their commit (see
    /// [`Groups::stage`]); off (the default), only once stored.
    pub fn set_early_delivery(&self, on: bool) {
        self.early.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stages `batch` for the next commit; the returned future resolves once every copy is
    /// stored (what a PUBACK waits for). Without early delivery (the default) this stores the
    /// batch first and then hands each copy to its group (the future is ready), as cluster mode
    /// does. With early delivery the copies go to their groups at once and the next batch may
    /// be staged while this one commits: online clients may receive a copy before it is
    /// stored, and a copy whose commit fails leaves its group again ([`Group::retract`]).
    ///
    /// # Errors
    /// When the store is closed (staging); the future: when the commit failed.
    pub async fn stage(&self, batch: Vec<Append>) -> Result<Commit, StoreError> {
        if batch.is_empty() {
            return Ok(Box::pin(std::future::ready(Ok(()))));
        }
        if let Some(elsewhere) = self.elsewhere.get() {
            let result = elsewhere(batch).await;
            return Ok(Box::pin(std::future::ready(result)));
        }
        // The records stay shared with the groups, which deliver fresh messages from memory.
        let records: Vec<(Arc<str>, bytes::Bytes)> =
            batch.iter().map(|a| (a.group.clone(), a.record.clone())).collect();
        let staged = self.store.stage(batch).await?;
        let mut by_group: HashMap<Arc<str>, Records> = HashMap::new();
        for ((group, record), &seq) in records.into_iter().zip(&staged.seqs) {
            by_group.entry(group).or_default().push((seq, record));
        }
        let mut groups: Vec<(Arc<Group>, Records)> = Vec::with_capacity(by_group.len());
        for (id, records) in by_group {
            match self.get(&id) {
                Some(group) => groups.push((group, records)),
                None => tracing::warn!(group = %id, "Stored messages for an unknown group"),
            }
        }
        let done = staged.done;
        if !self.early.load(std::sync::atomic::Ordering::Relaxed) {
            // Stored first, handed out after; the caller waits meanwhile, so that the next
            // batch gathers and shares the next commit (group commit without a timer).
            let result = done.await;
            if result.is_ok() {
                for (group, records) in groups {
                    group.staged(records);
                }
            }
            return Ok(Box::pin(std::future::ready(result)));
        }
        // A batch's seqs of one group are consecutive.
        let mut handed: Vec<(Arc<Group>, u64, u64)> = Vec::with_capacity(groups.len());
        for (group, records) in groups {
            let (Some(&(first, _)), Some(&(last, _))) = (records.first(), records.last()) else { continue };
            group.staged(records);
            handed.push((group, first, last));
        }
        Ok(Box::pin(async move {
            let result = done.await;
            for (group, first, last) in handed {
                match result {
                    Ok(()) => group.committed(),
                    Err(_) => group.retract(first, last),
                }
            }
            result
        }))
    }

    /// From now on every append (the pipeline's, the forwarding retries') goes to `to` instead
    /// of the embedded store: the cluster mode's queues. Set once, at start-up.
    pub fn append_elsewhere(&self, to: AppendElsewhere) {
        if self.elsewhere.set(to).is_err() {
            tracing::warn!("The appends of the consumer groups were redirected twice; the first stays");
        }
    }

    async fn sweep_loop(&self) {
        let mut tick = tokio::time::interval(group::sweep_interval(&self.settings));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut persisted = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if persisted.elapsed() >= PERSIST_LAST_CONSUMPTION {
                persisted = tokio::time::Instant::now();
                self.persist_last_consumption();
            }
            for group in self.list() {
                group.sweep();
                group.expire_dead_letters().await;
            }
        }
    }

    /// Samples every group's status into its history every [`history::INTERVAL`].
    async fn history_loop(&self) {
        let mut tick = tokio::time::interval(history::INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            for group in self.list() {
                group.sample_history();
            }
        }
    }

    /// Writes the `lastConsumptionTime` of every group whose time changed.
    fn persist_last_consumption(&self) {
        for group in self.list() {
            if let Some(ms) = group.last_consumption_to_persist() {
                if let Err(e) = LAST_CONSUMPTION.put(&self.db, &group.id, &ms) {
                    tracing::error!(group = %group.id, error = %e, "Storing the last consumption time failed");
                }
            }
        }
    }

    /// Stops the background tasks, makes every settlement durable and closes the store.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.persist_last_consumption();
        if let Err(e) = self.store.close().await {
            tracing::error!(error = %e, "Closing the queue store failed");
        }
    }
}
