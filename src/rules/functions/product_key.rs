//! `productKey()`: the productKey of the sending device (an iotpipe extension; the platform uses `topic(1)`).

use serde_json::Value;

use super::{Args, FnSpec};
use crate::rules::error::EvalError;

/// `productKey()`.
pub static SPEC: FnSpec =
    FnSpec { name: "productKey", min: 0, max: 0, star: false, check: None, call, usage: "productKey()" };

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    Ok(Value::String(a.env.msg.origin.product_key.clone()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table("productKey", &[(vec![], Ok(json!("a1demo")))]);
    }
}
