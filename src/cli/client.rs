//! The HTTP client behind `iotpipe groups|subscriptions|rules|devices|alerts`: the shared
//! `--server`/`--token`/`--json` arguments, one request at a time, and the server's
//! `{"code", "message"}` errors turned into one line that says what failed and where.
//!
//! The CLI is synchronous; each client owns a current-thread tokio runtime and blocks on one
//! request at a time, which is all a command needs.

use std::time::Duration;

use clap::Args;
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

/// A management command makes a handful of small requests; anything slower than this is a server
/// (or network) in trouble, and a script is better off failing than hanging.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where the server is and how to log in; shared by every command that talks to a server.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Base URL of the server's HTTP API ([http] listen); `host:port` means http://host:port.
    #[arg(long, env = "IOTPIPE_SERVER", default_value = "http://127.0.0.1:8080", global = true)]
    pub server: String,
    /// Bearer token: the server's [http] admin_token.
    #[arg(long, env = "IOTPIPE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the server's JSON answer exactly as received (one line) instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Why a request failed; each renders as the one line the CLI prints after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `--server` is not a usable URL.
    #[error("--server {url:?}: {why}")]
    BadServer {
        /// As given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// No TCP connection (refused, unknown host, connect timeout).
    #[error("cannot reach the iotpipe server at {url}: {cause}")]
    Unreachable {
        /// The base URL.
        url: String,
        /// The innermost cause, e.g. `Connection refused (os error 111)`.
        cause: String,
    },
    /// Connected, but no complete answer in time.
    #[error("{request}: no answer from the iotpipe server within {} s", TIMEOUT.as_secs())]
    Timeout {
        /// `METHOD URL`.
        request: String,
    },
    /// The exchange failed half-way (connection reset, malformed HTTP).
    #[error("{request}: {cause}")]
    Transport {
        /// `METHOD URL`.
        request: String,
        /// The innermost cause.
        cause: String,
    },
    /// The server answered with an error status.
    #[error("{request}: HTTP {status}: {code}: {message}{hint}")]
    Api {
        /// `METHOD URL`, e.g. `DELETE http://127.0.0.1:8080/api/v1/consumer-groups/g1`.
        request: String,
        /// The HTTP status, e.g. `409 Conflict`.
        status: StatusCode,
        /// The server's error code, e.g. `Protected`.
        code: String,
        /// The server's message.
        message: String,
        /// A hint of ours, with its leading separator, or empty.
        hint: String,
        /// The whole error body, for commands that read more of it (rule diagnostics).
        body: Box<Value>,
    },
    /// A 2xx answer that is not the JSON an iotpipe server sends.
    #[error("{request}: HTTP {status}: the answer is not JSON (is this an iotpipe server?): {excerpt:?}")]
    NotJson {
        /// `METHOD URL`.
        request: String,
        /// The HTTP status.
        status: StatusCode,
        /// The start of the body.
        excerpt: String,
    },
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// A successful answer: the body as sent and as parsed (`Null` when empty, e.g. 204).
#[derive(Debug)]
pub struct Answer {
    /// The body exactly as the server sent it.
    pub text: String,
    /// The body parsed.
    pub value: Value,
}

impl Answer {
    /// Prints the body as received (`--json`); a body-less answer (204) prints nothing.
    pub fn print_json(&self) {
        let text = self.text.trim_end();
        if !text.is_empty() {
            super::table::emit(&format!("{text}\n"));
        }
    }

    /// Prints the answer's `"warnings"` (things that look wrong without being errors) on stderr,
    /// one `warning: ...` line each.
    pub fn print_warnings(&self) {
        for w in self.value["warnings"].as_array().into_iter().flatten() {
            eprintln!("warning: {}", w.as_str().map_or_else(|| w.to_string(), one_line));
        }
    }

    /// The body as a list; anything else is treated as an empty list.
    pub fn items(&self) -> &[Value] {
        self.value.as_array().map_or(&[], Vec::as_slice)
    }
}

/// One server, one login.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    runtime: tokio::runtime::Runtime,
    /// `--json` was given.
    pub json: bool,
}

impl Client {
    /// A client for `args`.
    ///
    /// # Errors
    /// A malformed `--server`, or a runtime that cannot start.
    pub fn new(args: &ServerArgs) -> Result<Self, ClientError> {
        let base = parse_server(&args.server)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ClientError::Runtime)?;
        let http =
            reqwest::Client::builder().timeout(TIMEOUT).build().map_err(|e| ClientError::BadServer {
                url: args.server.clone(),
                why: format!("cannot build an HTTP client: {e}"),
            })?;
        let token = args.token.clone().filter(|t| !t.is_empty());
        Ok(Self { http, base, token, runtime, json: args.json })
    }

    /// `GET /api/v1/{segments...}`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn get(&self, segments: &[&str]) -> Result<Answer, ClientError> {
        self.send(Method::GET, segments, &[], None)
    }

    /// `GET /api/v1/{segments...}?{query}`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn get_query(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<Answer, ClientError> {
        self.send(Method::GET, segments, query, None)
    }

    /// `POST` with a JSON body (`None`: no body).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn post(&self, segments: &[&str], body: Option<&Value>) -> Result<Answer, ClientError> {
        self.send(Method::POST, segments, &[], body)
    }

    /// `PUT` with a JSON body.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn put(&self, segments: &[&str], body: &Value) -> Result<Answer, ClientError> {
        self.send(Method::PUT, segments, &[], Some(body))
    }

    /// `PATCH` with a JSON body.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn patch(&self, segments: &[&str], body: &Value) -> Result<Answer, ClientError> {
        self.send(Method::PATCH, segments, &[], Some(body))
    }

    /// `DELETE`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn delete(&self, segments: &[&str]) -> Result<Answer, ClientError> {
        self.send(Method::DELETE, segments, &[], None)
    }

    /// The URL of `/api/v1/{segments...}`; each segment is percent-encoded, so an id with a `/`
    /// stays one segment.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Answer, ClientError> {
        let url = self.url(segments, query);
        let what = format!("{method} {url}");
        let mut request = self.http.request(method, url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let fail = |e: reqwest::Error| {
            if e.is_connect() {
                ClientError::Unreachable { url: self.base.to_string(), cause: root_cause(&e) }
            } else if e.is_timeout() {
                ClientError::Timeout { request: what.clone() }
            } else {
                ClientError::Transport { request: what.clone(), cause: root_cause(&e) }
            }
        };
        let (status, text) = self.runtime.block_on(async {
            let response = request.send().await.map_err(fail)?;
            let status = response.status();
            let text = response.text().await.map_err(fail)?;
            Ok::<_, ClientError>((status, text))
        })?;
        let parsed = if text.trim().is_empty() { Ok(Value::Null) } else { serde_json::from_str(&text) };
        if status.is_success() {
            return match parsed {
                Ok(value) => Ok(Answer { text, value }),
                Err(_) => Err(ClientError::NotJson { request: what, status, excerpt: excerpt(&text) }),
            };
        }
        let value = parsed.unwrap_or(Value::Null);
        let code = value["code"].as_str().unwrap_or("-").to_string();
        let message = match value["message"].as_str() {
            Some(m) => one_line(m),
            None if text.trim().is_empty() => "(no body)".to_string(),
            None => excerpt(&text),
        };
        let hint = if status == StatusCode::UNAUTHORIZED && self.token.is_none() {
            " (no token given: use --token or IOTPIPE_TOKEN)".to_string()
        } else if status == StatusCode::NOT_FOUND && message == "no such resource" {
            // The server's fallback route: the endpoint itself is unknown, not the object.
            " (the server does not know this endpoint: is it older than this CLI?)".to_string()
        } else {
            String::new()
        };
        Err(ClientError::Api { request: what, status, code, message, hint, body: Box::new(value) })
    }
}

/// Parses `--server`: a bare `host:port` gets `http://` (what the API listener serves); https
/// is for a TLS proxy in front of it.
fn parse_server(given: &str) -> Result<Url, ClientError> {
    let bad = |why: String| ClientError::BadServer { url: given.to_string(), why };
    let text = if given.contains("://") { given.to_string() } else { format!("http://{given}") };
    let url = Url::parse(&text).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!("use an http:// or https:// URL, not {}://", url.scheme())));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(bad("the URL has no host".into()));
    }
    Ok(url)
}

/// The innermost error of a chain: reqwest's outer layers only say "error sending request".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    one_line(&cur.to_string())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most 200 characters of a body, on one line.
fn excerpt(s: &str) -> String {
    let line = one_line(s);
    match line.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(server: &str) -> Client {
        Client::new(&ServerArgs { server: server.into(), token: None, json: false }).unwrap()
    }

    #[test]
    fn urls_are_built_from_encoded_segments() {
        let c = client("localhost:8080");
        assert_eq!(
            c.url(&["consumer-groups", "a/b c", "status"], &[]).as_str(),
            "http://localhost:8080/api/v1/consumer-groups/a%2Fb%20c/status"
        );
        let c = client("http://h/prefix/");
        assert_eq!(
            c.url(&["consumer-groups"], &[("name", "x&y")]).as_str(),
            "http://h/prefix/api/v1/consumer-groups?name=x%26y"
        );
    }

    #[test]
    fn only_http_servers_are_accepted() {
        assert!(matches!(parse_server("ftp://h"), Err(ClientError::BadServer { .. })));
        assert!(parse_server("https://h").is_ok());
        assert!(matches!(parse_server("http://"), Err(ClientError::BadServer { .. })));
        assert_eq!(parse_server("127.0.0.1:1").unwrap().as_str(), "http://127.0.0.1:1/");
    }

    #[test]
    fn excerpts_are_short_and_one_line() {
        assert_eq!(excerpt("a\n b"), "a b");
        assert_eq!(excerpt(&"x".repeat(300)).len(), 203);
    }
}
