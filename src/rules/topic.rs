//! Topic filters of `FROM`: `+` matches one level, a final `#` this level and everything below.
//!
//! Thing-model topics are forwarded without their `/sys` prefix
//! (`/sys/pk/dn/thing/event/property/post` is seen as `/pk/dn/thing/event/property/post`), but
//! the platform's own SQL examples write `FROM "/sys/..."`. Both spellings are accepted: filters
//! and topics are matched in their normal form, with a leading `/sys` removed.

/// A validated topic filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilter {
    /// As written in the rule.
    pub text: String,
    /// Levels of the normal form.
    pub levels: Vec<String>,
}

/// The normal form of a topic or filter: without a leading `/sys`.
pub fn normalize(topic: &str) -> &str {
    if topic.starts_with("/sys/") {
        &topic[4..]
    } else {
        topic
    }
}

impl TopicFilter {
    /// Parses and checks a filter.
    ///
    /// # Errors
    /// Empty filters, `#` not at the end, wildcards mixed with text in a level.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("the topic filter is empty".into());
        }
        if text.len() > 256 {
            return Err("the topic filter is longer than 256 bytes".into());
        }
        let levels: Vec<String> = normalize(text).split('/').map(str::to_string).collect();
        for (i, l) in levels.iter().enumerate() {
            if l == "#" && i + 1 != levels.len() {
                return Err(format!("'#' must be the last level of the topic filter {text:?}"));
            }
            if l.len() > 1 && (l.contains('#') || l.contains('+')) {
                return Err(format!(
                    "'{}' must be a whole level of the topic filter {text:?}",
                    if l.contains('#') { '#' } else { '+' }
                ));
            }
        }
        Ok(Self { text: text.to_string(), levels })
    }

    /// True when some topic matches both this filter and `other`, given as the levels of a filter
    /// in the normal form (`+` and a final `#` allowed).
    pub fn intersects(&self, other: &[&str]) -> bool {
        let mut i = 0;
        loop {
            match (self.levels.get(i).map(String::as_str), other.get(i).copied()) {
                (Some("#"), _) | (_, Some("#")) | (None, None) => return true,
                (Some(x), Some(y)) if x == "+" || y == "+" || x == y => i += 1,
                _ => return false,
            }
        }
    }

    /// True when `topic` matches (used by tests and for a single rule; the index matches sets).
    pub fn matches(&self, topic: &str) -> bool {
        let mut it = normalize(topic).split('/');
        for l in &self.levels {
            if l == "#" {
                return true;
            }
            match it.next() {
                Some(t) if l == "+" || l == t => {}
                _ => return false,
            }
        }
        it.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let cases: &[(&str, &str, bool)] = &[
            ("/a1demo/+/user/update", "/a1demo/dev1/user/update", true),
            ("/a1demo/+/user/update", "/a1demo/dev1/user/update/x", false),
            ("/a1demo/dev1/user/#", "/a1demo/dev1/user/a/b", true),
            ("/a1demo/dev1/user/#", "/a1demo/dev1/user", true),
            ("/a1demo/dev1/user/#", "/a1demo/dev2/user/a", false),
            ("/sys/a1demo/+/thing/event/property/post", "/a1demo/d/thing/event/property/post", true),
            ("/a1demo/+/thing/event/property/post", "/sys/a1demo/d/thing/event/property/post", true),
            ("/as/mqtt/status/a1demo/+", "/as/mqtt/status/a1demo/dev1", true),
            ("#", "/anything/at/all", true),
            ("/a/+", "/a/", true),
        ];
        for (f, t, want) in cases {
            assert_eq!(TopicFilter::parse(f).unwrap().matches(t), *want, "{f} {t}");
        }
    }

    #[test]
    fn intersecting() {
        let cases: &[(&str, &str, bool)] = &[
            ("/a1demo/+/user/update", "/a1demo/+/user/#", true),
            ("/+/dev1/user/#", "/a1demo/+/user/#", true),
            ("/sys/a1demo/+/thing/event/property/post", "/a1demo/+/thing/#", true),
            ("#", "/a1demo/+/user/#", true),
            ("/a1other/+/user/update", "/a1demo/+/user/#", false),
            ("/a1demo/+/user", "/a1demo/+/user/update", false),
            ("/a1demo/+/user/update", "/as/mqtt/status/a1demo/+", false),
        ];
        for (f, other, want) in cases {
            let levels: Vec<&str> = other.split('/').collect();
            assert_eq!(TopicFilter::parse(f).unwrap().intersects(&levels), *want, "{f} {other}");
        }
    }

    #[test]
    fn bad_filters() {
        for bad in ["", "/a/#/b", "/a/b+", "/a/#x"] {
            assert!(TopicFilter::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(normalize("/sys/a/b"), "/a/b");
        assert_eq!(normalize("/system/a"), "/system/a");
    }
}
