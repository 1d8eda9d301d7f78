//! The topic index: a trie over filter levels, so finding the rules of a message costs one walk
//! down the topic's levels, however many rules are loaded.

use std::collections::HashMap;

use super::topic::{normalize, TopicFilter};

#[derive(Debug, Default)]
struct Node {
    exact: HashMap<String, Node>,
    plus: Option<Box<Node>>,
    /// Rules whose filter ends with `#` here.
    hash: Vec<usize>,
    /// Rules whose filter ends exactly here.
    here: Vec<usize>,
}

/// Maps topics to the ids of the rules whose filters match them.
#[derive(Debug, Default)]
pub struct TopicIndex {
    root: Node,
}

impl TopicIndex {
    /// Adds rule `id` under `filter`.
    pub fn insert(&mut self, filter: &TopicFilter, id: usize) {
        let mut node = &mut self.root;
        for l in &filter.levels {
            match l.as_str() {
                "#" => {
                    node.hash.push(id);
                    return;
                }
                "+" => node = node.plus.get_or_insert_with(Box::default),
                exact => node = node.exact.entry(exact.to_string()).or_default(),
            }
        }
        node.here.push(id);
    }

    /// Ids of the matching rules, sorted, without duplicates, appended to `out`.
    pub fn matches(&self, topic: &str, out: &mut Vec<usize>) {
        let start = out.len();
        walk(&self.root, normalize(topic).split('/'), out);
        let found = &mut out[start..];
        found.sort_unstable();
        let mut keep = start;
        for i in start..out.len() {
            if i == start || out[i] != out[keep - 1] {
                out[keep] = out[i];
                keep += 1;
            }
        }
        out.truncate(keep);
    }
}

/// Walks the trie; `levels` is cloned at branches (a `Split` clone is two pointers), so
/// matching allocates nothing. Recursion depth is bounded by the filter length (256 bytes).
fn walk<'t>(node: &Node, mut levels: std::str::Split<'t, char>, out: &mut Vec<usize>) {
    out.extend_from_slice(&node.hash);
    match levels.next() {
        None => out.extend_from_slice(&node.here),
        Some(first) => {
            if let Some(n) = node.exact.get(first) {
                walk(n, levels.clone(), out);
            }
            if let Some(n) = &node.plus {
                walk(n, levels, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_agrees_with_the_filters() {
        let filters = [
            "/a1demo/+/user/update",
            "/a1demo/dev1/user/#",
            "#",
            "/a1demo/dev1/user/update",
            "/sys/a1demo/+/thing/event/property/post",
            "/as/mqtt/status/a1demo/+",
            "/+/+/user/+",
        ];
        let parsed: Vec<TopicFilter> = filters.iter().map(|f| TopicFilter::parse(f).unwrap()).collect();
        let mut index = TopicIndex::default();
        for (i, f) in parsed.iter().enumerate() {
            index.insert(f, i);
        }
        for topic in [
            "/a1demo/dev1/user/update",
            "/a1demo/dev2/user/update",
            "/a1demo/dev1/user",
            "/a1demo/dev1/thing/event/property/post",
            "/sys/a1demo/dev1/thing/event/property/post",
            "/as/mqtt/status/a1demo/dev9",
            "",
        ] {
            let want: Vec<usize> = (0..parsed.len()).filter(|i| parsed[*i].matches(topic)).collect();
            let mut got = Vec::new();
            index.matches(topic, &mut got);
            assert_eq!(got, want, "{topic}");
        }
    }
}
