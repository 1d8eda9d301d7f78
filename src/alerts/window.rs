//! The effective period: days of the week and a time-of-day window in the server's local time.

/// Day names, Monday first (bit 0 of [`Effective::days`]).
pub const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A moment in the server's local time, as the effective period sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    /// 0 = Monday … 6 = Sunday.
    pub weekday: u8,
    /// Minutes since local midnight, 0..1440.
    pub minute: u16,
}

impl LocalTime {
    /// Now, in the server's time zone.
    pub fn now() -> Self {
        use chrono::{Datelike, Timelike};
        let now = chrono::Local::now();
        Self {
            weekday: now.weekday().num_days_from_monday() as u8,
            minute: (now.hour() * 60 + now.minute()) as u16,
        }
    }
}

/// When notifications may be sent: some days of the week and a time-of-day window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective {
    /// Bit 0 = Monday … bit 6 = Sunday.
    pub days: u8,
    /// First minute of the window (minutes since midnight).
    pub start: u16,
    /// Last minute of the window, included; before `start` the window runs across midnight.
    pub end: u16,
}

impl Effective {
    /// Every day, all day.
    pub const ALWAYS: Effective = Effective { days: 0x7f, start: 0, end: 23 * 60 + 59 };

    /// Whether `t` lies in the window. `end` is included, so `00:00`–`23:59` is the whole day.
    /// A window across midnight (`end < start`) belongs to the day it starts on: `fri`
    /// `22:00`–`06:00` covers Friday 22:00 to Saturday 06:00 (that minute included).
    pub fn contains(&self, t: LocalTime) -> bool {
        let day_on = |d: u8| self.days & (1 << (d % 7)) != 0;
        if self.start <= self.end {
            day_on(t.weekday) && (self.start..=self.end).contains(&t.minute)
        } else if t.minute >= self.start {
            day_on(t.weekday)
        } else if t.minute <= self.end {
            // The early part belongs to the window opened the day before.
            day_on(t.weekday + 6)
        } else {
            false
        }
    }
}

/// `HH:MM` → minutes since midnight.
pub(super) fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// `HH:MM` of minutes since midnight.
pub fn format_hhmm(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_window_same_day_and_across_midnight() {
        let t = |weekday, h: u16, m: u16| LocalTime { weekday, minute: h * 60 + m };
        // Weekdays 09:00–18:00.
        let office = Effective { days: 0b0001_1111, start: 9 * 60, end: 18 * 60 };
        assert!(office.contains(t(0, 9, 0)));
        assert!(office.contains(t(4, 18, 0)));
        assert!(!office.contains(t(4, 18, 1)));
        assert!(!office.contains(t(0, 8, 59)));
        assert!(!office.contains(t(5, 12, 0)));
        // Friday night 22:00–06:00 belongs to Friday.
        let night = Effective { days: 1 << 4, start: 22 * 60, end: 6 * 60 };
        assert!(night.contains(t(4, 22, 0)));
        assert!(night.contains(t(4, 23, 59)));
        assert!(night.contains(t(5, 0, 0)));
        assert!(night.contains(t(5, 6, 0)));
        assert!(!night.contains(t(5, 6, 1)));
        assert!(!night.contains(t(4, 5, 0)), "Friday early morning belongs to Thursday's window");
        assert!(!night.contains(t(5, 22, 0)));
        // Sunday night wraps to Monday morning.
        let sunday = Effective { days: 1 << 6, start: 23 * 60, end: 60 };
        assert!(sunday.contains(t(0, 0, 30)));
        assert!(Effective::ALWAYS.contains(t(6, 23, 59)));
    }

    #[test]
    fn times_are_strict() {
        assert_eq!(parse_hhmm("00:00"), Some(0));
        assert_eq!(parse_hhmm("23:59"), Some(1439));
        for bad in ["24:00", "9:00", "09:60", "0900", "09:0a", "+9:00", ""] {
            assert_eq!(parse_hhmm(bad), None, "{bad}");
        }
        assert_eq!(format_hhmm(1439), "23:59");
    }
}
