//! Login attempts before anyone is logged in: a few a minute per source address, and at
//! most two password checks at a time on the whole box. A password check is an argon2
//! run (19 MiB, tens of milliseconds on a Pi): unbounded, a flood of guesses would be a
//! flood of CPU and memory, and a guesser from one address would get unlimited tries.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Attempts (password or single sign-on) one address may start a minute.
pub const PER_ADDRESS_PER_MINUTE: u32 = 10;
/// Password checks running at once, box-wide.
pub const CONCURRENT_CHECKS: usize = 2;
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered; past it, only those with attempts in the last minute are kept.
const MAX_ADDRESSES: usize = 4096;

/// The attempts of the last minute per address (a sliding window: a burst that straddles
/// the turn of a minute gets no more than one that does not).
#[derive(Debug, Default)]
pub struct Attempts {
    by_address: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl Attempts {
    /// Whether `source` has used up its attempts of the last minute (without counting one).
    pub fn over(&self, source: IpAddr, now: Instant) -> bool {
        let map = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&source).is_some_and(|times| {
            times
                .iter()
                .filter(|t| now.saturating_duration_since(**t) < WINDOW)
                .count()
                >= PER_ADDRESS_PER_MINUTE as usize
        })
    }

    /// Counts an attempt from `source` at `now`; false when it is over the limit.
    pub fn allow(&self, source: IpAddr, now: Instant) -> bool {
        let mut map = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = |t: &Instant| now.saturating_duration_since(*t) < WINDOW;
        if map.len() >= MAX_ADDRESSES {
            map.retain(|_, times| times.back().is_some_and(fresh));
        }
        let times = map.entry(source).or_default();
        while times.front().is_some_and(|t| !fresh(t)) {
            times.pop_front();
        }
        if times.len() >= PER_ADDRESS_PER_MINUTE as usize {
            return false;
        }
        times.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_gets_a_few_tries_a_minute_and_others_are_not_affected() {
        let a = Attempts::default();
        let (one, two) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t = Instant::now();
        for i in 0..PER_ADDRESS_PER_MINUTE {
            assert!(a.allow(one, t + Duration::from_secs(u64::from(i))));
        }
        assert!(!a.allow(one, t + Duration::from_secs(30)));
        assert!(a.allow(two, t + Duration::from_secs(30)));
        assert!(
            !a.allow(one, t + Duration::from_secs(59)),
            "refusals do not count"
        );
        assert!(
            a.allow(one, t + Duration::from_secs(60)),
            "the first try left the window"
        );
        assert!(!a.allow(one, t + Duration::from_secs(60)));
    }
}
