//! rhai scripts, sandboxed: user functions callable from SQL, and per-product decoders
//! `rawDataToProtocol(bytes) -> map` for binary devices.
//!
//! The sandbox: no module loading (a dummy resolver), `print`/`debug` discarded, and limits on
//! operations, string, array and map sizes, call depth, expression depth and wall time. A script
//! that breaks a limit fails the rule for that message with the script's error.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::{CallFnOptions, Dynamic, Engine, Scope, AST};
use serde_json::Value;

use super::error::EvalError;

/// Operations a call may take: a few hundred thousand run in about a millisecond; a loop that
/// runs away is stopped well before it costs the message path noticeable time.
const MAX_OPERATIONS: u64 = 200_000;
/// Wall-time budget of one call (also covers slow operations the counter cannot see). Within a
/// rule evaluation the tighter [`RULE_BUDGET`] applies.
const TIME_BUDGET: Duration = Duration::from_millis(20);
/// Wall time one rule may spend on one message, script calls and decoding included. Rules run
/// on the pipeline's batch path, before the PUBACKs of every device in the batch: a slow script
/// must not hold the others up for long. 5 ms keeps a rule that overruns on every message of a
/// device at 100 msgs/s to half the path's time; an overrun fails the rule for that message
/// (its error action runs) and is counted in `eval.overruns`.
pub(crate) const RULE_BUDGET: Duration = Duration::from_millis(5);
/// Largest string a script may build: payloads are at most 256 KiB.
const MAX_STRING: usize = 256 * 1024;
/// Largest array or BLOB.
const MAX_ARRAY: usize = 64 * 1024;
/// Largest object map.
const MAX_MAP: usize = 4096;
/// Call depth: enough for helpers calling helpers, not for unbounded recursion.
const MAX_CALL_LEVELS: usize = 32;
/// Script source size; the platform allows 120 KB parser scripts.
pub(crate) const MAX_SOURCE: usize = 128 * 1024;

/// The name of the decoding function of binary products.
pub(crate) const DECODER: &str = "rawDataToProtocol";

thread_local! {
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Script failures at load time.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScriptError {
    /// rhai could not compile the script.
    #[error("{line}:{col}: {message}")]
    Compile {
        /// Line.
        line: usize,
        /// Column.
        col: usize,
        /// rhai's message.
        message: String,
    },
    /// The script is too large.
    #[error("1:1: the script is larger than {MAX_SOURCE} bytes")]
    TooLarge,
}

/// The sandboxed engine.
fn engine() -> Engine {
    let mut e = Engine::new();
    e.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    e.set_max_operations(MAX_OPERATIONS);
    e.set_max_string_size(MAX_STRING);
    e.set_max_array_size(MAX_ARRAY);
    e.set_max_map_size(MAX_MAP);
    e.set_max_call_levels(MAX_CALL_LEVELS);
    e.set_max_expr_depths(64, 32);
    e.on_print(|_| {});
    e.on_debug(|_, _, _| {});
    e.on_progress(|_| {
        let late = DEADLINE.with(|d| d.get().is_some_and(|t| Instant::now() > t));
        late.then(|| Dynamic::from("time budget exceeded"))
    });
    e
}

/// A script file: its functions.
#[derive(Debug)]
pub struct Script {
    engine: Arc<Engine>,
    ast: AST,
}

/// A user function callable from SQL.
#[derive(Debug)]
pub(crate) struct ScriptFn {
    script: Arc<Script>,
    /// Function name.
    pub(crate) name: String,
    /// Parameter count.
    pub(crate) params: usize,
}

impl ScriptFn {
    /// Calls the function.
    ///
    /// # Errors
    /// Script errors, limits, results that are not JSON values.
    pub(crate) fn call(&self, args: &[Value]) -> Result<Value, EvalError> {
        let args: Vec<Dynamic> = args.iter().map(to_dynamic).collect();
        let out = self
            .script
            .call(&self.name, args)
            .map_err(|m| EvalError::Script { name: self.name.clone(), message: m })?;
        from_dynamic(&out, 0).map_err(|m| EvalError::Script { name: self.name.clone(), message: m })
    }
}

impl Script {
    /// Compiles a script.
    ///
    /// # Errors
    /// Syntax errors with a position, or a script that is too large.
    pub fn compile(source: &str) -> Result<Arc<Self>, ScriptError> {
        if source.len() > MAX_SOURCE {
            return Err(ScriptError::TooLarge);
        }
        let engine = engine();
        let ast = engine.compile(source).map_err(|e| {
            let p = e.position();
            ScriptError::Compile {
                line: p.line().unwrap_or(1),
                col: p.position().unwrap_or(1),
                message: e.to_string(),
            }
        })?;
        Ok(Arc::new(Self { engine: Arc::new(engine), ast }))
    }

    /// Names and parameter counts of the script's functions.
    pub(crate) fn functions(&self) -> Vec<(String, usize)> {
        self.ast.iter_functions().map(|f| (f.name.to_string(), f.params.len())).collect()
    }

    fn call(&self, name: &str, args: Vec<Dynamic>) -> Result<Dynamic, String> {
        let own = Instant::now() + TIME_BUDGET;
        let prev = DEADLINE.with(|d| d.replace(Some(d.get().map_or(own, |outer| outer.min(own)))));
        let mut scope = Scope::new();
        // eval_ast(false): do not re-run the script's top-level statements on every call.
        let r = self.engine.call_fn_with_options::<Dynamic>(
            CallFnOptions::new().eval_ast(false).rewind_scope(true),
            &mut scope,
            &self.ast,
            name,
            args,
        );
        DEADLINE.with(|d| d.set(prev));
        r.map_err(|e| e.to_string())
    }

    /// Runs `rawDataToProtocol(bytes)`, which must return a map.
    ///
    /// # Errors
    /// Script errors, or a result that is not a map.
    pub(crate) fn decode(&self, bytes: &[u8]) -> Result<Value, EvalError> {
        let err = |m: String| EvalError::Script { name: DECODER.to_string(), message: m };
        let out = self.call(DECODER, vec![Dynamic::from_blob(bytes.to_vec())]).map_err(err)?;
        match from_dynamic(&out, 0).map_err(err)? {
            v @ Value::Object(_) => Ok(v),
            other => Err(err(format!("must return a map, returned {other}"))),
        }
    }

    /// True when the script defines `rawDataToProtocol(bytes)`.
    pub(crate) fn has_decoder(&self) -> bool {
        self.functions().iter().any(|(n, p)| n == DECODER && *p == 1)
    }
}

/// Runs `f` with every script call in it sharing `deadline` (each call still has its own
/// budget, whichever ends first).
pub(crate) fn within<T>(deadline: Instant, f: impl FnOnce() -> T) -> T {
    let prev = DEADLINE.with(|d| d.replace(Some(deadline)));
    let out = f();
    DEADLINE.with(|d| d.set(prev));
    out
}

/// User functions by name (case-insensitive, as SQL function names are).
#[derive(Debug, Default, Clone)]
pub struct Scripts {
    fns: HashMap<String, Arc<ScriptFn>>,
}

impl Scripts {
    /// Adds every function of `script`; a later script wins over an earlier one of the same name.
    pub fn add(&mut self, script: &Arc<Script>) {
        for (name, params) in script.functions() {
            let f = ScriptFn { script: Arc::clone(script), name: name.clone(), params };
            self.fns.insert(name.to_ascii_lowercase(), Arc::new(f));
        }
    }

    /// A function by name.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<ScriptFn>> {
        self.fns.get(&name.to_ascii_lowercase()).cloned()
    }

    /// True when no function is defined.
    pub(crate) fn is_empty(&self) -> bool {
        self.fns.is_empty()
    }
}

fn to_dynamic(v: &Value) -> Dynamic {
    match v {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => Dynamic::from(s.clone()),
        Value::Array(a) => Dynamic::from_array(a.iter().map(to_dynamic).collect()),
        Value::Object(m) => {
            let map: rhai::Map = m.iter().map(|(k, v)| (k.as_str().into(), to_dynamic(v))).collect();
            Dynamic::from_map(map)
        }
    }
}

/// Nesting a script result may have; deeper results are refused rather than recursed into.
const MAX_DEPTH: usize = 64;

fn from_dynamic(d: &Dynamic, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err("the result is nested too deeply".into());
    }
    if d.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = d.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = d.as_int() {
        return Ok(Value::from(i));
    }
    if let Ok(f) = d.as_float() {
        return serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("returned {f}, not a finite number"));
    }
    if d.is_string() {
        return Ok(Value::String(d.clone().into_string().unwrap_or_default()));
    }
    if d.is_blob() {
        let b = d.clone().into_blob().unwrap_or_default();
        return Ok(Value::Array(b.into_iter().map(Value::from).collect()));
    }
    if d.is_array() {
        let a = d.clone().into_array().unwrap_or_default();
        return a.iter().map(|x| from_dynamic(x, depth + 1)).collect::<Result<Vec<_>, _>>().map(Value::Array);
    }
    if d.is_map() {
        if let Some(m) = d.read_lock::<rhai::Map>() {
            let mut out = serde_json::Map::new();
            for (k, v) in m.iter() {
                out.insert(k.to_string(), from_dynamic(v, depth + 1)?);
            }
            return Ok(Value::Object(out));
        }
    }
    if d.is_char() {
        return Ok(Value::String(d.to_string()));
    }
    Err(format!("returned a {}, which is not a JSON value", d.type_name()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn user_functions_and_decoder() {
        let s = Script::compile(
            "fn c_to_f(c) { c * 9.0 / 5.0 + 32.0 }
             fn rawDataToProtocol(b) { #{ temp: b[0], hum: b[1] } }
             fn spin() { loop {} }
             fn grow() { let s = \"x\"; loop { s += s; } }
             fn deep(n) { deep(n + 1) }",
        )
        .unwrap();
        let mut fns = Scripts::default();
        fns.add(&s);
        let f = fns.get("C_TO_F").unwrap();
        assert_eq!(f.call(&[json!(100)]).unwrap(), json!(212.0));
        assert!(s.has_decoder());
        assert_eq!(s.decode(&[21, 60]).unwrap(), json!({"temp":21,"hum":60}));
        for bad in ["spin", "grow"] {
            assert!(fns.get(bad).unwrap().call(&[]).is_err(), "{bad}");
        }
        assert!(fns.get("deep").unwrap().call(&[json!(0)]).is_err());
    }

    #[test]
    fn calls_share_the_deadline_they_run_within() {
        let s = Script::compile("fn spin() { loop {} } fn one() { 1 }").unwrap();
        let mut fns = Scripts::default();
        fns.add(&s);
        let past = Instant::now();
        let started = Instant::now();
        let e = within(past, || fns.get("spin").unwrap().call(&[])).unwrap_err();
        assert!(e.to_string().contains("terminated"), "{e}");
        assert!(started.elapsed() < TIME_BUDGET, "stopped at the outer deadline, not its own budget");
        // Outside `within`, a call has its own budget again.
        assert_eq!(fns.get("one").unwrap().call(&[]).unwrap(), json!(1));
    }

    #[test]
    fn no_modules_and_compile_errors_have_positions() {
        let s = Script::compile("fn f() { import \"os\" as os; 1 }").unwrap();
        let mut fns = Scripts::default();
        fns.add(&s);
        assert!(fns.get("f").unwrap().call(&[]).is_err());
        assert!(matches!(Script::compile("fn f( {"), Err(ScriptError::Compile { line: 1, .. })));
    }
}
