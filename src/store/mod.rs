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
use std::sync::Arc;

pub use collection::{Collection, Encoding};
pub use ids::Ids;
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
pub struct Db {
    path: PathBuf,
    db: redb::Database,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish()
    }
}

impl Db {
    /// Opens (or creates) the database in `dir`.
    ///
    /// # Errors
    /// When the directory or file cannot be created or opened, e.g. while another process holds it.
    pub fn open(dir: &Path) -> Result<Arc<Self>, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir { path: dir.to_path_buf(), source })?;
        let path = dir.join(DB_FILE);
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|source| StoreError::Open { path: path.clone(), source })?;
        Ok(Arc::new(Self { path, db }))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The redb handle.
    pub fn redb(&self) -> &redb::Database {
        &self.db
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
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
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
