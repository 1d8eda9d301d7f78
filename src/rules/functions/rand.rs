//! `rand()`: a random float in [0, 1).

use serde_json::Value;

use super::{Args, FnSpec};
use crate::rules::error::EvalError;
use crate::rules::value;

/// `rand()`.
pub static SPEC: FnSpec =
    FnSpec { name: "rand", min: 0, max: 0, star: false, check: None, call, usage: "rand()" };

fn call(_: &Args<'_, '_>) -> Result<Value, EvalError> {
    value::float(::rand::random::<f64>(), "rand")
}

#[cfg(test)]
mod tests {
    #[test]
    fn in_range() {
        for _ in 0..100 {
            let v = super::super::testing::call("rand", &[]).unwrap().as_f64().unwrap();
            assert!((0.0..1.0).contains(&v));
        }
    }
}
