//! `clientId()`: the device's own client id (the part of the MQTT client id before `|`).

use serde_json::Value;

use super::{Args, FnSpec};
use crate::rules::error::EvalError;

/// `clientId()`.
pub static SPEC: FnSpec =
    FnSpec { name: "clientId", min: 0, max: 0, star: false, check: None, call, usage: "clientId()" };

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    Ok(Value::String(a.env.msg.origin.client_id.clone()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table("clientId", &[(vec![], Ok(json!("c1")))]);
    }
}
