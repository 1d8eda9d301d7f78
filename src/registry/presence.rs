//! Which devices are online, persisted, so that after a crash every device that was online
//! gets its offline status (see `ingress::restart`).

use serde::{Deserialize, Serialize};

use super::Registry;
use crate::store::{Collection, Encoding, StoreError};

/// Online devices: `productKey/deviceName` -> the session.
const ONLINE: Collection<Presence> = Collection::new("device_presence", Encoding::JsonBytes);

/// A device's online session as recorded when it came online.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Presence {
    /// Product key.
    pub product_key: String,
    /// Device name.
    pub device_name: String,
    /// The device's iotId (empty in records written before iotIds existed).
    #[serde(default)]
    pub iot_id: String,
    /// MQTT client id (without the signing parameters).
    pub client_id: String,
    /// Where it connected from (`ip:port`).
    pub peer: Option<String>,
    /// Epoch ms of its connection.
    pub online_since_ms: u64,
}

fn key(product_key: &str, device_name: &str) -> String {
    format!("{product_key}/{device_name}")
}

impl Registry {
    /// Records that a device is online (its online status is stored).
    ///
    /// # Errors
    /// Storage failures.
    pub fn record_online(&self, presence: &Presence) -> Result<(), StoreError> {
        ONLINE.put(&self.db, &key(&presence.product_key, &presence.device_name), presence)
    }

    /// Records that a device is offline (its offline status is stored).
    ///
    /// # Errors
    /// Storage failures.
    pub fn record_offline(&self, product_key: &str, device_name: &str) -> Result<(), StoreError> {
        ONLINE.remove(&self.db, &key(product_key, device_name))
    }

    /// The devices recorded online: at start-up, those online when the process stopped.
    ///
    /// # Errors
    /// Storage failures.
    pub fn recorded_online(&self) -> Result<Vec<Presence>, StoreError> {
        Ok(ONLINE.load(&self.db)?.into_iter().map(|(_, p)| p).collect())
    }
}
