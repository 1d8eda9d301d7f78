//! `newuuid()`: a random (version 4) UUID string.

use serde_json::Value;

use super::{Args, FnSpec};
use crate::rules::error::EvalError;

/// `newuuid()`.
pub static SPEC: FnSpec =
    FnSpec { name: "newuuid", min: 0, max: 0, star: false, check: None, call, usage: "newuuid()" };

fn call(_: &Args<'_, '_>) -> Result<Value, EvalError> {
    let mut b: [u8; 16] = ::rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(Value::String(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])))
}

#[cfg(test)]
mod tests {
    #[test]
    fn shape_and_uniqueness() {
        let a = super::super::testing::call("newuuid", &[]).unwrap();
        let b = super::super::testing::call("newuuid", &[]).unwrap();
        let s = a.as_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(a, b);
    }
}
