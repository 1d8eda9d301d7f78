//! Devices in the `{name}_devices` bucket: key `<productKey>.<deviceName>` (the name escaped
//! into the characters keys allow), value the device with its secret and iotId.
//!
//! The bucket holds device secrets: whoever can read the NATS account can sign in as any
//! device (docs/cluster.md says so). Device administration writes here first (create, or
//! update and delete with the revision read) and applies its write at once; every node's watch
//! applies every change to its registry and disconnects a device disabled or deleted elsewhere.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use async_nats::jetstream::kv::{Operation, Store, UpdateErrorKind};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};

use super::watch::Apply;
use crate::registry::shared::{Change, SharedDevices};
use crate::registry::{Device, ProductConfig, Registry, RegistryError};

/// Conflicting writes a change survives before it gives up.
const ATTEMPTS: usize = 10;

/// Disconnects a device connected to this node (it was disabled or deleted on another node).
pub type Kick = Arc<dyn Fn(String, String) -> BoxFuture<'static, ()> + Send + Sync>;

/// A device as the bucket holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    iot_id: String,
    secret: String,
    enabled: bool,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// The bucket key of a device: `<productKey>.<escaped deviceName>` (see [`super::escape`]:
/// `@`, `:` and `.`, which device names may hold, never reach the subject).
pub fn key(product_key: &str, name: &str) -> String {
    format!("{product_key}.{}", super::escape(name))
}

/// The product key and device name of a bucket key.
pub fn parse_key(key: &str) -> Option<(String, String)> {
    let (product, escaped) = key.split_once('.')?;
    Some((product.to_string(), super::unescape(escaped)?))
}

fn encode(d: &Device) -> bytes::Bytes {
    let r = Record {
        iot_id: d.iot_id.clone(),
        secret: d.secret.clone(),
        enabled: d.enabled,
        tags: d.tags.clone(),
    };
    serde_json::to_vec(&r).unwrap_or_default().into()
}

fn decode(product_key: &str, name: &str, value: &[u8]) -> Option<Device> {
    match serde_json::from_slice::<Record>(value) {
        Ok(r) => Some(Device {
            product_key: product_key.to_string(),
            name: name.to_string(),
            iot_id: r.iot_id,
            secret: r.secret,
            enabled: r.enabled,
            tags: r.tags,
        }),
        Err(e) => {
            tracing::error!(product = %product_key, device = %name, error = %e, "A device in the cluster's state is unreadable; ignored");
            None
        }
    }
}

/// The devices' bucket, seen from this node.
pub struct SharedDevicesKv {
    kv: Store,
    /// Weak: the registry holds this (devices' tag reports go through it).
    registry: Weak<Registry>,
    /// Dropped by [`Self::forget_kick`] at shutdown: it holds the ingress, which holds the
    /// registry, which holds this.
    kick: Mutex<Option<Kick>>,
}

impl std::fmt::Debug for SharedDevicesKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedDevicesKv").field("bucket", &self.kv.name).finish_non_exhaustive()
    }
}

impl SharedDevicesKv {
    /// The bucket `kv` applied to `registry`.
    pub fn new(kv: Store, registry: &Arc<Registry>) -> Self {
        Self { kv, registry: Arc::downgrade(registry), kick: Mutex::new(None) }
    }

    /// The registry, unless the node is shutting down.
    fn registry(&self) -> Result<Arc<Registry>, RegistryError> {
        self.registry.upgrade().ok_or_else(|| RegistryError::Cluster("the node is shutting down".into()))
    }

    /// How to disconnect a local device disabled or deleted elsewhere (set once the ingress
    /// runs; until then no device is connected).
    pub fn on_removed(&self, kick: Kick) {
        *self.kick.lock().unwrap_or_else(PoisonError::into_inner) = Some(kick);
    }

    /// Drops the disconnect hook (shutdown: it holds the ingress).
    pub fn forget_kick(&self) {
        self.kick.lock().unwrap_or_else(PoisonError::into_inner).take();
    }

    /// Puts this node's configured devices in the bucket when the bucket has never had them:
    /// once a device was changed or deleted through the API, the bucket's word stands (as the
    /// stored API changes win over the file on one node). The first node to start gives a
    /// configured device its iotId for every node.
    ///
    /// # Errors
    /// When the bucket cannot be written.
    pub async fn seed(&self, products: &[ProductConfig]) -> Result<(), String> {
        let registry = self.registry().map_err(|e| e.to_string())?;
        for p in products {
            for d in &p.devices {
                let Some(device) = registry.device(&p.key, &d.name) else { continue };
                match self.kv.update(key(&p.key, &d.name), encode(&device), 0).await {
                    Ok(_) => {}
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {}
                    Err(e) => return Err(format!("adding configured device {}/{}: {e}", p.key, d.name)),
                }
            }
        }
        Ok(())
    }

    /// The device's current value and revision in the bucket.
    async fn current(&self, k: &str, product_key: &str, name: &str) -> Result<(Device, u64), RegistryError> {
        let missing = || RegistryError::NoDevice(product_key.to_string(), name.to_string());
        let entry = self.kv.entry(k).await.map_err(|e| RegistryError::Cluster(e.to_string()))?;
        let entry = entry.filter(|e| e.operation == Operation::Put).ok_or_else(missing)?;
        let device = decode(product_key, name, &entry.value).ok_or_else(missing)?;
        Ok((device, entry.revision))
    }

    async fn kick(&self, product_key: &str, name: &str) {
        let kick = self.kick.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(kick) = kick {
            kick(product_key.to_string(), name.to_string()).await;
        }
    }
}

fn conflict() -> RegistryError {
    RegistryError::Cluster("the device kept changing on other nodes; try again".into())
}

impl SharedDevices for SharedDevicesKv {
    fn add(&self, device: Device) -> BoxFuture<'_, Result<Device, RegistryError>> {
        async move {
            let k = key(&device.product_key, &device.name);
            match self.kv.create(&k, encode(&device)).await {
                Ok(_) => {}
                Err(e) if crate::cluster::lost_create_race(&e) => {
                    return Err(RegistryError::DeviceExists(device.product_key, device.name));
                }
                Err(e) => return Err(RegistryError::Cluster(e.to_string())),
            }
            self.registry()?.apply_device(&device.product_key, &device.name, Some(device.clone()))?;
            Ok(device)
        }
        .boxed()
    }

    fn modify<'a>(
        &'a self,
        product_key: &'a str,
        name: &'a str,
        change: Change<'a>,
    ) -> BoxFuture<'a, Result<(Device, Device), RegistryError>> {
        async move {
            let k = key(product_key, name);
            for _ in 0..ATTEMPTS {
                let (before, revision) = self.current(&k, product_key, name).await?;
                let mut after = before.clone();
                change(&mut after)?;
                if after == before {
                    self.registry()?.apply_device(product_key, name, Some(after.clone()))?;
                    return Ok((before, after));
                }
                match self.kv.update(&k, encode(&after), revision).await {
                    Ok(_) => {
                        self.registry()?.apply_device(product_key, name, Some(after.clone()))?;
                        return Ok((before, after));
                    }
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                    Err(e) => return Err(RegistryError::Cluster(e.to_string())),
                }
            }
            Err(conflict())
        }
        .boxed()
    }

    fn delete<'a>(
        &'a self,
        product_key: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Device, RegistryError>> {
        async move {
            let k = key(product_key, name);
            for _ in 0..ATTEMPTS {
                let (before, revision) = self.current(&k, product_key, name).await?;
                match self.kv.delete_expect_revision(&k, Some(revision)).await {
                    Ok(()) => {
                        self.registry()?.apply_device(product_key, name, None)?;
                        return Ok(before);
                    }
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                    Err(e) => return Err(RegistryError::Cluster(e.to_string())),
                }
            }
            Err(conflict())
        }
        .boxed()
    }
}

impl Apply for SharedDevicesKv {
    fn apply<'a>(&'a self, k: &'a str, value: Option<&'a [u8]>) -> BoxFuture<'a, ()> {
        async move {
            let Some((product_key, name)) = parse_key(k) else {
                tracing::error!(key = %k, "A device key in the cluster's state is unreadable; ignored");
                return;
            };
            let device = match value {
                Some(v) => match decode(&product_key, &name, v) {
                    Some(d) => Some(d),
                    None => return,
                },
                None => None,
            };
            let gone = device.as_ref().is_none_or(|d| !d.enabled);
            let Ok(registry) = self.registry() else { return };
            match registry.apply_device(&product_key, &name, device) {
                Ok(true) if gone => self.kick(&product_key, &name).await,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(product = %product_key, device = %name, error = %e, "Applying a device from the cluster's state failed");
                }
            }
        }
        .boxed()
    }

    fn loaded<'a>(&'a self, present: &'a HashSet<String>) -> BoxFuture<'a, ()> {
        async move {
            let Ok(registry) = self.registry() else { return };
            for d in registry.all_devices() {
                if !present.contains(&key(&d.product_key, &d.name)) {
                    tracing::info!(product = %d.product_key, device = %d.name, "Device not in the cluster's state: removed here");
                    if let Err(e) = registry.apply_device(&d.product_key, &d.name, None) {
                        tracing::error!(product = %d.product_key, device = %d.name, error = %e, "Removing a device failed");
                    }
                }
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_keys_escape_what_subjects_do_not_allow_and_read_back() {
        for name in ["dev1", "a.b@c:d", "x=y", "-_-"] {
            let k = key("a1test", name);
            assert!(k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_=.".contains(&b)), "{k}");
            assert_eq!(k.matches('.').count(), 1, "{k}");
            assert_eq!(parse_key(&k), Some(("a1test".to_string(), name.to_string())));
        }
        assert_eq!(parse_key("nodot"), None);
        assert_eq!(parse_key("pk.bad=4"), None);
    }
}
