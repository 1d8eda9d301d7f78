//! Delivery of alert notifications: HTTP POSTs of JSON to each rule's callback URL, off the
//! evaluators' path.
//!
//! Evaluators hand notifications over with a `try_send` into a bounded queue, so they never
//! wait. One dispatcher task sorts them to one worker per callback URL, each with a bounded
//! queue of its own: a slow or dead receiver delays only its own notifications, in order, and
//! never the data path, the evaluators or other receivers. What does not fit is dropped,
//! counted and logged. Failed POSTs are retried with exponential backoff.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::evaluator::Notify;

/// Notifications waiting for the dispatcher. Evaluators produce at most one per group and
/// period, so this absorbs a burst of every group of several rules at once.
const QUEUE: usize = 1024;
/// Notifications waiting for one callback URL (a receiver that is down for minutes while
/// groups keep firing and resolving loses the oldest news last, the newest first).
const PER_URL_QUEUE: usize = 64;
/// How often idle workers are stopped (their URL gets a new one when needed).
const SWEEP: Duration = Duration::from_secs(60);

/// When and how often a failed POST is tried again.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// Wait before the second try; doubled before each further one.
    pub first_backoff: Duration,
    /// Time limit of one POST, connection included.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    /// 4 tries, 0.5 s, 1 s and 2 s apart, 5 s each at most: a receiver restarting within a few
    /// seconds gets the notification; a dead one costs its own worker about 24 s per notification.
    fn default() -> Self {
        Self { attempts: 4, first_backoff: Duration::from_millis(500), timeout: Duration::from_secs(5) }
    }
}

/// The JSON a callback receives (CONTRACT.md), plus `ruleId`, `comparison` and `consecutive`
/// (periods in a row the condition held when the notification was made).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Rule name.
    pub rule: String,
    /// Rule id.
    pub rule_id: String,
    /// The consumer group.
    pub group_id: String,
    /// `accumulatedCount` or `consumptionRate`.
    pub metric: &'static str,
    /// `>`, `>=`, `<`, `<=`.
    pub comparison: &'static str,
    /// The metric's value in the period that made the notification.
    #[serde(serialize_with = "number")]
    pub value: f64,
    /// The rule's threshold.
    #[serde(serialize_with = "number")]
    pub threshold: f64,
    /// `firing` or `resolved`.
    pub state: Notify,
    /// Consecutive periods the condition held (0 for `resolved`).
    pub consecutive: u32,
    /// Epoch milliseconds of the evaluation.
    pub time: u64,
}

/// Whole numbers as JSON integers (counts read better as `5` than `5.0`).
pub(crate) fn number<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

/// How a notification's delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationState {
    /// Waiting or being tried.
    Queued,
    /// A 2xx answer.
    Sent,
    /// Every try failed, or the receiver refused it (4xx).
    Failed,
    /// A queue was full, or the server shut down first.
    Dropped,
}

/// Told how each notification's delivery ended (the rule's history and counters).
pub trait Report: Send + Sync + 'static {
    /// Delivery `seq` ended as `how` after `attempts` POSTs.
    fn delivered(&self, seq: u64, how: NotificationState, attempts: u32);
    /// A POST of `seq` failed and will be tried again.
    fn retrying(&self, seq: u64);
}

/// One notification to deliver.
pub struct Job {
    /// Where to.
    pub url: Arc<str>,
    /// What.
    pub notification: Notification,
    /// Its number in the rule's history.
    pub seq: u64,
    /// Who to tell how it went.
    pub report: Arc<dyn Report>,
}

/// Counters of every delivery, for metrics.
#[derive(Debug, Default)]
pub struct NotifierStats {
    /// Notifications accepted into the queue.
    pub queued: AtomicU64,
    /// Delivered (2xx).
    pub sent: AtomicU64,
    /// Given up after every try, or refused with a 4xx.
    pub failed: AtomicU64,
    /// POSTs tried again after a failure.
    pub retries: AtomicU64,
    /// Dropped: a queue was full or the server shut down.
    pub dropped: AtomicU64,
}

/// The handle evaluators send through; cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Job>,
    stats: Arc<NotifierStats>,
}

impl Notifier {
    /// Starts the dispatcher on `tasks`; it and its workers stop with `stop`.
    pub fn start(policy: RetryPolicy, stop: CancellationToken, tasks: &TaskTracker) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(NotifierStats::default());
        let builder = reqwest::Client::builder()
            .timeout(policy.timeout)
            .user_agent(concat!("iotpipe/", env!("CARGO_PKG_VERSION")));
        let client = match builder.build() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "Cannot build the alert HTTP client; using a default one");
                reqwest::Client::new()
            }
        };
        let dispatcher = Dispatcher {
            workers: HashMap::new(),
            client,
            policy,
            stats: stats.clone(),
            stop,
            tasks: tasks.clone(),
        };
        tasks.spawn(dispatcher.run(rx));
        Self { tx, stats }
    }

    /// Queues `job` without waiting; a full queue drops it (counted, logged, reported).
    pub fn send(&self, job: Job) {
        match self.tx.try_send(job) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Relaxed);
            }
            Err(e) => {
                let job = e.into_inner();
                drop_job(&self.stats, &job, "the notification queue is full");
            }
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<NotifierStats> {
        &self.stats
    }
}

fn drop_job(stats: &NotifierStats, job: &Job, why: &str) {
    stats.dropped.fetch_add(1, Relaxed);
    job.report.delivered(job.seq, NotificationState::Dropped, 0);
    let n = &job.notification;
    tracing::warn!(rule = %n.rule, group = %n.group_id, url = %redact(&job.url), state = ?n.state, reason = why, "Dropped an alert notification");
}

struct Worker {
    tx: mpsc::Sender<Job>,
    /// Jobs sent to the worker and not finished; only the dispatcher adds.
    busy: Arc<AtomicUsize>,
}

struct Dispatcher {
    workers: HashMap<Arc<str>, Worker>,
    client: reqwest::Client,
    policy: RetryPolicy,
    stats: Arc<NotifierStats>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Dispatcher {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut sweep = tokio::time::interval(SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.stop.cancelled() => break,
                _ = sweep.tick() => {
                    // Dropping an idle worker's sender ends it; nothing of it is in flight.
                    self.workers.retain(|_, w| w.busy.load(Relaxed) > 0);
                }
                job = rx.recv() => match job {
                    Some(job) => self.dispatch(job),
                    None => break,
                },
            }
        }
        rx.close();
        while let Ok(job) = rx.try_recv() {
            drop_job(&self.stats, &job, "the server is shutting down");
        }
    }

    fn dispatch(&mut self, job: Job) {
        let worker = self.workers.entry(job.url.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(PER_URL_QUEUE);
            let busy = Arc::new(AtomicUsize::new(0));
            let w = UrlWorker {
                client: self.client.clone(),
                policy: self.policy,
                stats: self.stats.clone(),
                stop: self.stop.clone(),
                busy: busy.clone(),
            };
            self.tasks.spawn(w.run(rx));
            Worker { tx, busy }
        });
        worker.busy.fetch_add(1, Relaxed);
        if let Err(e) = worker.tx.try_send(job) {
            worker.busy.fetch_sub(1, Relaxed);
            let job = match e {
                mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
            };
            drop_job(&self.stats, &job, "the callback URL's queue is full");
        }
    }
}

struct UrlWorker {
    client: reqwest::Client,
    policy: RetryPolicy,
    stats: Arc<NotifierStats>,
    stop: CancellationToken,
    busy: Arc<AtomicUsize>,
}

/// Why one POST failed, and whether trying again may help.
struct Failure {
    what: String,
    retry: bool,
}

impl UrlWorker {
    async fn run(self, mut rx: mpsc::Receiver<Job>) {
        loop {
            let job = tokio::select! {
                () = self.stop.cancelled() => break,
                job = rx.recv() => match job {
                    Some(job) => job,
                    None => return,
                },
            };
            let (how, attempts) = tokio::select! {
                () = self.stop.cancelled() => (NotificationState::Dropped, 0),
                outcome = self.deliver(&job) => outcome,
            };
            match how {
                NotificationState::Sent => self.stats.sent.fetch_add(1, Relaxed),
                NotificationState::Failed => self.stats.failed.fetch_add(1, Relaxed),
                NotificationState::Dropped | NotificationState::Queued => {
                    self.stats.dropped.fetch_add(1, Relaxed)
                }
            };
            job.report.delivered(job.seq, how, attempts);
            self.busy.fetch_sub(1, Relaxed);
        }
        rx.close();
        while let Ok(job) = rx.try_recv() {
            drop_job(&self.stats, &job, "the server is shutting down");
        }
    }

    /// POSTs until a 2xx, a refusal, or the last try.
    async fn deliver(&self, job: &Job) -> (NotificationState, u32) {
        let n = &job.notification;
        let mut backoff = self.policy.first_backoff;
        for attempt in 1..=self.policy.attempts {
            match self.post(job).await {
                Ok(()) => {
                    tracing::debug!(rule = %n.rule, group = %n.group_id, attempt, "Alert notification delivered");
                    return (NotificationState::Sent, attempt);
                }
                Err(f) if f.retry && attempt < self.policy.attempts => {
                    self.stats.retries.fetch_add(1, Relaxed);
                    job.report.retrying(job.seq);
                    tracing::warn!(rule = %n.rule, group = %n.group_id, url = %redact(&job.url), attempt, error = %f.what, retry_in_ms = backoff.as_millis() as u64, "Alert callback failed; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                }
                Err(f) => {
                    tracing::error!(rule = %n.rule, group = %n.group_id, url = %redact(&job.url), attempt, error = %f.what, "Alert callback failed; giving up");
                    return (NotificationState::Failed, attempt);
                }
            }
        }
        (NotificationState::Failed, self.policy.attempts)
    }

    async fn post(&self, job: &Job) -> Result<(), Failure> {
        let response = self
            .client
            .post(&*job.url)
            .json(&job.notification)
            .send()
            .await
            .map_err(|e| Failure { what: error_chain(&e.without_url()), retry: true })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // A 4xx other than timeout and rate limiting means the receiver will not take it.
        let retry = status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429;
        Err(Failure { what: format!("HTTP {status}"), retry })
    }
}

/// The callback URL as logs show it: without user, password and query, which may carry secrets.
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "<invalid url>".to_string(),
    }
}

/// `error sending request: … : Connection refused (os error 111)`: reqwest's top-level message
/// alone hides the cause.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_urls_carry_no_secrets() {
        assert_eq!(
            redact("https://ops:s3cret@alerts.example:8443/hook?token=abc"),
            "https://alerts.example:8443/hook"
        );
        assert_eq!(redact("http://127.0.0.1:9000/a"), "http://127.0.0.1:9000/a");
    }

    #[test]
    fn notification_json() {
        let n = Notification {
            rule: "r".into(),
            rule_id: "a1".into(),
            group_id: "DEFAULT_GROUP".into(),
            metric: "accumulatedCount",
            comparison: ">",
            value: 5.0,
            threshold: 2.5,
            state: Notify::Firing,
            consecutive: 3,
            time: 1_700_000_000_000,
        };
        assert_eq!(
            serde_json::to_value(&n).unwrap(),
            serde_json::json!({"rule": "r", "ruleId": "a1", "groupId": "DEFAULT_GROUP",
                "metric": "accumulatedCount", "comparison": ">", "value": 5, "threshold": 2.5,
                "state": "firing", "consecutive": 3, "time": 1_700_000_000_000u64})
        );
    }
}
