//! Device administration: create, delete, enable, disable, each announced as the platform's
//! lifecycle message on `/${productKey}/${deviceName}/thing/lifecycle`, and tag edits, announced
//! as tag-change messages on `/${productKey}/${deviceName}/thing/deviceinfo/update`; each stored
//! durably before the operation is reported done.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use crate::ingress::{OfflineReason, SessionsHandle};
use crate::message::thing::tags::{self, Subject};
use crate::message::{now_ms, Kind, Message, Origin};
use crate::pipeline::{HandoffError, Pipeline};
use crate::registry::shared::{new_iot_id, new_secret, SharedDevices};
use crate::registry::{Device, Registry, RegistryError};

/// Why a device operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceAdminError {
    /// The registry refused (unknown product or device, duplicate, storage).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The change is made but its lifecycle message could not be stored.
    #[error("the change is made but its lifecycle message was not stored: {0}")]
    Announce(#[from] HandoffError),
}

/// A change of a device's tags.
#[derive(Debug, Clone)]
pub enum TagEdit {
    /// The device's tags become exactly these.
    Replace(BTreeMap<String, String>),
    /// Each key is set to its value, or removed when the value is `None`; others stay.
    Merge(BTreeMap<String, Option<String>>),
}

/// Device administration, shared by the API and the app.
#[derive(Clone)]
pub struct DeviceAdmin {
    registry: Arc<Registry>,
    sessions: SessionsHandle,
    pipeline: Pipeline,
    /// Cluster mode: the devices every node shares; changes go there first.
    shared: Option<Arc<dyn SharedDevices>>,
}

impl DeviceAdmin {
    /// The operations over these components.
    pub fn new(registry: Arc<Registry>, sessions: SessionsHandle, pipeline: Pipeline) -> Self {
        Self { registry, sessions, pipeline, shared: None }
    }

    /// Cluster mode: changes go to `shared` first, then apply here (and on every node).
    #[must_use]
    pub fn with_shared(mut self, shared: Option<Arc<dyn SharedDevices>>) -> Self {
        self.shared = shared;
        self
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Creates a device; `secret` is generated (32 letters and digits) when not given.
    ///
    /// # Errors
    /// Unknown product, an existing device, storage.
    pub async fn create(
        &self,
        product_key: &str,
        name: &str,
        secret: Option<String>,
        tags: BTreeMap<String, String>,
    ) -> Result<Device, DeviceAdminError> {
        let mut device = Device {
            product_key: product_key.to_string(),
            name: name.to_string(),
            iot_id: String::new(),
            secret: secret.unwrap_or_else(new_secret),
            enabled: true,
            tags,
        };
        let device = match &self.shared {
            None => self.registry.add_device(device)?,
            Some(shared) => {
                self.registry.check_add(&device)?;
                device.iot_id = new_iot_id();
                shared.add(device).await?
            }
        };
        self.announce(&device, "create").await?;
        Ok(device)
    }

    /// Enables or disables a device; disabling disconnects it.
    ///
    /// # Errors
    /// Unknown device, storage.
    pub async fn set_enabled(
        &self,
        product_key: &str,
        name: &str,
        enabled: bool,
    ) -> Result<Device, DeviceAdminError> {
        let device = match &self.shared {
            None => self.registry.set_enabled(product_key, name, enabled)?,
            Some(shared) => {
                let change = move |d: &mut Device| {
                    d.enabled = enabled;
                    Ok(())
                };
                shared.modify(product_key, name, &change).await?.1
            }
        };
        if !enabled {
            self.sessions.disconnect(product_key, name, OfflineReason::DeviceDisabled).await;
        }
        self.announce(&device, if enabled { "enable" } else { "disable" }).await?;
        Ok(device)
    }

    /// Deletes a device and disconnects it.
    ///
    /// # Errors
    /// Unknown device, storage.
    pub async fn delete(&self, product_key: &str, name: &str) -> Result<(), DeviceAdminError> {
        let device = match &self.shared {
            None => self.registry.delete_device(product_key, name)?,
            Some(shared) => shared.delete(product_key, name).await?,
        };
        self.sessions.disconnect(product_key, name, OfflineReason::DeviceDisabled).await;
        self.announce(&device, "delete").await?;
        Ok(())
    }

    /// Changes a device's tags: `Replace` sets them all, `Merge` sets the given keys and removes
    /// those given `None`. Announces what changed: one `UPDATE` tag-change message with the
    /// tags set or changed, one `DELETE` with the tags removed; nothing when nothing changed.
    ///
    /// # Errors
    /// Unknown device, tags that break the rules, storage.
    pub async fn edit_tags(
        &self,
        product_key: &str,
        name: &str,
        edit: TagEdit,
    ) -> Result<Device, DeviceAdminError> {
        let apply = |tags: &mut BTreeMap<String, String>, edit: TagEdit| match edit {
            TagEdit::Replace(all) => *tags = all,
            TagEdit::Merge(changes) => {
                for (k, v) in changes {
                    match v {
                        Some(v) => drop(tags.insert(k, v)),
                        None => drop(tags.remove(&k)),
                    }
                }
            }
        };
        let (before, device) = match &self.shared {
            None => self.registry.update_tags(product_key, name, |tags| apply(tags, edit))?,
            Some(shared) => {
                let change = |d: &mut Device| {
                    apply(&mut d.tags, edit.clone());
                    crate::registry::names::check_tags(d.tags.iter()).map_err(RegistryError::InvalidTags)
                };
                let (before, after) = shared.modify(product_key, name, &change).await?;
                (before.tags, after)
            }
        };
        let now = now_ms();
        let subject =
            Subject { iot_id: &device.iot_id, product_key: &device.product_key, device_name: &device.name };
        for body in tags::change_bodies(subject, &before, &device.tags, now) {
            let topic = tags::topic(&device.product_key, &device.name);
            self.submit(&device, Kind::TagChange, topic, body, now).await?;
        }
        Ok(device)
    }

    async fn announce(&self, device: &Device, action: &str) -> Result<(), HandoffError> {
        let now = now_ms();
        let mut body = json!({
            "action": action,
            "iotId": device.iot_id,
            "productKey": device.product_key,
            "deviceName": device.name,
            "messageCreateTime": now,
        });
        if action == "create" {
            // The platform sends the secret once, in the create message.
            body["deviceSecret"] = json!(device.secret);
        }
        let topic = format!("/{}/{}/thing/lifecycle", device.product_key, device.name);
        self.submit(device, Kind::Lifecycle, topic, Bytes::from(body.to_string()), now).await
    }

    /// Stores a message the platform makes about `device`.
    async fn submit(
        &self,
        device: &Device,
        kind: Kind,
        topic: String,
        payload: Bytes,
        now: u64,
    ) -> Result<(), HandoffError> {
        let message = Message {
            id: self.pipeline.next_id().await?,
            kind,
            topic,
            payload,
            qos: 1,
            origin: Arc::new(Origin {
                product_key: device.product_key.clone(),
                device_name: device.name.clone(),
                iot_id: device.iot_id.clone(),
                device_type: self.registry.category(&device.product_key).unwrap_or_default(),
                client_id: String::new(),
                peer: None,
            }),
            received_at_ms: now,
            platform: None,
        };
        self.pipeline.submit(message).await
    }
}
