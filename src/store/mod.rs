//! Durable state: one redb database in the storage directory.
//!
//! It holds message-id blocks, the consumer-group queues (`queue.rs`, behind the [`QueueStore`]
//! trait) and what the API changes at run time (`collection.rs`: groups, alert rules, registry
//! changes, subscriptions).

mod collection;
pub mod config;
mod ids;
mod queue;
mod record;

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

pub use collection::{Collection, Encoding};
pub use ids::{Ids, BLOCK as ID_BLOCK};
pub use queue::{Append, DeadLetter, Extent, QueueStore, RedbQueue, StoreStats};
pub use record::StoredMessage;

/// redb's page cache. Queues are read near their head and written at their tail, so a modest
/// cache serves them; redb's default (1 GiB) would let a large backlog inflate the RSS.
const CACHE_BYTES: usize = 64 << 20;

/// File name of the database inside the storage directory.
pub const DB_FILE: &str = "iotpipe.redb";

/// Storage failures. The message names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage directory could not be created.
    #[error("cannot create storage directory {path}: {source}")]
    Dir {
        /// Directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The database could not be opened (also: another iotpipe uses it).
    #[error("cannot open {path}: {source}")]
    Open {
        /// Database file.
        path: PathBuf,
        /// Cause.
        source: redb::DatabaseError,
    },
    /// The store has shut down.
    #[error("the store is shut down")]
    Closed,
    /// A commit failed; nothing of it is stored.
    #[error("commit failed: {0}")]
    Commit(String),
    /// The database is being reopened after a write failed (e.g. the disk is full); nothing
    /// can be read or written until that succeeds.
    #[error("{path} is unavailable until it can be reopened after a failed write")]
    Unavailable {
        /// Database file.
        path: PathBuf,
    },
    /// Cluster mode: JetStream did not store every copy within the append's retries (20 s);
    /// nothing of the append counts as stored.
    #[error("the cluster did not store the copies: {0}")]
    NotReplicated(String),
    /// A record could not be encoded for its table; nothing is stored.
    #[error("cannot encode record {key} of table {table}: {source}")]
    Encode {
        /// Table.
        table: &'static str,
        /// Key of the record.
        key: String,
        /// Cause.
        source: serde_json::Error,
    },
    /// A read or write failed.
    #[error("storage error in {path}: {source}")]
    Io {
        /// Database file.
        path: PathBuf,
        /// Cause.
        source: Box<redb::Error>,
    },
}

/// The open database.
///
/// After a failed write (a full disk, an I/O error) redb refuses every later operation with
/// `PreviousIo` until the database is closed and opened again, so the handle can be swapped:
/// [`Db::reopen`] does that, and the queue writer calls it whenever a commit fails, until it
/// succeeds (once space is freed).
pub struct Db {
    path: PathBuf,
    db: RwLock<Option<Arc<redb::Database>>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish()
    }
}

/// How long a reopen waits for the old handle's last reader to finish: readers hold it for one
/// short read (a few pages), so this is generous.
const REOPEN_WAIT: Duration = Duration::from_secs(5);

impl Db {
    /// Opens (or creates) the database in `dir`.
    ///
    /// # Errors
    /// When the directory or file cannot be created or opened, e.g. while another process holds it.
    pub fn open(dir: &Path) -> Result<Arc<Self>, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir { path: dir.to_path_buf(), source })?;
        let path = dir.join(DB_FILE);
        let db = open_file(&path)?;
        Ok(Arc::new(Self { path, db: RwLock::new(Some(Arc::new(db))) }))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The redb handle.
    ///
    /// # Errors
    /// `Unavailable` while a reopen has not succeeded.
    pub fn redb(&self) -> Result<Arc<redb::Database>, StoreError> {
        let slot = self.db.read().unwrap_or_else(PoisonError::into_inner);
        slot.clone().ok_or_else(|| StoreError::Unavailable { path: self.path.clone() })
    }

    /// Closes the database and opens it again, which clears redb's failed state after a write
    /// error. Until it succeeds every operation fails with `Unavailable`; call it again later
    /// (it fails while the disk has no room for redb's recovery, for instance).
    ///
    /// # Errors
    /// When the file cannot be opened again.
    pub fn reopen(&self) -> Result<(), StoreError> {
        let old = self.db.write().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(old) = old {
            // Readers clone the handle for one read; the file lock goes with the last clone.
            let deadline = Instant::now() + REOPEN_WAIT;
            let mut old = old;
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(still) if Instant::now() < deadline => {
                        old = still;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(still) => {
                        *self.db.write().unwrap_or_else(PoisonError::into_inner) = Some(still);
                        return Err(StoreError::Unavailable { path: self.path.clone() });
                    }
                }
            }
        }
        // A read transaction begun on the old handle just before it was taken may still hold
        // the file for a moment.
        let deadline = Instant::now() + REOPEN_WAIT;
        let db = loop {
            match open_file(&self.path) {
                Ok(db) => break db,
                Err(StoreError::Open { source: redb::DatabaseError::DatabaseAlreadyOpen, .. })
                    if Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e),
            }
        };
        *self.db.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(db));
        Ok(())
    }

    /// A snapshot of table `def` for reading, or `None` when nothing was ever written to it.
    ///
    /// # Errors
    /// Storage failures.
    pub fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: redb::TableDefinition<K, V>,
    ) -> Result<Option<redb::ReadOnlyTable<K, V>>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.redb()?.begin_read().map_err(|e| self.err(e))?;
        match tx.open_table(def) {
            Ok(t) => Ok(Some(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Wraps a redb error with this database's path.
    pub fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Io { path: self.path.clone(), source: Box::new(e.into()) }
    }
}

fn open_file(path: &Path) -> Result<redb::Database, StoreError> {
    redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|source| StoreError::Open { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("t");

    #[test]
    fn reopen_keeps_the_data_and_waits_for_a_reader_to_finish() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let tx = db.redb().unwrap().begin_write().unwrap();
        tx.open_table(T).unwrap().insert("a", 1).unwrap();
        tx.commit().unwrap();
        // A reader holds a snapshot (and with it the file) while the reopen starts.
        let table = db.read_table(T).unwrap().unwrap();
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(table);
        });
        db.reopen().unwrap();
        reader.join().unwrap();
        let table = db.read_table(T).unwrap().unwrap();
        assert_eq!(redb::ReadableTable::get(&table, "a").unwrap().unwrap().value(), 1);
    }
}
