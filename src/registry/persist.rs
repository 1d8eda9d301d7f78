//! Registry changes in the database: one record per device, a tombstone for a deleted one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Device;
use crate::store::{Collection, Db, Encoding, StoreError};

/// Key `productKey/deviceName` (neither may contain `/`), value a JSON [`Record`].
const DEVICES: Collection<Record> = Collection::new("registry_devices", Encoding::JsonBytes);

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

/// Every stored change: the device, or `None` for one deleted.
pub(super) fn load(db: &Db) -> Result<Vec<(Key, Option<Device>)>, StoreError> {
    let mut out = Vec::new();
    for (key, record) in DEVICES.load(db)? {
        let Some((pk, dn)) = key.split_once('/') else {
            continue;
        };
        let key = (pk.to_string(), dn.to_string());
        let device = (!record.deleted).then(|| Device {
            product_key: key.0.clone(),
            name: key.1.clone(),
            // Given by the registry from its own table once every record is read.
            iot_id: String::new(),
            secret: record.secret,
            enabled: record.enabled,
            tags: record.tags,
        });
        out.push((key, device));
    }
    Ok(out)
}

/// Stores the device, or a tombstone (`None`) that outlives the configuration file's entry.
pub(super) fn put(db: &Db, key: &Key, device: Option<&Device>) -> Result<(), StoreError> {
    let record = match device {
        Some(d) => {
            Record { secret: d.secret.clone(), enabled: d.enabled, tags: d.tags.clone(), deleted: false }
        }
        None => Record { secret: String::new(), enabled: false, tags: BTreeMap::new(), deleted: true },
    };
    DEVICES.put(db, &format!("{}/{}", key.0, key.1), &record)
}
