//! Where the evaluator reads a group's figures in cluster mode.
//!
//! On one node the evaluator reads `groups::Group::status()` directly. In cluster mode the
//! embedded groups hold no messages (the queues are on JetStream), so the application sets a
//! [`GroupFigures`] once at start-up (`Alerts::read_figures_from`) that answers from the
//! cluster's queues; the alerts module only knows this trait.

use futures::future::BoxFuture;

/// The figures of one group that alert rules can watch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Stored and not yet consumed (`accumulatedCount`).
    pub accumulated: u64,
    /// Accepts in the last minute (`consumptionRate`, messages/min).
    pub consumption_rate_per_minute: u64,
}

/// A source of group figures other than this node's embedded groups.
pub trait GroupFigures: Send + Sync + 'static {
    /// The group's figures now; `Err` says why they could not be read (the group is then
    /// skipped for this period, its count unchanged).
    fn figures<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<Figures, String>>;
}
