//! `crypto(field, alg)`: lowercase hex digest of the text of `field`.
//! `alg` is one of MD2, MD5, SHA1, SHA-256, SHA-384, SHA-512 (case-insensitive, the dash
//! optional), the platform's list. MD2 and MD5 are broken as cryptography; they are offered
//! for compatibility with rules written for the platform.

use md5::Digest as _;
use serde_json::Value;

use super::{literal_str, Args, Check, FnSpec};
use crate::rules::error::EvalError;

/// `crypto(field, alg)`.
pub static SPEC: FnSpec = FnSpec {
    name: "crypto",
    min: 2,
    max: 2,
    star: false,
    check: Some(CHECK),
    call,
    usage: "crypto(field, 'SHA-256')",
};

const ALGS: &str = "MD2, MD5, SHA1, SHA-256, SHA-384, SHA-512";

const CHECK: Check = |args| match literal_str(args, 1) {
    Some(alg) if digest(alg, b"").is_none() => {
        Err(format!("crypto() does not know the algorithm {alg:?}; use one of {ALGS}"))
    }
    _ => match args.get(1).copied().flatten() {
        Some(v) if !v.is_string() => Err(format!("crypto() needs the algorithm as a string, got {v}")),
        _ => Ok(()),
    },
};

/// Hex digest of `data` with `alg`, `None` for an unknown algorithm.
pub(crate) fn digest(alg: &str, data: &[u8]) -> Option<String> {
    let norm: String =
        alg.chars().filter(|c| *c != '-' && *c != '_').collect::<String>().to_ascii_uppercase();
    Some(match norm.as_str() {
        "MD2" => hex::encode(md2::Md2::digest(data)),
        "MD5" => hex::encode(md5::Md5::digest(data)),
        "SHA1" => hex::encode(sha1::Sha1::digest(data)),
        "SHA256" => hex::encode(sha2::Sha256::digest(data)),
        "SHA384" => hex::encode(sha2::Sha384::digest(data)),
        "SHA512" => hex::encode(sha2::Sha512::digest(data)),
        _ => return None,
    })
}

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    if a.any_null() {
        return Ok(Value::Null);
    }
    let alg = a.text(1);
    digest(&alg, a.text(0).as_bytes())
        .map(Value::String)
        .ok_or_else(|| a.err(format!("unknown algorithm {alg:?}; use one of {ALGS}")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "crypto",
            &[
                (vec![json!("abc"), json!("MD5")], Ok(json!("900150983cd24fb0d6963f7d28e17f72"))),
                (vec![json!("abc"), json!("sha1")], Ok(json!("a9993e364706816aba3e25717850c26c9cd0d89d"))),
                (
                    vec![json!("abc"), json!("SHA-256")],
                    Ok(json!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")),
                ),
                (vec![json!("abc"), json!("SHA-384")], Ok(json!("cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7"))),
                (vec![json!("abc"), json!("sha512")], Ok(json!("ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"))),
                // RFC 1319, appendix A.5.
                (vec![json!("abc"), json!("MD2")], Ok(json!("da853b0d3f88d99b30283a69e6ded6bb"))),
                (vec![json!(""), json!("md2")], Ok(json!("8350e5a3e24c153df2275c9f80692773"))),
                (vec![json!("abc"), json!("MD4")], Err("unknown algorithm")),
                (vec![json!(null), json!("MD5")], Ok(json!(null))),
            ],
        );
        assert!((super::CHECK)(&[None, Some(&json!("MD4"))]).is_err());
        assert!((super::CHECK)(&[None, Some(&json!("MD2"))]).is_ok());
        assert!((super::CHECK)(&[None, Some(&json!(5))]).is_err());
    }
}
