//! "Did you mean" suggestions for misspelt function names.

use super::functions;

/// The known function nearest to a misspelt name, when it is close.
pub fn closest(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    functions::FUNCTIONS
        .iter()
        .map(|f| (edit_distance(&lower, &f.name.to_ascii_lowercase()), f.name))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases = [
            ("devicename2", Some("deviceName")),
            ("timestmp", Some("timestamp")),
            ("SUBSTR", None),
            ("frobnicate", None),
            ("uper", Some("upper")),
        ];
        for (name, want) in cases {
            assert_eq!(closest(name), want, "{name}");
        }
    }
}
