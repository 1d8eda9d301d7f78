//! Message ids: unique 64-bit numbers that never repeat, across restarts too.
//!
//! Ids are handed out from blocks whose end is committed to disk before the first id of the
//! block is used; a restart continues after the last committed block end. A crash skips the
//! unused rest of a block, which costs nothing but gaps.
//!
//! Handing out an id is a few instructions under a lock that is never held across I/O. The next
//! block is reserved ahead of need, when half of the current one is used, by the store's writer
//! thread in its next commit (so it shares that commit's fsync). Only when a whole half block
//! (32,768 ids) is used up before that commit ends does a caller wait, asynchronously.

use std::sync::{Mutex, MutexGuard, PoisonError};

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::Notify;

use super::{Db, StoreError};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_BLOCK: &str = "next_message_id_block";
/// One commit per 65,536 messages: about one extra fsync a second at full ingress speed. In
/// cluster mode a block is as long, reserved from the cluster's state instead.
pub const BLOCK: u64 = 1 << 16;

/// The id allocator.
pub struct Ids {
    state: Mutex<State>,
    /// Woken when a block arrives or its reservation failed.
    refilled: Notify,
    /// Asks the writer thread to look at [`Ids::wants_block`] soon.
    wake: Box<dyn Fn() + Send + Sync>,
}

#[derive(Debug)]
struct State {
    /// The next id of the current block and the block's end.
    next: u64,
    end: u64,
    /// The start of the block reserved after the current one.
    spare: Option<u64>,
    /// A reservation was asked for and has not been answered.
    requested: bool,
    /// Why the last reservation failed, for callers waiting for it.
    failed: Option<String>,
}

impl std::fmt::Debug for Ids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ids").field("state", &*self.lock()).finish_non_exhaustive()
    }
}

impl Ids {
    /// An allocator whose first block starts at `start`; `wake` prompts whoever reserves blocks
    /// (the store's writer thread, or in cluster mode the task that reserves them from NATS).
    pub fn new(start: u64, wake: Box<dyn Fn() + Send + Sync>) -> Self {
        let state = State { next: start, end: start + BLOCK, spare: None, requested: false, failed: None };
        Self { state: Mutex::new(state), refilled: Notify::new(), wake }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next id if one is at hand; `None` while the next block is still being stored.
    /// Never blocks and never does I/O.
    pub fn try_next(&self) -> Option<u64> {
        let mut s = self.lock();
        if s.next >= s.end {
            let start = s.spare.take()?;
            (s.next, s.end) = (start, start + BLOCK);
        }
        let id = s.next;
        s.next += 1;
        let ask = s.spare.is_none() && !s.requested && s.end - s.next <= BLOCK / 2;
        if ask {
            s.requested = true;
        }
        drop(s);
        if ask {
            (self.wake)();
        }
        Some(id)
    }

    /// The next id, waiting for the writer thread when the reserved ids are used up.
    ///
    /// # Errors
    /// When the next block cannot be stored.
    pub async fn next(&self) -> Result<u64, StoreError> {
        loop {
            let refilled = self.refilled.notified();
            tokio::pin!(refilled);
            refilled.as_mut().enable();
            if let Some(id) = self.try_next() {
                return Ok(id);
            }
            {
                let mut s = self.lock();
                if let Some(e) = s.failed.take() {
                    return Err(StoreError::Commit(e));
                }
                if !s.requested {
                    s.requested = true;
                    drop(s);
                    (self.wake)();
                }
            }
            refilled.await;
        }
    }

    /// Whether the writer should reserve a block in its next commit.
    pub fn wants_block(&self) -> bool {
        let s = self.lock();
        s.requested && s.spare.is_none()
    }

    /// The writer's answer: a block starting at `start` is on disk, or reserving failed.
    pub fn reserved(&self, result: Result<u64, String>) {
        let mut s = self.lock();
        s.requested = false;
        match result {
            Ok(start) => {
                s.spare = Some(start);
                s.failed = None;
            }
            Err(e) => s.failed = Some(e),
        }
        drop(s);
        self.refilled.notify_waiters();
    }
}

/// Reserves the next block inside `tx`: it counts once `tx` is committed durably.
pub(super) fn reserve(db: &Db, tx: &WriteTransaction) -> Result<u64, StoreError> {
    let mut meta = tx.open_table(META).map_err(|e| db.err(e))?;
    // Id 0 is never used, so "no id" can never be confused with a real one.
    let start = meta.get(NEXT_BLOCK).map_err(|e| db.err(e))?.map_or(1, |v| v.value());
    meta.insert(NEXT_BLOCK, start + BLOCK).map_err(|e| db.err(e))?;
    Ok(start)
}

/// Reserves a block in a commit of its own (start-up, before the writer thread runs).
pub(super) fn reserve_now(db: &Db) -> Result<u64, StoreError> {
    let tx = db.redb()?.begin_write().map_err(|e| db.err(e))?;
    let start = reserve(db, &tx)?;
    tx.commit().map_err(|e| db.err(e))?;
    Ok(start)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[test]
    fn ids_come_from_the_block_and_ask_for_the_next_at_half() {
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        let ids = Ids::new(
            1,
            Box::new(move || {
                counter.fetch_add(1, Ordering::Relaxed);
            }),
        );
        for want in 1..=BLOCK / 2 {
            assert_eq!(ids.try_next(), Some(want));
        }
        assert_eq!(asked.load(Ordering::Relaxed), 1, "asked once, at half");
        assert!(ids.wants_block());
        for _ in BLOCK / 2 + 1..=BLOCK {
            assert!(ids.try_next().is_some());
        }
        assert_eq!(ids.try_next(), None, "the block is used up and no spare is stored yet");
        ids.reserved(Ok(BLOCK + 1));
        assert_eq!(ids.try_next(), Some(BLOCK + 1));
        assert_eq!(asked.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn next_waits_for_the_writer_and_reports_its_failure() {
        let ids = Arc::new(Ids::new(1, Box::new(|| {})));
        while ids.try_next().is_some() {}
        let waiting = tokio::spawn({
            let ids = ids.clone();
            async move { ids.next().await }
        });
        tokio::task::yield_now().await;
        ids.reserved(Err("disk full".into()));
        assert!(matches!(waiting.await.unwrap(), Err(StoreError::Commit(e)) if e == "disk full"));
        let waiting = tokio::spawn({
            let ids = ids.clone();
            async move { ids.next().await }
        });
        tokio::task::yield_now().await;
        ids.reserved(Ok(500_000));
        assert_eq!(waiting.await.unwrap().unwrap(), 500_000);
    }
}
