//! `/api/v1/subscriptions`: product-wide server-side subscriptions, edited while running.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::ApiState;
use crate::logsafe::Untrusted;
use crate::subscriptions::{overlaps, MessageType, Subscription, SubscriptionError};

impl From<SubscriptionError> for ApiError {
    fn from(e: SubscriptionError) -> Self {
        use SubscriptionError as E;
        let (status, code) = match &e {
            E::UnknownProduct(_) | E::NotFound(_) | E::NotSubscribed { .. } => {
                (StatusCode::NOT_FOUND, "NotFound")
            }
            E::Exists(_) => (StatusCode::CONFLICT, "SubscriptionExists"),
            E::UnknownGroup(_) => (StatusCode::BAD_REQUEST, "UnknownConsumerGroup"),
            E::LastGroup { .. } => (StatusCode::CONFLICT, "LastConsumerGroup"),
            E::Invalid(_) => (StatusCode::BAD_REQUEST, "InvalidBody"),
            E::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
            E::Cluster(_) => (StatusCode::SERVICE_UNAVAILABLE, "ClusterUnavailable"),
        };
        Self::new(status, code, e.to_string())
    }
}

/// POST and PUT body; PUT may leave out `productKey` (the path names it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Body {
    product_key: Option<String>,
    message_types: Vec<MessageType>,
    consumer_group_ids: Vec<String>,
}

/// A subscription with the warnings of an edit (an empty list when there are none).
#[derive(Debug, Serialize)]
pub struct Edited {
    #[serde(flatten)]
    subscription: Subscription,
    warnings: Vec<String>,
}

fn edited(state: &ApiState, subscription: Subscription) -> Json<Edited> {
    let rules = state.rules.get();
    let warnings = overlaps(rules.rules(), std::slice::from_ref(&subscription));
    for w in &warnings {
        tracing::warn!(product = %Untrusted(&subscription.product_key), warning = %w, "Subscription overlaps a rule");
    }
    Json(Edited { subscription, warnings })
}

/// `GET /subscriptions`.
pub async fn list(State(state): State<ApiState>) -> Json<Vec<Subscription>> {
    Json(state.subscriptions.list())
}

/// `GET /subscriptions/{productKey}`.
pub async fn get(
    State(state): State<ApiState>,
    Path(pk): Path<String>,
) -> Result<Json<Subscription>, ApiError> {
    state.subscriptions.get(&pk).map(Json).ok_or_else(|| SubscriptionError::NotFound(pk).into())
}

/// `POST /subscriptions`.
pub async fn create(
    State(state): State<ApiState>,
    body: Result<Json<Body>, JsonRejection>,
) -> Result<(StatusCode, Json<Edited>), ApiError> {
    let Json(body) = body?;
    let product_key = body.product_key.ok_or_else(|| ApiError::bad_body("missing field `productKey`"))?;
    let sub = Subscription {
        product_key,
        message_types: body.message_types,
        consumer_group_ids: body.consumer_group_ids,
    };
    let sub = state.catalog.create_subscription(sub).await?;
    Ok((StatusCode::CREATED, edited(&state, sub)))
}

/// `PUT /subscriptions/{productKey}`: replaces the message types and groups.
pub async fn replace(
    State(state): State<ApiState>,
    Path(pk): Path<String>,
    body: Result<Json<Body>, JsonRejection>,
) -> Result<Json<Edited>, ApiError> {
    let Json(body) = body?;
    if let Some(other) = body.product_key.filter(|p| *p != pk) {
        return Err(ApiError::bad_body(format!("productKey: {other} differs from the path's {pk}")));
    }
    let sub = Subscription {
        product_key: pk,
        message_types: body.message_types,
        consumer_group_ids: body.consumer_group_ids,
    };
    let sub = state.catalog.replace_subscription(sub).await?;
    Ok(edited(&state, sub))
}

/// `DELETE /subscriptions/{productKey}`.
pub async fn delete(State(state): State<ApiState>, Path(pk): Path<String>) -> Result<StatusCode, ApiError> {
    state.catalog.delete_subscription(&pk).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /subscriptions/{productKey}/consumer-groups/{id}`: refused for the only group.
pub async fn unsubscribe(
    State(state): State<ApiState>,
    Path((pk, id)): Path<(String, String)>,
) -> Result<Json<Subscription>, ApiError> {
    Ok(Json(state.catalog.unsubscribe(&pk, &id).await?))
}
