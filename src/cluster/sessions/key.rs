//! A device's key in the sessions bucket.

/// The KV key of a device: `<productKey>.<deviceName>`, each escaped.
pub fn key(product_key: &str, device_name: &str) -> String {
    let mut key = String::with_capacity(product_key.len() + device_name.len() + 1);
    escape(product_key, &mut key);
    key.push('.');
    escape(device_name, &mut key);
    key
}

/// Keeps `[A-Za-z0-9_-]` and writes every other byte as `=XX`: KV keys allow
/// `[-/_=.a-zA-Z0-9]`, and `.` separates the two parts.
fn escape(part: &str, out: &mut String) {
    if part.is_empty() {
        out.push('=');
        return;
    }
    for b in part.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_kv_keys_and_distinct() {
        assert_eq!(key("a1test", "dev1"), "a1test.dev1");
        assert_eq!(key("a1test", "d.e:v@1"), "a1test.d=2Ee=3Av=401");
        assert_eq!(key("a1test", "a=b"), "a1test.a=3Db");
        assert_ne!(key("a.b", "c"), key("a", "b.c"));
        assert_eq!(key("p", ""), "p.=");
        let k = key("p", "名前");
        assert!(k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_=.".contains(&b)), "{k}");
    }
}
