//! Each device's `iotId`: a random id given when the device first appears (in the configuration
//! file or through the API), stored, and the same for as long as the device exists.
//!
//! Ids live in their own table, not in the device records, because a device record wins over the
//! configuration file at start-up: storing one for every configured device would freeze the file's
//! entries. A device that is deleted loses its id; a device created again under the same name gets
//! a new one, as on the platform, where the iotId names the device, not its name.

use std::collections::HashMap;

use rand::distr::{Alphanumeric, SampleString};

use crate::store::{Collection, Db, Encoding, StoreError};

/// Key `productKey/deviceName`, value the iotId.
const IOT_IDS: Collection<String> = Collection::new("registry_iot_ids", Encoding::Text);

/// Characters of an iotId: the platform's ids have 26 (`4z819VQHk6VSLmmBJfrf00107e`); random
/// letters and digits make it unguessable and unique in practice (62^26).
const IOT_ID_CHARS: usize = 26;

/// The key of a device.
pub(super) fn key(product_key: &str, name: &str) -> String {
    format!("{product_key}/{name}")
}

/// A new random iotId.
pub(super) fn generate() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), IOT_ID_CHARS)
}

/// Every stored iotId by `productKey/deviceName`.
pub(super) fn load(db: &Db) -> Result<HashMap<String, String>, StoreError> {
    Ok(IOT_IDS.load(db)?.into_iter().collect())
}

/// Stores `(key, iotId)` pairs of devices that had none, in one transaction.
pub(super) fn put_all(db: &Db, new: &[(String, String)]) -> Result<(), StoreError> {
    IOT_IDS.put_many(db, new)
}

/// Stores one device's id.
pub(super) fn put(db: &Db, product_key: &str, name: &str, iot_id: &str) -> Result<(), StoreError> {
    IOT_IDS.put(db, &key(product_key, name), &iot_id.to_string())
}

/// Forgets a deleted device's id.
pub(super) fn remove(db: &Db, product_key: &str, name: &str) -> Result<(), StoreError> {
    IOT_IDS.remove(db, &key(product_key, name))
}
