//! `/api/v1/products` and their devices: list, view, create, enable/disable, delete, tags.

use std::collections::BTreeMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use futures::future::BoxFuture;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::ApiState;
use crate::devices::{DeviceAdminError, TagEdit};
use crate::registry::names::{check_device_name, check_device_secret};
use crate::registry::{Device, RegistryError};

/// Cluster mode: where a device's session is (the sessions bucket), so that a device connected
/// to another node shows online on every node. Set by the app; `None` on a single node.
pub trait DeviceLocator: Send + Sync {
    /// This node's name.
    fn node(&self) -> &str;

    /// The node whose session holds the device now and when it connected (epoch ms), if any.
    fn holder<'a>(
        &'a self,
        product_key: &'a str,
        device_name: &'a str,
    ) -> BoxFuture<'a, Result<Option<(String, u64)>, String>>;
}

/// Device views read from the sessions bucket at once, in a list.
const LOCATE_AT_ONCE: usize = 16;

/// A device as the API shows it; the secret only in the answer to its creation.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceView {
    product_key: String,
    device_name: String,
    iot_id: String,
    enabled: bool,
    tags: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_secret: Option<String>,
    /// Connected now.
    online: bool,
    /// The last session's MQTT client id.
    client_id: Option<String>,
    /// `ip:port` of the last session since the server started.
    ip_address: Option<String>,
    /// Epoch ms of the last connection since the server started.
    last_online_time: Option<u64>,
    /// Cluster mode: the node holding the device's session while it is online.
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
}

impl DeviceView {
    fn of(d: Device, with_secret: bool, state: &ApiState) -> Self {
        let seen = state.devices.registry().seen(&d.product_key, &d.name);
        Self {
            online: seen.as_ref().is_some_and(|s| s.online),
            client_id: seen.as_ref().map(|s| s.client_id.clone()),
            ip_address: seen.as_ref().and_then(|s| s.peer.clone()),
            last_online_time: seen.map(|s| s.last_online_time),
            node: None,
            product_key: d.product_key,
            device_name: d.name,
            iot_id: d.iot_id,
            enabled: d.enabled,
            tags: d.tags,
            device_secret: with_secret.then_some(d.secret),
        }
    }

    /// Cluster mode: the view with where the sessions bucket says the device is. Held by
    /// another node: online there, `lastOnlineTime` its connection, `clientId` and `ipAddress`
    /// unknown here (`null`). Held by no node: this node's record. The bucket unreadable: this
    /// node's record (logged).
    async fn located(mut self, state: &ApiState) -> Self {
        let Some(locator) = &state.locator else { return self };
        match locator.holder(&self.product_key, &self.device_name).await {
            Ok(Some((node, connected_at_ms))) => {
                if node != locator.node() {
                    self.client_id = None;
                    self.ip_address = None;
                    self.last_online_time = Some(connected_at_ms);
                }
                self.online = true;
                self.node = Some(node);
            }
            Ok(None) => {
                self.node = self.online.then(|| locator.node().to_string());
            }
            Err(error) => {
                tracing::warn!(product_key = %self.product_key, device = %self.device_name, %error, "The sessions bucket could not be read: the device view shows this node's record");
                self.node = self.online.then(|| locator.node().to_string());
            }
        }
        self
    }
}

impl From<DeviceAdminError> for ApiError {
    fn from(e: DeviceAdminError) -> Self {
        match e {
            DeviceAdminError::Registry(RegistryError::NoProduct(_) | RegistryError::NoDevice(..)) => {
                ApiError::not_found(e.to_string())
            }
            DeviceAdminError::Registry(RegistryError::DeviceExists(..)) => {
                ApiError::new(StatusCode::CONFLICT, "DeviceExists", e.to_string())
            }
            DeviceAdminError::Registry(RegistryError::InvalidTags(_)) => {
                ApiError::new(StatusCode::BAD_REQUEST, "InvalidTags", e.to_string())
            }
            DeviceAdminError::Registry(RegistryError::Cluster(_)) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ClusterUnavailable", e.to_string())
            }
            _ => ApiError::internal(e.to_string()),
        }
    }
}

/// `GET /products`.
pub async fn products(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let list: Vec<_> = state
        .devices
        .registry()
        .products()
        .into_iter()
        .map(|p| serde_json::json!({"productKey": p.key, "name": p.name, "category": p.category}))
        .collect();
    Json(serde_json::Value::Array(list))
}

/// `GET /products/{pk}/devices`.
pub async fn list(
    State(state): State<ApiState>,
    Path(pk): Path<String>,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    if state.devices.registry().product(&pk).is_none() {
        return Err(ApiError::not_found(format!("product {pk} does not exist")));
    }
    let views = state.devices.registry().devices(&pk).into_iter().map(|d| DeviceView::of(d, false, &state));
    if state.locator.is_none() {
        return Ok(Json(views.collect()));
    }
    let views =
        futures::stream::iter(views).map(|v| v.located(&state)).buffered(LOCATE_AT_ONCE).collect().await;
    Ok(Json(views))
}

/// `GET /products/{pk}/devices/{dn}`.
pub async fn get(
    State(state): State<ApiState>,
    Path((pk, dn)): Path<(String, String)>,
) -> Result<Json<DeviceView>, ApiError> {
    let d = state
        .devices
        .registry()
        .device(&pk, &dn)
        .ok_or_else(|| ApiError::not_found(format!("device {dn} of product {pk} does not exist")))?;
    Ok(Json(DeviceView::of(Device::clone(&d), false, &state).located(&state).await))
}

/// `POST /products/{pk}/devices` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateDevice {
    /// 4–32 letters, digits, `-` `.` `_` `@` `:`.
    device_name: String,
    /// Optional; generated when absent.
    #[serde(default)]
    device_secret: Option<String>,
    /// Optional tags.
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

fn check_name(name: &str) -> Result<(), ApiError> {
    check_device_name(name).map_err(|message| {
        ApiError::new(StatusCode::BAD_REQUEST, "InvalidDeviceName", format!("deviceName: {message}"))
    })
}

/// `POST /products/{pk}/devices`: creates a device; the answer carries its secret, once.
pub async fn create(
    State(state): State<ApiState>,
    Path(pk): Path<String>,
    body: Result<Json<CreateDevice>, JsonRejection>,
) -> Result<(StatusCode, Json<DeviceView>), ApiError> {
    let Json(body) = body?;
    check_name(&body.device_name)?;
    if let Some(secret) = &body.device_secret {
        check_device_secret(secret)
            .map_err(|message| ApiError::bad_body(format!("deviceSecret: {message}")))?;
    }
    let device = state.devices.create(&pk, &body.device_name, body.device_secret, body.tags).await?;
    Ok((StatusCode::CREATED, Json(DeviceView::of(device, true, &state))))
}

/// `PATCH /products/{pk}/devices/{dn}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchDevice {
    /// Enable or disable.
    enabled: bool,
}

/// `PATCH /products/{pk}/devices/{dn}` `{"enabled": false}`: disabling disconnects the device.
pub async fn patch(
    State(state): State<ApiState>,
    Path((pk, dn)): Path<(String, String)>,
    body: Result<Json<PatchDevice>, JsonRejection>,
) -> Result<Json<DeviceView>, ApiError> {
    let Json(body) = body?;
    let device = state.devices.set_enabled(&pk, &dn, body.enabled).await?;
    Ok(Json(DeviceView::of(device, false, &state)))
}

/// `DELETE /products/{pk}/devices/{dn}`: deletes and disconnects the device.
pub async fn delete(
    State(state): State<ApiState>,
    Path((pk, dn)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.devices.delete(&pk, &dn).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /products/{pk}/devices/{dn}/tags` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutTags {
    /// The device's tags from now on.
    tags: BTreeMap<String, String>,
}

/// `PATCH /products/{pk}/devices/{dn}/tags` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchTags {
    /// Tags to set; a `null` value removes the tag.
    tags: BTreeMap<String, Option<String>>,
}

/// `PUT /products/{pk}/devices/{dn}/tags` `{"tags": {..}}`: replaces the device's tags; each
/// change is announced as a tag-change message.
pub async fn put_tags(
    State(state): State<ApiState>,
    Path((pk, dn)): Path<(String, String)>,
    body: Result<Json<PutTags>, JsonRejection>,
) -> Result<Json<DeviceView>, ApiError> {
    let Json(body) = body?;
    let device = state.devices.edit_tags(&pk, &dn, TagEdit::Replace(body.tags)).await?;
    Ok(Json(DeviceView::of(device, false, &state)))
}

/// `PATCH /products/{pk}/devices/{dn}/tags` `{"tags": {"k": "v", "gone": null}}`: sets and
/// removes the given tags, keeps the others; each change is announced as a tag-change message.
pub async fn patch_tags(
    State(state): State<ApiState>,
    Path((pk, dn)): Path<(String, String)>,
    body: Result<Json<PatchTags>, JsonRejection>,
) -> Result<Json<DeviceView>, ApiError> {
    let Json(body) = body?;
    let device = state.devices.edit_tags(&pk, &dn, TagEdit::Merge(body.tags)).await?;
    Ok(Json(DeviceView::of(device, false, &state)))
}
