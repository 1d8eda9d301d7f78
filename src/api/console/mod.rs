//! The web console: sign-in with the admin token, then a page shell and one script that draws
//! every page from the JSON API (docs/console.md says why this shape).
//!
//! Everything is embedded in the binary; pages load nothing but this server's own files (the
//! Content-Security-Policy says so to the browser as well).

use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use super::session::{self, behind_tls};
use super::ApiState;
use crate::logsafe::RateLimit;
use crate::sign::constant_time_eq;

const SHELL: &str = include_str!("shell.html");
const LOGIN: &str = include_str!("login.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// Only this server's files; no inline script or style, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes, merged into the HTTP router.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(|| async { see_other("/console/") }))
        .route("/console", get(|| async { see_other("/console/") }))
        .route("/console/", get(shell))
        .route("/console/login", get(login_page).post(sign_in))
        .route("/console/logout", post(sign_out))
        .route("/console/assets/{file}", get(asset))
        // Browsers ask for it unprompted; nothing to show.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .layer(axum::middleware::map_response(secure_headers))
}

async fn secure_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.entry(CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

fn see_other(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to)]).into_response()
}

fn html(status: StatusCode, body: String) -> Response {
    (status, [(CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// `GET /console/`: the page shell with the session's CSRF token, or the sign-in page.
async fn shell(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    match state.sessions.of_request(&headers) {
        // The token is 64 hex digits: nothing to escape.
        Some((_, csrf)) => html(StatusCode::OK, SHELL.replace("{{csrf}}", &csrf)),
        None => see_other("/console/login"),
    }
}

/// `GET /console/login`.
async fn login_page(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if state.sessions.of_request(&headers).is_some() {
        return see_other("/console/");
    }
    html(StatusCode::OK, LOGIN.replace("{{error}}", ""))
}

/// The sign-in form.
#[derive(Deserialize)]
struct SignIn {
    token: String,
}

/// Refused sign-ins logged at most this often (a flood cannot fill the disk).
static REFUSALS: std::sync::LazyLock<RateLimit> = std::sync::LazyLock::new(RateLimit::new);

/// `POST /console/login` `token=...`: a session cookie for the admin token.
async fn sign_in(State(state): State<ApiState>, headers: HeaderMap, Form(form): Form<SignIn>) -> Response {
    if !constant_time_eq(form.token.trim().as_bytes(), state.token.as_bytes()) {
        if let Some(suppressed) = REFUSALS.admit() {
            tracing::warn!(suppressed, "Console sign-in refused: wrong admin token");
        }
        let error = r#"<p class="error" role="alert">That is not the admin token.</p>"#;
        return html(StatusCode::UNAUTHORIZED, LOGIN.replace("{{error}}", error));
    }
    let (id, _) = state.sessions.create();
    let cookie = session::set_cookie(&id, behind_tls(&headers));
    (StatusCode::SEE_OTHER, [(LOCATION, "/console/".to_string()), (SET_COOKIE, cookie)]).into_response()
}

/// The sign-out form.
#[derive(Deserialize)]
struct SignOut {
    csrf: String,
}

/// `POST /console/logout` `csrf=...`: ends the session.
async fn sign_out(State(state): State<ApiState>, headers: HeaderMap, Form(form): Form<SignOut>) -> Response {
    if let Some((id, csrf)) = state.sessions.of_request(&headers) {
        if !session::csrf_matches(Some(&form.csrf), &csrf) {
            return (StatusCode::FORBIDDEN, "sign-out needs the session's CSRF token").into_response();
        }
        state.sessions.remove(&id);
    }
    (StatusCode::SEE_OTHER, [(LOCATION, "/console/login".to_string()), (SET_COOKIE, session::clear_cookie())])
        .into_response()
}

/// `GET /console/assets/{file}`: the script and the style sheet.
async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    (StatusCode::OK, [(CONTENT_TYPE, kind), (CACHE_CONTROL, "no-cache")], body).into_response()
}
