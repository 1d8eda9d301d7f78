//! Message ids: unique 64-bit numbers that never repeat, across restarts too.
//!
//! Ids are handed out from blocks whose end is committed to disk before the first id of the
//! block is used; a restart continues after the last committed block end. A crash skips the
//! unused rest of a block, which costs nothing but gaps.

use std::sync::{Arc, Mutex};

use redb::{ReadableTable, TableDefinition};

use super::{Db, StoreError};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_BLOCK: &str = "next_message_id_block";
/// One commit per 65,536 messages: about one fsync a second at full ingress speed.
const BLOCK: u64 = 1 << 16;

/// The id allocator.
#[derive(Debug)]
pub struct Ids {
    db: Arc<Db>,
    /// (next id, end of the reserved block).
    state: Mutex<(u64, u64)>,
}

impl Ids {
    /// An allocator over `db`; reserves nothing until the first id is asked for.
    pub fn new(db: Arc<Db>) -> Self {
        Self { db, state: Mutex::new((0, 0)) }
    }

    /// The next id.
    ///
    /// # Errors
    /// When a new block cannot be committed.
    pub fn next(&self) -> Result<u64, StoreError> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.0 >= state.1 {
            let start = self.reserve()?;
            *state = (start, start + BLOCK);
        }
        let id = state.0;
        state.0 += 1;
        Ok(id)
    }

    fn reserve(&self) -> Result<u64, StoreError> {
        let tx = self.db.redb().begin_write().map_err(|e| self.db.err(e))?;
        let start = {
            let mut meta = tx.open_table(META).map_err(|e| self.db.err(e))?;
            // Id 0 is never used, so "no id" can never be confused with a real one.
            let start = meta.get(NEXT_BLOCK).map_err(|e| self.db.err(e))?.map_or(1, |v| v.value());
            meta.insert(NEXT_BLOCK, start + BLOCK).map_err(|e| self.db.err(e))?;
            start
        };
        tx.commit().map_err(|e| self.db.err(e))?;
        Ok(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_repeat_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let first: Vec<u64> = {
            let ids = Ids::new(Db::open(dir.path()).unwrap());
            (0..10).map(|_| ids.next().unwrap()).collect()
        };
        let ids = Ids::new(Db::open(dir.path()).unwrap());
        let second = ids.next().unwrap();
        assert!(first.windows(2).all(|w| w[1] == w[0] + 1));
        assert!(second > *first.last().unwrap());
        assert!(!first.contains(&0));
    }
}
