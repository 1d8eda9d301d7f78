//! Alert rules created through the API, kept in the database: id -> the rule's JSON body.

use redb::{ReadableTable, TableDefinition};

use super::model::AlertRuleBody;
use crate::store::{Db, StoreError};

const RULES: TableDefinition<&str, &[u8]> = TableDefinition::new("alert_rules");

/// Every stored rule: (id, body). Unreadable records are logged and skipped.
pub(super) fn load(db: &Db) -> Result<Vec<(String, AlertRuleBody)>, StoreError> {
    let Some(table) = db.read_table(RULES)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in table.iter().map_err(|e| db.err(e))? {
        let (k, v) = entry.map_err(|e| db.err(e))?;
        match serde_json::from_slice(v.value()) {
            Ok(body) => out.push((k.value().to_string(), body)),
            Err(e) => {
                tracing::error!(rule_id = %k.value(), error = %e, "Skipping an unreadable alert rule record")
            }
        }
    }
    Ok(out)
}

/// Stores (`Some`) or forgets (`None`) a rule.
pub(super) fn put(db: &Db, id: &str, body: Option<&AlertRuleBody>) -> Result<(), StoreError> {
    let tx = db.redb().begin_write().map_err(|e| db.err(e))?;
    {
        let mut table = tx.open_table(RULES).map_err(|e| db.err(e))?;
        match body {
            Some(b) => {
                // Serialising plain strings and numbers cannot fail.
                let bytes = serde_json::to_vec(b).unwrap_or_default();
                drop(table.insert(id, bytes.as_slice()).map_err(|e| db.err(e))?);
            }
            None => drop(table.remove(id).map_err(|e| db.err(e))?),
        }
    }
    tx.commit().map_err(|e| db.err(e))
}
