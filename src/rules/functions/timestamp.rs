//! `timestamp([fmt])`: epoch milliseconds of the message's receipt, or, with a Java date pattern, that time in the
//! server's local time zone (the platform's "region time"; set `TZ` to choose it).
//! The time is the message's receive time, so every rule sees the same instant for a message.

use serde_json::Value;

use super::{datefmt, Args, Check, FnSpec};
use crate::rules::error::EvalError;

/// `timestamp([fmt])`.
pub static SPEC: FnSpec = FnSpec {
    name: "timestamp",
    min: 0,
    max: 1,
    star: false,
    check: Some(CHECK),
    call,
    usage: "timestamp(['yyyy-MM-dd HH:mm:ss'])",
};

const CHECK: Check = |args| datefmt::check_pattern("timestamp", args);

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    datefmt::receive_time(a, true)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        let got = super::super::testing::call("timestamp", &[json!("yyyy")]).unwrap();
        assert!(matches!(got.as_str(), Some("2024")), "{got}");
        super::super::testing::table(
            "timestamp",
            &[(vec![], Ok(json!(1_704_164_645_678_u64))), (vec![json!("q")], Err("unknown letter"))],
        );
        assert!((super::CHECK)(&[Some(&json!(5))]).is_err());
    }
}
