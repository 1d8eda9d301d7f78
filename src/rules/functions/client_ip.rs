//! `clientIp()`: the device's IP address; null for messages the platform makes itself.

use serde_json::Value;

use super::{Args, FnSpec};
use crate::rules::error::EvalError;

/// `clientIp()`.
pub static SPEC: FnSpec =
    FnSpec { name: "clientIp", min: 0, max: 0, star: false, check: None, call, usage: "clientIp()" };

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    Ok(a.env.msg.origin.peer.map_or(Value::Null, |p| Value::String(p.ip().to_string())))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table("clientIp", &[(vec![], Ok(json!("192.0.2.1")))]);
    }
}
