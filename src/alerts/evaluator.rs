//! The alert state machine of one (rule, group): pure, driven by one value per scan period
//! with the time passed in, so every rule of firing, muting, the effective period and
//! resolving is tested without clocks.
//!
//! - Each period the condition either holds (the count of consecutive periods goes up) or not
//!   (it drops to 0). With the count at `consecutivePeriods` or more the group is *firing*;
//!   between 1 and that, *pending*; at 0, *ok*.
//! - A firing group is notified at once, then again only after `muteSeconds` while it keeps
//!   firing (0: every period).
//! - When a notified firing group drops back, a `resolved` notification follows.
//! - Outside the effective period nothing is sent, but evaluation goes on: a group that starts
//!   firing at night is notified at the first period inside the window, and a resolution that
//!   happens outside it is sent at the first period inside it (unless the group fires again
//!   first, which continues the episode the receiver already knows about).

use serde::Serialize;

use super::model::{AlertRule, LocalTime};

/// Where a group stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The condition did not hold in the last period.
    Ok,
    /// It held for fewer than `consecutivePeriods` periods in a row.
    Pending,
    /// It held for `consecutivePeriods` periods in a row or more.
    Firing,
}

/// What a period's evaluation asks to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Notify {
    /// The group is firing.
    Firing,
    /// The group stopped firing.
    Resolved,
}

/// One period's input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tick {
    /// The metric's value now.
    pub value: f64,
    /// Epoch milliseconds now.
    pub now_ms: u64,
    /// Local time now, for the effective period.
    pub local: LocalTime,
}

/// The state of one group under one rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupState {
    /// Periods in a row the condition held, up to now.
    pub consecutive: u32,
    /// The value of the last evaluation.
    pub last_value: Option<f64>,
    /// Epoch ms of the last notification of either kind.
    pub last_notified_at: Option<u64>,
    /// Epoch ms of the last firing notification of the current firing episode.
    firing_notified_at: Option<u64>,
    /// A notified episode ended outside the effective period: `resolved` is still to be sent.
    owes_resolved: bool,
}

impl GroupState {
    /// Where the group stands under `rule`.
    pub fn state(&self, rule: &AlertRule) -> State {
        match self.consecutive {
            0 => State::Ok,
            n if n < rule.consecutive_periods => State::Pending,
            _ => State::Firing,
        }
    }

    /// Evaluates one period; returns the notification to send, if any.
    pub fn step(&mut self, rule: &AlertRule, tick: Tick) -> Option<Notify> {
        let was_firing = self.state(rule) == State::Firing;
        self.last_value = Some(tick.value);
        self.consecutive = if rule.comparison.holds(tick.value, rule.threshold) {
            self.consecutive.saturating_add(1)
        } else {
            0
        };
        let in_window = rule.effective.contains(tick.local);

        if self.state(rule) == State::Firing {
            self.owes_resolved = false;
            let mute_ms = rule.mute_seconds.saturating_mul(1000);
            let due = self.firing_notified_at.is_none_or(|at| tick.now_ms.saturating_sub(at) >= mute_ms);
            if in_window && due {
                self.firing_notified_at = Some(tick.now_ms);
                self.last_notified_at = Some(tick.now_ms);
                return Some(Notify::Firing);
            }
            return None;
        }
        if was_firing && self.firing_notified_at.take().is_some() {
            self.owes_resolved = true;
        }
        if self.owes_resolved && in_window {
            self.owes_resolved = false;
            self.last_notified_at = Some(tick.now_ms);
            return Some(Notify::Resolved);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::model::{AlertRuleBody, Effective};

    const MINUTE: u64 = 60_000;

    fn rule(consecutive: u32, mute_seconds: u64, effective: Effective) -> AlertRule {
        let body: AlertRuleBody = serde_json::from_value(serde_json::json!({
            "name": "r", "metric": "accumulatedCount", "comparison": ">", "threshold": 10,
            "periodSeconds": 60, "consecutivePeriods": consecutive, "muteSeconds": mute_seconds,
            "callbackUrl": "http://h/"
        }))
        .unwrap();
        AlertRule { effective, ..body.validate().unwrap() }
    }

    /// A clock ticking once a minute from Monday 12:00 local (epoch ms start at 1e12).
    struct Clock {
        minutes: u64,
    }

    impl Clock {
        fn at(weekday: u8, hour: u16, minute: u16) -> Self {
            Self { minutes: u64::from(weekday) * 1440 + u64::from(hour) * 60 + u64::from(minute) }
        }
        fn tick(&mut self, value: f64) -> Tick {
            self.minutes += 1;
            let in_week = self.minutes % (7 * 1440);
            Tick {
                value,
                now_ms: 1_000_000_000_000 + self.minutes * MINUTE,
                local: LocalTime { weekday: (in_week / 1440) as u8, minute: (in_week % 1440) as u16 },
            }
        }
    }

    fn run(
        state: &mut GroupState,
        rule: &AlertRule,
        clock: &mut Clock,
        values: &[f64],
    ) -> Vec<Option<Notify>> {
        values.iter().map(|v| state.step(rule, clock.tick(*v))).collect()
    }

    #[test]
    fn fires_after_exactly_n_periods_not_before() {
        let r = rule(3, 3600, Effective::ALWAYS);
        let mut s = GroupState::default();
        let mut c = Clock::at(0, 12, 0);
        assert_eq!(run(&mut s, &r, &mut c, &[11.0, 11.0]), [None, None]);
        assert_eq!((s.state(&r), s.consecutive), (State::Pending, 2));
        assert_eq!(s.step(&r, c.tick(11.0)), Some(Notify::Firing));
        assert_eq!((s.state(&r), s.consecutive, s.last_value), (State::Firing, 3, Some(11.0)));
        // A break restarts the count.
        let mut s = GroupState::default();
        assert_eq!(run(&mut s, &r, &mut c, &[11.0, 11.0, 10.0, 11.0, 11.0]), [None; 5]);
        assert_eq!(s.step(&r, c.tick(12.0)), Some(Notify::Firing));
    }

    #[test]
    fn one_period_fires_at_once_and_the_threshold_itself_does_not_count() {
        let r = rule(1, 3600, Effective::ALWAYS);
        let mut s = GroupState::default();
        let mut c = Clock::at(2, 8, 0);
        assert_eq!(run(&mut s, &r, &mut c, &[10.0, 10.5]), [None, Some(Notify::Firing)]);
    }

    #[test]
    fn mute_holds_repeats_back_until_it_passes() {
        // 5 minutes of mute, one-minute periods.
        let r = rule(2, 300, Effective::ALWAYS);
        let mut s = GroupState::default();
        let mut c = Clock::at(0, 12, 0);
        let out = run(&mut s, &r, &mut c, &[20.0; 13]);
        let fired: Vec<usize> = out.iter().enumerate().filter(|(_, n)| n.is_some()).map(|(i, _)| i).collect();
        // Period 2 fires, then every 5 minutes: periods 7 and 12.
        assert_eq!(fired, [1, 6, 11]);
        assert!(out.iter().flatten().all(|n| *n == Notify::Firing));
        assert_eq!(s.consecutive, 13);
    }

    #[test]
    fn mute_zero_repeats_every_period() {
        let r = rule(1, 0, Effective::ALWAYS);
        let mut s = GroupState::default();
        let mut c = Clock::at(0, 12, 0);
        assert_eq!(run(&mut s, &r, &mut c, &[20.0; 3]), [Some(Notify::Firing); 3]);
    }

    #[test]
    fn resolves_once_after_a_notified_episode() {
        let r = rule(2, 3600, Effective::ALWAYS);
        let mut s = GroupState::default();
        let mut c = Clock::at(0, 12, 0);
        let out = run(&mut s, &r, &mut c, &[20.0, 20.0, 20.0, 5.0, 5.0, 20.0]);
        assert_eq!(out, [None, Some(Notify::Firing), None, Some(Notify::Resolved), None, None]);
        assert_eq!(s.state(&r), State::Pending);
        // A new episode fires at once again: the mute belongs to the episode.
        assert_eq!(s.step(&r, c.tick(20.0)), Some(Notify::Firing));
        // Pending without firing never resolves.
        let mut s = GroupState::default();
        assert_eq!(run(&mut s, &r, &mut c, &[20.0, 5.0]), [None, None]);
    }

    #[test]
    fn nothing_is_sent_outside_the_window_and_firing_is_caught_up_inside() {
        // Weekdays 09:00–09:05.
        let window = Effective { days: 0b0001_1111, start: 9 * 60, end: 9 * 60 + 5 };
        let r = rule(2, 3600, window);
        let mut s = GroupState::default();
        // Monday 08:55: firing from 08:57 on, but silent until 09:00.
        let mut c = Clock::at(0, 8, 55);
        let out = run(&mut s, &r, &mut c, &[20.0; 4]); // 08:56 .. 08:59
        assert_eq!(out, [None; 4]);
        assert_eq!(s.state(&r), State::Firing);
        assert_eq!(s.last_notified_at, None);
        assert_eq!(s.step(&r, c.tick(20.0)), Some(Notify::Firing), "09:00 is inside");
        // Recovery after the window closes is sent when it opens again (Tuesday 09:00).
        let mut c2 = Clock::at(0, 9, 10);
        assert_eq!(s.step(&r, c2.tick(1.0)), None);
        let mut c3 = Clock::at(1, 8, 59);
        assert_eq!(s.step(&r, c3.tick(1.0)), Some(Notify::Resolved));
        assert_eq!(s.step(&r, c3.tick(1.0)), None);
    }

    #[test]
    fn weekend_days_send_nothing() {
        let weekdays = Effective { days: 0b0001_1111, start: 0, end: 1439 };
        let r = rule(1, 0, weekdays);
        let mut s = GroupState::default();
        let mut c = Clock::at(5, 12, 0); // Saturday
        assert_eq!(run(&mut s, &r, &mut c, &[20.0; 3]), [None; 3]);
        assert_eq!(s.consecutive, 3);
    }

    #[test]
    fn window_across_midnight() {
        // Friday 23:58 to Saturday 00:01.
        let night = Effective { days: 1 << 4, start: 23 * 60 + 58, end: 1 };
        let r = rule(1, 0, night);
        let mut s = GroupState::default();
        let mut c = Clock::at(4, 23, 56); // ticks at 23:57, 23:58, 23:59, 00:00, 00:01, 00:02
        let out = run(&mut s, &r, &mut c, &[20.0; 6]);
        assert_eq!(
            out,
            [
                None,
                Some(Notify::Firing),
                Some(Notify::Firing),
                Some(Notify::Firing),
                Some(Notify::Firing),
                None
            ]
        );
    }

    #[test]
    fn a_resolution_outside_the_window_is_dropped_if_it_fires_again_first() {
        let window = Effective { days: 0x7f, start: 9 * 60, end: 17 * 60 };
        let r = rule(1, 3600, window);
        let mut s = GroupState::default();
        let mut c = Clock::at(0, 16, 59);
        assert_eq!(run(&mut s, &r, &mut c, &[20.0]), [Some(Notify::Firing)]); // 17:00
        assert_eq!(run(&mut s, &r, &mut c, &[1.0, 20.0]), [None, None]); // 17:01, 17:02
                                                                         // Next morning, still firing: a firing notification (new episode), no resolved.
        let mut morning = Clock::at(1, 8, 59);
        assert_eq!(s.step(&r, morning.tick(20.0)), Some(Notify::Firing));
    }

    #[test]
    fn low_rate_rule() {
        let body: AlertRuleBody = serde_json::from_value(serde_json::json!({
            "name": "slow", "metric": "consumptionRate", "comparison": "<=", "threshold": 0,
            "periodSeconds": 60, "consecutivePeriods": 2, "muteSeconds": 0, "callbackUrl": "http://h/"
        }))
        .unwrap();
        let r = body.validate().unwrap();
        let mut s = GroupState::default();
        let mut c = Clock::at(0, 0, 0);
        assert_eq!(
            run(&mut s, &r, &mut c, &[0.0, 0.0, 3.0]),
            [None, Some(Notify::Firing), Some(Notify::Resolved)]
        );
    }
}
