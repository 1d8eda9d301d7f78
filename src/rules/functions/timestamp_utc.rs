//! `timestamp_utc([fmt])`: epoch milliseconds of the message's receipt, or, with a Java date pattern, that time in UTC.
//! The time is the message's receive time, so every rule sees the same instant for a message.

use serde_json::Value;

use super::{datefmt, Args, Check, FnSpec};
use crate::rules::error::EvalError;

/// `timestamp_utc([fmt])`.
pub static SPEC: FnSpec = FnSpec {
    name: "timestamp_utc",
    min: 0,
    max: 1,
    star: false,
    check: Some(CHECK),
    call,
    usage: "timestamp_utc(['yyyy-MM-dd HH:mm:ss'])",
};

const CHECK: Check = |args| datefmt::check_pattern("timestamp_utc", args);

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    datefmt::receive_time(a, false)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "timestamp_utc",
            &[
                (vec![], Ok(json!(1_704_164_645_678_u64))),
                (vec![json!("yyyy-MM-dd'T'HH:mm:ss'Z'")], Ok(json!("2024-01-02T03:04:05Z"))),
                (vec![json!("yyyy-MM-dd HH:mm:ss.SSS")], Ok(json!("2024-01-02 03:04:05.678"))),
                (vec![json!("yyyyTT")], Err("unknown letter")),
                (vec![json!(null)], Ok(json!(null))),
            ],
        );
    }
}
