//! `/api/v1/consumer-groups`: list, view, status, clear, dead letters.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::ApiState;
use crate::catalog::DeleteGroupError;
use crate::groups::{Group, GroupOptions};

/// A consumer group as the API shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupView {
    /// Group id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Deliveries of a message at most before it goes to the dead letters.
    #[serde(rename = "maxDeliveryAttempts", skip_serializing_if = "Option::is_none", default)]
    pub max_delivery_attempts: Option<u32>,
}

impl GroupView {
    fn of(g: &Group) -> Self {
        Self { id: g.id.to_string(), name: g.name.clone(), max_delivery_attempts: g.max_delivery_attempts() }
    }
}

/// `?name=` filter of the list.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Substring of the name (case-insensitive).
    pub name: Option<String>,
}

/// `GET /consumer-groups`.
pub async fn list(State(state): State<ApiState>, Query(q): Query<ListQuery>) -> Json<Vec<GroupView>> {
    let filter = q.name.map(|n| n.to_lowercase());
    Json(
        state
            .groups
            .list()
            .iter()
            .filter(|g| filter.as_ref().is_none_or(|f| g.name.to_lowercase().contains(f.as_str())))
            .map(|g| GroupView::of(g))
            .collect(),
    )
}

fn find(state: &ApiState, id: &str) -> Result<Arc<Group>, ApiError> {
    state.groups.get(id).ok_or_else(|| ApiError::not_found(format!("consumer group {id} does not exist")))
}

/// `POST /consumer-groups` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// The group's name (4–30 characters, Chinese and Japanese count 2).
    pub name: String,
    /// The id (1–64 ASCII letters, digits, `_`, `-`); generated when absent.
    pub id: Option<String>,
    /// Deliveries of a message at most before it goes to the dead letters; absent: no limit.
    #[serde(rename = "maxDeliveryAttempts")]
    pub max_delivery_attempts: Option<u32>,
}

/// `POST /consumer-groups`: creates a group with a generated id.
pub async fn create(
    State(state): State<ApiState>,
    body: Result<Json<CreateGroup>, JsonRejection>,
) -> Result<(StatusCode, Json<GroupView>), ApiError> {
    let Json(body) = body?;
    let options = GroupOptions { max_delivery_attempts: body.max_delivery_attempts };
    let g = state.catalog.create_group(&body.name, body.id.as_deref(), options).await?;
    // In a cluster the group's queue (its durable consumer) is set up before the answer, so a
    // consumer attaching on any node finds it ready; a failure here is repaired by the first
    // attach, which sets it up too.
    if let Err(e) = state.queues.ensure_group(&g.id, options).await {
        tracing::warn!(group = %g.id, error = %e, "Setting up the new group's queue failed; its first consumer will");
    }
    Ok((StatusCode::CREATED, Json(GroupView::of(&g))))
}

/// `PATCH /consumer-groups/{id}` body: the group's options, all of them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchGroup {
    /// Deliveries of a message at most before it goes to the dead letters; absent or `null`:
    /// no limit.
    #[serde(rename = "maxDeliveryAttempts")]
    pub max_delivery_attempts: Option<u32>,
}

/// `PATCH /consumer-groups/{id}`: sets the group's options (in a cluster, on every node).
pub async fn patch(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<PatchGroup>, JsonRejection>,
) -> Result<Json<GroupView>, ApiError> {
    find(&state, &id)?;
    let Json(body) = body?;
    let options = GroupOptions { max_delivery_attempts: body.max_delivery_attempts };
    let g = state.catalog.set_group_options(&id, options).await?;
    // The cluster's queue applies the limit to this node's clients (the embedded group has it).
    if let Err(e) = state.queues.ensure_group(&id, options).await {
        tracing::error!(group = %id, error = %e, "Applying the group's options to its queue failed");
    }
    tracing::info!(group = %id, max_delivery_attempts = ?options.max_delivery_attempts, "Consumer group options changed through the API");
    Ok(Json(GroupView::of(&g)))
}

/// `DELETE /consumer-groups/{id}`: refused while a subscription or a rule uses the group.
pub async fn delete(State(state): State<ApiState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    state.catalog.delete_group(&id).await?;
    // The group is gone; in a cluster its queue goes too (the embedded one went with it).
    if let Err(e) = state.queues.remove_group(&id).await {
        tracing::error!(group = %id, error = %e, "Dropping the deleted group's queue failed; its messages expire with the retention period");
    }
    Ok(StatusCode::NO_CONTENT)
}

impl From<DeleteGroupError> for ApiError {
    fn from(e: DeleteGroupError) -> Self {
        match e {
            DeleteGroupError::Groups(e) => e.into(),
            in_use => Self::new(StatusCode::CONFLICT, "InUse", in_use.to_string()),
        }
    }
}

/// `GET /consumer-groups/{id}`.
pub async fn get(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Json<GroupView>, ApiError> {
    Ok(Json(GroupView::of(&*find(&state, &id)?)))
}

/// `GET /consumer-groups/{id}/history`: the last hour of accumulated count and consumption rate,
/// one sample every ten seconds, oldest first, the last one taken now (the console's charts).
pub async fn history(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let g = find(&state, &id)?;
    Ok(Json(serde_json::json!({
        "intervalSeconds": crate::groups::history::INTERVAL.as_secs(),
        "samples": g.history(),
    })))
}

/// `GET /consumer-groups/{id}/status`, in the contract's field names plus iotpipe's counters.
pub async fn status(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use std::sync::atomic::Ordering::Relaxed;
    let g = find(&state, &id)?;
    // The queue numbers come from the queues (the cluster's in cluster mode); the counters are
    // this node's embedded group's.
    let s = state
        .queues
        .status(&id)
        .await
        .map_err(|e| ApiError::internal(format!("reading the status of {id} failed: {e}")))?;
    let c = &g.counters;
    Ok(Json(serde_json::json!({
        "consumptionRate": s.consumption_rate_per_minute,
        "accumulatedCount": s.accumulated,
        "inFlightCount": s.in_flight,
        "lastConsumptionTime": s.last_consumption_ms,
        "deadLetterCount": s.dead_letters,
        "onlineClients": s.online_clients.iter().map(|c| {
            let mut client = serde_json::json!({
                "clientId": c.client_id,
                "clientIpPort": c.peer.to_string(),
                "onlineTime": c.online_since_ms,
                "consumptionRate": c.rate_per_minute,
            });
            // In a cluster: the node that holds the client's connection.
            if let Some(node) = &c.node {
                client["node"] = serde_json::json!(node);
            }
            client
        }).collect::<Vec<_>>(),
        "counters": {
            "appended": c.appended.load(Relaxed),
            "delivered": c.delivered.load(Relaxed),
            "acked": c.acked.load(Relaxed),
            "redelivered": c.redelivered.load(Relaxed),
            "expired": c.expired.load(Relaxed),
            "rejected": c.rejected.load(Relaxed),
            "cleared": c.cleared.load(Relaxed),
            "requeued": c.requeued.load(Relaxed),
            "purged": c.purged.load(Relaxed),
            "exhausted": c.exhausted.load(Relaxed),
        },
    })))
}

/// `POST /consumer-groups/{id}/clear`.
pub async fn clear(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    find(&state, &id)?;
    let cleared = state
        .queues
        .clear(&id)
        .await
        .map_err(|e| ApiError::internal(format!("clearing {id} failed: {e}")))?;
    tracing::info!(group = %id, cleared, "Consumer group cleared through the API");
    Ok(Json(serde_json::json!({"id": id, "cleared": cleared})))
}

/// `?from=&limit=` of the dead-letter list.
#[derive(Debug, Deserialize)]
pub struct DeadLetterQuery {
    /// The first seq to list (the previous page's `next`).
    pub from: Option<u64>,
    /// At most this many (default 100, at most 1,000: a page stays a few MB at most).
    pub limit: Option<usize>,
}

/// `GET /consumer-groups/{id}/dead-letters`: a page of the dead letters, oldest seq first.
pub async fn dead_letters(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<DeadLetterQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use base64::Engine as _;
    find(&state, &id)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let failed = |e: crate::queues::QueueError| {
        ApiError::internal(format!("reading the dead letters of {id} failed: {e}"))
    };
    let page = state.queues.dead_letters(&id, q.from.unwrap_or(0), limit + 1).await.map_err(failed)?;
    let count = state.queues.status(&id).await.map_err(failed)?.dead_letters;
    let next = page.get(limit).map(|d| d.seq);
    let items: Vec<serde_json::Value> = page
        .iter()
        .take(limit)
        .map(|d| (d, crate::queues::StoredMessage::decode(&d.record)))
        .map(|(d, m)| {
            let mut v = serde_json::json!({"seq": d.seq, "deadLetterTime": d.dead_since_ms});
            if let Some(m) = m {
                v["messageId"] = m.id.to_string().into();
                v["topic"] = m.topic.clone().into();
                v["generateTime"] = m.generate_time_ms.into();
                v["payloadBase64"] = base64::engine::general_purpose::STANDARD.encode(&m.payload).into();
                if let Some(tag) = &m.tag {
                    v["tag"] = tag.clone().into();
                }
            }
            v
        })
        .collect();
    Ok(Json(serde_json::json!({
        "id": id,
        "deadLetterCount": count,
        "items": items,
        "next": next,
    })))
}

/// `POST /consumer-groups/{id}/dead-letters/requeue`: every dead letter back to the queue.
pub async fn requeue_dead_letters(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    find(&state, &id)?;
    let requeued = state
        .queues
        .requeue_dead_letters(&id)
        .await
        .map_err(|e| ApiError::internal(format!("re-queueing the dead letters of {id} failed: {e}")))?;
    tracing::info!(group = %id, requeued, "Dead letters re-queued through the API");
    Ok(Json(serde_json::json!({"id": id, "requeued": requeued})))
}

/// `DELETE /consumer-groups/{id}/dead-letters`: drops every dead letter.
pub async fn purge_dead_letters(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    find(&state, &id)?;
    let purged = state
        .queues
        .purge_dead_letters(&id)
        .await
        .map_err(|e| ApiError::internal(format!("purging the dead letters of {id} failed: {e}")))?;
    tracing::info!(group = %id, purged, "Dead letters purged through the API");
    Ok(Json(serde_json::json!({"id": id, "purged": purged})))
}
