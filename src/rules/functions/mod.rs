//! Built-in SQL functions, one per file. Each file defines a `SPEC` registered in [`FUNCTIONS`].
//!
//! Conventions (docs/rules.md, "Functions"): names are case-insensitive; argument counts are
//! checked when the rule compiles, and so are literal arguments of the wrong type; a null
//! argument makes the result null, except for `nanvl`.

use std::borrow::Cow;

use serde_json::Value;

use super::context::Env;
use super::error::EvalError;
use super::value::{self, Num};

mod abs;
mod asin;
mod attribute;
mod client_id;
mod client_ip;
mod concat;
mod cos;
mod cosh;
mod crypto;
pub(crate) mod datefmt;
mod device_name;
mod endswith;
mod exp;
pub(crate) mod floor;
mod hmac;
mod log;
mod lower;
mod md5;
mod message_id;
mod modulo;
mod nanvl;
mod newuuid;
mod payload;
mod power;
mod product_key;
mod rand;
mod replace;
mod sha1;
mod sha256;
mod sin;
mod sinh;
pub(crate) mod substring;
mod tan;
mod tanh;
pub(crate) mod thing_property_flat_map;
mod timestamp;
mod timestamp_utc;
mod to_base64;
mod to_hex;
mod topic;
mod upper;

/// Checks literal arguments at compile time; `None` stands for a non-literal argument.
pub type Check = fn(&[Option<&Value>]) -> Result<(), String>;

/// The implementation of a function.
pub type Impl = fn(&Args<'_, '_>) -> Result<Value, EvalError>;

/// A built-in function.
#[derive(Debug)]
pub struct FnSpec {
    /// Name as documented (matched case-insensitively).
    pub name: &'static str,
    /// Fewest arguments.
    pub min: usize,
    /// Most arguments.
    pub max: usize,
    /// True when `*` is accepted as the only argument (the raw payload).
    pub star: bool,
    /// Compile-time check of literal arguments.
    pub check: Option<Check>,
    /// The implementation.
    pub call: Impl,
    /// One line for docs and error hints.
    pub usage: &'static str,
}

/// Arguments of one call.
pub struct Args<'x, 'a> {
    /// Evaluated arguments.
    pub vals: &'x [Cow<'a, Value>],
    /// The argument was `*`.
    pub star: bool,
    /// The message.
    pub env: &'x Env<'a>,
    /// Function name, for errors.
    pub name: &'static str,
}

static NULL: Value = Value::Null;

impl Args<'_, '_> {
    /// Argument `i`, null when absent.
    pub fn get(&self, i: usize) -> &Value {
        self.vals.get(i).map_or(&NULL, |v| v.as_ref())
    }

    /// True when any given argument is null.
    pub fn any_null(&self) -> bool {
        self.vals.iter().any(|v| v.is_null())
    }

    /// An error of this function.
    pub fn err(&self, message: impl Into<String>) -> EvalError {
        EvalError::Function { name: self.name, message: message.into() }
    }

    /// Argument `i` as a number.
    ///
    /// # Errors
    /// Not a number nor a numeric string.
    pub fn num(&self, i: usize) -> Result<Num, EvalError> {
        let v = self.get(i);
        value::to_num(v).ok_or_else(|| {
            self.err(format!("argument {} must be a number, got {}", i + 1, value::describe(v)))
        })
    }

    /// Argument `i` as text (strings as they are, other values as JSON).
    pub fn text(&self, i: usize) -> Cow<'_, str> {
        value::text(self.get(i))
    }
}

/// Every built-in function.
pub static FUNCTIONS: &[&FnSpec] = &[
    &abs::SPEC,
    &asin::SPEC,
    &attribute::SPEC,
    &client_id::SPEC,
    &client_ip::SPEC,
    &concat::SPEC,
    &cos::SPEC,
    &cosh::SPEC,
    &crypto::SPEC,
    &device_name::SPEC,
    &endswith::SPEC,
    &exp::SPEC,
    &floor::SPEC,
    &hmac::SPEC,
    &log::SPEC,
    &lower::SPEC,
    &md5::SPEC,
    &message_id::SPEC,
    &modulo::SPEC,
    &nanvl::SPEC,
    &newuuid::SPEC,
    &payload::SPEC,
    &power::SPEC,
    &product_key::SPEC,
    &rand::SPEC,
    &replace::SPEC,
    &sha1::SPEC,
    &sha256::SPEC,
    &sin::SPEC,
    &sinh::SPEC,
    &substring::SPEC,
    &tan::SPEC,
    &tanh::SPEC,
    &thing_property_flat_map::SPEC,
    &timestamp::SPEC,
    &timestamp_utc::SPEC,
    &to_base64::SPEC,
    &to_hex::SPEC,
    &topic::SPEC,
    &upper::SPEC,
];

/// Finds a function by name, ignoring case.
pub fn lookup(name: &str) -> Option<&'static FnSpec> {
    FUNCTIONS.iter().copied().find(|f| f.name.eq_ignore_ascii_case(name))
}

/// A one-argument float function: null in, null out; the result must be finite.
pub(crate) fn math1(a: &Args<'_, '_>, f: fn(f64) -> f64) -> Result<Value, EvalError> {
    if a.any_null() {
        return Ok(Value::Null);
    }
    let x = a.num(0)?.f();
    value::float(f(x), a.name)
}

/// A literal argument that must be a string.
pub(crate) fn literal_str<'v>(args: &[Option<&'v Value>], i: usize) -> Option<&'v str> {
    args.get(i).copied().flatten().and_then(Value::as_str)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Calls a function outside a rule, against a fixed message.

    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::message::{Kind, Message, Origin};
    use crate::rules::context::EvalContext;

    /// The message functions see in tests.
    pub fn message(topic: &str, payload: &[u8]) -> Message {
        Message {
            id: 42,
            kind: Kind::Upstream,
            topic: topic.to_string(),
            payload: bytes::Bytes::copy_from_slice(payload),
            qos: 1,
            origin: Arc::new(Origin {
                product_key: "a1demo".into(),
                device_name: "dev1".into(),
                iot_id: "iot1".into(),
                device_type: "CustomCategory".into(),
                client_id: "c1".into(),
                peer: Some("192.0.2.1:5000".parse().unwrap()),
            }),
            // 2024-01-02T03:04:05.678Z
            received_at_ms: 1_704_164_645_678,
            platform: None,
        }
    }

    /// Calls `name` with `args` on the payload `{"a":1}` of `/a1demo/dev1/user/update`.
    pub fn call(name: &str, args: &[Value]) -> Result<Value, EvalError> {
        call_on(name, args, false, b"{\"a\":1}")
    }

    /// Calls `name` with `args` (or `*`) on `payload`.
    pub fn call_on(name: &str, args: &[Value], star: bool, payload: &[u8]) -> Result<Value, EvalError> {
        let spec = lookup(name).expect("known function");
        let msg = message("/a1demo/dev1/user/update", payload);
        let json: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
        let mut tags = BTreeMap::new();
        tags.insert("room".to_string(), "lab".to_string());
        let ctx = EvalContext { tags: Some(&tags) };
        let env = Env { msg: &msg, topic: &msg.topic, payload: &msg.payload, json: &json, ctx: &ctx };
        let vals: Vec<Cow<'_, Value>> = args.iter().map(Cow::Borrowed).collect();
        (spec.call)(&Args { vals: &vals, star, env: &env, name: spec.name })
    }

    /// Runs a table: (arguments, expected result or `Err(substring of the error)`).
    pub fn table(name: &str, cases: &[(Vec<Value>, Result<Value, &str>)]) {
        for (args, want) in cases {
            let got = call(name, args);
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(g, w, "{name}({args:?})"),
                (Err(w), Err(g)) => assert!(g.to_string().contains(w), "{name}({args:?}): {g} lacks {w}"),
                _ => panic!("{name}({args:?}): got {got:?}, want {want:?}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_case_insensitive() {
        for f in FUNCTIONS {
            assert_eq!(
                FUNCTIONS.iter().filter(|g| g.name.eq_ignore_ascii_case(f.name)).count(),
                1,
                "{}",
                f.name
            );
            assert!(f.min <= f.max, "{}", f.name);
        }
        assert!(lookup("DEVICENAME").is_some());
        assert!(lookup("nope").is_none());
    }
}
