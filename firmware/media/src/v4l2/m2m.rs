//! A stateful memory-to-memory H.264 encoder: raw pictures go into the OUTPUT queue, H.264
//! comes out of the CAPTURE queue (V4L2 names queues from the application's side).
//!
//! Only the multi-planar API, which is what the Pi's `bcm2835-codec` offers on
//! `/dev/video11`. The setup order (coded format, raw format, rate, controls, buffers,
//! streaming) is the one the kernel's stateful-encoder documentation prescribes.

use std::ffi::c_long;
use std::time::{Duration, Instant};

use nix::poll::PollFlags;

use super::buffers::MmapQueue;
use super::device::Device;
use super::pixfmt::{PixelFormat, PixelLayout};
use super::sys::*;
use super::V4l2Error;
use crate::frame::FrameRate;

/// Buffers per queue: enough for the encoder to work on one picture while we fill the next
/// and collect the previous one.
pub const M2M_BUFFERS: u32 = 4;

/// What the encoder logic needs from a hardware encoder. [`M2mHardware`] is the real one;
/// tests use a simulated encoder.
pub trait M2mDevice: Send {
    fn path(&self) -> &str;
    /// Sets formats, rate and encoder controls, allocates buffers and starts streaming.
    fn start(&mut self, config: &M2mConfig) -> Result<M2mSetup, V4l2Error>;
    /// Hands one picture to the encoder: `fill` writes it into a free input buffer (laid
    /// out as `M2mSetup::input`) and returns the bytes used. `cookie` comes back with the
    /// encoded result. Waits up to `timeout` for a free buffer.
    fn queue_raw(
        &mut self,
        cookie: u64,
        timeout: Duration,
        fill: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> Result<(), V4l2Error>;
    /// The next encoded buffer, waiting up to `timeout`; `Ok(None)` if none came.
    fn dequeue_encoded(&mut self, timeout: Duration) -> Result<Option<EncodedBuffer>, V4l2Error>;
    /// Makes the next picture the encoder takes an IDR.
    fn force_keyframe(&mut self) -> Result<(), V4l2Error>;
}

/// What to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct M2mConfig {
    pub width: u32,
    pub height: u32,
    pub rate: FrameRate,
    pub bitrate: u32,
    pub keyframe_interval: u32,
}

/// What the driver agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct M2mSetup {
    /// How a raw picture must be laid out in an input buffer (possibly padded).
    pub input: PixelLayout,
    pub input_buffers: usize,
    pub output_buffers: usize,
}

/// One buffer of H.264 as the encoder produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBuffer {
    /// The cookie of the picture it came from; 0 if the driver gave none.
    pub cookie: u64,
    /// The driver flagged it as a keyframe.
    pub keyframe: bool,
    pub data: Vec<u8>,
}

/// Cookies travel in the buffer timestamp, which the encoder copies from each input buffer
/// to its output. Microseconds are what survive the Pi firmware's round trip exactly.
pub fn cookie_to_timeval(cookie: u64) -> timeval {
    timeval {
        tv_sec: c_long::try_from(cookie / 1_000_000).unwrap_or(c_long::MAX),
        tv_usec: (cookie % 1_000_000) as c_long,
    }
}

pub fn timeval_to_cookie(t: timeval) -> Option<u64> {
    let sec = u64::try_from(t.tv_sec).ok()?;
    let usec = u64::try_from(t.tv_usec).ok().filter(|&u| u < 1_000_000)?;
    sec.checked_mul(1_000_000)?.checked_add(usec)
}

/// Room for one encoded picture: a keyframe at a high bitrate stays well below a quarter
/// of the raw size.
fn coded_buffer_size(width: u32, height: u32) -> u32 {
    (width as usize * height as usize * 3 / 8).clamp(512 << 10, 4 << 20) as u32
}

/// A real V4L2 H.264 encoder node.
#[derive(Debug)]
pub struct M2mHardware {
    // Declared before `dev` so buffers are unmapped before the device is closed.
    input: Option<MmapQueue>,
    output: Option<MmapQueue>,
    free_inputs: Vec<usize>,
    /// The driver's size of one raw picture, which may exceed what the layout needs.
    input_size: usize,
    dev: Device,
    streaming: bool,
}

impl M2mHardware {
    pub fn open(path: &str) -> Result<Self, V4l2Error> {
        let dev = Device::open(path)?;
        let caps = dev.query_caps()?;
        if !caps.has(V4L2_CAP_VIDEO_M2M_MPLANE | V4L2_CAP_STREAMING) {
            return Err(V4l2Error::unsupported(
                path,
                format!(
                    "{} is not a multi-planar memory-to-memory device (on a Pi 4 the H.264 encoder is /dev/video11)",
                    caps.name()
                ),
            ));
        }
        Ok(Self {
            input: None,
            output: None,
            free_inputs: Vec::new(),
            input_size: 0,
            dev,
            streaming: false,
        })
    }

    fn set_controls(&self, config: &M2mConfig) -> Result<(), V4l2Error> {
        let bitrate = i32::try_from(config.bitrate).unwrap_or(i32::MAX);
        let period = i32::try_from(config.keyframe_interval.max(1)).unwrap_or(i32::MAX);
        // Without these the stream is not what browsers and the relay expect.
        let required = [
            (
                V4L2_CID_MPEG_VIDEO_H264_PROFILE,
                V4L2_MPEG_VIDEO_H264_PROFILE_CONSTRAINED_BASELINE,
                "VIDIOC_S_EXT_CTRLS(H264_PROFILE=constrained baseline)",
            ),
            (
                V4L2_CID_MPEG_VIDEO_BITRATE,
                bitrate,
                "VIDIOC_S_EXT_CTRLS(VIDEO_BITRATE)",
            ),
            (
                V4L2_CID_MPEG_VIDEO_H264_I_PERIOD,
                period,
                "VIDIOC_S_EXT_CTRLS(H264_I_PERIOD)",
            ),
        ];
        // The level is advisory, and the encoder logic puts SPS/PPS before an IDR that
        // lacks them, so a driver refusing these still yields a usable stream.
        let optional = [
            (
                V4L2_CID_MPEG_VIDEO_H264_LEVEL,
                V4L2_MPEG_VIDEO_H264_LEVEL_4_0,
                "VIDIOC_S_EXT_CTRLS(H264_LEVEL=4.0)",
            ),
            (
                V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER,
                1,
                "VIDIOC_S_EXT_CTRLS(REPEAT_SEQ_HEADER)",
            ),
        ];
        for (id, value, op) in required {
            self.dev
                .set_ext_control(V4L2_CTRL_CLASS_CODEC, id, value, op)?;
        }
        for (id, value, op) in optional {
            if let Err(e) = self
                .dev
                .set_ext_control(V4L2_CTRL_CLASS_CODEC, id, value, op)
            {
                tracing::warn!("{e}; continuing without it");
            }
        }
        Ok(())
    }

    fn set_rate(&self, rate: FrameRate) {
        let mut parm = v4l2_streamparm {
            type_: V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE,
            ..Default::default()
        };
        parm.parm.output = v4l2_outputparm {
            capability: 0,
            outputmode: 0,
            timeperframe: v4l2_fract {
                numerator: rate.den,
                denominator: rate.num,
            },
            extendedmode: 0,
            writebuffers: 0,
            reserved: [0; 4],
        };
        if let Err(e) = self.dev.set_parm(&mut parm) {
            tracing::warn!("{e}; rate control will assume the driver's default frame rate");
        }
    }

    /// Takes back the input buffers the encoder has finished reading.
    fn reclaim_inputs(&mut self) -> Result<(), V4l2Error> {
        let Some(input) = self.input.as_ref() else {
            return Ok(());
        };
        while let Some(d) = input.dequeue(&self.dev)? {
            if !self.free_inputs.contains(&d.index) {
                self.free_inputs.push(d.index);
            }
        }
        Ok(())
    }

    fn not_started(&self) -> V4l2Error {
        V4l2Error::protocol(self.dev.path(), "encoder was not started")
    }
}

impl M2mDevice for M2mHardware {
    fn path(&self) -> &str {
        self.dev.path()
    }

    fn start(&mut self, config: &M2mConfig) -> Result<M2mSetup, V4l2Error> {
        let path = self.dev.path().to_owned();
        let names = |codes: &[u32]| {
            codes
                .iter()
                .map(|&c| fourcc_name(c))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let coded = self.dev.enum_formats(V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE)?;
        if !coded.contains(&V4L2_PIX_FMT_H264) {
            return Err(V4l2Error::unsupported(
                &path,
                format!(
                    "does not produce H.264 (it produces {}); on a Pi 4 the H.264 encoder is /dev/video11",
                    names(&coded)
                ),
            ));
        }
        let raw = self.dev.enum_formats(V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE)?;
        if !raw.contains(&V4L2_PIX_FMT_YUV420) {
            return Err(V4l2Error::unsupported(
                &path,
                format!(
                    "does not take YU12 (I420) pictures (it takes {})",
                    names(&raw)
                ),
            ));
        }

        let mut cap = v4l2_format {
            type_: V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE,
            ..Default::default()
        };
        {
            let mp = cap.pix_mp_mut();
            mp.width = config.width;
            mp.height = config.height;
            mp.pixelformat = V4L2_PIX_FMT_H264;
            mp.field = V4L2_FIELD_NONE;
            mp.num_planes = 1;
            mp.plane_fmt[0].sizeimage = coded_buffer_size(config.width, config.height);
        }
        self.dev.set_format(&mut cap)?;
        let chosen = cap.pix_mp().pixelformat;
        if chosen != V4L2_PIX_FMT_H264 {
            return Err(V4l2Error::unsupported(
                &path,
                format!("asked for H.264, the driver chose {}", fourcc_name(chosen)),
            ));
        }

        let mut out = v4l2_format {
            type_: V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE,
            ..Default::default()
        };
        {
            let mp = out.pix_mp_mut();
            mp.width = config.width;
            mp.height = config.height;
            mp.pixelformat = V4L2_PIX_FMT_YUV420;
            mp.field = V4L2_FIELD_NONE;
            mp.num_planes = 1;
        }
        self.dev.set_format(&mut out)?;
        let mp = out.pix_mp();
        let (pixelformat, planes, width, height) =
            (mp.pixelformat, mp.num_planes, mp.width, mp.height);
        let plane = mp.plane_fmt[0];
        let (bytesperline, sizeimage) = (plane.bytesperline, plane.sizeimage);
        if pixelformat != V4L2_PIX_FMT_YUV420 || planes != 1 {
            return Err(V4l2Error::unsupported(
                &path,
                format!(
                    "wants {} in {planes} planes; cambox writes YU12 in one",
                    fourcc_name(pixelformat)
                ),
            ));
        }
        if width < config.width || height < config.height {
            return Err(V4l2Error::unsupported(
                &path,
                format!(
                    "can encode at most {width}x{height}; asked for {}x{}",
                    config.width, config.height
                ),
            ));
        }
        let input =
            PixelLayout::from_driver(PixelFormat::I420, width, height, bytesperline, sizeimage)
                .map_err(|r| V4l2Error::protocol(&path, r))?;

        self.set_rate(config.rate);
        self.set_controls(config)?;

        let input_q =
            MmapQueue::allocate(&self.dev, V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE, M2M_BUFFERS)?;
        if let Some(short) = (0..input_q.len()).find(|&i| {
            input_q
                .plane(i, 0)
                .is_none_or(|m| m.len() < input.min_len())
        }) {
            return Err(V4l2Error::protocol(
                &path,
                format!("input buffer {short} is smaller than one {width}x{height} picture"),
            ));
        }
        let output_q =
            MmapQueue::allocate(&self.dev, V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE, M2M_BUFFERS)?;
        for i in 0..output_q.len() {
            output_q.queue(&self.dev, i, &[], timeval::default())?;
        }
        let setup = M2mSetup {
            input,
            input_buffers: input_q.len(),
            output_buffers: output_q.len(),
        };
        self.free_inputs = (0..input_q.len()).rev().collect();
        self.input_size = sizeimage as usize;
        self.input = Some(input_q);
        self.output = Some(output_q);
        self.dev.stream_on(V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE)?;
        self.streaming = true;
        self.dev.stream_on(V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE)?;
        Ok(setup)
    }

    fn queue_raw(
        &mut self,
        cookie: u64,
        timeout: Duration,
        fill: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> Result<(), V4l2Error> {
        let deadline = Instant::now() + timeout;
        let index = loop {
            self.reclaim_inputs()?;
            if let Some(i) = self.free_inputs.pop() {
                break i;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let ready = if left.is_zero() {
                PollFlags::empty()
            } else {
                self.dev.wait(PollFlags::POLLOUT, left)?
            };
            if ready.intersects(PollFlags::POLLERR | PollFlags::POLLHUP) {
                return Err(V4l2Error::failed(
                    self.dev.path(),
                    "the encoder reported an error (POLLERR) while taking pictures",
                ));
            }
            if ready.is_empty() {
                return Err(V4l2Error::failed(
                    self.dev.path(),
                    format!(
                        "no free input buffer within {} ms (VIDIOC_DQBUF on OUTPUT): the encoder is not taking pictures",
                        timeout.as_millis()
                    ),
                ));
            }
        };
        let Some(input) = self.input.as_mut() else {
            return Err(self.not_started());
        };
        let Some(mapping) = input.plane_mut(index, 0) else {
            return Err(V4l2Error::protocol(
                self.dev.path(),
                format!("input buffer {index} is not mapped"),
            ));
        };
        // The whole picture as the driver sized it: the firmware may expect every byte of its
        // own computation, not just what the layout strictly needs.
        let used = fill(mapping.as_mut_slice())
            .max(self.input_size)
            .min(mapping.len());
        let queued = input.queue(&self.dev, index, &[used as u32], cookie_to_timeval(cookie));
        if queued.is_err() {
            self.free_inputs.push(index);
        }
        queued
    }

    fn dequeue_encoded(&mut self, timeout: Duration) -> Result<Option<EncodedBuffer>, V4l2Error> {
        let deadline = Instant::now() + timeout;
        let Some(output) = self.output.as_ref() else {
            return Err(self.not_started());
        };
        loop {
            if let Some(d) = output.dequeue(&self.dev)? {
                let data = output
                    .payload(&d, 0)
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default();
                output.queue(&self.dev, d.index, &[], timeval::default())?;
                if d.flags & V4L2_BUF_FLAG_ERROR != 0 {
                    tracing::warn!(
                        "{}: encoder flagged an output buffer as damaged; dropped",
                        self.dev.path()
                    );
                    continue;
                }
                if data.is_empty() {
                    continue;
                }
                return Ok(Some(EncodedBuffer {
                    cookie: timeval_to_cookie(d.timestamp).unwrap_or(0),
                    keyframe: d.flags & V4L2_BUF_FLAG_KEYFRAME != 0,
                    data,
                }));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let ready = self.dev.wait(PollFlags::POLLIN, left)?;
            if ready.intersects(PollFlags::POLLERR | PollFlags::POLLHUP) {
                return Err(V4l2Error::failed(
                    self.dev.path(),
                    "the encoder reported an error (POLLERR) while producing H.264",
                ));
            }
            if ready.is_empty() {
                return Ok(None);
            }
        }
    }

    fn force_keyframe(&mut self) -> Result<(), V4l2Error> {
        self.dev.set_ext_control(
            V4L2_CTRL_CLASS_CODEC,
            V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME,
            1,
            "VIDIOC_S_EXT_CTRLS(FORCE_KEY_FRAME)",
        )
    }
}

impl Drop for M2mHardware {
    fn drop(&mut self) {
        if self.streaming {
            for t in [
                V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE,
                V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE,
            ] {
                if let Err(e) = self.dev.stream_off(t) {
                    tracing::debug!("{e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4l2_cookies_survive_the_timestamp_round_trip() {
        for cookie in [
            0u64,
            1,
            999_999,
            1_000_000,
            1_234_567_890,
            u32::MAX as u64 + 7,
        ] {
            assert_eq!(timeval_to_cookie(cookie_to_timeval(cookie)), Some(cookie));
        }
        assert_eq!(
            cookie_to_timeval(2_000_003),
            timeval {
                tv_sec: 2,
                tv_usec: 3
            }
        );
        assert_eq!(
            timeval_to_cookie(timeval {
                tv_sec: -1,
                tv_usec: 0
            }),
            None
        );
        assert_eq!(
            timeval_to_cookie(timeval {
                tv_sec: 0,
                tv_usec: 1_000_000
            }),
            None
        );
    }

    #[test]
    fn v4l2_coded_buffers_fit_a_keyframe() {
        assert_eq!(coded_buffer_size(320, 240), 512 << 10);
        assert_eq!(coded_buffer_size(1920, 1080), 1920 * 1080 * 3 / 8);
        assert_eq!(coded_buffer_size(16384, 16384), 4 << 20);
    }
}
