//! The kernel's monotonic clock, which V4L2 stamps captured buffers with, and its relation
//! to the wall clock that every capture time in cambox is expressed in.

use crate::frame::now_us;

/// `CLOCK_MONOTONIC` in microseconds; 0 if the clock cannot be read (it always can on Linux).
pub fn monotonic_us() -> u64 {
    crate::source::camera_util::monotonic_now_ns().map_or(0, |ns| ns / 1_000)
}

/// UNIX time minus monotonic time, in microseconds, from one reading of the monotonic clock
/// bracketed by two of the wall clock: the midpoint is when the monotonic reading was taken.
pub fn offset_from_reading(wall_before_us: u64, mono_us: u64, wall_after_us: u64) -> i64 {
    let wall_mid = (wall_before_us as i128 + wall_after_us as i128) / 2;
    (wall_mid - mono_us as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// Measures UNIX-minus-monotonic, keeping the tightest of a few readings so that being
/// preempted in the middle of one does not skew every capture time after it.
pub fn measure_offset_us() -> i64 {
    let mut best: Option<(u64, i64)> = None;
    for _ in 0..3 {
        let before = now_us();
        let mono = monotonic_us();
        let after = now_us();
        let width = after.saturating_sub(before);
        if best.is_none_or(|(w, _)| width < w) {
            best = Some((width, offset_from_reading(before, mono, after)));
        }
    }
    best.map_or(0, |(_, offset)| offset)
}

/// A monotonic time in microseconds as UNIX time in microseconds, given the offset.
pub fn monotonic_to_unix_us(mono_us: u64, offset_us: i64) -> u64 {
    (mono_us as i128 + offset_us as i128).clamp(0, u64::MAX as i128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4l2_clock_offset_uses_the_midpoint() {
        // Monotonic 5 s read between wall 1_000_000_000_000 and +100 µs.
        let off = offset_from_reading(1_000_000_000_000, 5_000_000, 1_000_000_000_100);
        assert_eq!(off, 1_000_000_000_050 - 5_000_000);
        assert_eq!(monotonic_to_unix_us(5_000_000, off), 1_000_000_000_050);
        assert_eq!(monotonic_to_unix_us(6_000_000, off), 1_000_001_000_050);
        // A nonsense offset saturates instead of wrapping.
        assert_eq!(monotonic_to_unix_us(5, -10), 0);
    }

    #[test]
    fn v4l2_clock_measurement_agrees_with_the_wall_clock() {
        let off = measure_offset_us();
        let unix = monotonic_to_unix_us(monotonic_us(), off);
        assert!(unix.abs_diff(now_us()) < 50_000, "{unix} vs {}", now_us());
    }
}
