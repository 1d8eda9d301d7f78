//! `timestamp_utc([fmt])`: epoch milliseconds of the message's receipt, or, with a Java date pattern, that time in UTC.
//! The time is the message's receive time, so every rule sees the same instant for a message.

use chrono::Offset as _;
use serde_json::Value;

use super::datefmt::DatePattern;
use super::{literal_str, Args, Check, FnSpec};
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

const CHECK: Check = |args| match literal_str(args, 0) {
    Some(p) => DatePattern::parse(p).map(|_| ()),
    None => match args.first().copied().flatten() {
        Some(v) if !v.is_string() => Err(format!("timestamp_utc() needs a date pattern string, got {v}")),
        _ => Ok(()),
    },
};

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    let ms = a.env.msg.received_at_ms;
    if a.vals.is_empty() {
        return Ok(Value::from(ms));
    }
    if a.any_null() {
        return Ok(Value::Null);
    }
    // Patterns are usually literals checked at compile time; parsing again here costs well under
    // a microsecond and keeps computed patterns possible.
    let pattern = DatePattern::parse(&a.text(0)).map_err(|e| a.err(e))?;
    let t = chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .ok_or_else(|| a.err("the receive time is out of range"))?;
    let off = chrono::FixedOffset::east_opt(0).unwrap_or_else(|| chrono::Utc.fix());
    Ok(Value::String(pattern.format(&t.with_timezone(&off))))
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
