//! `/api/v1/alert-rules`: list, create, view (with state and history), replace, delete.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;

use super::error::ApiError;
use super::ApiState;
use crate::alerts::model::AlertRuleBody;
use crate::alerts::{AlertsError, RuleRuntime};

fn error(e: AlertsError) -> ApiError {
    let (status, code) = match &e {
        AlertsError::Invalid(_) | AlertsError::UnknownGroup { .. } => {
            (StatusCode::BAD_REQUEST, "InvalidAlertRule")
        }
        AlertsError::NameTaken(_) => (StatusCode::CONFLICT, "NameTaken"),
        AlertsError::Limit(_) => (StatusCode::CONFLICT, "LimitExceeded"),
        AlertsError::Protected(_) => (StatusCode::CONFLICT, "Protected"),
        AlertsError::NotFound(_) => (StatusCode::NOT_FOUND, "NotFound"),
        AlertsError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        AlertsError::Cluster(_) => (StatusCode::SERVICE_UNAVAILABLE, "ClusterUnavailable"),
    };
    ApiError::new(status, code, e.to_string())
}

/// The rule body with its `id` and `source` (`config` or `api`).
fn view(r: &RuleRuntime) -> Value {
    let mut v = serde_json::to_value(r.rule.to_body()).unwrap_or_default();
    if let Value::Object(map) = &mut v {
        map.insert("id".into(), r.id.clone().into());
        map.insert("source".into(), serde_json::to_value(r.source).unwrap_or_default());
    }
    v
}

fn find(state: &ApiState, id: &str) -> Result<Arc<RuleRuntime>, ApiError> {
    state.alerts.get(id).ok_or_else(|| ApiError::not_found(format!("alert rule {id} does not exist")))
}

/// `GET /alert-rules`.
pub async fn list(State(state): State<ApiState>) -> Json<Vec<Value>> {
    Json(state.alerts.list().iter().map(|r| view(r)).collect())
}

/// `POST /alert-rules`: creates a rule with a generated id.
pub async fn create(
    State(state): State<ApiState>,
    body: Result<Json<AlertRuleBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body?;
    let rule = state.alerts.create_any(&body).await.map_err(error)?;
    Ok((StatusCode::CREATED, Json(view(&rule))))
}

/// `GET /alert-rules/{id}`: the rule, each group's state, delivery counters and the last
/// notifications (oldest first).
pub async fn get(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let r = find(&state, &id)?;
    let mut v = view(&r);
    if let Value::Object(map) = &mut v {
        map.insert("status".into(), serde_json::to_value(r.status()).unwrap_or_default());
        map.insert("lastEvaluatedAt".into(), r.last_evaluated_ms().into());
        map.insert("delivery".into(), serde_json::to_value(r.delivery()).unwrap_or_default());
        map.insert("history".into(), serde_json::to_value(r.history()).unwrap_or_default());
    }
    Ok(Json(v))
}

/// `PUT /alert-rules/{id}`: replaces the rule; its evaluation starts over.
pub async fn replace(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<AlertRuleBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    // An unknown id is a 404 even when the body is malformed too.
    find(&state, &id)?;
    let Json(body) = body?;
    let rule = state.alerts.update_any(&id, &body).await.map_err(error)?;
    Ok(Json(view(&rule)))
}

/// `DELETE /alert-rules/{id}`.
pub async fn delete(State(state): State<ApiState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    state.alerts.delete_any(&id).await.map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}
