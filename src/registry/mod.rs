//! Products, devices and access keys.
//!
//! The configuration file gives the starting set. Changes made at run time (the device API of
//! a later issue) are written to the storage directory and win over the file on the next start:
//! a record per device, including a tombstone for a deleted one, so deleting a device that the
//! file defines stays deleted.

pub mod config;
mod iot_ids;
pub mod names;
mod persist;
mod presence;
pub mod shared;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

pub use presence::Presence;

use crate::store::{Db, StoreError};
pub use config::{AccessKeyConfig, ProductConfig};

/// The category of a product that names none: the platform's category of custom products.
pub const DEFAULT_CATEGORY: &str = "CustomCategory";

/// A device as the ingress sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// productKey.
    pub product_key: String,
    /// deviceName.
    pub name: String,
    /// The platform's id of the device: given by the registry when the device first appears,
    /// stored, and stable for as long as the device exists (see `iot_ids.rs`). Empty in a
    /// device handed to [`Registry::add_device`], which gives it one.
    pub iot_id: String,
    /// deviceSecret.
    pub secret: String,
    /// Disabled devices are refused at CONNECT and disconnected when disabled.
    pub enabled: bool,
    /// Tags, for `attribute()` in rules.
    pub tags: BTreeMap<String, String>,
}

/// A product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// productKey.
    pub key: String,
    /// Display name.
    pub name: String,
    /// The category, sent as `deviceType` ([`DEFAULT_CATEGORY`] when the file names none).
    pub category: String,
}

/// Registry failures.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No such product.
    #[error("product {0:?} does not exist")]
    NoProduct(String),
    /// No such device.
    #[error("device {1:?} of product {0:?} does not exist")]
    NoDevice(String, String),
    /// The device exists already.
    #[error("device {1:?} of product {0:?} exists already")]
    DeviceExists(String, String),
    /// Tags that break the rules.
    #[error("tags: {0}")]
    InvalidTags(String),
    /// Persisting the change failed; nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Cluster mode: the shared state could not be read or written; nothing changed.
    #[error("the cluster's shared state is unavailable: {0}")]
    Cluster(String),
}

#[derive(Debug, Default)]
struct Inner {
    products: BTreeMap<String, Product>,
    /// By productKey, then deviceName: a lookup by `&str` allocates nothing, and what it hands
    /// out is shared, never a copy of the device (secret included) per message.
    devices: HashMap<String, HashMap<String, Arc<Device>>>,
    access_keys: HashMap<String, String>,
}

impl Inner {
    fn get(&self, product_key: &str, name: &str) -> Option<&Arc<Device>> {
        self.devices.get(product_key)?.get(name)
    }

    fn insert(&mut self, device: Device) {
        let product = self.devices.entry(device.product_key.clone()).or_default();
        product.insert(device.name.clone(), Arc::new(device));
    }

    fn remove(&mut self, product_key: &str, name: &str) -> Option<Arc<Device>> {
        self.devices.get_mut(product_key)?.remove(name)
    }
}

/// The registry, shared by every component.
#[derive(Debug)]
pub struct Registry {
    inner: RwLock<Inner>,
    db: Arc<Db>,
    /// Each device's last session since this process started (online or not).
    seen: presence::SeenMap,
    /// Cluster mode: the devices every node shares; tag reports from devices go there.
    shared: std::sync::OnceLock<Arc<dyn shared::SharedDevices>>,
}

impl Registry {
    /// Builds the registry from the configuration file's products and access keys, then
    /// applies the changes stored in `db`.
    ///
    /// # Errors
    /// When the stored changes cannot be read.
    pub fn load(
        products: &[ProductConfig],
        access_keys: &[AccessKeyConfig],
        db: Arc<Db>,
    ) -> Result<Self, RegistryError> {
        let mut inner = Inner::default();
        for p in products {
            let category = p.category.clone().unwrap_or_else(|| DEFAULT_CATEGORY.to_string());
            inner
                .products
                .insert(p.key.clone(), Product { key: p.key.clone(), name: p.name.clone(), category });
            for d in &p.devices {
                inner.insert(Device {
                    product_key: p.key.clone(),
                    name: d.name.clone(),
                    iot_id: String::new(),
                    secret: d.secret.clone(),
                    enabled: d.enabled,
                    tags: d.tags.clone(),
                });
            }
        }
        for k in access_keys {
            inner.access_keys.insert(k.id.clone(), k.secret.clone());
        }
        for ((product_key, name), record) in persist::load(&db)? {
            match record {
                Some(device) => inner.insert(device),
                None => drop(inner.remove(&product_key, &name)),
            }
        }
        assign_iot_ids(&mut inner, &db)?;
        Ok(Self {
            inner: RwLock::new(inner),
            db,
            seen: presence::SeenMap::default(),
            shared: std::sync::OnceLock::new(),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Cluster mode: the devices every node shares. Set once, at start-up.
    pub fn share(&self, shared: Arc<dyn shared::SharedDevices>) {
        if self.shared.set(shared).is_err() {
            tracing::warn!("The registry's shared devices were set twice; the first stays");
        }
    }

    /// Cluster mode: the devices every node shares.
    pub fn shared(&self) -> Option<&Arc<dyn shared::SharedDevices>> {
        self.shared.get()
    }

    /// The device, if it exists.
    pub fn device(&self, product_key: &str, device_name: &str) -> Option<Arc<Device>> {
        self.read().get(product_key, device_name).cloned()
    }

    /// The category of a product (its `deviceType`), if the product exists.
    pub fn category(&self, product_key: &str) -> Option<String> {
        self.read().products.get(product_key).map(|p| p.category.clone())
    }

    /// The product, if it exists.
    pub fn product(&self, product_key: &str) -> Option<Product> {
        self.read().products.get(product_key).cloned()
    }

    /// All products, ordered by key.
    pub fn products(&self) -> Vec<Product> {
        self.read().products.values().cloned().collect()
    }

    /// All devices of a product, ordered by name.
    pub fn devices(&self, product_key: &str) -> Vec<Device> {
        let mut v: Vec<Device> = self
            .read()
            .devices
            .get(product_key)
            .map(|devices| devices.values().map(|d| Device::clone(d)).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The secret of an access key.
    pub fn access_key_secret(&self, id: &str) -> Option<String> {
        self.read().access_keys.get(id).cloned()
    }

    /// Adds a device with a new iotId and persists both; returns the device as added.
    ///
    /// # Errors
    /// Unknown product, an existing device, or a storage failure.
    pub fn add_device(&self, mut device: Device) -> Result<Device, RegistryError> {
        let mut inner = self.write();
        if !inner.products.contains_key(&device.product_key) {
            return Err(RegistryError::NoProduct(device.product_key));
        }
        if inner.get(&device.product_key, &device.name).is_some() {
            return Err(RegistryError::DeviceExists(device.product_key, device.name));
        }
        let key = (device.product_key.clone(), device.name.clone());
        device.iot_id = iot_ids::generate();
        iot_ids::put(&self.db, &key.0, &key.1, &device.iot_id)?;
        persist::put(&self.db, &key, Some(&device))?;
        inner.insert(device.clone());
        Ok(device)
    }

    /// Enables or disables a device and persists the change; returns the device.
    ///
    /// Disconnecting a connected device is the caller's part (see `App::set_device_enabled`).
    ///
    /// # Errors
    /// Unknown device or a storage failure.
    pub fn set_enabled(&self, product_key: &str, name: &str, enabled: bool) -> Result<Device, RegistryError> {
        let mut inner = self.write();
        let key = (product_key.to_string(), name.to_string());
        let mut device = Device::clone(
            inner
                .get(product_key, name)
                .ok_or_else(|| RegistryError::NoDevice(key.0.clone(), key.1.clone()))?,
        );
        device.enabled = enabled;
        persist::put(&self.db, &key, Some(&device))?;
        inner.insert(device.clone());
        Ok(device)
    }

    /// Changes a device's tags with `edit`, checks the result ([`names::check_tags`]) and
    /// persists it; returns the tags before and the device after.
    ///
    /// # Errors
    /// Unknown device, tags that break the rules (nothing changes), or a storage failure.
    pub fn update_tags(
        &self,
        product_key: &str,
        name: &str,
        edit: impl FnOnce(&mut BTreeMap<String, String>),
    ) -> Result<(BTreeMap<String, String>, Device), RegistryError> {
        let mut inner = self.write();
        let key = (product_key.to_string(), name.to_string());
        let mut device = Device::clone(
            inner
                .get(product_key, name)
                .ok_or_else(|| RegistryError::NoDevice(key.0.clone(), key.1.clone()))?,
        );
        let before = device.tags.clone();
        edit(&mut device.tags);
        names::check_tags(device.tags.iter()).map_err(RegistryError::InvalidTags)?;
        if device.tags != before {
            persist::put(&self.db, &key, Some(&device))?;
            inner.insert(device.clone());
        }
        Ok((before, device))
    }

    /// Whether `device` could be added now: its product exists and the name is free here.
    ///
    /// # Errors
    /// As [`Self::add_device`], storage aside.
    pub fn check_add(&self, device: &Device) -> Result<(), RegistryError> {
        let inner = self.read();
        if !inner.products.contains_key(&device.product_key) {
            return Err(RegistryError::NoProduct(device.product_key.clone()));
        }
        if inner.get(&device.product_key, &device.name).is_some() {
            return Err(RegistryError::DeviceExists(device.product_key.clone(), device.name.clone()));
        }
        Ok(())
    }

    /// Sets a device as the cluster's state has it (`None`: deleted), iotId included, and
    /// persists it here: cluster mode, a change checked by the node that made it. Returns
    /// whether anything changed.
    ///
    /// # Errors
    /// A storage failure.
    pub fn apply_device(
        &self,
        product_key: &str,
        name: &str,
        device: Option<Device>,
    ) -> Result<bool, RegistryError> {
        let mut inner = self.write();
        let key = (product_key.to_string(), name.to_string());
        let current = inner.get(product_key, name);
        if current.map(|d| &**d) == device.as_ref() {
            return Ok(false);
        }
        match device {
            Some(device) => {
                if current.is_none_or(|d| d.iot_id != device.iot_id) {
                    iot_ids::put(&self.db, product_key, name, &device.iot_id)?;
                }
                persist::put(&self.db, &key, Some(&device))?;
                inner.insert(device);
            }
            None => {
                persist::put(&self.db, &key, None)?;
                if let Err(e) = iot_ids::remove(&self.db, product_key, name) {
                    tracing::error!(device = %name, product = %product_key, error = %e, "Forgetting a deleted device's iotId failed");
                }
                inner.remove(product_key, name);
            }
        }
        Ok(true)
    }

    /// Every device of every product.
    pub fn all_devices(&self) -> Vec<Arc<Device>> {
        self.read().devices.values().flat_map(|p| p.values().cloned()).collect()
    }

    /// Deletes a device and persists a tombstone; returns the deleted device.
    ///
    /// # Errors
    /// Unknown device or a storage failure.
    pub fn delete_device(&self, product_key: &str, name: &str) -> Result<Device, RegistryError> {
        let mut inner = self.write();
        let key = (product_key.to_string(), name.to_string());
        if inner.get(product_key, name).is_none() {
            return Err(RegistryError::NoDevice(key.0, key.1));
        }
        persist::put(&self.db, &key, None)?;
        if let Err(e) = iot_ids::remove(&self.db, product_key, name) {
            // The tombstone is stored; the stale id is never read, and is replaced if the
            // name is created again.
            tracing::error!(device = %name, product = %product_key, error = %e, "Forgetting a deleted device's iotId failed");
        }
        let removed = inner.remove(product_key, name).ok_or(RegistryError::NoDevice(key.0, key.1))?;
        Ok(Arc::unwrap_or_clone(removed))
    }
}

/// Gives every device its stored iotId, and a new one (stored in one transaction) to each
/// device that has none yet: configured devices on their first start.
fn assign_iot_ids(inner: &mut Inner, db: &Db) -> Result<(), StoreError> {
    let stored = iot_ids::load(db)?;
    let mut new: Vec<(String, String)> = Vec::new();
    for product in inner.devices.values_mut() {
        for device in product.values_mut() {
            let key = iot_ids::key(&device.product_key, &device.name);
            let id = match stored.get(&key) {
                Some(id) => id.clone(),
                None => {
                    let id = iot_ids::generate();
                    new.push((key, id.clone()));
                    id
                }
            };
            Arc::make_mut(device).iot_id = id;
        }
    }
    iot_ids::put_all(db, &new)
}

#[cfg(test)]
mod tests {
    use super::config::DeviceConfig;
    use super::*;

    fn load(db: Arc<Db>) -> Registry {
        let device = |name: &str| DeviceConfig {
            name: name.into(),
            secret: format!("{name}-secret"),
            enabled: true,
            tags: BTreeMap::new(),
        };
        let products = [ProductConfig {
            key: "a1demo".into(),
            name: "Demo".into(),
            category: None,
            devices: vec![device("dev1"), device("dev2")],
        }];
        let access_keys = [AccessKeyConfig { id: "LTAIdemo".into(), secret: "demo-secret".into() }];
        Registry::load(&products, &access_keys, db).unwrap()
    }

    #[test]
    fn runtime_changes_survive_a_restart_and_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let ids = {
            let r = load(Db::open(dir.path()).unwrap());
            assert!(r.device("a1demo", "dev1").unwrap().enabled);
            r.set_enabled("a1demo", "dev1", false).unwrap();
            r.delete_device("a1demo", "dev2").unwrap();
            r.add_device(Device {
                product_key: "a1demo".into(),
                name: "dev3".into(),
                iot_id: String::new(),
                secret: "s3".into(),
                enabled: true,
                tags: BTreeMap::new(),
            })
            .unwrap();
            assert!(matches!(
                r.add_device(Device::clone(&r.device("a1demo", "dev3").unwrap())),
                Err(RegistryError::DeviceExists(..))
            ));
            let (before, _) =
                r.update_tags("a1demo", "dev1", |t| drop(t.insert("room".into(), "lab".into()))).unwrap();
            assert!(before.is_empty());
            assert!(matches!(
                r.update_tags("a1demo", "dev1", |t| drop(t.insert(String::new(), "x".into()))),
                Err(RegistryError::InvalidTags(_))
            ));
            let id = |dn: &str| r.device("a1demo", dn).unwrap().iot_id.clone();
            (id("dev1"), id("dev3"))
        };
        assert_eq!(ids.0.len(), 26);
        assert_ne!(ids.0, ids.1);
        let r = load(Db::open(dir.path()).unwrap());
        let id = |dn: &str| r.device("a1demo", dn).unwrap().iot_id.clone();
        assert_eq!((id("dev1"), id("dev3")), ids, "iotIds survive a restart, configured devices' too");
        assert_eq!(r.device("a1demo", "dev1").unwrap().tags.get("room").map(String::as_str), Some("lab"));
        assert!(!r.device("a1demo", "dev1").unwrap().enabled);
        assert!(r.device("a1demo", "dev2").is_none());
        assert_eq!(r.device("a1demo", "dev3").unwrap().secret, "s3");
        assert_eq!(r.devices("a1demo").len(), 2);
        assert_eq!(r.access_key_secret("LTAIdemo").as_deref(), Some("demo-secret"));
    }
}
