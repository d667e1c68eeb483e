//! The parts of camera capture that need no camera: unpacking strided planes and turning
//! sensor timestamps into capture times.
//!
//! Kept apart from the libcamera source (and outside its cargo feature) because that source
//! only builds inside the image, while these rules decide whether pictures look right and
//! stay in sync with sound, so they must be tested on every machine.

use crate::frame::{FrameRate, RawFrame};

/// Why a captured buffer cannot be turned into a picture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LayoutError(pub String);

/// Copies a `width` x `height` plane whose rows start `stride` bytes apart into `dst`,
/// dropping the padding at the end of each row.
///
/// The last row only has to be `width` long: drivers may cut the buffer right after it.
pub fn copy_plane(
    src: &[u8],
    stride: usize,
    width: usize,
    height: usize,
    dst: &mut Vec<u8>,
) -> Result<(), LayoutError> {
    if height == 0 || width == 0 {
        return Ok(());
    }
    if stride < width {
        return Err(LayoutError(format!(
            "row stride {stride} is shorter than the row width {width}"
        )));
    }
    let needed = stride * (height - 1) + width;
    if src.len() < needed {
        return Err(LayoutError(format!(
            "plane of {} bytes is too short for {width}x{height} with stride {stride} \
             ({needed} bytes needed)",
            src.len()
        )));
    }
    if stride == width {
        dst.extend_from_slice(&src[..width * height]);
    } else {
        for row in src.chunks(stride).take(height) {
            dst.extend_from_slice(&row[..width]);
        }
    }
    Ok(())
}

/// Builds a tightly packed I420 picture from a YUV420 buffer as a camera delivers it.
///
/// `stride` is the luma stride; chroma rows are half as long, as libcamera lays out YUV420.
/// `planes` is either three slices (Y, U, V) or one slice holding all three back to back:
/// which one a pipeline hands out depends on how it exported the buffer.
pub fn i420_from_planes(
    planes: &[&[u8]],
    width: u32,
    height: u32,
    stride: u32,
) -> Result<Vec<u8>, LayoutError> {
    let (w, h, stride) = (width as usize, height as usize, stride as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let cstride = stride / 2;
    if cstride < cw {
        return Err(LayoutError(format!(
            "stride {stride} is too small for a {width} pixel wide YUV420 picture"
        )));
    }
    let mut out = Vec::with_capacity(RawFrame::i420_len(width, height));
    match planes {
        [y, u, v] => {
            copy_plane(y, stride, w, h, &mut out).map_err(|e| plane_error("Y", e))?;
            copy_plane(u, cstride, cw, ch, &mut out).map_err(|e| plane_error("U", e))?;
            copy_plane(v, cstride, cw, ch, &mut out).map_err(|e| plane_error("V", e))?;
        }
        [all] => {
            let y_len = stride * h;
            let c_len = cstride * ch;
            let (y, rest) = all.split_at(y_len.min(all.len()));
            let (u, v) = rest.split_at(c_len.min(rest.len()));
            copy_plane(y, stride, w, h, &mut out).map_err(|e| plane_error("Y", e))?;
            copy_plane(u, cstride, cw, ch, &mut out).map_err(|e| plane_error("U", e))?;
            copy_plane(v, cstride, cw, ch, &mut out).map_err(|e| plane_error("V", e))?;
        }
        other => {
            return Err(LayoutError(format!(
                "a YUV420 buffer has 1 or 3 planes, this one has {}",
                other.len()
            )))
        }
    }
    Ok(out)
}

fn plane_error(which: &str, e: LayoutError) -> LayoutError {
    LayoutError(format!("{which} plane: {}", e.0))
}

/// How long one frame lasts at `rate`, in whole microseconds: the unit of libcamera's
/// `FrameDurationLimits`.
pub fn frame_duration_us(rate: FrameRate) -> i64 {
    let num = rate.num.max(1) as i64;
    (1_000_000 * rate.den as i64 + num / 2) / num
}

/// The frame duration to ask the sensor for: the wanted one, kept inside what the sensor
/// mode can do (`limits` as reported by the camera, when it reports them), so that an
/// impossible rate degrades to the nearest possible one instead of failing to start.
pub fn clamp_frame_duration_us(want_us: i64, limits: Option<(i64, i64)>) -> i64 {
    match limits {
        Some((min, max)) if min > 0 && max >= min => want_us.clamp(min, max),
        _ => want_us,
    }
}

/// Converts a sensor timestamp (nanoseconds on the kernel's monotonic clock) into a capture
/// time in microseconds since the UNIX epoch, given `offset_us` = UNIX time minus monotonic
/// time.
///
/// Sensor time is the moment the first row was exposed, which is what a viewer's latency and
/// A/V sync should be measured against, not when the buffer reached us.
pub fn sensor_ns_to_unix_us(sensor_ns: i64, offset_us: i64) -> u64 {
    let us = sensor_ns.div_euclid(1_000) as i128 + offset_us as i128;
    us.clamp(0, u64::MAX as i128) as u64
}

/// The UNIX-minus-monotonic offset from one bracketed reading: the wall clock read before
/// and after the monotonic clock. The midpoint is the best estimate of when the monotonic
/// reading was taken.
pub fn offset_from_reading(wall_before_us: u64, mono_ns: u64, wall_after_us: u64) -> i64 {
    let wall_mid = (wall_before_us as i128 + wall_after_us as i128) / 2;
    (wall_mid - (mono_ns / 1_000) as i128) as i64
}

/// Reads `CLOCK_MONOTONIC` in nanoseconds: the clock V4L2 and libcamera stamp frames with.
/// `None` only if the kernel refuses, in which case callers anchor on frame arrival.
pub fn monotonic_now_ns() -> Option<u64> {
    use nix::time::{clock_gettime, ClockId};
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).ok()?;
    let sec = u64::try_from(ts.tv_sec()).ok()?;
    let nsec = u64::try_from(ts.tv_nsec()).ok()?;
    sec.checked_mul(1_000_000_000)?.checked_add(nsec)
}

/// Measures UNIX-minus-monotonic, taking the tightest of a few bracketed readings so that a
/// preemption in the middle of one does not skew every capture time.
pub fn measure_monotonic_offset_us() -> Option<i64> {
    let mut best: Option<(u64, i64)> = None;
    for _ in 0..5 {
        let before = crate::frame::now_us();
        let mono = monotonic_now_ns()?;
        let after = crate::frame::now_us();
        let width = after.saturating_sub(before);
        if best.is_none_or(|(w, _)| width < w) {
            best = Some((width, offset_from_reading(before, mono, after)));
        }
    }
    best.map(|(_, offset)| offset)
}

/// The monotonic-to-UNIX offset in use, re-measured now and then.
///
/// A Pi has no real-time clock: the wall clock is stepped when NTP first syncs, often after
/// the camera has started. Re-measuring keeps capture times on the same clock as everything
/// else that calls `now_us`; small differences are measurement noise and are ignored so that
/// frame intervals stay smooth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockOffset {
    offset_us: i64,
}

impl ClockOffset {
    /// Differences below this are noise in the measurement, not a change of the clock.
    pub const ADOPT_THRESHOLD_US: i64 = 1_000;

    pub fn new(offset_us: i64) -> Self {
        Self { offset_us }
    }

    pub fn offset_us(&self) -> i64 {
        self.offset_us
    }

    /// Takes a fresh measurement; returns the step applied, if the clock really moved.
    pub fn remeasured(&mut self, measured_us: i64) -> Option<i64> {
        let step = measured_us - self.offset_us;
        if step.abs() >= Self::ADOPT_THRESHOLD_US {
            self.offset_us = measured_us;
            Some(step)
        } else {
            None
        }
    }

    pub fn to_unix_us(&self, sensor_ns: i64) -> u64 {
        sensor_ns_to_unix_us(sensor_ns, self.offset_us)
    }
}

/// Frame numbers from the sensor's sequence counter, so that frames the pipeline or a slow
/// consumer dropped leave gaps, as they do for the synthetic source: the encoder and viewers
/// can then tell a dropped frame from a frozen picture.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameNumbering {
    last_seq: Option<u32>,
    last_number: Option<u64>,
}

impl FrameNumbering {
    /// A sequence jump larger than this is a counter reset, not lost frames.
    const MAX_GAP: u32 = 10_000;

    /// The number of the frame with sensor sequence `seq` (`None` when the pipeline did not
    /// report one); the first frame is 0.
    pub fn number(&mut self, seq: Option<u32>) -> u64 {
        let number = match self.last_number {
            None => 0,
            Some(prev) => {
                let step = match (self.last_seq, seq) {
                    (Some(last), Some(seq)) => match seq.wrapping_sub(last) {
                        gap @ 1..=Self::MAX_GAP => gap as u64,
                        _ => 1,
                    },
                    _ => 1,
                };
                prev + step
            }
        };
        self.last_seq = seq;
        self.last_number = Some(number);
        number
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A strided plane whose byte at (x, y) is `x + 16 * y` and whose padding is 0xEE.
    fn strided(width: usize, height: usize, stride: usize, seed: u8) -> Vec<u8> {
        let mut v = vec![0xEE; stride * height];
        for y in 0..height {
            for x in 0..width {
                v[y * stride + x] = seed.wrapping_add((x + 16 * y) as u8);
            }
        }
        v
    }

    fn packed(width: usize, height: usize, seed: u8) -> Vec<u8> {
        strided(width, height, width, seed)
    }

    #[test]
    fn copy_plane_drops_row_padding() {
        let src = strided(6, 3, 8, 0);
        let mut dst = Vec::new();
        copy_plane(&src, 8, 6, 3, &mut dst).unwrap();
        assert_eq!(dst, packed(6, 3, 0));
    }

    #[test]
    fn copy_plane_accepts_a_last_row_without_padding() {
        let mut src = strided(6, 3, 8, 0);
        src.truncate(8 * 2 + 6);
        let mut dst = Vec::new();
        copy_plane(&src, 8, 6, 3, &mut dst).unwrap();
        assert_eq!(dst, packed(6, 3, 0));
    }

    #[test]
    fn copy_plane_rejects_short_buffers_and_small_strides() {
        let src = strided(6, 3, 8, 0);
        let mut dst = Vec::new();
        let err = copy_plane(&src[..8 * 2 + 5], 8, 6, 3, &mut dst).unwrap_err();
        assert!(err.0.contains("too short"), "{err}");
        let err = copy_plane(&src, 4, 6, 3, &mut dst).unwrap_err();
        assert!(err.0.contains("stride"), "{err}");
    }

    #[test]
    fn three_planes_with_padding_become_tight_i420() {
        let (w, h, stride) = (6usize, 4usize, 8usize);
        let y = strided(w, h, stride, 0);
        let u = strided(w / 2, h / 2, stride / 2, 100);
        let v = strided(w / 2, h / 2, stride / 2, 200);
        let out = i420_from_planes(&[&y, &u, &v], w as u32, h as u32, stride as u32).unwrap();
        let mut want = packed(w, h, 0);
        want.extend(packed(w / 2, h / 2, 100));
        want.extend(packed(w / 2, h / 2, 200));
        assert_eq!(out.len(), RawFrame::i420_len(w as u32, h as u32));
        assert_eq!(out, want);
    }

    #[test]
    fn one_contiguous_plane_is_split_at_stride_offsets() {
        let (w, h, stride) = (6usize, 4usize, 8usize);
        let mut all = strided(w, h, stride, 0);
        all.extend(strided(w / 2, h / 2, stride / 2, 100));
        all.extend(strided(w / 2, h / 2, stride / 2, 200));
        let out = i420_from_planes(&[&all], w as u32, h as u32, stride as u32).unwrap();
        let mut want = packed(w, h, 0);
        want.extend(packed(w / 2, h / 2, 100));
        want.extend(packed(w / 2, h / 2, 200));
        assert_eq!(out, want);
    }

    #[test]
    fn tight_planes_pass_through() {
        let (w, h) = (4u32, 2u32);
        let y = packed(4, 2, 0);
        let u = packed(2, 1, 50);
        let v = packed(2, 1, 60);
        let out = i420_from_planes(&[&y, &u, &v], w, h, 4).unwrap();
        assert_eq!(out, [y, u, v].concat());
    }

    #[test]
    fn bad_layouts_are_errors_naming_the_plane() {
        let y = packed(4, 2, 0);
        let u = packed(2, 1, 0);
        let err = i420_from_planes(&[&y, &u, &u[..1]], 4, 2, 4).unwrap_err();
        assert!(err.0.starts_with("V plane"), "{err}");
        let err = i420_from_planes(&[&y, &u], 4, 2, 4).unwrap_err();
        assert!(err.0.contains("1 or 3 planes"), "{err}");
        let err = i420_from_planes(&[&y], 4, 2, 2).unwrap_err();
        assert!(err.0.contains("stride"), "{err}");
        let err = i420_from_planes(&[&y[..5]], 4, 2, 4).unwrap_err();
        assert!(err.0.starts_with("Y plane"), "{err}");
    }

    #[test]
    fn frame_durations() {
        assert_eq!(frame_duration_us(FrameRate::per_second(30)), 33_333);
        assert_eq!(frame_duration_us(FrameRate::per_second(25)), 40_000);
        assert_eq!(
            frame_duration_us(FrameRate {
                num: 30_000,
                den: 1001
            }),
            33_367
        );
        assert_eq!(frame_duration_us(FrameRate { num: 0, den: 1 }), 1_000_000);
        assert_eq!(
            clamp_frame_duration_us(8_333, Some((16_666, 1_000_000))),
            16_666
        );
        assert_eq!(
            clamp_frame_duration_us(33_333, Some((16_666, 1_000_000))),
            33_333
        );
        assert_eq!(clamp_frame_duration_us(33_333, None), 33_333);
        assert_eq!(clamp_frame_duration_us(33_333, Some((0, 0))), 33_333);
    }

    #[test]
    fn sensor_time_becomes_unix_time() {
        let offset = 1_700_000_000_000_000 - 5_000_000; // UNIX minus monotonic
        assert_eq!(
            sensor_ns_to_unix_us(5_000_000_000, offset),
            1_700_000_000_000_000
        );
        assert_eq!(
            sensor_ns_to_unix_us(5_033_333_999, offset),
            1_700_000_000_000_000 + 33_333
        );
        assert_eq!(sensor_ns_to_unix_us(-5_000, -10), 0);
    }

    #[test]
    fn offset_uses_the_midpoint_of_the_bracket() {
        assert_eq!(
            offset_from_reading(1_000_100, 100_000, 1_000_300),
            1_000_100
        );
    }

    #[test]
    fn clock_offset_ignores_noise_and_follows_steps() {
        let mut c = ClockOffset::new(1_000_000);
        assert_eq!(c.remeasured(1_000_400), None);
        assert_eq!(c.offset_us(), 1_000_000);
        assert_eq!(c.remeasured(3_000_000), Some(2_000_000));
        assert_eq!(c.to_unix_us(1_000), 3_000_001);
    }

    #[test]
    fn monotonic_clock_agrees_with_instant() {
        let a = monotonic_now_ns().expect("CLOCK_MONOTONIC readable");
        let start = std::time::Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let elapsed = start.elapsed().as_nanos() as u64;
        let b = monotonic_now_ns().unwrap();
        assert!(b - a >= elapsed, "{a} {b} {elapsed}");
        assert!(b - a < elapsed + 50_000_000, "{a} {b} {elapsed}");
    }

    #[test]
    fn measured_offset_maps_now_to_now() {
        let offset = measure_monotonic_offset_us().unwrap();
        let mono = monotonic_now_ns().unwrap() as i64;
        let now = crate::frame::now_us();
        let mapped = sensor_ns_to_unix_us(mono, offset);
        assert!(mapped.abs_diff(now) < 5_000, "{mapped} vs {now}");
    }

    #[test]
    fn frame_numbers_follow_the_sensor_sequence() {
        let mut n = FrameNumbering::default();
        let got: Vec<u64> = [Some(7), Some(8), Some(10), Some(10), None, Some(13)]
            .into_iter()
            .map(|s| n.number(s))
            .collect();
        assert_eq!(got, [0, 1, 3, 4, 5, 6]);
        let mut n = FrameNumbering::default();
        assert_eq!(n.number(Some(u32::MAX)), 0);
        assert_eq!(n.number(Some(1)), 2);
        assert_eq!(n.number(Some(500_000)), 3);
        let mut n = FrameNumbering::default();
        assert_eq!(
            [n.number(None), n.number(None), n.number(Some(3))],
            [0, 1, 2]
        );
    }
}
