//! Failed actions, retried with backoff, then handed to the rule's error action.
//!
//! A failure that can pass (a consumer group that does not exist yet, a full MQTT router) is
//! tried again after 100 ms, 400 ms and 1.6 s. A failure that cannot (a republish topic that
//! renders to a wildcard) skips the retries. Either way, when the action has not succeeded, the
//! rule's error action receives a record and the rule's counters say what happened: never a
//! silent drop.
//!
//! Retries live in memory: a crash during the 2.1 s of retries loses them (the message itself
//! is stored for the subscriptions and the other actions before its PUBACK). At shutdown each
//! pending retry makes its last attempt at once and then goes to the error action.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{error_action, Destinations, Failure};

/// Waits before each retry: three retries over 2.1 s cover a group created a moment late or a
/// router busy for a burst, without holding failures for long.
const BACKOFF: [Duration; 3] =
    [Duration::from_millis(100), Duration::from_millis(400), Duration::from_millis(1600)];
/// Failures retried at once; beyond it a failure is counted as dropped and logged. A storm of
/// failures then costs bounded memory (each holds one message and one result).
const MAX_PENDING: usize = 10_000;

/// The retry queue.
pub(super) struct Retries {
    to: Arc<Destinations>,
    tracker: TaskTracker,
    stop: CancellationToken,
    permits: Arc<Semaphore>,
}

impl Retries {
    pub(super) fn new(to: Arc<Destinations>) -> Self {
        Self {
            to,
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
            permits: Arc::new(Semaphore::new(MAX_PENDING)),
        }
    }

    /// Takes a failure: retries it in the background, then the error action if needed.
    pub(super) fn failed(&self, failure: Failure) {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            failure.rule.metrics.dropped();
            tracing::error!(
                rule = %failure.rule.name,
                action = %failure.action,
                error = %failure.failed.error,
                pending = MAX_PENDING,
                "Action failed and too many retries are pending; dropped"
            );
            return;
        };
        let (to, stop) = (self.to.clone(), self.stop.clone());
        self.tracker.spawn(async move {
            retry(&to, &stop, failure).await;
            drop(permit);
        });
    }

    /// Makes every pending retry try once more now, and waits for them to finish.
    pub(super) async fn finish(self) {
        self.tracker.close();
        self.stop.cancel();
        self.tracker.wait().await;
    }
}

async fn retry(to: &Destinations, stop: &CancellationToken, mut f: Failure) {
    let mut attempts = 1u32;
    if let Some(target) = f.target.as_ref().filter(|_| f.failed.retriable) {
        for delay in BACKOFF {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => {}
            }
            attempts += 1;
            f.rule.metrics.retried();
            match to.send(target, &f.message, f.payload.clone()).await {
                Ok(()) => {
                    f.rule.metrics.action(true);
                    tracing::info!(rule = %f.rule.name, action = %f.action, attempts, "Action succeeded on a retry");
                    return;
                }
                Err(failed) => f.failed = failed,
            }
            if stop.is_cancelled() {
                break;
            }
        }
    }
    f.rule.metrics.action(false);
    tracing::warn!(rule = %f.rule.name, action = %f.action, error = %f.failed.error, attempts, "Action failed");
    error_action::run(to, &f, attempts).await;
}
