//! HTTP API: `/healthz`, `/metrics` and, behind a bearer token, `/api/v1` (JSON).
//!
//! Every error is `{"code", "message"}` with a proper status ([`error::ApiError`]).

mod alerts;
pub mod cluster;
mod commands;
pub mod config;
mod console;
mod devices;
pub use devices::DeviceLocator;
pub mod error;
mod groups;
mod rules;
pub mod session;
mod subscriptions;
pub mod token;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::commands::DeviceCommands;
use crate::devices::DeviceAdmin;
use crate::groups::Groups;
use crate::listener::ListenerError;
use crate::rules::watch::{LiveRules, SharedRules};
use crate::sign::constant_time_eq;
use crate::subscriptions::Subscriptions;
pub use config::HttpConfig;
use error::ApiError;

/// API bodies are small JSON documents; 64 KiB bounds what one request can make the server hold.
const BODY_LIMIT: usize = 64 * 1024;

/// What the handlers share; built by [`crate::app`].
#[derive(Clone)]
pub struct ApiState {
    /// Who uses which consumer group: group deletion, rule and subscription writes.
    pub catalog: Arc<Catalog>,
    /// Consumer groups.
    pub groups: Arc<Groups>,
    /// Server-side subscriptions.
    pub subscriptions: Arc<Subscriptions>,
    /// The running rule set.
    pub rules: Arc<SharedRules>,
    /// The rules directory's reloader, shared with its watch: rule writes apply through it.
    pub live_rules: Arc<LiveRules>,
    /// Device lifecycle.
    pub devices: DeviceAdmin,
    /// Cloud-to-device calls (publish, broadcast, RRPC, thing-model calls).
    pub commands: Arc<dyn DeviceCommands>,
    /// The bearer token of `/api/v1`.
    pub token: Arc<str>,
    /// Alert rules.
    pub alerts: Arc<crate::alerts::Alerts>,
    /// What `/metrics` serves.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Console sessions (signed in with the admin token).
    pub sessions: Arc<session::Sessions>,
    /// The consumer groups' queues, for `/healthz` (in a cluster: NATS and JetStream).
    pub queues: Arc<dyn crate::queues::GroupQueues>,
    /// Cluster mode: the live nodes (`/cluster/status`); `None` on a single node.
    pub cluster: Option<cluster::ClusterStatus>,
    /// Cluster mode: where devices' sessions are, for the device views; `None` on a single node.
    pub locator: Option<Arc<dyn DeviceLocator>>,
}

/// The running HTTP server.
pub struct ApiServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

/// HTTP start-up failures: the listener could not bind.
#[derive(Debug, thiserror::Error)]
#[error("HTTP {0}")]
pub struct ApiStartError(pub ListenerError);

/// Not `#[from]`: the message holds the listener error already, and a `source` would make
/// error chains print it twice.
impl From<ListenerError> for ApiStartError {
    fn from(e: ListenerError) -> Self {
        ApiStartError(e)
    }
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
        let bound = config.listener().bind().await?;
        let addr = bound.addr();
        let listener = bound.into_plain();
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
        .route("/consumer-groups/{id}", get(groups::get).patch(groups::patch).delete(groups::delete))
        .route("/consumer-groups/{id}/status", get(groups::status))
        .route("/consumer-groups/{id}/history", get(groups::history))
        .route("/consumer-groups/{id}/clear", post(groups::clear))
        .route(
            "/consumer-groups/{id}/dead-letters",
            get(groups::dead_letters).delete(groups::purge_dead_letters),
        )
        .route("/consumer-groups/{id}/dead-letters/requeue", post(groups::requeue_dead_letters))
        .route("/subscriptions", get(subscriptions::list).post(subscriptions::create))
        .route(
            "/subscriptions/{pk}",
            get(subscriptions::get).put(subscriptions::replace).delete(subscriptions::delete),
        )
        .route("/subscriptions/{pk}/consumer-groups/{id}", delete(subscriptions::unsubscribe))
        .route("/rules", get(rules::list).post(rules::create))
        .route(
            "/rules/{name}",
            get(rules::get)
                .put(rules::replace)
                .patch(rules::patch)
                .delete(rules::delete)
                .post(rules::post_named),
        )
        .route("/alert-rules", get(alerts::list).post(alerts::create))
        .route("/alert-rules/{id}", get(alerts::get).put(alerts::replace).delete(alerts::delete))
        .route("/openapi.json", get(openapi))
        .route("/cluster/status", get(cluster::status))
        .route("/products", get(devices::products))
        .route("/products/{pk}/devices", get(devices::list).post(devices::create))
        .route("/products/{pk}/devices/{dn}", get(devices::get).patch(devices::patch).delete(devices::delete))
        .route("/products/{pk}/devices/{dn}/tags", put(devices::put_tags).patch(devices::patch_tags))
        .route("/products/{pk}/broadcast", post(commands::broadcast))
        .route("/products/{pk}/devices/{dn}/messages", post(commands::publish))
        .route("/products/{pk}/devices/{dn}/messages/{id}", get(commands::message))
        .route("/products/{pk}/devices/{dn}/rrpc", post(commands::rrpc))
        .route("/products/{pk}/devices/{dn}/properties", post(commands::set_properties))
        .route("/products/{pk}/devices/{dn}/services/{identifier}", post(commands::invoke))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(console::routes())
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", v1)
        .fallback(|| async { ApiError::not_found("no such resource") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// `GET /healthz`, no token: 200 while the listeners are up (they are, or this would not
/// answer) and the queues can serve (in a cluster: NATS connected, JetStream answering); 503
/// with the reason otherwise.
async fn healthz(State(state): State<ApiState>) -> Response {
    match state.queues.health().await {
        Ok(()) => Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(reason) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unavailable", "reason": reason})),
        )
            .into_response(),
    }
}

/// `GET /metrics`: Prometheus text format, no token (docs/metrics.md).
async fn metrics(State(state): State<ApiState>) -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], state.metrics.render())
}

/// The OpenAPI 3.1 description of this API, kept beside the router; a test checks that the two
/// name the same paths and methods.
const OPENAPI: &str = include_str!("openapi.json");

/// `GET /api/v1/openapi.json`.
async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Requires `Authorization: Bearer <admin_token>` (compared in constant time), or a console
/// session's cookie; a change (any method but GET and HEAD) made with the cookie must also carry
/// the session's CSRF token in `X-CSRF-Token`.
async fn require_token(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let headers = request.headers();
    if let Some(given) = headers.get(AUTHORIZATION) {
        let given = given.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
        if !constant_time_eq(given.as_bytes(), state.token.as_bytes()) {
            return Err(ApiError::unauthorized());
        }
        return Ok(next.run(request).await);
    }
    let Some((_, csrf)) = state.sessions.of_request(headers) else {
        return Err(ApiError::unauthorized());
    };
    let safe = matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    if !safe && !session::csrf_matches(headers.get(session::CSRF_HEADER).and_then(|v| v.to_str().ok()), &csrf)
    {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "CsrfTokenMismatch",
            "a change made with the console's session cookie needs the session's X-CSRF-Token header",
        ));
    }
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// (method, path) pairs of the router, read from its source: `get(`, `.post(`, ... after
    /// each `.route("path"`.
    fn routed() -> BTreeSet<(String, String)> {
        let source = include_str!("mod.rs");
        let router =
            &source[source.find("fn router(").unwrap()..source.find("/// Requires `Authorization").unwrap()];
        let mut out = BTreeSet::new();
        for chunk in router.split(".route(").skip(1) {
            let path = chunk.split('"').nth(1).unwrap();
            let handlers = chunk.split(".route_layer").next().unwrap();
            for method in ["get", "post", "put", "patch", "delete"] {
                let call = format!("{method}(");
                let found = handlers.match_indices(&call).any(|(i, _)| {
                    !handlers[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':')
                });
                if found {
                    out.insert((method.to_string(), path.to_string()));
                }
            }
        }
        out
    }

    #[test]
    fn the_openapi_document_matches_the_router() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                let local = path.strip_prefix("/api/v1").unwrap_or(path);
                documented.insert((method.clone(), local.to_string()));
            }
        }
        // `POST /rules/test` is served by the `/rules/{name}` route.
        let mut routed = routed();
        routed.insert(("post".into(), "/rules/test".into()));
        routed.remove(&("post".to_string(), "/rules/{name}".to_string()));
        let renamed: BTreeSet<(String, String)> = routed
            .into_iter()
            .map(|(m, p)| (m, p.replace("/subscriptions/{pk}", "/subscriptions/{productKey}")))
            .collect();
        assert_eq!(renamed, documented);
    }
}
