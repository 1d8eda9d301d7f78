//! What devices send: a 256-byte JSON reading that carries its send time, and names made
//! from patterns such as `dev{i:05}`.

use std::fmt::Write as _;

/// Size of every payload, as in the modelled platform's typical property post.
pub const PAYLOAD_BYTES: usize = 256;

/// Epoch microseconds.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A 256-byte JSON payload: `{"device":..,"temperature":38.5,"seq":..,"ts":..,"pad":"xx.."}`
/// with `ts` the send time in epoch microseconds. `temperature` passes the bench rule's filter.
pub fn payload(device: &str, seq: u64, ts_us: u64) -> Vec<u8> {
    let mut p = String::with_capacity(PAYLOAD_BYTES);
    let _ =
        write!(p, "{{\"device\":\"{device}\",\"temperature\":38.5,\"seq\":{seq},\"ts\":{ts_us},\"pad\":\"");
    while p.len() < PAYLOAD_BYTES - 2 {
        p.push('x');
    }
    p.push_str("\"}");
    p.into_bytes()
}

/// The `ts` field of a payload or of a rule's projection of it (any field order).
pub fn sent_at_us(body: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"ts\":";
    let at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = body[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&body[at..at + digits]).ok()?.parse().ok()
}

/// Fills a name pattern for device number `i`: `{i}` is the number, `{i:05}` the number padded
/// with zeros to 5 digits; anything else is kept as written.
pub fn fill(pattern: &str, i: usize) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut rest = pattern;
    while let Some(start) = rest.find("{i") {
        let tail = &rest[start..];
        let Some(end) = tail.find('}') else { break };
        out.push_str(&rest[..start]);
        let spec = &tail[2..end];
        let width = spec.strip_prefix(":0").and_then(|w| w.parse::<usize>().ok());
        match (spec, width) {
            ("", _) => {
                let _ = write!(out, "{i}");
            }
            (_, Some(w)) => {
                let _ = write!(out, "{i:0w$}");
            }
            _ => out.push_str(&tail[..=end]),
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_256_bytes_of_json_with_their_send_time() {
        let p = payload("dev00042", 7, 1_795_000_000_123_456);
        assert_eq!(p.len(), PAYLOAD_BYTES);
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["device"], "dev00042");
        assert_eq!(v["seq"], 7);
        assert_eq!(sent_at_us(&p), Some(1_795_000_000_123_456));
    }

    #[test]
    fn send_time_is_found_in_a_projection_too() {
        assert_eq!(sent_at_us(br#"{"dn":"d","temperature":38.5,"ts":12345}"#), Some(12345));
        assert_eq!(sent_at_us(br#"{"ts":9,"seq":1}"#), Some(9));
        assert_eq!(sent_at_us(br#"{"status":"online"}"#), None);
        assert_eq!(sent_at_us(br#"{"ts":"x"}"#), None);
    }

    #[test]
    fn name_patterns() {
        assert_eq!(fill("dev{i:05}", 42), "dev00042");
        assert_eq!(fill("s{i}", 42), "s42");
        assert_eq!(fill("d{i}-{i:03}", 5), "d5-005");
        assert_eq!(fill("plain", 5), "plain");
        assert_eq!(fill("odd{x}{i:zz}", 5), "odd{x}{i:zz}");
        assert_eq!(fill("open{i", 5), "open{i");
    }
}
