//! The status LED: one blink pattern per state of the box, so a person with no screen can
//! tell what it is doing. Pure logic with time passed in; the board runner samples
//! [`Led::level`] and sleeps until [`Led::next_change`].

use std::time::{Duration, Instant};

use serde::Serialize;

/// Why the box cannot stream; each has its own count of flashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    CameraMissing,
    EncoderFailed,
    DiskFull,
    Other,
}

impl Fault {
    /// The fault a pipeline error names (`video source: ...`, `video encoder: ...`).
    pub fn classify(error: &str) -> Fault {
        if error.contains("No space left") || error.contains("disk full") {
            Fault::DiskFull
        } else if error.starts_with("video encoder") || error.contains("encoder") {
            Fault::EncoderFailed
        } else if error.starts_with("video source") || error.contains("camera") {
            Fault::CameraMissing
        } else {
            Fault::Other
        }
    }

    /// Flashes per round of the error pattern.
    fn flashes(self) -> usize {
        match self {
            Fault::CameraMissing => 2,
            Fault::EncoderFailed => 3,
            Fault::DiskFull => 4,
            Fault::Other => 5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "fault")]
pub enum LedState {
    Booting,
    NoNetwork,
    Searching,
    Ready,
    GoingLive,
    Live,
    /// Live, and somebody watches: the people in front of the camera can tell.
    Watched,
    Error(Fault),
}

impl LedState {
    pub fn name(self) -> &'static str {
        match self {
            LedState::Booting => "booting",
            LedState::NoNetwork => "no_network",
            LedState::Searching => "searching",
            LedState::Ready => "ready",
            LedState::GoingLive => "going_live",
            LedState::Live => "live",
            LedState::Watched => "watched",
            LedState::Error(_) => "error",
        }
    }
}

/// What the LED shows on top of the state for a while: answers to the button.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    /// Held past 5 s: release now for the long-press action.
    LongReached,
    /// Held past 15 s: release now to reset the configuration.
    VeryLongReached,
    /// Digits blinked one after another (the address announced by a long press).
    Digits(Vec<u8>),
    /// "Here I am", asked for by a command.
    Identify,
}

impl Overlay {
    pub fn name(&self) -> &'static str {
        match self {
            Overlay::LongReached => "long_reached",
            Overlay::VeryLongReached => "very_long_reached",
            Overlay::Digits(_) => "digits",
            Overlay::Identify => "identify",
        }
    }
}

/// What the box reports to the LED; the runner samples it from the station.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    /// Start-up has finished (HTTP and mesh are up).
    pub started: bool,
    /// Some interface other than loopback has an address.
    pub network: bool,
    pub peers: usize,
    pub live: bool,
    pub going_live: bool,
    /// Somebody watches one of the box's streams.
    pub watched: bool,
    pub fault: Option<Fault>,
}

/// A peer count that drops to zero shows as searching only after this long, so a
/// neighbour reconnecting does not flicker the LED.
pub const PEER_LOSS_GRACE: Duration = Duration::from_secs(5);

/// An overlay for a held button lasts until the release; others for this long at most.
const OVERLAY_MAX: Duration = Duration::from_secs(30);

/// On and off times in ms, starting with on and repeating; one entry means steady on.
pub fn pattern(state: LedState) -> Vec<u32> {
    match state {
        LedState::Booting => vec![500, 500],
        LedState::NoNetwork => vec![100, 1900],
        LedState::Searching => vec![100, 200, 100, 1600],
        LedState::Ready => vec![1900, 100],
        LedState::GoingLive => vec![100, 100],
        LedState::Live => vec![1000],
        // Steady on with a quick double dip every 2 s: still plainly "live", and plainly
        // different from live with nobody watching.
        LedState::Watched => vec![1500, 150, 200, 150],
        LedState::Error(f) => {
            let mut p = Vec::new();
            for _ in 0..f.flashes() {
                p.extend([400, 300]);
            }
            *p.last_mut().expect("at least two flashes") = 2000;
            p
        }
    }
}

fn overlay_pattern(o: &Overlay) -> Vec<u32> {
    match o {
        Overlay::LongReached => vec![50, 450],
        Overlay::VeryLongReached => vec![50, 50],
        Overlay::Identify => vec![250, 250],
        Overlay::Digits(digits) => {
            // A digit is that many flashes (0 is ten), digits are apart by a long gap.
            let mut p = vec![0, 1500];
            for &d in digits {
                let n = if d == 0 { 10 } else { d as usize };
                for _ in 0..n {
                    p.extend([250, 350]);
                }
                *p.last_mut().expect("a flash") = 1500;
            }
            p
        }
    }
}

/// How far into a repeating pattern `elapsed` falls: (lit, time until the next edge).
fn phase(p: &[u32], elapsed: Duration) -> (bool, Duration) {
    if p.len() < 2 {
        return (!p.is_empty(), Duration::from_secs(3600));
    }
    let period: u64 = p.iter().map(|&d| u64::from(d)).sum();
    let mut t = (elapsed.as_millis() as u64) % period.max(1);
    for (i, &d) in p.iter().enumerate() {
        let d = u64::from(d);
        if t < d {
            return (i % 2 == 0, Duration::from_millis(d - t));
        }
        t -= d;
    }
    (false, Duration::from_millis(1))
}

/// What the page and the API show of the LED.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedView {
    pub state: &'static str,
    pub fault: Option<Fault>,
    pub overlay: Option<&'static str>,
    /// Lit now.
    pub on: bool,
    /// The pattern being shown (ms on, ms off, ...), for a page that draws it.
    pub pattern: Vec<u32>,
}

#[derive(Debug)]
pub struct Led {
    state: LedState,
    since: Instant,
    overlay: Option<(Overlay, Instant, Option<Instant>)>,
    /// When the last peer went away (for the grace before showing searching).
    peers_lost_at: Option<Instant>,
}

impl Led {
    pub fn new(now: Instant) -> Self {
        Self {
            state: LedState::Booting,
            since: now,
            overlay: None,
            peers_lost_at: None,
        }
    }

    pub fn state(&self) -> LedState {
        self.state
    }

    /// Moves to the state the inputs call for; returns true when it changed.
    pub fn update(&mut self, now: Instant, i: &Inputs) -> bool {
        let had_peers = matches!(self.state, LedState::Ready);
        if i.peers > 0 {
            self.peers_lost_at = None;
        } else if had_peers && self.peers_lost_at.is_none() {
            self.peers_lost_at = Some(now);
        }
        let in_grace = self
            .peers_lost_at
            .is_some_and(|t| now.duration_since(t) < PEER_LOSS_GRACE);
        let next = if !i.started {
            LedState::Booting
        } else if i.going_live {
            LedState::GoingLive
        } else if i.live && i.watched {
            LedState::Watched
        } else if i.live {
            LedState::Live
        } else if let Some(f) = i.fault {
            LedState::Error(f)
        } else if !i.network {
            LedState::NoNetwork
        } else if i.peers > 0 || (had_peers && in_grace) {
            LedState::Ready
        } else {
            LedState::Searching
        };
        if next == self.state {
            return false;
        }
        if next != LedState::Ready {
            self.peers_lost_at = None;
        }
        self.state = next;
        self.since = now;
        true
    }

    /// Shows `o` until [`Led::clear_overlay`] (held-button overlays) or for one round of
    /// its pattern (digits), at most 30 s.
    pub fn show(&mut self, now: Instant, o: Overlay) {
        let until = match &o {
            Overlay::LongReached | Overlay::VeryLongReached => None,
            Overlay::Digits(_) => {
                let round: u64 = overlay_pattern(&o).iter().map(|&d| u64::from(d)).sum();
                Some(now + Duration::from_millis(round))
            }
            Overlay::Identify => Some(now + Duration::from_secs(10)),
        };
        let until = until.unwrap_or(now + OVERLAY_MAX).min(now + OVERLAY_MAX);
        self.overlay = Some((o, now, Some(until)));
    }

    pub fn clear_overlay(&mut self) {
        self.overlay = None;
    }

    fn active_overlay(&self, now: Instant) -> Option<&(Overlay, Instant, Option<Instant>)> {
        self.overlay
            .as_ref()
            .filter(|(_, _, until)| until.is_none_or(|u| now < u))
    }

    fn current(&self, now: Instant) -> (Vec<u32>, Instant) {
        match self.active_overlay(now) {
            Some((o, start, _)) => (overlay_pattern(o), *start),
            None => (pattern(self.state), self.since),
        }
    }

    /// Whether the LED is lit at `now`.
    pub fn level(&self, now: Instant) -> bool {
        let (p, start) = self.current(now);
        phase(&p, now.saturating_duration_since(start)).0
    }

    /// When the level may next change (an edge of the pattern or the overlay's end).
    pub fn next_change(&self, now: Instant) -> Instant {
        let (p, start) = self.current(now);
        let edge = now + phase(&p, now.saturating_duration_since(start)).1;
        let overlay_end = self.active_overlay(now).and_then(|(_, _, u)| *u);
        let grace_end = self.peers_lost_at.map(|t| t + PEER_LOSS_GRACE);
        [Some(edge), overlay_end, grace_end.filter(|&g| g > now)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(edge)
    }

    pub fn view(&self, now: Instant) -> LedView {
        let overlay = self.active_overlay(now).map(|(o, _, _)| o.name());
        LedView {
            state: self.state.name(),
            fault: match self.state {
                LedState::Error(f) => Some(f),
                _ => None,
            },
            overlay,
            on: self.level(now),
            pattern: self.current(now).0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn up(peers: usize) -> Inputs {
        Inputs {
            started: true,
            network: true,
            peers,
            ..Inputs::default()
        }
    }

    /// The lit/unlit sequence sampled every 50 ms for `span`.
    fn trace(led: &Led, from: Instant, span: u64) -> String {
        (0..span / 50)
            .map(|k| {
                if led.level(from + ms(k * 50)) {
                    '#'
                } else {
                    '.'
                }
            })
            .collect()
    }

    #[test]
    fn every_state_is_reached_from_its_inputs() {
        let t0 = Instant::now();
        let mut led = Led::new(t0);
        assert_eq!(led.state(), LedState::Booting);
        let cases = [
            (
                Inputs {
                    started: true,
                    ..Inputs::default()
                },
                LedState::NoNetwork,
            ),
            (up(0), LedState::Searching),
            (up(2), LedState::Ready),
            (
                Inputs {
                    going_live: true,
                    ..up(2)
                },
                LedState::GoingLive,
            ),
            (
                Inputs {
                    live: true,
                    ..up(2)
                },
                LedState::Live,
            ),
            (
                Inputs {
                    live: true,
                    watched: true,
                    ..up(2)
                },
                LedState::Watched,
            ),
            (
                Inputs {
                    fault: Some(Fault::CameraMissing),
                    ..up(2)
                },
                LedState::Error(Fault::CameraMissing),
            ),
            (
                Inputs {
                    fault: Some(Fault::DiskFull),
                    ..up(2)
                },
                LedState::Error(Fault::DiskFull),
            ),
            (up(2), LedState::Ready),
        ];
        for (k, (inputs, want)) in cases.iter().enumerate() {
            let now = t0 + ms(k as u64 * 100);
            assert!(led.update(now, inputs), "case {k}: no change to {want:?}");
            assert_eq!(led.state(), *want, "case {k}");
            assert!(!led.update(now, inputs), "case {k}: changed twice");
        }
    }

    #[test]
    fn patterns_are_distinct_and_start_at_the_state_change() {
        let t0 = Instant::now();
        let states = [
            LedState::Booting,
            LedState::NoNetwork,
            LedState::Searching,
            LedState::Ready,
            LedState::GoingLive,
            LedState::Live,
            LedState::Watched,
            LedState::Error(Fault::CameraMissing),
            LedState::Error(Fault::EncoderFailed),
            LedState::Error(Fault::DiskFull),
            LedState::Error(Fault::Other),
        ];
        let mut seen = std::collections::HashSet::new();
        for s in states {
            assert!(seen.insert(pattern(s)), "{s:?} repeats another pattern");
        }
        // Going live at t0+1234 starts its pattern lit at that moment, whatever the
        // previous state's phase was.
        let mut led = Led::new(t0);
        led.update(t0, &up(1));
        let t1 = t0 + ms(1234);
        led.update(
            t1,
            &Inputs {
                going_live: true,
                ..up(1)
            },
        );
        assert_eq!(trace(&led, t1, 600), "##..##..##..");
        led.update(
            t1 + ms(600),
            &Inputs {
                live: true,
                ..up(1)
            },
        );
        assert_eq!(trace(&led, t1 + ms(600), 5000), "#".repeat(100));
    }

    #[test]
    fn error_flashes_count_the_fault() {
        let t0 = Instant::now();
        let mut led = Led::new(t0);
        led.update(
            t0,
            &Inputs {
                fault: Some(Fault::EncoderFailed),
                ..up(0)
            },
        );
        let round = trace(&led, t0, 400 * 3 + 300 * 2 + 2000);
        let flashes = round.split('.').filter(|s| !s.is_empty()).count();
        assert_eq!(flashes, 3, "{round}");
        assert_eq!(led.view(t0).fault, Some(Fault::EncoderFailed));
    }

    #[test]
    fn pipeline_errors_name_their_fault() {
        assert_eq!(
            Fault::classify("video source: cannot open /dev/video0: No such file or directory"),
            Fault::CameraMissing
        );
        assert_eq!(
            Fault::classify("video encoder: /dev/video11: device error: EIO"),
            Fault::EncoderFailed
        );
        assert_eq!(
            Fault::classify("recording: No space left on device (os error 28)"),
            Fault::DiskFull
        );
        assert_eq!(
            Fault::classify("cannot start a capture thread"),
            Fault::Other
        );
    }

    #[test]
    fn losing_peers_shows_searching_only_after_the_grace() {
        let t0 = Instant::now();
        let mut led = Led::new(t0);
        led.update(t0, &up(1));
        assert_eq!(led.state(), LedState::Ready);
        led.update(t0 + ms(100), &up(0));
        assert_eq!(led.state(), LedState::Ready);
        // The runner is woken at the end of the grace (before the pattern's next edge).
        assert_eq!(
            led.next_change(t0 + ms(4050)),
            t0 + ms(100) + PEER_LOSS_GRACE
        );
        led.update(t0 + ms(3000), &up(1));
        led.update(t0 + ms(3100), &up(0));
        led.update(t0 + ms(8000), &up(0));
        assert_eq!(
            led.state(),
            LedState::Ready,
            "grace restarts after a reconnect"
        );
        led.update(t0 + ms(8200), &up(0));
        assert_eq!(led.state(), LedState::Searching);
    }

    #[test]
    fn overlays_show_over_the_state_and_end() {
        let t0 = Instant::now();
        let mut led = Led::new(t0);
        led.update(
            t0,
            &Inputs {
                live: true,
                ..up(1)
            },
        );
        led.show(t0, Overlay::VeryLongReached);
        assert_eq!(trace(&led, t0, 300), "#.#.#.");
        assert_eq!(led.view(t0).overlay, Some("very_long_reached"));
        led.clear_overlay();
        assert_eq!(trace(&led, t0, 300), "######");
        // 37: three flashes, a gap, seven flashes; then back to live.
        led.show(t0, Overlay::Digits(vec![3, 7]));
        let round: u64 = 1500 + 3 * 600 - 350 + 1500 + 7 * 600 - 350 + 1500;
        let t = trace(&led, t0, round);
        let groups: Vec<usize> = t
            .split("..............................")
            .filter(|g| g.contains('#'))
            .map(|g| g.split('.').filter(|s| !s.is_empty()).count())
            .collect();
        assert_eq!(groups, vec![3, 7], "{t}");
        assert!(
            led.level(t0 + ms(round + 10)),
            "live again after the digits"
        );
        assert_eq!(led.view(t0 + ms(round + 10)).overlay, None);
    }

    #[test]
    fn next_change_is_the_next_edge() {
        let t0 = Instant::now();
        let mut led = Led::new(t0);
        assert_eq!(led.next_change(t0), t0 + ms(500));
        assert_eq!(led.next_change(t0 + ms(700)), t0 + ms(1000));
        led.update(t0 + ms(100), &up(1));
        // Ready: 1900 on from the change.
        assert_eq!(led.next_change(t0 + ms(100)), t0 + ms(2000));
    }
}
