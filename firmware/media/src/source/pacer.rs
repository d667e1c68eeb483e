//! Real-time pacing for synthetic sources.
//!
//! A synthetic frame's capture time is computed from its number, never read from the clock,
//! so timestamps are exact; the pacer only decides when to hand it over. When the consumer
//! falls behind by more than `max_lag_us`, frames are reported late so the source can drop
//! them instead of drifting away from real time.

use std::time::Duration;

use crate::frame::now_us;

/// How a synthetic source hands out frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// At their capture time, like a camera.
    RealTime,
    /// As fast as they are asked for: for recording to a file and for tests.
    Unpaced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The frame's time has come (after sleeping if needed).
    Now,
    /// The frame's time is so far past that delivering it would add latency.
    Late,
}

/// Waits for scheduled capture times on the wall clock.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    pub pacing: Pacing,
    pub max_lag_us: u64,
}

impl Pacer {
    pub fn new(pacing: Pacing, max_lag_us: u64) -> Self {
        Self { pacing, max_lag_us }
    }

    /// Sleeps until `at_us` (UNIX µs) in real time; reports frames already too late.
    pub fn wait_until(&self, at_us: u64) -> Due {
        if self.pacing == Pacing::Unpaced {
            return Due::Now;
        }
        let now = now_us();
        if now < at_us {
            std::thread::sleep(Duration::from_micros(at_us - now));
            Due::Now
        } else if now - at_us > self.max_lag_us {
            Due::Late
        } else {
            Due::Now
        }
    }
}
