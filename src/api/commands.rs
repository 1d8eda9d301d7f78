//! Cloud to device (docs/downlink.md): publish to a device and read its message's state,
//! broadcast to a product, RRPC, set properties, invoke a service. Thin handlers over
//! [`crate::commands::DeviceCommands`].

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::ApiState;
use crate::commands::{check_wait, CommandError, PublishRequest, RrpcRequest, ThingAnswer, ThingCall};

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        use CommandError as E;
        let (status, code) = match &e {
            E::NoProduct(_) | E::NoDevice(..) | E::MessageNotFound(_) => (StatusCode::NOT_FOUND, "NotFound"),
            E::InvalidTopic(_) => (StatusCode::BAD_REQUEST, "InvalidTopic"),
            E::InvalidArgument { .. } => (StatusCode::BAD_REQUEST, "InvalidArgument"),
            E::DeviceOffline(..) => (StatusCode::CONFLICT, "DeviceOffline"),
            E::TooManyInFlight(..) => (StatusCode::TOO_MANY_REQUESTS, "TooManyInFlight"),
            E::TooManyCalls => (StatusCode::TOO_MANY_REQUESTS, "TooManyCalls"),
            E::RouterBusy => (StatusCode::SERVICE_UNAVAILABLE, "RouterBusy"),
            E::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// A payload as text or as base64: exactly one of the two.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    payload_base64: Option<String>,
}

impl Payload {
    fn bytes(self) -> Result<Bytes, ApiError> {
        match (self.payload, self.payload_base64) {
            (Some(text), None) => Ok(Bytes::from(text)),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map(Bytes::from)
                .map_err(|e| ApiError::bad_body(format!("payloadBase64: not base64: {e}"))),
            (Some(_), Some(_)) => Err(ApiError::bad_body("give payload or payloadBase64, not both")),
            (None, None) => Err(ApiError::bad_body("missing payload (text) or payloadBase64")),
        }
    }
}

/// `POST /products/{pk}/devices/{dn}/messages` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PublishBody {
    topic: String,
    #[serde(flatten)]
    payload: Payload,
    #[serde(default)]
    qos: u8,
}

/// `POST /products/{pk}/devices/{dn}/messages`: `{"messageId"}` once the message is in the
/// device's session.
pub async fn publish(
    State(state): State<ApiState>,
    Path((pk, dn)): Path<(String, String)>,
    body: Result<Json<PublishBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    let request = PublishRequest {
        product_key: pk,
        device_name: dn,
        topic: body.topic,
        payload: body.payload.bytes()?,
        qos: body.qos,
    };
    let id = state.commands.publish(request).await?;
    Ok(Json(json!({"messageId": id.to_string()})))
}

/// `GET /products/{pk}/devices/{dn}/messages/{id}`: the message's delivery state.
pub async fn message(
    State(state): State<ApiState>,
    Path((pk, dn, id)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::not_found(format!("no message {id:?}: message ids are decimal numbers")))?;
    let m = state.commands.message(pk, dn, id).await?;
    Ok(Json(json!({
        "messageId": m.message_id.to_string(),
        "topic": m.topic,
        "qos": m.qos,
        "state": m.state.as_str(),
    })))
}

/// `POST /products/{pk}/broadcast` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BroadcastBody {
    topic: String,
    #[serde(flatten)]
    payload: Payload,
}

/// `POST /products/{pk}/broadcast`: QoS 0 to every online device of the product subscribed.
pub async fn broadcast(
    State(state): State<ApiState>,
    Path(pk): Path<String>,
    body: Result<Json<BroadcastBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    let id = state.commands.broadcast(pk, body.topic, body.payload.bytes()?).await?;
    Ok(Json(json!({"messageId": id.to_string()})))
}

/// `POST /products/{pk}/devices/{dn}/rrpc` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RrpcBody {
    #[serde(flatten)]
    payload: Payload,
    timeout_ms: u64,
}

/// `POST /products/{pk}/devices/{dn}/rrpc`: waits for the device's answer.
pub async fn rrpc(
    State(state): State<ApiState>,
    Path((pk, dn)): Path<(String, String)>,
    body: Result<Json<RrpcBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    let timeout = check_wait("timeoutMs", body.timeout_ms)?;
    let request = RrpcRequest { product_key: pk, device_name: dn, payload: body.payload.bytes()?, timeout };
    let a = state.commands.rrpc(request).await?;
    let mut answer = json!({
        "rrpcCode": a.code.as_str(),
        "messageId": a.message_id.to_string(),
        "state": a.state.as_str(),
    });
    if let Some(p) = a.payload {
        answer["payloadBase64"] = json!(base64::engine::general_purpose::STANDARD.encode(&p));
    }
    Ok(Json(answer))
}

/// `POST /products/{pk}/devices/{dn}/properties` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PropertiesBody {
    items: Map<String, Value>,
    #[serde(default)]
    wait_ms: Option<u64>,
}

/// `POST /products/{pk}/devices/{dn}/services/{identifier}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceBody {
    #[serde(default)]
    args: Map<String, Value>,
    #[serde(default)]
    wait_ms: Option<u64>,
}

fn thing_call(
    pk: String,
    dn: String,
    params: Map<String, Value>,
    wait_ms: Option<u64>,
) -> Result<ThingCall, ApiError> {
    let wait = wait_ms.map(|ms| check_wait("waitMs", ms)).transpose()?;
    Ok(ThingCall { product_key: pk, device_name: dn, params, wait })
}

fn thing_answer(a: ThingAnswer) -> Json<Value> {
    let mut answer = json!({
        "messageId": a.message_id.to_string(),
        "requestId": a.request_id,
        "state": a.state.as_str(),
    });
    if let Some((code, reply)) = a.reply {
        answer["replyCode"] = json!(code.as_str());
        if let Some(reply) = reply {
            answer["reply"] = reply;
        }
    }
    Json(answer)
}

/// `POST /products/{pk}/devices/{dn}/properties`: `thing.service.property.set`.
pub async fn set_properties(
    State(state): State<ApiState>,
    Path((pk, dn)): Path<(String, String)>,
    body: Result<Json<PropertiesBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    if body.items.is_empty() {
        return Err(ApiError::bad_body("items: name at least one property"));
    }
    let call = thing_call(pk, dn, body.items, body.wait_ms)?;
    Ok(thing_answer(state.commands.set_properties(call).await?))
}

/// `POST /products/{pk}/devices/{dn}/services/{identifier}`: `thing.service.{identifier}`.
pub async fn invoke(
    State(state): State<ApiState>,
    Path((pk, dn, identifier)): Path<(String, String, String)>,
    body: Result<Json<ServiceBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    let call = thing_call(pk, dn, body.args, body.wait_ms)?;
    Ok(thing_answer(state.commands.invoke(call, identifier).await?))
}
