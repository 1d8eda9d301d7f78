//! The module graph is a design decision (docs/architecture.md): this test reads the `crate::`,
//! `super::` and `self::` paths of every file under `src/` and fails on an edge between two
//! top-level modules that `ALLOWED` does not hold, on an allowed edge that no longer exists (so
//! the list stays the truth), on any cycle between top-level modules, and on a cycle between
//! sibling files inside one module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and the top-level modules it may use. A new edge is a change to this
/// list and to docs/architecture.md together.
#[rustfmt::skip]
const ALLOWED: &[(&str, &[&str])] = &[
    // Leaves.
    ("check", &[]),
    ("downlink", &[]),
    ("histogram", &[]),
    ("message", &[]),
    ("sign", &[]),
    ("logsafe", &[]),
    ("listener", &["check"]),
    // Storage and the things stored.
    ("store", &["histogram"]),
    ("registry", &["check", "store"]),
    ("groups", &["check", "message", "store"]),
    // The queue boundary (consumer-group semantics) and the cluster backend behind it.
    ("queues", &["groups", "store"]),
    ("cluster", &["alerts", "catalog", "check", "commands", "downlink", "groups", "histogram", "ingress", "message", "queues", "registry", "rules", "store", "subscriptions"]),
    // The data path, upstream to downstream.
    ("rules", &["message"]),
    ("subscriptions", &["check", "groups", "message", "registry", "rules", "store"]),
    ("forwarding", &["downlink", "groups", "message", "rules", "store"]),
    ("pipeline", &["downlink", "forwarding", "groups", "message", "registry", "rules", "store", "subscriptions"]),
    ("ingress", &["check", "downlink", "listener", "logsafe", "message", "pipeline", "registry", "sign"]),
    ("devices", &["ingress", "message", "pipeline", "registry"]),
    ("commands", &["ingress", "logsafe", "pipeline", "registry"]),
    ("amqp", &["check", "groups", "listener", "logsafe", "queues", "registry", "sign", "store"]),
    ("alerts", &["check", "groups", "logsafe", "message", "store"]),
    // Operations on top of the components.
    ("catalog", &["groups", "rules", "subscriptions"]),
    ("metrics", &["alerts", "amqp", "cluster", "groups", "histogram", "ingress", "pipeline", "rules", "store"]),
    ("api", &["alerts", "catalog", "check", "commands", "devices", "groups", "listener", "logsafe", "metrics",
              "queues", "registry", "rules", "sign", "subscriptions"]),
    ("config", &["alerts", "amqp", "api", "check", "cluster", "groups", "ingress", "registry", "store",
                 "subscriptions"]),
    ("app", &["alerts", "amqp", "api", "catalog", "cluster", "commands", "config", "devices", "downlink", "groups",
              "ingress", "message", "metrics", "pipeline", "queues", "registry", "rules", "store", "subscriptions"]),
    // The load tool and the command line.
    ("bench", &["amqp", "groups", "ingress", "message", "sign"]),
    ("cli", &["amqp", "app", "bench", "config", "ingress", "message", "rules", "sign"]),
];

/// The module path of a source file: `src/a/b.rs` and `src/a/b/mod.rs` are `[a, b]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code without its `#[cfg(test)]` modules: tests may reach for whatever sets them up, and
/// their `super::` paths count from an inline module this reader does not track.
fn without_test_modules(code: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let after = rest[at + MARK.len()..].trim_start();
        let is_module = after.strip_prefix("mod ").is_some_and(|m| {
            let m = m.trim_start();
            m[ident_at(m).len()..].trim_start().starts_with('{')
        });
        if !is_module {
            out.push_str(MARK);
            rest = &rest[at + MARK.len()..];
            continue;
        }
        let open = after.find('{').unwrap();
        let mut depth = 0;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The text without comments and string literals, which may mention paths without using them.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if b[i] == b'r' && (b[i..].starts_with(b"r#\"") || b[i..].starts_with(b"r\"")) {
            let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
            let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
            i += 2 + hashes;
            while i < b.len() && !b[i..].starts_with(&close) {
                i += 1;
            }
            i += close.len();
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // A char literal such as '"' or '\n' (lifetimes have no closing quote).
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The first segment of every path in a `{...}` group starting right after the `{`.
fn group_heads(s: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 1;
    let mut expect = true;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => expect = true,
            c if expect && depth == 1 && (c.is_alphanumeric() || c == '_') => {
                heads.push(ident_at(&s[i..]).to_string());
                expect = false;
            }
            _ => {}
        }
    }
    heads
}

/// The module paths (from the crate root) that `code` of the module at `here` refers to: the
/// path up to the first segment that leaves `here`'s ancestors' names, e.g. `crate::a::b`
/// gives `[a, b]`, `super::x` from `[a, b]` gives `[a, x]`.
fn referenced(code: &str, here: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(pos) = rest.find(['c', 's']) {
        let at = &rest[pos..];
        let boundary = rest[..pos].chars().last().is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        let (base, tail): (Vec<String>, &str) = if !boundary {
            (Vec::new(), "")
        } else if let Some(t) = at.strip_prefix("crate::") {
            (Vec::new(), t)
        } else if at.starts_with("super::") {
            let mut t = at;
            let mut up = 0;
            while let Some(n) = t.strip_prefix("super::") {
                t = n;
                up += 1;
            }
            (here[..here.len().saturating_sub(up)].to_vec(), t)
        } else if let Some(t) = at.strip_prefix("self::") {
            (here.to_vec(), t)
        } else {
            (Vec::new(), "")
        };
        if tail.is_empty() && !at.starts_with("crate::") {
            rest = &rest[pos + 1..];
            continue;
        }
        if let Some(group) = tail.strip_prefix('{') {
            for head in group_heads(group) {
                let mut p = base.clone();
                p.push(head);
                out.push(p);
            }
        } else {
            let head = ident_at(tail);
            if !head.is_empty() {
                let mut p = base.clone();
                p.push(head.to_string());
                // One more segment, for edges between sibling files of one module.
                if let Some(next) = tail[head.len()..].strip_prefix("::") {
                    let second = ident_at(next);
                    if !second.is_empty() {
                        p.push(second.to_string());
                    }
                } else if let Some(group) = tail[head.len()..].strip_prefix("::{") {
                    for second in group_heads(group) {
                        let mut q = p.clone();
                        q.push(second);
                        out.push(q);
                    }
                }
                out.push(p);
            }
        }
        rest = &rest[pos + 1..];
    }
    out
}

struct Graph {
    /// Top-level module -> top-level modules it uses, with one file that does.
    top: BTreeMap<String, BTreeMap<String, String>>,
    /// `[module, child]` -> the children of the same module it uses.
    siblings: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_path(&src, f)).collect();
    let tops: BTreeSet<&str> = modules.iter().filter(|m| m.len() == 1).map(|m| m[0].as_str()).collect();
    // Names the crate root re-exports (`pub use app::App;`) stand for their module.
    let lib = code_only(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let reexports: BTreeMap<String, String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub use ")?.strip_suffix(';')?.split_once("::"))
        .map(|(module, name)| (ident_at(name).to_string(), module.to_string()))
        .collect();
    let mut g = Graph { top: BTreeMap::new(), siblings: BTreeMap::new() };
    for file in &files {
        let here = module_path(&src, file);
        if here.len() != 1 || !["lib", "main"].contains(&here[0].as_str()) {
            let code = without_test_modules(&code_only(&std::fs::read_to_string(file).unwrap()));
            for mut path in referenced(&code, &here) {
                if let Some(module) = path.first().and_then(|p| reexports.get(p)) {
                    path = vec![module.clone()];
                }
                let Some(target) = path.first() else { continue };
                if !tops.contains(target.as_str()) {
                    continue;
                }
                if *target != here[0] {
                    let rel = file.strip_prefix(&src).unwrap().display().to_string();
                    g.top.entry(here[0].clone()).or_default().entry(target.clone()).or_insert(rel);
                } else if here.len() >= 2 && path.len() >= 2 && modules.contains(&path[..2]) {
                    // Files of one module using each other, at the level below it: `rules::eval`
                    // (and everything under it) using `rules::value`. The module's own file is
                    // left out: it declares its children, and they use what it shares.
                    let (from, to) = (here[..2].to_vec(), path[..2].to_vec());
                    if from != to {
                        g.siblings.entry(from).or_default().insert(to);
                    }
                }
            }
        }
    }
    g
}

/// A cycle in `edges`, as the list of its nodes, if there is one.
fn find_cycle<N: Ord + Clone>(edges: &BTreeMap<N, BTreeSet<N>>) -> Option<Vec<N>> {
    fn visit<N: Ord + Clone>(
        n: &N,
        edges: &BTreeMap<N, BTreeSet<N>>,
        state: &mut BTreeMap<N, bool>,
        stack: &mut Vec<N>,
    ) -> Option<Vec<N>> {
        match state.get(n) {
            Some(true) => return None,
            Some(false) => {
                let start = stack.iter().position(|s| s == n).unwrap();
                let mut cycle = stack[start..].to_vec();
                cycle.push(n.clone());
                return Some(cycle);
            }
            None => {}
        }
        state.insert(n.clone(), false);
        stack.push(n.clone());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(n.clone(), true);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if let Some(c) = visit(n, edges, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn every_edge_between_top_level_modules_is_allowed_and_used() {
    let g = graph();
    let allowed: BTreeMap<&str, BTreeSet<&str>> =
        ALLOWED.iter().map(|(m, uses)| (*m, uses.iter().copied().collect())).collect();
    let mut problems = Vec::new();
    for (from, uses) in &g.top {
        let Some(may) = allowed.get(from.as_str()) else {
            problems.push(format!("module {from} is not in ALLOWED (tests/architecture.rs)"));
            continue;
        };
        for (to, file) in uses {
            if !may.contains(to.as_str()) {
                problems.push(format!("{from} -> {to} is not an allowed edge (src/{file})"));
            }
        }
    }
    for (from, may) in &allowed {
        for to in may {
            if !g.top.get(*from).is_some_and(|uses| uses.contains_key(*to)) {
                problems.push(format!("{from} -> {to} is allowed but unused: take it out of ALLOWED"));
            }
        }
    }
    assert!(problems.is_empty(), "module graph (docs/architecture.md):\n{}", problems.join("\n"));
}

#[test]
fn top_level_modules_form_no_cycle() {
    let g = graph();
    let edges: BTreeMap<String, BTreeSet<String>> =
        g.top.iter().map(|(m, uses)| (m.clone(), uses.keys().cloned().collect())).collect();
    assert_eq!(find_cycle(&edges), None, "a cycle between top-level modules");
    let allowed: BTreeMap<String, BTreeSet<String>> = ALLOWED
        .iter()
        .map(|(m, uses)| (m.to_string(), uses.iter().map(|u| u.to_string()).collect()))
        .collect();
    assert_eq!(find_cycle(&allowed), None, "ALLOWED itself has a cycle");
}

#[test]
fn sibling_files_of_a_module_form_no_cycle() {
    let g = graph();
    let cycle = find_cycle(&g.siblings).map(|c| c.iter().map(|m| m.join("::")).collect::<Vec<_>>());
    assert_eq!(cycle, None, "a cycle between files of one module");
}

#[test]
fn the_reader_finds_paths_in_their_forms() {
    let here = vec!["pipeline".to_string()];
    let code = code_only(
        "use crate::groups::Groups;\nuse crate::{message::Message, store::{Append, Ids}};\n\
         // crate::api in a comment\nlet s = \"crate::cli\"; let c = '\"';\nsuper::downlink::Downlink::start(1);",
    );
    let heads: BTreeSet<String> = referenced(&code, &here).into_iter().map(|p| p[0].clone()).collect();
    let want: BTreeSet<String> =
        ["groups", "message", "store", "downlink"].iter().map(|s| s.to_string()).collect();
    assert_eq!(heads, want);
    let code = without_test_modules(
        "use crate::a::X;\n#[cfg(test)]\nmod tests {\n use crate::b::{c, d};\n fn f() {}\n}\nuse crate::e;",
    );
    let heads: Vec<String> = referenced(&code, &here).into_iter().map(|p| p[0].clone()).collect();
    assert_eq!(heads, ["a", "e"]);
}
