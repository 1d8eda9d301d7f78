//! `deviceName()`: the name of the sending device.

use serde_json::Value;

use super::{Args, FnSpec};
use crate::rules::error::EvalError;

/// `deviceName()`.
pub static SPEC: FnSpec =
    FnSpec { name: "deviceName", min: 0, max: 0, star: false, check: None, call, usage: "deviceName()" };

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    Ok(Value::String(a.env.msg.origin.device_name.clone()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table("deviceName", &[(vec![], Ok(json!("dev1")))]);
    }
}
