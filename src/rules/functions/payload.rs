//! `payload([encoding])`: the payload as a string; only `utf-8` (the default) is supported.
//! Bytes that are not UTF-8 become U+FFFD.

use serde_json::Value;

use super::{literal_str, Args, Check, FnSpec};
use crate::rules::error::EvalError;

/// `payload([encoding])`.
pub static SPEC: FnSpec = FnSpec {
    name: "payload",
    min: 0,
    max: 1,
    star: false,
    check: Some(CHECK),
    call,
    usage: "payload(['utf-8'])",
};

fn supported(enc: &str) -> bool {
    enc.eq_ignore_ascii_case("utf-8") || enc.eq_ignore_ascii_case("utf8")
}

const CHECK: Check = |args| match literal_str(args, 0) {
    Some(e) if !supported(e) => Err(format!("payload() supports the encoding 'utf-8' only, got {e:?}")),
    _ => Ok(()),
};

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    if !a.vals.is_empty() && !supported(&a.text(0)) {
        return Err(a.err(format!("supports the encoding 'utf-8' only, got {}", a.get(0))));
    }
    Ok(Value::String(String::from_utf8_lossy(a.env.payload).into_owned()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "payload",
            &[
                (vec![], Ok(json!("{\"a\":1}"))),
                (vec![json!("UTF-8")], Ok(json!("{\"a\":1}"))),
                (vec![json!("gbk")], Err("utf-8")),
            ],
        );
    }
}
