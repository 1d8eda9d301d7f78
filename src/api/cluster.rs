//! `GET /cluster/status`: the live nodes of the cluster (their heartbeats), or a clear
//! `NotClustered` on a node without `[cluster]`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use futures::future::BoxFuture;

use super::error::ApiError;
use super::ApiState;

/// Reads the cluster's status as the API shows it (`{"cluster", "node", "nodes": [...]}`);
/// set by the application in cluster mode.
pub type ClusterStatus = Arc<dyn Fn() -> BoxFuture<'static, Result<serde_json::Value, String>> + Send + Sync>;

/// `GET /cluster/status`.
pub async fn status(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(read) = &state.cluster else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotClustered",
            "this node runs alone: its configuration has no [cluster] section",
        ));
    };
    read().await.map(Json).map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            format!("reading the cluster status failed: {e}"),
        )
    })
}
