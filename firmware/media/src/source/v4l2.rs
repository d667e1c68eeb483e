//! A camera through V4L2 (`v4l2:/dev/videoN`): USB webcams, HDMI capture sticks, the legacy
//! Pi camera driver. Pictures arrive in whatever raw layout the driver chose and leave as
//! packed I420 with their true capture time.

use std::time::Duration;

use super::{SourceError, VideoSource};
use crate::frame::{now_us, Captured, RawFrame, VideoFormat};
use crate::v4l2::capture::is_camera;
use crate::v4l2::sys::V4L2_BUF_TYPE_VIDEO_CAPTURE;
use crate::v4l2::{
    clock, CaptureDevice, CaptureHardware, Device, PixelFormat, PixelLayout, V4l2Error,
};

/// Damaged frames in a row after which the camera is declared broken rather than noisy.
const MAX_BAD_FRAMES: u32 = 30;
/// How often the clock offset is re-measured: a Pi has no real-time clock, and NTP steps
/// the wall clock when it first syncs, often after the camera has started.
const REMEASURE_EVERY_US: u64 = 5_000_000;
/// Offset changes smaller than this are measurement noise, not a clock step; ignoring them
/// keeps frame intervals smooth.
const OFFSET_STEP_US: i64 = 1_000;
/// Webcams may take seconds to settle exposure before their first frame.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// A driver timestamp further than this from the current time is not believed.
const MAX_TIMESTAMP_AGE_US: u64 = 2_000_000;

/// A picture out of the driver's buffer, with what is needed to stamp it.
struct Converted {
    data: Vec<u8>,
    monotonic_us: Option<u64>,
    sequence: u32,
}

/// A V4L2 camera as a [`VideoSource`]. Generic over the device so that the logic (timeouts,
/// damaged frames, capture times, conversion) is tested with a simulated camera.
pub struct V4l2Source<D: CaptureDevice = CaptureHardware> {
    device: D,
    layout: PixelLayout,
    format: VideoFormat,
    timeout: Duration,
    offset_us: i64,
    offset_measured_at_us: u64,
    next_number: u64,
    last_sequence: Option<u32>,
    bad_in_a_row: u32,
}

impl<D: CaptureDevice> std::fmt::Debug for V4l2Source<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V4l2Source")
            .field("device", &self.device.path())
            .field("layout", &self.layout)
            .field("format", &self.format)
            .finish()
    }
}

impl V4l2Source {
    /// Opens a camera node and starts it as close to `want` as the driver allows.
    pub fn open(path: &str, want: VideoFormat) -> Result<Self, SourceError> {
        let device = CaptureHardware::open(path).map_err(source_error)?;
        Self::with_device(device, want)
    }
}

impl<D: CaptureDevice> V4l2Source<D> {
    pub fn with_device(mut device: D, want: VideoFormat) -> Result<Self, SourceError> {
        let setup = device.start(want).map_err(source_error)?;
        let layout = setup.layout;
        let rate = setup.rate.unwrap_or_else(|| {
            tracing::warn!(
                "{}: driver does not report its frame rate; assuming {}",
                device.path(),
                want.rate
            );
            want.rate
        });
        let format = VideoFormat {
            width: layout.width,
            height: layout.height,
            rate,
        };
        tracing::info!(
            "{}: capturing {}x{}@{} {} ({} buffers)",
            device.path(),
            format.width,
            format.height,
            format.rate,
            layout.format,
            setup.buffers
        );
        if format != want {
            tracing::info!(
                "{}: asked for {}x{}@{}, camera gives {}x{}@{}",
                device.path(),
                want.width,
                want.height,
                want.rate,
                format.width,
                format.height,
                format.rate
            );
        }
        // A few frame periods of silence is a stopped camera, not a slow one; but at least
        // two seconds, since webcams lengthen exposure (and so frame time) in the dark.
        let period = Duration::from_micros(rate.frame_offset_us(1));
        let timeout = (period * 5).max(Duration::from_secs(2));
        Ok(Self {
            device,
            layout,
            format,
            timeout,
            offset_us: clock::measure_offset_us(),
            offset_measured_at_us: now_us(),
            next_number: 0,
            last_sequence: None,
            bad_in_a_row: 0,
        })
    }

    /// Keeps the monotonic-to-UNIX offset current (see [`REMEASURE_EVERY_US`]).
    fn clock_offset(&mut self, now: u64) -> i64 {
        if now.abs_diff(self.offset_measured_at_us) >= REMEASURE_EVERY_US {
            let measured = clock::measure_offset_us();
            if let Some(step) = offset_step(self.offset_us, measured) {
                tracing::info!("wall clock stepped by {step} µs; capture times follow it");
                self.offset_us = measured;
            }
            self.offset_measured_at_us = now;
        }
        self.offset_us
    }

    fn note_sequence(&mut self, sequence: u32) {
        if let Some(last) = self.last_sequence {
            let lost = sequence.wrapping_sub(last).wrapping_sub(1);
            if lost > 0 && lost < u32::MAX / 2 {
                tracing::debug!("{}: driver dropped {lost} frame(s)", self.device.path());
            }
        }
        self.last_sequence = Some(sequence);
    }
}

impl<D: CaptureDevice> VideoSource for V4l2Source<D> {
    fn describe(&self) -> String {
        format!(
            "v4l2:{} {}x{}@{} {}",
            self.device.path(),
            self.format.width,
            self.format.height,
            self.format.rate,
            self.layout.format
        )
    }

    fn format(&self) -> VideoFormat {
        self.format
    }

    fn next_frame(&mut self) -> Result<Option<Captured>, SourceError> {
        loop {
            let layout = self.layout;
            let timeout = if self.next_number == 0 {
                self.timeout.max(FIRST_FRAME_TIMEOUT)
            } else {
                self.timeout
            };
            let mut got: Option<Result<Converted, String>> = None;
            let arrived = self
                .device
                .next_buffer(timeout, &mut |buf| {
                    got = Some(if buf.error {
                        Err("driver flagged the frame as damaged".into())
                    } else {
                        layout
                            .to_i420(buf.data)
                            .map(|data| Converted {
                                data,
                                monotonic_us: buf.monotonic_us,
                                sequence: buf.sequence,
                            })
                            .map_err(|e| e.to_string())
                    });
                })
                .map_err(source_error)?;
            if !arrived {
                return Err(SourceError::Device {
                    what: self.device.path().into(),
                    reason: format!(
                        "no frame for {} s: the camera stopped delivering (unplugged, or taken by another program?)",
                        timeout.as_secs_f32()
                    ),
                });
            }
            match got {
                Some(Ok(Converted {
                    data,
                    monotonic_us,
                    sequence,
                })) => {
                    self.bad_in_a_row = 0;
                    self.note_sequence(sequence);
                    let now = now_us();
                    let offset = self.clock_offset(now);
                    let number = self.next_number;
                    self.next_number += 1;
                    return Ok(Some(Captured::Raw(RawFrame {
                        number,
                        capture_us: capture_time_us(monotonic_us, offset, now),
                        width: self.layout.width,
                        height: self.layout.height,
                        data,
                    })));
                }
                Some(Err(reason)) => self.skip_bad_frame(&reason)?,
                None => self.skip_bad_frame("driver returned no frame")?,
            }
        }
    }
}

impl<D: CaptureDevice> V4l2Source<D> {
    /// A damaged frame now and then is normal for USB cameras; a long run of them is not.
    fn skip_bad_frame(&mut self, reason: &str) -> Result<(), SourceError> {
        self.bad_in_a_row += 1;
        if self.bad_in_a_row == 1 {
            tracing::warn!("{}: skipping a frame: {reason}", self.device.path());
        }
        if self.bad_in_a_row >= MAX_BAD_FRAMES {
            return Err(SourceError::Device {
                what: self.device.path().into(),
                reason: format!(
                    "{} unusable frames in a row (last: {reason}); check the cable and USB power",
                    self.bad_in_a_row
                ),
            });
        }
        Ok(())
    }
}

/// The capture time of a frame in UNIX microseconds: the driver's monotonic timestamp
/// moved onto the wall clock, or the time of arrival (`now_us`) when the driver gives no
/// usable timestamp. Never in the future, since the picture exists already.
pub fn capture_time_us(monotonic_us: Option<u64>, offset_us: i64, now_us: u64) -> u64 {
    match monotonic_us.map(|m| clock::monotonic_to_unix_us(m, offset_us)) {
        Some(t) if t <= now_us && now_us - t <= MAX_TIMESTAMP_AGE_US => t,
        // Later than now is measurement jitter (or a wrong clock): arrival time is closer.
        _ => now_us,
    }
}

/// The step to apply when a fresh offset measurement differs from the one in use by more
/// than noise.
pub fn offset_step(current_us: i64, measured_us: i64) -> Option<i64> {
    let step = measured_us.saturating_sub(current_us);
    (step.abs() >= OFFSET_STEP_US).then_some(step)
}

/// The first `/dev/video*` node (in numeric order) that is a camera cambox can use on its
/// own, for `auto` detection.
pub fn find_capture_device() -> Option<String> {
    let names = std::fs::read_dir("/dev")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok());
    video_nodes(names)
        .into_iter()
        .find(|path| usable_camera(path))
}

fn usable_camera(path: &str) -> bool {
    let Ok(dev) = Device::open(path) else {
        return false;
    };
    let Ok(caps) = dev.query_caps() else {
        return false;
    };
    is_camera(&caps)
        && dev
            .enum_formats(V4L2_BUF_TYPE_VIDEO_CAPTURE)
            .is_ok_and(|formats| PixelFormat::choose(&formats).is_some())
}

/// `/dev/videoN` paths from directory entry names, sorted by N (so video2 before video10).
pub fn video_nodes(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut nodes: Vec<(u32, String)> = names
        .filter_map(|n| {
            let num = n.strip_prefix("video")?.parse::<u32>().ok()?;
            Some((num, format!("/dev/{n}")))
        })
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, p)| p).collect()
}

fn source_error(e: V4l2Error) -> SourceError {
    match e {
        V4l2Error::Sys {
            op: "open", errno, ..
        } => SourceError::Open {
            what: e.device().to_owned(),
            source: std::io::Error::new(std::io::Error::from(errno).kind(), e.detail()),
        },
        V4l2Error::Unsupported { device, reason } => SourceError::Format {
            what: device,
            reason,
        },
        _ => SourceError::Device {
            what: e.device().to_owned(),
            reason: e.detail(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameRate;
    use crate::v4l2::sim::{truth, CamEvent, SimulatedCamera};

    fn want() -> VideoFormat {
        VideoFormat {
            width: 640,
            height: 480,
            rate: FrameRate::per_second(30),
        }
    }

    fn raw(c: Captured) -> RawFrame {
        match c {
            Captured::Raw(f) => f,
            Captured::Encoded(_) => panic!("camera delivered encoded frames"),
        }
    }

    #[test]
    fn v4l2_source_converts_every_format_with_padded_strides() {
        for format in [PixelFormat::Yuyv, PixelFormat::Nv12, PixelFormat::I420] {
            let mut cam = SimulatedCamera::new(format, 6, 4);
            cam.stride_pad = 10;
            let mut src = V4l2Source::with_device(cam, want()).unwrap();
            for n in 0..3 {
                let f = raw(src.next_frame().unwrap().unwrap());
                assert_eq!((f.number, f.width, f.height), (n, 6, 4));
                assert_eq!(f.data, truth(6, 4, n), "{format} frame {n}");
            }
        }
    }

    #[test]
    fn v4l2_source_reports_what_the_driver_gives() {
        let mut cam = SimulatedCamera::new(PixelFormat::Yuyv, 320, 240);
        cam.rate = Some(FrameRate::per_second(15));
        let src = V4l2Source::with_device(cam, want()).unwrap();
        assert_eq!(
            src.format(),
            VideoFormat {
                width: 320,
                height: 240,
                rate: FrameRate::per_second(15)
            }
        );
        assert_eq!(src.describe(), "v4l2:/dev/video-sim 320x240@15 YUYV");

        let mut cam = SimulatedCamera::new(PixelFormat::Yuyv, 320, 240);
        cam.rate = None;
        let src = V4l2Source::with_device(cam, want()).unwrap();
        assert_eq!(src.format().rate, want().rate);
    }

    #[test]
    fn v4l2_source_capture_time_comes_from_the_driver_timestamp() {
        let mut cam = SimulatedCamera::new(PixelFormat::I420, 4, 2);
        cam.timestamp_age_us = Some(20_000);
        let mut src = V4l2Source::with_device(cam, want()).unwrap();
        let f = raw(src.next_frame().unwrap().unwrap());
        let now = now_us();
        assert!(f.capture_us <= now, "capture time in the future");
        let age = now - f.capture_us;
        assert!(
            (15_000..100_000).contains(&age),
            "age {age} µs, expected about 20 ms"
        );
    }

    #[test]
    fn v4l2_source_without_timestamps_uses_arrival_time() {
        let mut cam = SimulatedCamera::new(PixelFormat::I420, 4, 2);
        cam.timestamp_age_us = None;
        let mut src = V4l2Source::with_device(cam, want()).unwrap();
        let before = now_us();
        let f = raw(src.next_frame().unwrap().unwrap());
        assert!(f.capture_us >= before && f.capture_us <= now_us());
    }

    #[test]
    fn v4l2_source_skips_damaged_frames_and_keeps_counting_from_zero() {
        let mut cam = SimulatedCamera::new(PixelFormat::Nv12, 4, 2);
        cam.script = [
            CamEvent::Damaged,
            CamEvent::Frame,
            CamEvent::Truncated,
            CamEvent::Drop(3),
            CamEvent::Frame,
        ]
        .into();
        let mut src = V4l2Source::with_device(cam, want()).unwrap();
        let a = raw(src.next_frame().unwrap().unwrap());
        let b = raw(src.next_frame().unwrap().unwrap());
        let c = raw(src.next_frame().unwrap().unwrap());
        assert_eq!((a.number, b.number, c.number), (0, 1, 2));
        // The sim's picture counter advances on every delivery, good or bad.
        assert_eq!(a.data, truth(4, 2, 1));
        assert_eq!(b.data, truth(4, 2, 3));
        assert_eq!(c.data, truth(4, 2, 4));
    }

    #[test]
    fn v4l2_source_gives_up_on_a_long_run_of_damaged_frames() {
        let mut cam = SimulatedCamera::new(PixelFormat::Nv12, 4, 2);
        cam.script = std::iter::repeat_n(CamEvent::Damaged, MAX_BAD_FRAMES as usize).collect();
        let mut src = V4l2Source::with_device(cam, want()).unwrap();
        let err = src.next_frame().unwrap_err();
        assert!(matches!(err, SourceError::Device { .. }), "{err}");
        assert!(
            err.to_string().contains("unusable frames in a row"),
            "{err}"
        );
    }

    #[test]
    fn v4l2_source_timeout_and_failure_are_clear_errors() {
        let mut cam = SimulatedCamera::new(PixelFormat::Yuyv, 4, 2);
        cam.script = [
            CamEvent::Timeout,
            CamEvent::Frame,
            CamEvent::Timeout,
            CamEvent::Fail,
        ]
        .into();
        let mut src = V4l2Source::with_device(cam, want()).unwrap();
        // The first frame may take longer: cameras settle exposure before delivering.
        let err = src.next_frame().unwrap_err().to_string();
        assert!(
            err.starts_with("/dev/video-sim: device error: no frame for 5 s"),
            "{err}"
        );
        src.next_frame().unwrap().unwrap();
        let err = src.next_frame().unwrap_err().to_string();
        assert!(
            err.starts_with("/dev/video-sim: device error: no frame for 2 s"),
            "{err}"
        );
        let err = src.next_frame().unwrap_err().to_string();
        assert!(
            err.contains("POLLERR") && err.contains("unplugged"),
            "{err}"
        );
    }

    #[test]
    fn v4l2_source_start_failure_is_a_format_error() {
        let mut cam = SimulatedCamera::new(PixelFormat::Yuyv, 4, 2);
        cam.fail_start = true;
        let err = V4l2Source::with_device(cam, want()).unwrap_err();
        assert!(matches!(err, SourceError::Format { .. }), "{err}");
        assert!(err.to_string().contains("MJPG"), "{err}");
    }

    #[test]
    fn v4l2_capture_time_conversion() {
        let offset = 1_700_000_000_000_000 - 5_000_000;
        let now = 1_700_000_000_010_000;
        // Stamped at monotonic 5 s: 10 ms before now.
        assert_eq!(
            capture_time_us(Some(5_000_000), offset, now),
            1_700_000_000_000_000
        );
        // A stamp slightly in the future (jitter) is clamped to now.
        assert_eq!(capture_time_us(Some(5_010_500), offset, now), now);
        // Nonsense stamps fall back to arrival time.
        assert_eq!(capture_time_us(Some(5_100_000), offset, now), now);
        assert_eq!(capture_time_us(Some(1), offset, now), now);
        assert_eq!(capture_time_us(None, offset, now), now);
    }

    #[test]
    fn v4l2_clock_offset_adopts_only_real_steps() {
        assert_eq!(offset_step(1_000_000, 1_000_400), None);
        assert_eq!(offset_step(1_000_000, 999_100), None);
        assert_eq!(offset_step(1_000_000, 3_000_000), Some(2_000_000));
        assert_eq!(offset_step(1_000_000, -1_000_000), Some(-2_000_000));
    }

    #[test]
    fn v4l2_video_nodes_sort_numerically() {
        let names = [
            "video10",
            "video2",
            "media0",
            "video0",
            "videox",
            "v4l-subdev0",
            "video1",
        ];
        assert_eq!(
            video_nodes(names.iter().map(|s| s.to_string())),
            ["/dev/video0", "/dev/video1", "/dev/video2", "/dev/video10"]
        );
    }

    #[test]
    fn v4l2_find_capture_device_does_not_panic_without_cameras() {
        // This machine may or may not have cameras; the probe must simply answer.
        if let Some(p) = find_capture_device() {
            assert!(p.starts_with("/dev/video"));
        }
    }

    #[test]
    fn v4l2_open_of_a_missing_device_says_which_and_why() {
        let err = V4l2Source::open("/dev/video-does-not-exist", want()).unwrap_err();
        assert!(matches!(err, SourceError::Open { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("/dev/video-does-not-exist") && msg.contains("ENOENT"),
            "{msg}"
        );
    }
}
