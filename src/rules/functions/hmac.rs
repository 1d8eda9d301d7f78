//! `hmac(data, key[, alg])`: lowercase hex HMAC of the text `data` keyed with the text `key`;
//! `alg` is `HmacSHA256` (default), `HmacSHA1` or `HmacMD5` (case-insensitive, `Hmac` optional).

use hmac::{Hmac, Mac};
use serde_json::Value;

use super::{literal_str, Args, Check, FnSpec};
use crate::rules::error::EvalError;

/// `hmac(data, key[, alg])`.
pub static SPEC: FnSpec = FnSpec {
    name: "hmac",
    min: 2,
    max: 3,
    star: false,
    check: Some(CHECK),
    call,
    usage: "hmac(data, key[, 'HmacSHA256'])",
};

const CHECK: Check = |args| match literal_str(args, 2) {
    Some(alg) if sign(alg, b"", b"").is_none() => {
        Err(format!("hmac() does not know the algorithm {alg:?}; use HmacSHA256, HmacSHA1 or HmacMD5"))
    }
    _ => Ok(()),
};

fn sign(alg: &str, key: &[u8], data: &[u8]) -> Option<String> {
    let a = alg.to_ascii_lowercase();
    let a = a.strip_prefix("hmac").unwrap_or(&a).replace('-', "");
    // new_from_slice accepts keys of any length for HMAC; the error arm cannot happen.
    Some(match a.as_str() {
        "sha256" => {
            let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).ok()?;
            m.update(data);
            hex::encode(m.finalize().into_bytes())
        }
        "sha1" => {
            let mut m = Hmac::<sha1::Sha1>::new_from_slice(key).ok()?;
            m.update(data);
            hex::encode(m.finalize().into_bytes())
        }
        "md5" => {
            let mut m = Hmac::<md5::Md5>::new_from_slice(key).ok()?;
            m.update(data);
            hex::encode(m.finalize().into_bytes())
        }
        _ => return None,
    })
}

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    if a.any_null() {
        return Ok(Value::Null);
    }
    let alg = if a.vals.len() > 2 { a.text(2) } else { "HmacSHA256".into() };
    sign(&alg, a.text(1).as_bytes(), a.text(0).as_bytes())
        .map(Value::String)
        .ok_or_else(|| a.err(format!("unknown algorithm {alg:?}")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        // RFC 4231 test case 2 and its HMAC-SHA1/MD5 counterparts (RFC 2202).
        super::super::testing::table(
            "hmac",
            &[
                (
                    vec![json!("what do ya want for nothing?"), json!("Jefe")],
                    Ok(json!("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")),
                ),
                (
                    vec![json!("what do ya want for nothing?"), json!("Jefe"), json!("HmacSHA1")],
                    Ok(json!("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")),
                ),
                (
                    vec![json!("what do ya want for nothing?"), json!("Jefe"), json!("md5")],
                    Ok(json!("750c783e6ab0b503eaa86e310a5db738")),
                ),
                (vec![json!("x"), json!("k"), json!("sha3")], Err("unknown algorithm")),
                (vec![json!("x"), json!(null)], Ok(json!(null))),
            ],
        );
    }
}
