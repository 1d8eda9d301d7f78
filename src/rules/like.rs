//! `LIKE` patterns: `%` any run of characters, an optional escape character. As on the platform,
//! `%` is the only wildcard: `_` is an ordinary character (`'a_c'` matches `"a_c"` only), so a
//! pattern written for the platform means the same here. Matching is case-sensitive and works on
//! characters, not bytes.

/// One piece of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    Any,
}

/// A compiled `LIKE` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LikePattern(Vec<Tok>);

impl LikePattern {
    /// Compiles a pattern.
    ///
    /// # Errors
    /// A pattern ending in the escape character.
    pub fn new(pattern: &str, escape: Option<char>) -> Result<Self, String> {
        let mut toks = Vec::with_capacity(pattern.len());
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            if Some(c) == escape {
                match chars.next() {
                    Some(n) => toks.push(Tok::Lit(n)),
                    None => return Err(format!("LIKE pattern {pattern:?} ends with its escape character")),
                }
            } else if c == '%' {
                if toks.last() != Some(&Tok::Any) {
                    toks.push(Tok::Any);
                }
            } else {
                toks.push(Tok::Lit(c));
            }
        }
        Ok(Self(toks))
    }

    /// True when `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        // Iterative wildcard matching with one backtrack point: linear in practice and never
        // exponential, whatever the pattern.
        let s: Vec<char> = text.chars().collect();
        let p = &self.0;
        let (mut si, mut pi) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            match p.get(pi) {
                Some(Tok::Any) => {
                    star = Some((pi, si));
                    pi += 1;
                }
                Some(Tok::Lit(c)) if *c == s[si] => {
                    si += 1;
                    pi += 1;
                }
                _ => match star {
                    Some((sp, ss)) => {
                        pi = sp + 1;
                        si = ss + 1;
                        star = Some((sp, ss + 1));
                    }
                    None => return false,
                },
            }
        }
        p[pi..].iter().all(|t| *t == Tok::Any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, Option<char>, &str, bool)] = &[
            ("%abc", None, "xxabc", true),
            ("%abc", None, "abcx", false),
            ("dev%", None, "dev1", true),
            ("dev_", None, "dev1", false),
            ("dev_", None, "dev_", true),
            ("d_v%", None, "dav", false),
            ("d_v%", None, "d_v1", true),
            ("%_", None, "a_", true),
            ("%", None, "", true),
            ("_", None, "", false),
            ("a%b%c", None, "aXbYc", true),
            ("a%b%c", None, "aXcYb", false),
            ("100!%", Some('!'), "100%", true),
            ("100!%", Some('!'), "1000", false),
            ("é%", None, "éa", true),
            ("ABC", None, "abc", false),
        ];
        for (pat, esc, text, want) in cases {
            assert_eq!(LikePattern::new(pat, *esc).unwrap().matches(text), *want, "{pat} {text}");
        }
        assert!(LikePattern::new("a!", Some('!')).is_err());
    }
}
