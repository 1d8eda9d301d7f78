//! The harness server's HTTP API, with its token.

use serde_json::Value;

use super::Server;

/// `http://ADDR/api/v1{path}`.
pub fn url(server: &Server, path: &str) -> String {
    format!("http://{}/api/v1{path}", server.app.http_addr())
}

/// Sends `req` with the harness token: (status, the JSON body or `Null` when empty).
pub async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.bearer_auth("test-token").send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

/// `GET /api/v1{path}`.
pub async fn get(server: &Server, path: &str) -> (u16, Value) {
    send(reqwest::Client::new().get(url(server, path))).await
}

/// `POST /api/v1{path}` with a JSON body.
pub async fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    send(reqwest::Client::new().post(url(server, path)).json(body)).await
}

/// `PUT /api/v1{path}` with a JSON body.
pub async fn put(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    send(reqwest::Client::new().put(url(server, path)).json(body)).await
}

/// `PATCH /api/v1{path}` with a JSON body.
pub async fn patch(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    send(reqwest::Client::new().patch(url(server, path)).json(body)).await
}
