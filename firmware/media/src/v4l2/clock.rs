//! The kernel's monotonic clock, which V4L2 stamps captured buffers with, and its relation
//! to the wall clock that every capture time in cambox is expressed in.

/// `CLOCK_MONOTONIC` in microseconds; 0 if the clock cannot be read (it always can on Linux).
pub fn monotonic_us() -> u64 {
    crate::source::camera_util::monotonic_now_ns().map_or(0, |ns| ns / 1_000)
}

/// Measures UNIX-minus-monotonic (the shared camera helper keeps the tightest of a few
/// bracketed readings); 0 if the monotonic clock cannot be read.
pub fn measure_offset_us() -> i64 {
    crate::source::camera_util::measure_monotonic_offset_us().unwrap_or(0)
}

/// A monotonic time in microseconds as UNIX time in microseconds, given the offset.
pub fn monotonic_to_unix_us(mono_us: u64, offset_us: i64) -> u64 {
    (mono_us as i128 + offset_us as i128).clamp(0, u64::MAX as i128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::now_us;
    use crate::source::camera_util::offset_from_reading;

    #[test]
    fn v4l2_clock_offset_uses_the_midpoint() {
        // Monotonic 5 s read between wall 1_000_000_000_000 and +100 µs.
        let off = offset_from_reading(1_000_000_000_000, 5_000_000_000, 1_000_000_000_100);
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
