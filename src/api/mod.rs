//! HTTP API: `/healthz` and, behind a bearer token, `/api/v1` (JSON).
//!
//! Every error is `{"code", "message"}` with a proper status ([`error::ApiError`]).

mod devices;
pub mod error;
mod groups;
mod subscriptions;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::HttpConfig;
use crate::groups::Groups;
use crate::lifecycle::Devices;
use crate::rules::watch::SharedRules;
use crate::sign::constant_time_eq;
use crate::subscriptions::Subscriptions;
use error::ApiError;

/// API bodies are small JSON documents; 64 KiB bounds what one request can make the server hold.
const BODY_LIMIT: usize = 64 * 1024;

/// What the handlers share; built by [`crate::app`].
#[derive(Clone)]
pub struct ApiState {
    /// Consumer groups.
    pub groups: Arc<Groups>,
    /// Server-side subscriptions.
    pub subscriptions: Arc<Subscriptions>,
    /// The running rule set.
    pub rules: Arc<SharedRules>,
    /// Device lifecycle.
    pub devices: Devices,
    /// The bearer token of `/api/v1`.
    pub token: Arc<str>,
}

/// The running HTTP server.
pub struct ApiServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

/// HTTP start-up failures.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct ApiStartError {
    /// Address.
    pub addr: SocketAddr,
    /// Cause.
    pub source: std::io::Error,
}

impl ApiServer {
    /// Binds `config.listen` and serves `state` until `shutdown`.
    ///
    /// # Errors
    /// When the listener cannot bind.
    pub async fn start(
        config: &HttpConfig,
        state: ApiState,
        shutdown: CancellationToken,
    ) -> Result<Self, ApiStartError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ApiStartError { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| ApiStartError { addr: config.listen, source })?;
        let app = router(state);
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        Ok(Self { addr, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the server to finish after shutdown.
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/consumer-groups", get(groups::list).post(groups::create))
        .route("/consumer-groups/{id}", get(groups::get).delete(groups::delete))
        .route("/consumer-groups/{id}/status", get(groups::status))
        .route("/consumer-groups/{id}/clear", post(groups::clear))
        .route("/subscriptions", get(subscriptions::list).post(subscriptions::create))
        .route(
            "/subscriptions/{pk}",
            get(subscriptions::get).put(subscriptions::replace).delete(subscriptions::delete),
        )
        .route("/subscriptions/{pk}/consumer-groups/{id}", delete(subscriptions::unsubscribe))
        .route("/products", get(devices::products))
        .route("/products/{pk}/devices", get(devices::list).post(devices::create))
        .route("/products/{pk}/devices/{dn}", get(devices::get).patch(devices::patch).delete(devices::delete))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .nest("/api/v1", v1)
        .fallback(|| async { ApiError::not_found("no such resource") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Requires `Authorization: Bearer <admin_token>` (compared in constant time).
async fn require_token(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), state.token.as_bytes()) {
        return Err(ApiError::unauthorized());
    }
    Ok(next.run(request).await)
}
