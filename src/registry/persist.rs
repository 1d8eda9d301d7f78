//! Registry changes in the database: one record per device, `None` for a deleted one.

use std::collections::BTreeMap;

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::Device;
use crate::store::{Db, StoreError};

/// Key `productKey/deviceName` (neither may contain `/`), value a JSON [`Record`].
const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("registry_devices");

#[derive(Serialize, Deserialize)]
struct Record {
    secret: String,
    enabled: bool,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    deleted: bool,
}

type Key = (String, String);

pub(super) fn load(db: &Db) -> Result<Vec<(Key, Option<Device>)>, StoreError> {
    let Some(table) = db.read_table(DEVICES)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in table.iter().map_err(|e| db.err(e))? {
        let (k, v) = entry.map_err(|e| db.err(e))?;
        let Some((pk, dn)) = k.value().split_once('/') else {
            continue;
        };
        let key = (pk.to_string(), dn.to_string());
        let record: Record = match serde_json::from_slice(v.value()) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(device = %k.value(), error = %e, "Skipping an unreadable registry record");
                continue;
            }
        };
        let device = (!record.deleted).then(|| Device {
            product_key: key.0.clone(),
            name: key.1.clone(),
            secret: record.secret,
            enabled: record.enabled,
            tags: record.tags,
        });
        out.push((key, device));
    }
    Ok(out)
}

pub(super) fn put(db: &Db, key: &Key, device: Option<&Device>) -> Result<(), StoreError> {
    let record = match device {
        Some(d) => {
            Record { secret: d.secret.clone(), enabled: d.enabled, tags: d.tags.clone(), deleted: false }
        }
        None => Record { secret: String::new(), enabled: false, tags: BTreeMap::new(), deleted: true },
    };
    let bytes = serde_json::to_vec(&record).unwrap_or_default();
    let tx = db.redb().begin_write().map_err(|e| db.err(e))?;
    {
        let mut table = tx.open_table(DEVICES).map_err(|e| db.err(e))?;
        table.insert(format!("{}/{}", key.0, key.1).as_str(), bytes.as_slice()).map_err(|e| db.err(e))?;
    }
    tx.commit().map_err(|e| db.err(e))
}
