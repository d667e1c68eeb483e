//! The push button, as a person uses it: a debounced level turned into presses by how
//! long they were held. Time is passed in, so every rule is tested without sleeping.

use std::time::{Duration, Instant};

/// A contact must hold a level this long before it counts (mechanical bounce is shorter).
pub const DEBOUNCE: Duration = Duration::from_millis(30);
/// Held this long: a long press.
pub const LONG: Duration = Duration::from_secs(5);
/// Held this long: a very long press.
pub const VERY_LONG: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Press {
    /// Under 5 s: toggles live.
    Short,
    /// 5 to 15 s.
    Long,
    /// 15 s or more.
    VeryLong,
}

/// What the button reports as it happens: a threshold crossed while still held (so the
/// LED can confirm it before the release), and the press when released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonEvent {
    /// Still held, and now long enough for this press.
    Reached(Press),
    Released(Press),
}

/// Debounces raw samples of the contact (`true` = pressed) and classifies presses.
#[derive(Debug, Default)]
pub struct Button {
    /// The debounced level and since when.
    stable: bool,
    /// A level seen that differs from `stable`, and since when.
    candidate: Option<(bool, Instant)>,
    pressed_at: Option<Instant>,
    reached: Option<Press>,
}

fn press_for(held: Duration) -> Press {
    if held >= VERY_LONG {
        Press::VeryLong
    } else if held >= LONG {
        Press::Long
    } else {
        Press::Short
    }
}

impl Button {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the contact's level at `now`; call on every edge and periodically while held.
    pub fn sample(&mut self, now: Instant, level: bool) -> Option<ButtonEvent> {
        if level == self.stable {
            self.candidate = None;
        } else {
            let since = match self.candidate {
                Some((l, t)) if l == level => t,
                _ => {
                    self.candidate = Some((level, now));
                    now
                }
            };
            if now.duration_since(since) >= DEBOUNCE {
                self.candidate = None;
                self.stable = level;
                if level {
                    // The press started when the contact first closed, not after the bounce.
                    self.pressed_at = Some(since);
                    self.reached = None;
                } else if let Some(at) = self.pressed_at.take() {
                    self.reached = None;
                    return Some(ButtonEvent::Released(press_for(since - at)));
                }
            }
        }
        let at = self.pressed_at?;
        let now_press = press_for(now.duration_since(at));
        if now_press != Press::Short && self.reached != Some(now_press) {
            self.reached = Some(now_press);
            return Some(ButtonEvent::Reached(now_press));
        }
        None
    }

    /// When to sample again even without an edge: when a level that just changed has
    /// held for the debounce time, or when a held button reaches its next threshold.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let settle = self.candidate.map(|(_, t)| t + DEBOUNCE);
        let threshold = self.pressed_at.and_then(|at| match self.reached {
            None => Some(at + LONG),
            Some(Press::Long) => Some(at + VERY_LONG),
            _ => None,
        });
        settle.into_iter().chain(threshold).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    /// Presses for `held_ms` with bounce at both edges; returns every event.
    fn press(held_ms: u64) -> Vec<ButtonEvent> {
        let t0 = Instant::now();
        let mut b = Button::new();
        let mut out = Vec::new();
        let mut feed = |t: u64, level: bool| {
            if let Some(e) = b.sample(ms(t0, t), level) {
                out.push(e);
            }
        };
        // Bounce on closing: 1 ms flips for 8 ms.
        for i in 0..8 {
            feed(i, i % 2 == 0);
        }
        let mut t = 8;
        while t < 8 + held_ms {
            feed(t, true);
            t += 100;
        }
        let up = 8 + held_ms;
        for i in 0..6 {
            feed(up + i, i % 2 == 1);
        }
        feed(up + 6, false);
        // The driver samples again when the new level has settled (`poll_timeout`).
        let settle = b.poll_timeout().expect("a release is settling");
        if let Some(e) = b.sample(settle, false) {
            out.push(e);
        }
        out
    }

    #[test]
    fn bounce_alone_is_not_a_press() {
        let t0 = Instant::now();
        let mut b = Button::new();
        for i in 0..20 {
            assert_eq!(b.sample(ms(t0, i), i % 2 == 0), None);
        }
        assert_eq!(b.sample(ms(t0, 200), false), None);
    }

    #[test]
    fn a_short_press_despite_bounce() {
        assert_eq!(press(300), vec![ButtonEvent::Released(Press::Short)]);
    }

    #[test]
    fn a_long_press_is_announced_while_held_then_released() {
        assert_eq!(
            press(6_000),
            vec![
                ButtonEvent::Reached(Press::Long),
                ButtonEvent::Released(Press::Long)
            ]
        );
    }

    #[test]
    fn a_very_long_press_passes_through_long() {
        assert_eq!(
            press(16_000),
            vec![
                ButtonEvent::Reached(Press::Long),
                ButtonEvent::Reached(Press::VeryLong),
                ButtonEvent::Released(Press::VeryLong)
            ]
        );
    }

    #[test]
    fn thresholds_are_measured_from_the_first_contact() {
        let t0 = Instant::now();
        let mut b = Button::new();
        b.sample(t0, true);
        assert_eq!(b.sample(ms(t0, 30), true), None, "debounced: now pressed");
        assert_eq!(b.poll_timeout(), Some(t0 + LONG));
        assert_eq!(
            b.sample(ms(t0, 5_000), true),
            Some(ButtonEvent::Reached(Press::Long))
        );
        assert_eq!(b.poll_timeout(), Some(t0 + VERY_LONG));
        b.sample(ms(t0, 5_010), false);
        assert_eq!(
            b.sample(ms(t0, 5_040), false),
            Some(ButtonEvent::Released(Press::Long)),
            "held 5.01 s from first contact to first release edge"
        );
        assert_eq!(b.poll_timeout(), None);
    }
}
