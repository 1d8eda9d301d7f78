//! `topic()` / `topic(n)`: the whole topic, or its level `n` counted from 1 (the leading `/` does
//! not start a level): for `/pk/dev/user/set`, `topic(1)` is `pk`, `topic(2)` is `dev`.
//! A level past the end is null.

use serde_json::Value;

use super::{Args, Check, FnSpec};
use crate::rules::error::EvalError;

/// `topic([n])`.
pub static SPEC: FnSpec =
    FnSpec { name: "topic", min: 0, max: 1, star: false, check: Some(CHECK), call, usage: "topic([n])" };

const CHECK: Check = |args| match args.first().copied().flatten() {
    Some(v) if v.as_u64().is_none_or(|n| n == 0) => {
        Err(format!("topic(n) needs a level number >= 1, got {v}"))
    }
    _ => Ok(()),
};

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    let topic = a.env.topic;
    if a.vals.is_empty() {
        return Ok(Value::String(topic.to_string()));
    }
    if a.any_null() {
        return Ok(Value::Null);
    }
    let n = match a.num(0)? {
        crate::rules::value::Num::I(n) if n >= 1 => n as usize,
        _ => return Err(a.err(format!("needs a level number >= 1, got {}", a.get(0)))),
    };
    let levels = topic.strip_prefix('/').unwrap_or(topic);
    Ok(levels.split('/').nth(n - 1).map_or(Value::Null, |l| Value::String(l.to_string())))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "topic",
            &[
                (vec![], Ok(json!("/a1demo/dev1/user/update"))),
                (vec![json!(1)], Ok(json!("a1demo"))),
                (vec![json!(2)], Ok(json!("dev1"))),
                (vec![json!(4)], Ok(json!("update"))),
                (vec![json!(5)], Ok(json!(null))),
                (vec![json!(0)], Err("level number")),
            ],
        );
        assert!((super::CHECK)(&[Some(&json!(0))]).is_err());
        assert!((super::CHECK)(&[Some(&json!(2))]).is_ok());
    }
}
