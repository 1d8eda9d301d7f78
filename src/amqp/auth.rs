//! Consumer credentials (AMQP SASL PLAIN), as the modelled platform's samples sign them.
//!
//! Username `${clientId}|authMode=aksign,signMethod=hmacsha1,timestamp=${ts},authId=${accessKeyId},iotInstanceId=,consumerGroupId=${groupId}|`
//! (parameters in any order); password = Base64 of HMAC keyed with the access key secret over
//! `authId=${accessKeyId}&timestamp=${ts}`.

use base64::Engine as _;

use crate::logsafe::Untrusted;
use crate::sign::{constant_time_eq, SignMethod};

/// What an AMQP username claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerCredentials {
    /// The consumer's client id (at most 64 characters).
    pub client_id: String,
    /// The access key that signed.
    pub access_key_id: String,
    /// The consumer group to join.
    pub group_id: String,
    /// Signing method.
    pub method: SignMethod,
    /// The signed timestamp, as given.
    pub timestamp: String,
    /// `iotInstanceId`, when given (informational).
    pub instance_id: Option<String>,
}

/// Why a username was refused. Never contains the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// No `|...|` parameter list.
    #[error("username has no \"|authMode=...|\" parameter list")]
    NoParameters,
    /// Client id empty or too long.
    #[error("clientId must be 1 to 64 characters, got {0}")]
    BadClientId(usize),
    /// A required parameter is missing.
    #[error("username lacks the {0} parameter")]
    Missing(&'static str),
    /// `authMode` other than `aksign`.
    #[error("authMode {:?} is not supported: use aksign (STS tokens are not supported)", Untrusted(.0))]
    AuthMode(String),
    /// Unknown `signMethod`.
    #[error("signMethod {:?} is not supported: use hmacmd5, hmacsha1 or hmacsha256", Untrusted(.0))]
    Method(String),
    /// A parameter without `=`.
    #[error("malformed parameter {:?}", Untrusted(.0))]
    Malformed(String),
    /// A parameter given twice: which one counts would be a guess.
    #[error("parameter {0} is given more than once")]
    Duplicate(&'static str),
    /// `timestamp` is not epoch milliseconds.
    #[error("timestamp {:?} is not epoch milliseconds", Untrusted(.0))]
    BadTimestamp(String),
}

/// Parses an AMQP username.
///
/// # Errors
/// When it does not follow the scheme.
pub fn parse_username(username: &str) -> Result<ConsumerCredentials, UsernameError> {
    let (client_id, rest) = username.split_once('|').ok_or(UsernameError::NoParameters)?;
    let count = client_id.chars().count();
    if count == 0 || count > 64 {
        return Err(UsernameError::BadClientId(count));
    }
    let params = rest.strip_suffix('|').unwrap_or(rest);
    let (mut auth_mode, mut method, mut timestamp, mut auth_id, mut group, mut instance) =
        (None, None, None, None, None, None);
    for param in params.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) =
            param.split_once('=').ok_or_else(|| UsernameError::Malformed(param.to_string()))?;
        let value = value.trim().to_string();
        let (name, slot) = match key.trim() {
            "authMode" => ("authMode", &mut auth_mode),
            "signMethod" => ("signMethod", &mut method),
            "timestamp" => ("timestamp", &mut timestamp),
            "authId" => ("authId", &mut auth_id),
            "consumerGroupId" => ("consumerGroupId", &mut group),
            "iotInstanceId" => ("iotInstanceId", &mut instance),
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(UsernameError::Duplicate(name));
        }
    }
    let instance = instance.filter(|v| !v.is_empty());
    let auth_mode = auth_mode.ok_or(UsernameError::Missing("authMode"))?;
    if auth_mode != "aksign" {
        return Err(UsernameError::AuthMode(auth_mode));
    }
    let method_name = method.ok_or(UsernameError::Missing("signMethod"))?;
    let method = SignMethod::parse(&method_name).ok_or(UsernameError::Method(method_name))?;
    Ok(ConsumerCredentials {
        client_id: client_id.to_string(),
        access_key_id: auth_id.filter(|v| !v.is_empty()).ok_or(UsernameError::Missing("authId"))?,
        group_id: group.filter(|v| !v.is_empty()).ok_or(UsernameError::Missing("consumerGroupId"))?,
        method,
        timestamp: timestamp.filter(|v| !v.is_empty()).ok_or(UsernameError::Missing("timestamp")).and_then(
            |t| match t.parse::<u64>() {
                Ok(_) => Ok(t),
                Err(_) => Err(UsernameError::BadTimestamp(t)),
            },
        )?,
        instance_id: instance,
    })
}

impl ConsumerCredentials {
    /// Whether the signed timestamp lies within `window_ms` of `now_ms`, either side.
    pub fn is_fresh(&self, now_ms: u64, window_ms: u64) -> bool {
        self.timestamp.parse::<u64>().is_ok_and(|t| t.abs_diff(now_ms) <= window_ms)
    }

    /// The password for `secret`.
    pub fn password(&self, secret: &str) -> String {
        let content = format!("authId={}&timestamp={}", self.access_key_id, self.timestamp);
        base64::engine::general_purpose::STANDARD
            .encode(self.method.mac(secret.as_bytes(), content.as_bytes()))
    }

    /// Checks `password` in constant time.
    pub fn verify(&self, secret: &str, password: &[u8]) -> bool {
        constant_time_eq(self.password(secret).as_bytes(), password)
    }

    /// The username for these credentials.
    pub fn username(&self) -> String {
        format!(
            "{}|authMode=aksign,signMethod={},timestamp={},authId={},iotInstanceId={},consumerGroupId={}|",
            self.client_id,
            self.method,
            self.timestamp,
            self.access_key_id,
            self.instance_id.as_deref().unwrap_or(""),
            self.group_id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_parameters_in_any_order() {
        let c = parse_username(
            "c1|consumerGroupId=DEFAULT_GROUP,timestamp=1700000000000,authId=LTAIdemo,signMethod=hmacsha1,authMode=aksign|",
        )
        .unwrap();
        assert_eq!(c.client_id, "c1");
        assert_eq!(c.group_id, "DEFAULT_GROUP");
        assert_eq!(c.access_key_id, "LTAIdemo");
        assert_eq!(c.method, SignMethod::HmacSha1);
        assert_eq!(parse_username(&c.username()).unwrap(), c);
    }

    #[test]
    fn password_is_base64_hmac_of_auth_id_and_timestamp() {
        let c =
            parse_username("c|authMode=aksign,signMethod=hmacsha1,timestamp=1,authId=ak,consumerGroupId=g|")
                .unwrap();
        // printf 'authId=ak&timestamp=1' | openssl dgst -sha1 -hmac secret -binary | base64
        let want = "hXZ4jQvHOiz+3SXmS1b6zQvWvXc=";
        assert_eq!(c.password("secret"), want);
        assert!(c.verify("secret", want.as_bytes()));
        assert!(!c.verify("other", want.as_bytes()));
    }

    #[test]
    fn freshness_is_a_window_either_side() {
        let c = parse_username(
            "c|authMode=aksign,signMethod=hmacsha1,timestamp=1000000,authId=a,consumerGroupId=g|",
        )
        .unwrap();
        assert!(c.is_fresh(1_000_000, 0));
        assert!(c.is_fresh(1_900_000, 900_000));
        assert!(c.is_fresh(100_000, 900_000));
        assert!(!c.is_fresh(1_900_001, 900_000));
        assert!(!c.is_fresh(99_999, 900_000));
    }

    #[test]
    fn refusals_say_why() {
        use UsernameError::*;
        let cases: &[(&str, UsernameError)] = &[
            ("plain", NoParameters),
            ("|authMode=aksign|", BadClientId(0)),
            (
                "c|authMode=ststoken,signMethod=hmacsha1,timestamp=1,authId=a,consumerGroupId=g|",
                AuthMode("ststoken".into()),
            ),
            (
                "c|authMode=aksign,signMethod=sha9,timestamp=1,authId=a,consumerGroupId=g|",
                Method("sha9".into()),
            ),
            ("c|authMode=aksign,signMethod=hmacsha1,timestamp=1,authId=a|", Missing("consumerGroupId")),
            ("c|authMode=aksign,signMethod=hmacsha1,authId=a,consumerGroupId=g|", Missing("timestamp")),
            ("c|signMethod=hmacsha1|", Missing("authMode")),
            ("c|authMode|", Malformed("authMode".into())),
            (
                "c|authMode=aksign,signMethod=hmacsha1,timestamp=abc,authId=a,consumerGroupId=g|",
                BadTimestamp("abc".into()),
            ),
            (
                "c|authMode=aksign,signMethod=hmacsha1,timestamp=-1,authId=a,consumerGroupId=g|",
                BadTimestamp("-1".into()),
            ),
            (
                "c|authMode=aksign,signMethod=hmacsha1,timestamp=1,authId=a,consumerGroupId=g,consumerGroupId=h|",
                Duplicate("consumerGroupId"),
            ),
            (
                "c|authMode=aksign,authMode=aksign,signMethod=hmacsha1,timestamp=1,authId=a,consumerGroupId=g|",
                Duplicate("authMode"),
            ),
        ];
        for (username, want) in cases {
            assert_eq!(parse_username(username).unwrap_err(), *want, "{username}");
        }
        assert_eq!(
            parse_username(&format!("{}|authMode=aksign|", "x".repeat(65))).unwrap_err(),
            BadClientId(65)
        );
    }
}
