//! Console sessions: signing in with the admin token gives a session cookie; every change made
//! with the cookie must also carry the session's CSRF token in `X-CSRF-Token`.
//!
//! Sessions live in memory (a restart signs everyone out), expire [`LIFETIME`] after sign-in,
//! and are bounded in number ([`MAX_SESSIONS`]; the oldest goes first).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use rand::RngCore;

use crate::sign::constant_time_eq;

/// The session cookie's name.
pub const COOKIE: &str = "iotpipe_session";
/// The header that carries the CSRF token on changes made with the cookie.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts after sign-in.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most.
pub const MAX_SESSIONS: usize = 1024;

#[derive(Debug)]
struct Session {
    csrf: String,
    created: Instant,
}

/// The signed-in sessions.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes as hex.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new session: its id (the cookie's value) and its CSRF token.
    pub fn create(&self) -> (String, String) {
        let (id, csrf) = (random_token(), random_token());
        let mut map = self.lock();
        map.retain(|_, s| s.created.elapsed() < LIFETIME);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), Session { csrf: csrf.clone(), created: Instant::now() });
        (id, csrf)
    }

    /// The CSRF token of a live session.
    pub fn csrf(&self, id: &str) -> Option<String> {
        let mut map = self.lock();
        match map.get(id) {
            Some(s) if s.created.elapsed() < LIFETIME => Some(s.csrf.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// The live session the request's cookie names: its id and CSRF token.
    pub fn of_request(&self, headers: &HeaderMap) -> Option<(String, String)> {
        let id = cookie(headers, COOKIE)?;
        let csrf = self.csrf(id)?;
        Some((id.to_string(), csrf))
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether `given` is the session's CSRF token (constant time).
pub fn csrf_matches(given: Option<&str>, expected: &str) -> bool {
    given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes()))
}

/// The `Set-Cookie` value of a new session; `Secure` when the request came through TLS (a
/// reverse proxy that says so with `X-Forwarded-Proto: https`).
pub fn set_cookie(id: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}", LIFETIME.as_secs())
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Whether the request reached a TLS front (`X-Forwarded-Proto: https`).
pub fn behind_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_cookie_and_ends_when_removed() {
        let sessions = Sessions::default();
        let (id, csrf) = sessions.create();
        let mut headers = HeaderMap::new();
        headers.insert(axum::http::header::COOKIE, format!("other=1; {COOKIE}={id}").parse().unwrap());
        assert_eq!(sessions.of_request(&headers), Some((id.clone(), csrf.clone())));
        assert!(csrf_matches(Some(&csrf), &csrf));
        assert!(!csrf_matches(Some("x"), &csrf));
        assert!(!csrf_matches(None, &csrf));
        sessions.remove(&id);
        assert_eq!(sessions.of_request(&headers), None);
    }

    #[test]
    fn sessions_are_bounded() {
        let sessions = Sessions::default();
        let first = sessions.create().0;
        for _ in 0..MAX_SESSIONS {
            sessions.create();
        }
        assert_eq!(sessions.lock().len(), MAX_SESSIONS);
        assert_eq!(sessions.csrf(&first), None, "the oldest session went first");
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_behind_tls() {
        assert!(set_cookie("abc", false).contains("HttpOnly; SameSite=Strict"));
        assert!(!set_cookie("abc", false).contains("Secure"));
        assert!(set_cookie("abc", true).ends_with("; Secure"));
    }
}
