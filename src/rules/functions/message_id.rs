//! `messageId()`: the message id as a decimal string, the same as the AMQP `messageId` property (a string because 64-bit ids do not fit JavaScript numbers).

use serde_json::Value;

use super::{Args, FnSpec};
use crate::rules::error::EvalError;

/// `messageId()`.
pub static SPEC: FnSpec =
    FnSpec { name: "messageId", min: 0, max: 0, star: false, check: None, call, usage: "messageId()" };

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    Ok(Value::String(a.env.msg.id.to_string()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table("messageId", &[(vec![], Ok(json!("42")))]);
    }
}
