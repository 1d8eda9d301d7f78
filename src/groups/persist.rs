//! Consumer groups created at run time, kept in the database: id -> name.

use redb::{ReadableTable, TableDefinition};

use crate::store::{Db, StoreError};

const GROUPS: TableDefinition<&str, &str> = TableDefinition::new("consumer_groups");

/// Every stored group: (id, name).
pub(super) fn load(db: &Db) -> Result<Vec<(String, String)>, StoreError> {
    let Some(table) = db.read_table(GROUPS)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in table.iter().map_err(|e| db.err(e))? {
        let (k, v) = entry.map_err(|e| db.err(e))?;
        out.push((k.value().to_string(), v.value().to_string()));
    }
    Ok(out)
}

/// Stores (`Some(name)`) or forgets (`None`) a group.
pub(super) fn put(db: &Db, id: &str, name: Option<&str>) -> Result<(), StoreError> {
    let tx = db.redb().begin_write().map_err(|e| db.err(e))?;
    {
        let mut table = tx.open_table(GROUPS).map_err(|e| db.err(e))?;
        match name {
            Some(n) => drop(table.insert(id, n).map_err(|e| db.err(e))?),
            None => drop(table.remove(id).map_err(|e| db.err(e))?),
        }
    }
    tx.commit().map_err(|e| db.err(e))
}
