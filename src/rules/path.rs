//! Field paths into the payload: `a`, `a.b.c`, `a[0]`, and the platform's quoted forms
//! `"a[1].v"`, `"$.a[0]"` (`$.` optional) and `".a[0]"` (a leading `.` wraps the result in an array).
//! A path may start with an index to reach into an array payload: `"[0].v"`, `"$[0].v"`,
//! `"$.[0].v"`.

use serde_json::Value;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// Object member.
    Key(String),
    /// Array element, 0-based.
    Index(usize),
}

/// A compiled path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Path {
    /// Steps from the payload root.
    pub segs: Vec<Seg>,
    /// A leading `.` in the platform syntax: the result is wrapped in a one-element array.
    pub wrap: bool,
}

impl Path {
    /// A path of one key.
    pub fn key(k: &str) -> Self {
        Self { segs: vec![Seg::Key(k.to_string())], wrap: false }
    }

    /// Parses the quoted path syntax.
    ///
    /// # Errors
    /// Empty keys, unbalanced brackets or non-numeric indexes, with a message.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut rest = text;
        let mut wrap = false;
        if let Some(r) = rest.strip_prefix("$.") {
            rest = r;
        } else if rest.starts_with("$[") {
            rest = &rest[1..];
        } else if rest == "$" {
            return Ok(Self::default());
        } else if let Some(r) = rest.strip_prefix('.') {
            wrap = true;
            rest = r;
        }
        let mut segs = Vec::new();
        let mut key = String::new();
        let mut chars = rest.chars().peekable();
        // After `]` a key may only start after a `.`.
        let mut after_index = false;
        while let Some(c) = chars.next() {
            match c {
                '.' => {
                    if key.is_empty() && !after_index {
                        return Err(format!("empty name in path {text:?}"));
                    }
                    if !key.is_empty() {
                        segs.push(Seg::Key(std::mem::take(&mut key)));
                    }
                    after_index = false;
                    if chars.peek().is_none() {
                        return Err(format!("path {text:?} ends with '.'"));
                    }
                }
                '[' => {
                    // An index first reads an array payload's element.
                    if !key.is_empty() {
                        segs.push(Seg::Key(std::mem::take(&mut key)));
                    }
                    let mut digits = String::new();
                    loop {
                        match chars.next() {
                            Some(']') => break,
                            Some(d) => digits.push(d),
                            None => return Err(format!("missing ']' in path {text:?}")),
                        }
                    }
                    let i: usize = digits.trim().parse().map_err(|_| {
                        format!("array index {digits:?} in path {text:?} is not a number >= 0")
                    })?;
                    segs.push(Seg::Index(i));
                    after_index = true;
                }
                ']' => return Err(format!("unbalanced ']' in path {text:?}")),
                c => {
                    if after_index && key.is_empty() {
                        return Err(format!("expected '.' or '[' after ']' in path {text:?}"));
                    }
                    key.push(c);
                }
            }
        }
        if !key.is_empty() {
            segs.push(Seg::Key(key));
        }
        if segs.is_empty() {
            return Err(format!("empty path {text:?}"));
        }
        Ok(Self { segs, wrap })
    }

    /// Appends the steps of `other`.
    pub fn extend(&mut self, other: Path) {
        self.segs.extend(other.segs);
        self.wrap |= other.wrap;
    }

    /// Looks the path up; `None` when any step is missing.
    pub fn get<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        let mut v = root;
        for s in &self.segs {
            v = match (s, v) {
                (Seg::Key(k), Value::Object(m)) => m.get(k)?,
                (Seg::Index(i), Value::Array(a)) => a.get(*i)?,
                _ => return None,
            };
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn platform_examples() {
        let doc = json!({"a":[{"v":0},{"v":1}], "b":{"c":{"d":[5,6]}}});
        let cases: &[(&str, Option<Value>, bool)] = &[
            ("a[0]", Some(json!({"v":0})), false),
            ("$.a[0]", Some(json!({"v":0})), false),
            (".a[0]", Some(json!({"v":0})), true),
            ("a[1].v", Some(json!(1)), false),
            (".a[1].v", Some(json!(1)), true),
            ("b.c.d[1]", Some(json!(6)), false),
            ("a[7]", None, false),
            ("b.x", None, false),
            ("[0]", None, false),
        ];
        for (text, want, wrap) in cases {
            let p = Path::parse(text).unwrap();
            assert_eq!(p.get(&doc).cloned(), *want, "{text}");
            assert_eq!(p.wrap, *wrap, "{text}");
        }
    }

    #[test]
    fn array_payloads() {
        let doc = json!([{"v":0},{"v":1,"w":[7,8]}]);
        let cases: &[(&str, Option<Value>, bool)] = &[
            ("[0]", Some(json!({"v":0})), false),
            ("[1].v", Some(json!(1)), false),
            ("$[1].v", Some(json!(1)), false),
            ("$.[1].w[1]", Some(json!(8)), false),
            (".[1].v", Some(json!(1)), true),
            ("[2].v", None, false),
            ("v", None, false),
        ];
        for (text, want, wrap) in cases {
            let p = Path::parse(text).unwrap();
            assert_eq!(p.get(&doc).cloned(), *want, "{text}");
            assert_eq!(p.wrap, *wrap, "{text}");
        }
    }

    #[test]
    fn malformed_paths_are_errors() {
        for bad in ["", "a..b", "a[", "a[x]", "a[-1]", "[x]", "$[", "a]", "a.", "a[0]b", "[0]b"] {
            assert!(Path::parse(bad).is_err(), "{bad}");
        }
    }
}
