//! Values from outside on their way into a log: escaped and bounded, and refusals rate-limited.
//!
//! Anything a peer chooses (an MQTT client id, username or topic, an AMQP client id or SASL
//! username, an HTTP path or body field) goes through [`Untrusted`] before it reaches a log
//! line: control characters are escaped, so a newline cannot forge a line, and the value is cut
//! to [`MAX_CHARS`] characters with its full size noted, so a 65,000-character client id costs
//! a few hundred bytes of log. Refusals that anyone can trigger without logging in are logged
//! through a [`RateLimit`], so a flood of them cannot fill a disk; what it suppressed is counted
//! and reported on the next line it lets through.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Characters of an outside value that reach a log line. Long enough for every legitimate id
/// (MQTT client ids with their signing parameters run to about 150), short enough that a line
/// stays readable.
pub const MAX_CHARS: usize = 200;

/// An outside value, as it may appear in a log: control characters escaped (`\n`, `\u{1b}`),
/// cut after [`MAX_CHARS`] characters with `...(N bytes)` appended.
#[derive(Clone, Copy)]
pub struct Untrusted<'a>(pub &'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        for (shown, c) in self.0.chars().enumerate() {
            if shown == MAX_CHARS {
                return write!(f, "...({} bytes)", self.0.len());
            }
            if c.is_control() || c == '\u{2028}' || c == '\u{2029}' || c == '\\' {
                for e in c.escape_default() {
                    f.write_char(e)?;
                }
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Lets at most `burst` log lines of one kind through per `period`, and counts the rest.
///
/// One per kind of refusal (refused logins, connect timeouts, protocol errors), shared by every
/// connection: a flood from one peer then costs `burst` lines per period, plus one line saying how
/// many were left out.
#[derive(Debug)]
pub struct RateLimit {
    burst: u64,
    period: Duration,
    window: Mutex<(Instant, u64)>,
    suppressed: AtomicU64,
}

impl RateLimit {
    /// Ten lines per ten seconds: enough to see what is going on, at most about 90 KB of log per
    /// kind and hour under a flood.
    pub fn new() -> Self {
        Self::with(10, Duration::from_secs(10))
    }

    /// `burst` lines per `period`.
    pub fn with(burst: u64, period: Duration) -> Self {
        Self { burst, period, window: Mutex::new((Instant::now(), 0)), suppressed: AtomicU64::new(0) }
    }

    /// `Some(n)` when this line may be logged, `n` being how many were suppressed since the last
    /// line that was (log it as `suppressed = n`); `None` when it is to be left out.
    pub fn admit(&self) -> Option<u64> {
        let mut window = self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if now.duration_since(window.0) >= self.period {
            *window = (now, 0);
        }
        if window.1 < self.burst {
            window.1 += 1;
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// Lines suppressed and not yet reported.
    #[cfg(test)]
    fn pending(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        let shown = Untrusted("dev\n2026-11-30T00:00:00Z  INFO forged\r\x1b[31m\\").to_string();
        assert!(!shown.contains('\n') && !shown.contains('\r') && !shown.contains('\x1b'));
        assert_eq!(shown, "dev\\n2026-11-30T00:00:00Z  INFO forged\\r\\u{1b}[31m\\\\");
        assert_eq!(Untrusted("a\u{2028}b").to_string(), "a\\u{2028}b");
    }

    #[test]
    fn long_values_are_cut_with_their_size() {
        let long = "x".repeat(65_000);
        let shown = Untrusted(&long).to_string();
        assert_eq!(shown, format!("{}...(65000 bytes)", "x".repeat(MAX_CHARS)));
        let exact = "y".repeat(MAX_CHARS);
        assert_eq!(Untrusted(&exact).to_string(), exact);
        // Escapes do not let a value grow without bound: at most a few bytes per character.
        assert!(Untrusted(&"\0".repeat(10_000)).to_string().len() < MAX_CHARS * 7);
    }

    #[test]
    fn rate_limit_counts_what_it_leaves_out() {
        let limit = RateLimit::with(2, Duration::from_secs(3600));
        assert_eq!(limit.admit(), Some(0));
        assert_eq!(limit.admit(), Some(0));
        assert_eq!(limit.admit(), None);
        assert_eq!(limit.admit(), None);
        assert_eq!(limit.pending(), 2);
        let limit = RateLimit::with(1, Duration::ZERO);
        assert_eq!(limit.admit(), Some(0));
        assert_eq!(limit.admit(), Some(0));
    }
}
