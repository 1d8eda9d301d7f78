//! Java `SimpleDateFormat` patterns, as the platform's `timestamp(fmt)` takes them
//! (`yyyy-MM-dd'T'HH:mm:ss'Z'`). Not a SQL function: shared by `timestamp` and `timestamp_utc`.
//!
//! Supported letters: `y M d H h k K m s S E a D u Z X z`; text in single quotes is literal and
//! `''` is a quote. Other ASCII letters are reserved by Java and rejected, so a typo is a compile
//! error rather than a silent wrong date.

use chrono::{DateTime, Datelike, FixedOffset, Offset as _, TimeZone as _, Timelike};
use serde_json::Value;

use super::{literal_str, Args};
use crate::rules::error::EvalError;

/// The compile-time check of `timestamp([fmt])` and `timestamp_utc([fmt])`: a literal pattern
/// must parse; anything else must at least not be a non-string literal.
pub(super) fn check_pattern(function: &str, args: &[Option<&Value>]) -> Result<(), String> {
    match literal_str(args, 0) {
        Some(p) => DatePattern::parse(p).map(|_| ()),
        None => match args.first().copied().flatten() {
            Some(v) if !v.is_string() => Err(format!("{function}() needs a date pattern string, got {v}")),
            _ => Ok(()),
        },
    }
}

/// The message's receive time: epoch ms without arguments, else formatted with the pattern in
/// the server's local time zone (`local`) or in UTC.
pub(super) fn receive_time(a: &Args<'_, '_>, local: bool) -> Result<Value, EvalError> {
    let ms = a.env.msg.received_at_ms;
    if a.vals.is_empty() {
        return Ok(Value::from(ms));
    }
    if a.any_null() {
        return Ok(Value::Null);
    }
    // Patterns are usually literals checked at compile time; parsing again here costs well under
    // a microsecond and keeps computed patterns possible.
    let pattern = DatePattern::parse(&a.text(0)).map_err(|e| a.err(e))?;
    let t = DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .ok_or_else(|| a.err("the receive time is out of range"))?;
    let off =
        if local { chrono::Local.offset_from_utc_datetime(&t.naive_utc()).fix() } else { chrono::Utc.fix() };
    Ok(Value::String(pattern.format(&t.with_timezone(&off))))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Field(char, usize),
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatePattern(Vec<Part>);

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

impl DatePattern {
    /// Parses a pattern.
    ///
    /// # Errors
    /// Unknown pattern letters and unterminated quotes.
    pub fn parse(p: &str) -> Result<Self, String> {
        let chars: Vec<char> = p.chars().collect();
        let mut parts = Vec::new();
        let mut i = 0;
        let mut lit = String::new();
        while i < chars.len() {
            let c = chars[i];
            if c == '\'' {
                if chars.get(i + 1) == Some(&'\'') {
                    lit.push('\'');
                    i += 2;
                    continue;
                }
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(format!("unterminated quote in date pattern {p:?}")),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            lit.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            lit.push(ch);
                            i += 1;
                        }
                    }
                }
            } else if c.is_ascii_alphabetic() {
                if !"yMdHhkKmsSEaDuZXz".contains(c) {
                    return Err(format!(
                        "unknown letter '{c}' in date pattern {p:?}; quote literal text as 'T'"
                    ));
                }
                let mut n = 1;
                while chars.get(i + n) == Some(&c) {
                    n += 1;
                }
                if !lit.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut lit)));
                }
                parts.push(Part::Field(c, n));
                i += n;
            } else {
                lit.push(c);
                i += 1;
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Self(parts))
    }

    /// Formats a time.
    pub fn format(&self, t: &DateTime<FixedOffset>) -> String {
        let mut out = String::with_capacity(32);
        for part in &self.0 {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Field(c, n) => field(&mut out, *c, *n, t),
            }
        }
        out
    }
}

fn num(out: &mut String, v: i64, width: usize) {
    out.push_str(&format!("{v:0width$}"));
}

fn field(out: &mut String, c: char, n: usize, t: &DateTime<FixedOffset>) {
    let off = t.offset().local_minus_utc();
    match c {
        'y' if n == 2 => num(out, i64::from(t.year().rem_euclid(100)), 2),
        'y' => num(out, i64::from(t.year()), n),
        'M' if n >= 4 => out.push_str(MONTHS[t.month0() as usize]),
        'M' if n == 3 => out.push_str(&MONTHS[t.month0() as usize][..3]),
        'M' => num(out, i64::from(t.month()), n),
        'd' => num(out, i64::from(t.day()), n),
        'D' => num(out, i64::from(t.ordinal()), n),
        'H' => num(out, i64::from(t.hour()), n),
        'k' => num(out, i64::from(if t.hour() == 0 { 24 } else { t.hour() }), n),
        'K' => num(out, i64::from(t.hour() % 12), n),
        'h' => num(out, i64::from(if t.hour().is_multiple_of(12) { 12 } else { t.hour() % 12 }), n),
        'm' => num(out, i64::from(t.minute()), n),
        's' => num(out, i64::from(t.second()), n),
        'S' => num(out, i64::from(t.timestamp_subsec_millis()), n),
        'E' if n >= 4 => out.push_str(DAYS[t.weekday().num_days_from_monday() as usize]),
        'E' => out.push_str(&DAYS[t.weekday().num_days_from_monday() as usize][..3]),
        'u' => num(out, i64::from(t.weekday().number_from_monday()), n),
        'a' => out.push_str(if t.hour() < 12 { "AM" } else { "PM" }),
        'X' if off == 0 => out.push('Z'),
        'Z' | 'X' | 'z' => {
            let sign = if off < 0 { '-' } else { '+' };
            let (h, m) = (off.abs() / 3600, off.abs() % 3600 / 60);
            match (c, n) {
                ('X', 1) => out.push_str(&format!("{sign}{h:02}")),
                ('X', 3..) | ('z', _) => out.push_str(&format!("{sign}{h:02}:{m:02}")),
                _ => out.push_str(&format!("{sign}{h:02}{m:02}")),
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        // 2024-01-02T03:04:05.678Z, shown at UTC and at UTC+8.
        let utc = DateTime::from_timestamp_millis(1_704_164_645_678).unwrap().fixed_offset();
        let cn = utc.with_timezone(&FixedOffset::east_opt(8 * 3600).unwrap());
        let cases: &[(&str, &DateTime<FixedOffset>, &str)] = &[
            ("yyyy-MM-dd'T'HH:mm:ss'Z'", &utc, "2024-01-02T03:04:05Z"),
            ("yyyy-MM-dd HH:mm:ss.SSS", &cn, "2024-01-02 11:04:05.678"),
            ("yy/M/d h:mm a", &cn, "24/1/2 11:04 AM"),
            ("EEE, dd MMM yyyy", &utc, "Tue, 02 Jan 2024"),
            ("EEEE MMMM", &utc, "Tuesday January"),
            ("Z|X|XXX", &cn, "+0800|+08|+08:00"),
            ("XXX", &utc, "Z"),
            ("'o''clock' HH", &utc, "o'clock 03"),
            ("D u", &utc, "2 2"),
        ];
        for (p, t, want) in cases {
            assert_eq!(DatePattern::parse(p).unwrap().format(t), *want, "{p}");
        }
        assert!(DatePattern::parse("yyyy-MM-ddTHH").is_err());
        assert!(DatePattern::parse("'open").is_err());
    }
}
