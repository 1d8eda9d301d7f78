//! The NATS side of a node, for `/metrics`: PubAck latency, publishes and retries, appends
//! given up, and the connection (docs/metrics.md, "Cluster").
//!
//! Written with relaxed atomics on the append path (a few adds per copy, no lock, no
//! allocation) and by the connection's event callback; read at scrape time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

use async_nats::connection::State;
use async_nats::{Client, Event};

use crate::histogram::Histogram;

/// Counters of the NATS connection and the JetStream publishes of one node.
#[derive(Debug, Default)]
pub struct NatsStats {
    /// From a copy's publish to its PubAck (stored copies only).
    pub puback: Histogram,
    /// Copies published, retries included.
    pub publishes: AtomicU64,
    /// Copies published again after a failure or a timeout (same `Nats-Msg-Id`).
    pub retries: AtomicU64,
    /// Appends given up after their 20 s of retries (the devices got no PUBACK).
    pub failed_appends: AtomicU64,
    /// Connections made, the first included.
    pub connects: AtomicU64,
    /// Connections lost.
    pub disconnects: AtomicU64,
    /// The connection, for its current state.
    client: OnceLock<Client>,
}

impl NatsStats {
    /// Counts a connection event (the connection's event callback).
    pub fn event(&self, event: &Event) {
        match event {
            Event::Connected => {
                self.connects.fetch_add(1, Relaxed);
            }
            Event::Disconnected => {
                self.disconnects.fetch_add(1, Relaxed);
            }
            _ => {}
        }
    }

    /// Reconnections: connections made after the first.
    pub fn reconnects(&self) -> u64 {
        self.connects.load(Relaxed).saturating_sub(1)
    }

    /// Follows `client`'s state from now on.
    pub fn watch(&self, client: &Client) {
        let _ = self.client.set(client.clone());
    }

    /// Whether the connection is up now.
    pub fn connected(&self) -> bool {
        self.client.get().is_some_and(|c| c.connection_state() == State::Connected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_are_connections_after_the_first() {
        let s = NatsStats::default();
        assert_eq!(s.reconnects(), 0);
        s.event(&Event::Connected);
        s.event(&Event::Disconnected);
        s.event(&Event::Connected);
        assert_eq!((s.reconnects(), s.disconnects.load(Relaxed)), (1, 1));
        assert!(!s.connected());
    }
}
