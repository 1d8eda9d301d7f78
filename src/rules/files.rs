//! Reading a rules directory: `*.sql` rule files and `*.rhai` scripts.
//!
//! Scripts are loaded first, since rules may call their functions. A script named after a
//! product key (`a1demo.rhai`) that defines `rawDataToProtocol(bytes)` decodes that product's
//! custom-topic payloads before JSON rules see them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::Diagnostic;
use super::rule::Rule;
use super::script::{Script, Scripts};

/// Largest rule file: a rule is a header and one statement; anything bigger is a mistake.
pub const MAX_FILE: u64 = 64 * 1024;
/// Rule files per directory: bounds memory and load time (1,000 rules load in milliseconds).
pub const MAX_RULES: usize = 10_000;

/// What a directory holds.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Rules by file path.
    pub rules: BTreeMap<PathBuf, Arc<Rule>>,
    /// Product decoders by product key.
    pub decoders: HashMap<String, Arc<Script>>,
    /// User functions.
    pub scripts: Scripts,
    /// Problems, each naming its file.
    pub diagnostics: Vec<Diagnostic>,
}

fn diag(path: &Path, message: String) -> Diagnostic {
    Diagnostic { file: path.display().to_string(), line: 1, col: 1, message, hint: None }
}

/// Reads a file that must be small.
pub fn read_small(path: &Path) -> Result<String, Diagnostic> {
    let meta = std::fs::metadata(path).map_err(|e| diag(path, format!("cannot read: {e}")))?;
    if meta.len() > MAX_FILE {
        return Err(diag(path, format!("the file is larger than {MAX_FILE} bytes")));
    }
    std::fs::read_to_string(path).map_err(|e| diag(path, format!("cannot read: {e}")))
}

/// Loads the scripts of `dir`.
pub fn load_scripts(dir: &Path, out: &mut Loaded) {
    for path in list(dir, "rhai", out) {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                out.diagnostics.push(diag(&path, format!("cannot read: {e}")));
                continue;
            }
        };
        match Script::compile(&text) {
            Ok(s) => {
                if s.has_decoder() {
                    if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                        out.decoders.insert(stem.to_string(), Arc::clone(&s));
                    }
                }
                out.scripts.add(&s);
            }
            Err(e) => out.diagnostics.push(Diagnostic {
                file: path.display().to_string(),
                line: 1,
                col: 1,
                message: e.to_string(),
                hint: None,
            }),
        }
    }
}

/// Compiles one rule file.
///
/// # Errors
/// The file's problems.
pub fn load_rule(path: &Path, scripts: &Scripts) -> Result<Rule, Vec<Diagnostic>> {
    let text = read_small(path).map_err(|d| vec![d])?;
    compile_rule(path, &text, scripts)
}

/// Compiles `text` as the rule file `path` (which names it and gives its default name).
///
/// # Errors
/// The text's problems, reported against `path`.
pub fn compile_rule(path: &Path, text: &str, scripts: &Scripts) -> Result<Rule, Vec<Diagnostic>> {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("rule");
    let scripts = (!scripts.is_empty()).then_some(scripts);
    Rule::from_file(&path.display().to_string(), stem, text, scripts)
}

/// Loads a whole directory.
pub fn load_dir(dir: &Path) -> Loaded {
    let mut out = Loaded::default();
    load_scripts(dir, &mut out);
    let paths = list(dir, "sql", &mut out);
    let mut names: HashMap<String, PathBuf> = HashMap::new();
    for path in paths.into_iter().take(MAX_RULES) {
        match load_rule(&path, &out.scripts) {
            Ok(rule) => {
                if let Some(first) = names.get(&rule.name) {
                    out.diagnostics.push(diag(
                        &path,
                        format!("the rule name {:?} is already used by {}", rule.name, first.display()),
                    ));
                    continue;
                }
                names.insert(rule.name.clone(), path.clone());
                out.rules.insert(path, Arc::new(rule));
            }
            Err(d) => out.diagnostics.extend(d),
        }
    }
    out
}

/// Files of `dir` ending in `.ext`, sorted.
fn list(dir: &Path, ext: &str, out: &mut Loaded) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            out.diagnostics.push(diag(dir, format!("cannot read the rules directory: {e}")));
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().and_then(|e| e.to_str()) == Some(ext))
        .collect();
    paths.sort();
    if ext == "sql" && paths.len() > MAX_RULES {
        out.diagnostics.push(diag(dir, format!("more than {MAX_RULES} rule files; the rest are ignored")));
    }
    paths
}
