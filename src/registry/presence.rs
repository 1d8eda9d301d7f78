//! Which devices are online, persisted, so that after a crash every device that was online
//! gets its offline status (see `ingress::restart`).

use std::collections::HashMap;
use std::sync::Mutex;

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

/// A device's last session seen by this process: what the device list shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Seen {
    /// Connected now.
    pub online: bool,
    /// The last session's MQTT client id (without the signing parameters).
    pub client_id: String,
    /// Where the last session connected from (`ip:port`).
    pub peer: Option<String>,
    /// Epoch ms of the last connection.
    pub last_online_time: u64,
}

/// `productKey/deviceName` -> [`Seen`]; in memory only: after a restart a device that has not
/// connected since shows no last session.
#[derive(Debug, Default)]
pub(super) struct SeenMap(Mutex<HashMap<String, Seen>>);

impl SeenMap {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
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
        let seen = Seen {
            online: true,
            client_id: presence.client_id.clone(),
            peer: presence.peer.clone(),
            last_online_time: presence.online_since_ms,
        };
        self.seen.lock().insert(key(&presence.product_key, &presence.device_name), seen);
        ONLINE.put(&self.db, &key(&presence.product_key, &presence.device_name), presence)
    }

    /// Records that a device is offline (its offline status is stored).
    ///
    /// # Errors
    /// Storage failures.
    pub fn record_offline(&self, product_key: &str, device_name: &str) -> Result<(), StoreError> {
        if let Some(seen) = self.seen.lock().get_mut(&key(product_key, device_name)) {
            seen.online = false;
        }
        ONLINE.remove(&self.db, &key(product_key, device_name))
    }

    /// The device's last session since this process started.
    pub fn seen(&self, product_key: &str, device_name: &str) -> Option<Seen> {
        self.seen.lock().get(&key(product_key, device_name)).cloned()
    }

    /// The devices recorded online: at start-up, those online when the process stopped.
    ///
    /// # Errors
    /// Storage failures.
    pub fn recorded_online(&self) -> Result<Vec<Presence>, StoreError> {
        Ok(ONLINE.load(&self.db)?.into_iter().map(|(_, p)| p).collect())
    }
}
