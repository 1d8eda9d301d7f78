//! `timestamp([fmt])`: epoch milliseconds of the message's receipt, or, with a Java date pattern, that time in the
//! server's local time zone (the platform's "region time"; set `TZ` to choose it).
//! The time is the message's receive time, so every rule sees the same instant for a message.

use chrono::{Offset as _, TimeZone as _};
use serde_json::Value;

use super::datefmt::DatePattern;
use super::{literal_str, Args, Check, FnSpec};
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

const CHECK: Check = |args| match literal_str(args, 0) {
    Some(p) => DatePattern::parse(p).map(|_| ()),
    None => match args.first().copied().flatten() {
        Some(v) if !v.is_string() => Err(format!("timestamp() needs a date pattern string, got {v}")),
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
    let off = chrono::Local.offset_from_utc_datetime(&t.naive_utc()).fix();
    Ok(Value::String(pattern.format(&t.with_timezone(&off))))
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
