//! A group's dead letters: listed, re-queued, purged, expired. The moves into them happen in
//! settlement (`rejected`) and dispatch (the last delivery attempt).

use std::sync::atomic::Ordering;

use super::Group;
use crate::message::now_ms;
use crate::store::{DeadLetter, StoreError, StoredMessage};

impl Group {
    /// Up to `max` dead letters from seq `from` on, with their decoded messages (`None` for a
    /// corrupt record).
    ///
    /// # Errors
    /// When the store fails.
    pub fn dead_letters(
        &self,
        from: u64,
        max: usize,
    ) -> Result<Vec<(DeadLetter, Option<StoredMessage>)>, StoreError> {
        let letters = self.store.read_dead(&self.id, from, max)?;
        Ok(letters
            .into_iter()
            .map(|d| {
                let m = StoredMessage::decode(&d.record);
                (d, m)
            })
            .collect())
    }

    /// Moves every dead letter back to the end of the queue; returns how many.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn requeue_dead_letters(&self) -> Result<u64, StoreError> {
        let seqs = self.store.requeue_dead(&self.id).await?;
        let n = seqs.len() as u64;
        {
            let mut s = self.lock();
            s.dead = s.dead.saturating_sub(n);
        }
        self.counters.requeued.fetch_add(n, Ordering::Relaxed);
        self.appended_seqs(&seqs);
        self.counters.appended.fetch_sub(n, Ordering::Relaxed);
        Ok(n)
    }

    /// Drops the dead letters (only those dead-lettered before `before_ms` when given);
    /// returns how many.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn purge_dead_letters(&self, before_ms: Option<u64>) -> Result<u64, StoreError> {
        let n = self.store.purge_dead(&self.id, before_ms).await?;
        let mut s = self.lock();
        s.dead = s.dead.saturating_sub(n);
        self.counters.purged.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }

    /// Drops dead letters older than the retention period (they are kept as long as messages).
    pub(in crate::groups) async fn expire_dead_letters(&self) {
        if self.lock().dead == 0 {
            return;
        }
        let cutoff = now_ms().saturating_sub(self.settings.retention.as_millis() as u64);
        let oldest = match self.store.read_dead(&self.id, 0, 1) {
            Ok(d) => d.first().map(|d| d.dead_since_ms),
            Err(e) => {
                tracing::error!(group = %self.id, error = %e, "Reading the dead letters failed");
                return;
            }
        };
        // Seq order is dead-letter order only roughly; the purge itself checks each one's time.
        if oldest.is_some_and(|t| t < cutoff) {
            match self.purge_dead_letters(Some(cutoff)).await {
                Ok(n) if n > 0 => {
                    tracing::info!(group = %self.id, count = n, "Dead letters expired after the retention period");
                }
                Ok(_) => {}
                Err(e) => tracing::error!(group = %self.id, error = %e, "Expiring dead letters failed"),
            }
        }
    }
}
