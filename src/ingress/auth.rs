//! Device credentials: the Link SDK signing scheme (clientId, username, password).
//!
//! clientId `${clientId}|securemode=3,signmethod=hmacsha1,timestamp=789|`,
//! username `${deviceName}&${productKey}`, password = hex HMAC over
//! `clientId${clientId}deviceName${deviceName}productKey${productKey}[timestamp${ts}]`.

use crate::logsafe::Untrusted;
use crate::sign::{constant_time_eq, SignMethod};

/// What a CONNECT claims, before the signature is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The device's own client id (the part before the first `|`).
    pub client_id: String,
    /// From the username.
    pub product_key: String,
    /// From the username.
    pub device_name: String,
    /// From the client id parameters; `hmacmd5` when absent, as older SDKs assume.
    pub method: SignMethod,
    /// Optional `timestamp` parameter, signed as given.
    pub timestamp: Option<String>,
}

/// Why a CONNECT's credentials could not be read. Never contains the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// The username is missing.
    #[error("no username: expected \"deviceName&productKey\"")]
    NoUsername,
    /// The username is not `deviceName&productKey`.
    #[error("username {:?} is not \"deviceName&productKey\"", Untrusted(.0))]
    BadUsername(String),
    /// The client id lacks the `|...|` parameter list.
    #[error("client id {:?} has no \"|securemode=..,signmethod=..|\" part", Untrusted(.0))]
    NoParameters(String),
    /// The client id before `|` is empty or longer than 64 characters.
    #[error("client id part {:?} must be 1 to 64 characters", Untrusted(.0))]
    BadClientId(String),
    /// An unknown `signmethod`.
    #[error("unsupported signmethod {:?}: use hmacmd5, hmacsha1 or hmacsha256", Untrusted(.0))]
    BadMethod(String),
    /// A parameter without `=`.
    #[error("malformed client id parameter {:?}", Untrusted(.0))]
    BadParameter(String),
}

/// Reads a CONNECT's client id and username.
///
/// # Errors
/// When either does not follow the Link SDK scheme.
pub fn parse(mqtt_client_id: &str, username: Option<&str>) -> Result<Credentials, CredentialsError> {
    let username = username.ok_or(CredentialsError::NoUsername)?;
    let (device_name, product_key) = username
        .split_once('&')
        .filter(|(dn, pk)| !dn.is_empty() && !pk.is_empty())
        .ok_or_else(|| CredentialsError::BadUsername(username.to_string()))?;

    let (client_id, rest) = mqtt_client_id
        .split_once('|')
        .ok_or_else(|| CredentialsError::NoParameters(mqtt_client_id.to_string()))?;
    if client_id.is_empty() || client_id.chars().count() > 64 {
        return Err(CredentialsError::BadClientId(client_id.to_string()));
    }
    let params = rest.strip_suffix('|').unwrap_or(rest);
    let mut method = SignMethod::HmacMd5;
    let mut timestamp = None;
    for param in params.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) =
            param.split_once('=').ok_or_else(|| CredentialsError::BadParameter(param.to_string()))?;
        match key.trim() {
            "signmethod" => {
                method = SignMethod::parse(value.trim())
                    .ok_or_else(|| CredentialsError::BadMethod(value.to_string()))?;
            }
            "timestamp" => timestamp = Some(value.trim().to_string()),
            // securemode (2 = TLS, 3 = plain) is informational: the listener decides.
            // Other parameters (e.g. _v, lan, gw, ext) are SDK hints and ignored.
            _ => {}
        }
    }
    Ok(Credentials {
        client_id: client_id.to_string(),
        product_key: product_key.to_string(),
        device_name: device_name.to_string(),
        method,
        timestamp,
    })
}

impl Credentials {
    /// The string the password signs.
    pub fn content(&self) -> String {
        let mut s =
            format!("clientId{}deviceName{}productKey{}", self.client_id, self.device_name, self.product_key);
        if let Some(ts) = &self.timestamp {
            s.push_str("timestamp");
            s.push_str(ts);
        }
        s
    }

    /// The expected password for `device_secret`, lowercase hex.
    pub fn password(&self, device_secret: &str) -> String {
        hex::encode(self.method.mac(device_secret.as_bytes(), self.content().as_bytes()))
    }

    /// Checks `password` in constant time; hex case does not matter (SDKs differ).
    pub fn verify(&self, device_secret: &str, password: &[u8]) -> bool {
        let expected = self.password(device_secret);
        let given = password.to_ascii_lowercase();
        constant_time_eq(expected.as_bytes(), &given)
    }

    /// The MQTT client id a device sends for these credentials.
    pub fn mqtt_client_id(&self) -> String {
        match &self.timestamp {
            Some(ts) => {
                format!("{}|securemode=3,signmethod={},timestamp={}|", self.client_id, self.method, ts)
            }
            None => format!("{}|securemode=3,signmethod={}|", self.client_id, self.method),
        }
    }

    /// The MQTT username.
    pub fn username(&self) -> String {
        format!("{}&{}", self.device_name, self.product_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(method: SignMethod, ts: Option<&str>) -> Credentials {
        Credentials {
            client_id: "SN1928339".into(),
            product_key: "a14Xib5kdYd".into(),
            device_name: "light1983432".into(),
            method,
            timestamp: ts.map(str::to_string),
        }
    }

    const SECRET: &str = "oLyaKqVxtRvjH284LdhqVgVUx1UPy6zq";

    #[test]
    fn published_vectors() {
        let table = [
            (SignMethod::HmacSha1, Some("1539421321846"), "b2488041f64f425016b467ee1c94959ebd592ad1"),
            (SignMethod::HmacMd5, Some("1539421321846"), "56e22c4a903e6035658c6694db63d57a"),
            (
                SignMethod::HmacSha256,
                Some("1539421321846"),
                "e6ad631b665206c0bf2efbe1b48ac4d84ff2a61fe89bac30065e17975a482c40",
            ),
            (SignMethod::HmacSha1, None, "8d73dc7f16e2bfbbdb70cf37019602e2233d3d76"),
        ];
        for (method, ts, want) in table {
            let c = creds(method, ts);
            assert_eq!(c.password(SECRET), want, "{method} {ts:?}");
            assert!(c.verify(SECRET, want.as_bytes()));
            assert!(c.verify(SECRET, want.to_ascii_uppercase().as_bytes()));
            assert!(!c.verify("other", want.as_bytes()));
        }
        let zh = Credentials {
            client_id: "12345".into(),
            product_key: "pk".into(),
            device_name: "device".into(),
            method: SignMethod::HmacSha1,
            timestamp: Some("789".into()),
        };
        assert_eq!(zh.password("secret"), "fafd82a3d602b37fb0fa8b7892f24a477f851a14");
    }

    #[test]
    fn parses_connect_fields() {
        let c = parse(
            "SN1928339|securemode=3,signmethod=hmacsha1,timestamp=1539421321846|",
            Some("light1983432&a14Xib5kdYd"),
        )
        .unwrap();
        assert_eq!(c, creds(SignMethod::HmacSha1, Some("1539421321846")));
        assert_eq!(c.mqtt_client_id(), "SN1928339|securemode=3,signmethod=hmacsha1,timestamp=1539421321846|");
        assert_eq!(c.username(), "light1983432&a14Xib5kdYd");
        let no_ts = parse("c1|securemode=2,signmethod=hmacsha256|", Some("d&p")).unwrap();
        assert_eq!(no_ts.timestamp, None);
        assert_eq!(no_ts.method, SignMethod::HmacSha256);
        assert_eq!(parse("c1|securemode=3|", Some("d&p")).unwrap().method, SignMethod::HmacMd5);
    }

    #[test]
    fn rejects_malformed_fields() {
        use CredentialsError::*;
        let cases: &[(&str, Option<&str>, CredentialsError)] = &[
            ("c|securemode=3|", None, NoUsername),
            ("c|securemode=3|", Some("nodevice"), BadUsername("nodevice".into())),
            ("c|securemode=3|", Some("&p"), BadUsername("&p".into())),
            ("plain", Some("d&p"), NoParameters("plain".into())),
            ("|securemode=3|", Some("d&p"), BadClientId(String::new())),
            ("c|signmethod=sha9|", Some("d&p"), BadMethod("sha9".into())),
            ("c|securemode|", Some("d&p"), BadParameter("securemode".into())),
        ];
        for (id, user, want) in cases {
            assert_eq!(parse(id, *user).unwrap_err(), *want, "{id} {user:?}");
        }
        let long = format!("{}|securemode=3|", "x".repeat(65));
        assert!(matches!(parse(&long, Some("d&p")), Err(BadClientId(_))));
    }
}
