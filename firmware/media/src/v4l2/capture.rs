//! A camera: a V4L2 node with the single-planar VIDEO_CAPTURE interface (USB webcams, HDMI
//! capture sticks, the legacy Pi camera driver).

use std::time::{Duration, Instant};

use nix::poll::PollFlags;

use super::buffers::MmapQueue;
use super::device::{Capabilities, Device};
use super::pixfmt::{PixelFormat, PixelLayout};
use super::sys::*;
use super::V4l2Error;
use crate::frame::{FrameRate, VideoFormat};

/// Enough to absorb one slow encode without the driver dropping frames, few enough to
/// keep latency low (each queued buffer is a frame the camera may run ahead).
pub const CAPTURE_BUFFERS: u32 = 4;

/// What a camera source needs from a device. [`CaptureHardware`] is the real one; tests
/// use a simulated camera.
pub trait CaptureDevice: Send {
    fn path(&self) -> &str;
    /// Negotiates a format close to `want`, allocates buffers and starts streaming.
    fn start(&mut self, want: VideoFormat) -> Result<CaptureSetup, V4l2Error>;
    /// Waits up to `timeout` for the next filled buffer, shows it to `sink` and gives it
    /// back to the driver. `Ok(false)` if nothing arrived in time.
    fn next_buffer(
        &mut self,
        timeout: Duration,
        sink: &mut dyn FnMut(CaptureBuffer<'_>),
    ) -> Result<bool, V4l2Error>;
}

/// What the driver agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureSetup {
    pub layout: PixelLayout,
    /// `None` when the driver does not report its frame rate.
    pub rate: Option<FrameRate>,
    pub buffers: usize,
}

/// One captured picture, still in the driver's buffer.
#[derive(Debug)]
pub struct CaptureBuffer<'a> {
    pub data: &'a [u8],
    /// When the picture was captured on `CLOCK_MONOTONIC`, if the driver says so.
    pub monotonic_us: Option<u64>,
    /// The driver's frame counter; gaps are frames it dropped.
    pub sequence: u32,
    /// The driver flagged the picture as damaged (e.g. a USB transfer error).
    pub error: bool,
}

/// A real camera node.
#[derive(Debug)]
pub struct CaptureHardware {
    // Declared before `dev` so buffers are unmapped before the device is closed.
    queue: Option<MmapQueue>,
    dev: Device,
    streaming: bool,
}

/// Drivers whose capture nodes are stages of a camera pipeline that only libcamera can
/// drive (they deliver nothing, or raw Bayer, when opened on their own).
const PIPELINE_DRIVERS: [&str; 6] = [
    "unicam",
    "bcm2835-isp",
    "bcm2835-codec",
    "rpivid",
    "rp1-cfe",
    "pispbe",
];

/// A node cambox can capture from by itself: single-planar capture with streaming I/O,
/// not a codec, not a stage of a libcamera pipeline.
pub fn is_camera(caps: &Capabilities) -> bool {
    caps.has(V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_STREAMING)
        && !caps.is_m2m()
        && !PIPELINE_DRIVERS.contains(&caps.driver.as_str())
}

impl CaptureHardware {
    pub fn open(path: &str) -> Result<Self, V4l2Error> {
        let dev = Device::open(path)?;
        let caps = dev.query_caps()?;
        if !is_camera(&caps) {
            let why = if caps.is_m2m() {
                "it is a memory-to-memory codec, not a camera"
            } else if PIPELINE_DRIVERS.contains(&caps.driver.as_str()) {
                "it is part of a libcamera pipeline; use the libcamera source for this camera"
            } else {
                "it cannot stream video captures"
            };
            return Err(V4l2Error::unsupported(
                path,
                format!("{} is not usable as a camera: {why}", caps.name()),
            ));
        }
        Ok(Self {
            queue: None,
            dev,
            streaming: false,
        })
    }

    /// Asks for the frame rate; returns what the driver reports, if anything.
    fn set_rate(&self, want: FrameRate) -> Option<FrameRate> {
        let mut parm = v4l2_streamparm {
            type_: V4L2_BUF_TYPE_VIDEO_CAPTURE,
            ..Default::default()
        };
        if let Err(e) = self.dev.get_parm(&mut parm) {
            tracing::debug!("{e}; frame rate unknown");
            return None;
        }
        let mut cap = parm.capture();
        if cap.capability & V4L2_CAP_TIMEPERFRAME != 0 {
            cap.timeperframe = v4l2_fract {
                numerator: want.den,
                denominator: want.num,
            };
            parm.parm.capture = cap;
            if let Err(e) = self.dev.set_parm(&mut parm) {
                tracing::warn!("{e}; keeping the camera's own frame rate");
            }
        }
        rate_from_timeperframe(parm.capture().timeperframe)
    }
}

impl CaptureDevice for CaptureHardware {
    fn path(&self) -> &str {
        self.dev.path()
    }

    fn start(&mut self, want: VideoFormat) -> Result<CaptureSetup, V4l2Error> {
        let path = self.dev.path().to_owned();
        let offered = self.dev.enum_formats(V4L2_BUF_TYPE_VIDEO_CAPTURE)?;
        let format = PixelFormat::choose(&offered).ok_or_else(|| {
            let names: Vec<String> = offered.iter().map(|&f| fourcc_name(f)).collect();
            V4l2Error::unsupported(
                &path,
                format!(
                    "offers only {}; cambox needs YUYV, NV12 or YU12 (compressed-only cameras are not supported)",
                    if names.is_empty() { "no formats".into() } else { names.join(", ") }
                ),
            )
        })?;
        let mut fmt = v4l2_format {
            type_: V4L2_BUF_TYPE_VIDEO_CAPTURE,
            ..Default::default()
        };
        {
            let pix = fmt.pix_mut();
            pix.width = want.width;
            pix.height = want.height;
            pix.pixelformat = format.fourcc();
            pix.field = V4L2_FIELD_NONE;
        }
        self.dev.set_format(&mut fmt)?;
        let pix = fmt.pix();
        let got = PixelFormat::from_fourcc(pix.pixelformat).ok_or_else(|| {
            V4l2Error::unsupported(
                &path,
                format!(
                    "asked for {format}, the driver chose {} instead",
                    fourcc_name(pix.pixelformat)
                ),
            )
        })?;
        if !matches!(pix.field, V4L2_FIELD_NONE | V4L2_FIELD_ANY) {
            return Err(V4l2Error::unsupported(
                &path,
                "delivers interlaced fields; cambox needs progressive video",
            ));
        }
        let layout =
            PixelLayout::from_driver(got, pix.width, pix.height, pix.bytesperline, pix.sizeimage)
                .map_err(|r| V4l2Error::protocol(&path, r))?;
        let rate = self.set_rate(want.rate);

        let queue = MmapQueue::allocate(&self.dev, V4L2_BUF_TYPE_VIDEO_CAPTURE, CAPTURE_BUFFERS)?;
        if queue.len() < 2 {
            return Err(V4l2Error::unsupported(
                &path,
                format!(
                    "granted {} buffer(s); streaming needs at least 2",
                    queue.len()
                ),
            ));
        }
        if let Some(short) =
            (0..queue.len()).find(|&i| queue.plane(i, 0).is_none_or(|m| m.len() < layout.min_len()))
        {
            return Err(V4l2Error::protocol(
                &path,
                format!(
                    "buffer {short} is smaller than one {}x{} picture",
                    layout.width, layout.height
                ),
            ));
        }
        for i in 0..queue.len() {
            queue.queue(&self.dev, i, &[], timeval::default())?;
        }
        let buffers = queue.len();
        self.queue = Some(queue);
        self.dev.stream_on(V4L2_BUF_TYPE_VIDEO_CAPTURE)?;
        self.streaming = true;
        Ok(CaptureSetup {
            layout,
            rate,
            buffers,
        })
    }

    fn next_buffer(
        &mut self,
        timeout: Duration,
        sink: &mut dyn FnMut(CaptureBuffer<'_>),
    ) -> Result<bool, V4l2Error> {
        let deadline = Instant::now() + timeout;
        let queue = self
            .queue
            .as_ref()
            .ok_or_else(|| V4l2Error::protocol(self.dev.path(), "capture was not started"))?;
        loop {
            if let Some(d) = queue.dequeue(&self.dev)? {
                sink(CaptureBuffer {
                    data: queue.payload(&d, 0).unwrap_or(&[]),
                    monotonic_us: monotonic_timestamp_us(d.flags, d.timestamp),
                    sequence: d.sequence,
                    error: d.flags & V4L2_BUF_FLAG_ERROR != 0,
                });
                queue.queue(&self.dev, d.index, &[], timeval::default())?;
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let ready = self.dev.wait(PollFlags::POLLIN, left)?;
            if ready.intersects(PollFlags::POLLERR | PollFlags::POLLHUP) {
                return Err(V4l2Error::failed(
                    self.dev.path(),
                    "the device reported an error while streaming (POLLERR): was it unplugged?",
                ));
            }
            if ready.is_empty() {
                return Ok(false);
            }
        }
    }
}

impl Drop for CaptureHardware {
    fn drop(&mut self) {
        if self.streaming {
            if let Err(e) = self.dev.stream_off(V4L2_BUF_TYPE_VIDEO_CAPTURE) {
                tracing::debug!("{e}");
            }
        }
    }
}

/// The capture time a driver put on a buffer, if it is on `CLOCK_MONOTONIC` (drivers may
/// also say "unknown" or copy whatever the application set).
pub fn monotonic_timestamp_us(flags: u32, t: timeval) -> Option<u64> {
    if flags & V4L2_BUF_FLAG_TIMESTAMP_MASK != V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC {
        return None;
    }
    let sec = u64::try_from(t.tv_sec).ok()?;
    let usec = u64::try_from(t.tv_usec).ok().filter(|&u| u < 1_000_000)?;
    let us = sec.checked_mul(1_000_000)?.checked_add(usec)?;
    (us != 0).then_some(us)
}

/// A frame interval (seconds per frame) as a frame rate, reduced, with rates that are
/// whole numbers to within 0.01% snapped to them: UVC cameras report intervals in 100 ns
/// units, so "30 fps" arrives as 333333/10000000.
pub fn rate_from_timeperframe(tpf: v4l2_fract) -> Option<FrameRate> {
    if tpf.numerator == 0 || tpf.denominator == 0 {
        return None;
    }
    let fps = tpf.denominator as f64 / tpf.numerator as f64;
    let whole = fps.round();
    if whole >= 1.0 && (fps - whole).abs() / whole < 1e-4 {
        return Some(FrameRate::per_second(whole as u32));
    }
    let g = gcd(tpf.numerator, tpf.denominator);
    Some(FrameRate {
        num: tpf.denominator / g,
        den: tpf.numerator / g,
    })
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(driver: &str, caps: u32) -> Capabilities {
        Capabilities {
            driver: driver.into(),
            card: "cam".into(),
            bus_info: String::new(),
            caps,
        }
    }

    #[test]
    fn v4l2_cameras_are_told_apart_from_codecs_and_pipeline_nodes() {
        let cam = V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_STREAMING;
        assert!(is_camera(&caps("uvcvideo", cam)));
        assert!(is_camera(&caps("bm2835 mmal", cam)));
        assert!(!is_camera(&caps("uvcvideo", V4L2_CAP_VIDEO_CAPTURE)));
        assert!(!is_camera(&caps(
            "bcm2835-codec",
            V4L2_CAP_VIDEO_M2M_MPLANE | V4L2_CAP_STREAMING
        )));
        assert!(!is_camera(&caps("uvcvideo", cam | V4L2_CAP_VIDEO_M2M)));
        assert!(!is_camera(&caps("unicam", cam)));
        assert!(!is_camera(&caps("bcm2835-isp", cam)));
        assert!(!is_camera(&caps(
            "uvcvideo",
            V4L2_CAP_VIDEO_CAPTURE_MPLANE | V4L2_CAP_STREAMING
        )));
    }

    #[test]
    fn v4l2_only_monotonic_timestamps_are_used() {
        let t = timeval {
            tv_sec: 12,
            tv_usec: 345_678,
        };
        assert_eq!(
            monotonic_timestamp_us(V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC, t),
            Some(12_345_678)
        );
        assert_eq!(
            monotonic_timestamp_us(
                V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC | V4L2_BUF_FLAG_KEYFRAME,
                t
            ),
            Some(12_345_678)
        );
        assert_eq!(
            monotonic_timestamp_us(V4L2_BUF_FLAG_TIMESTAMP_COPY, t),
            None
        );
        assert_eq!(monotonic_timestamp_us(0, t), None);
        assert_eq!(
            monotonic_timestamp_us(V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC, timeval::default()),
            None
        );
        let bad = timeval {
            tv_sec: -1,
            tv_usec: 0,
        };
        assert_eq!(
            monotonic_timestamp_us(V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC, bad),
            None
        );
        let bad = timeval {
            tv_sec: 1,
            tv_usec: 1_000_000,
        };
        assert_eq!(
            monotonic_timestamp_us(V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC, bad),
            None
        );
    }

    #[test]
    fn v4l2_frame_intervals_become_rates() {
        let r = |n, d| {
            rate_from_timeperframe(v4l2_fract {
                numerator: n,
                denominator: d,
            })
        };
        assert_eq!(r(1, 30), Some(FrameRate::per_second(30)));
        assert_eq!(r(333_333, 10_000_000), Some(FrameRate::per_second(30)));
        assert_eq!(
            r(1001, 30000),
            Some(FrameRate {
                num: 30000,
                den: 1001
            })
        );
        assert_eq!(r(2, 25), Some(FrameRate { num: 25, den: 2 }));
        assert_eq!(r(0, 30), None);
        assert_eq!(r(1, 0), None);
    }
}
