//! The hardware H.264 encoder behind V4L2's memory-to-memory API (`/dev/video11` on a Pi 4).
//!
//! The device is asynchronous: a picture goes in, its H.264 comes out a little later,
//! possibly after the next picture went in. This keeps the crate's synchronous
//! [`VideoEncoder`] contract on top of that: each call queues one picture and returns at
//! most one access unit, which carries the number and capture time of the picture it was
//! made from (matched by a cookie in the buffer timestamp), not necessarily those of the
//! picture just queued. `Ok(None)` therefore means "still inside the encoder": it comes
//! out of a later call.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{EncodeError, VideoEncoder, VideoEncoderSettings};
use crate::annexb::{self, ParameterSets};
use crate::frame::{EncodedFrame, RawFrame};
use crate::v4l2::{
    EncodedBuffer, M2mConfig, M2mDevice, M2mHardware, PixelFormat, PixelLayout, V4l2Error,
};

/// A picture not out of the encoder after this long means the hardware has stalled.
const OUTPUT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pictures inside the encoder beyond which `encode` blocks for output. The Pi's codec
/// returns each picture within about a frame period; more in flight only adds latency.
const MAX_IN_FLIGHT: usize = 2;
/// Header-only or unmatched buffers handled in one call before control goes back.
const MAX_BUFFERS_PER_CALL: usize = 8;
/// Parameter sets are tens of bytes; more than this waiting for a picture is garbage.
const MAX_PENDING_HEADERS: usize = 64 * 1024;

/// A picture handed to the encoder whose H.264 has not come out yet.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    cookie: u64,
    number: u64,
    capture_us: u64,
    queued: Instant,
}

/// H.264 from a V4L2 hardware encoder. Generic over the device so that the logic (strides,
/// cookies, keyframes, timeouts) is tested with a simulated encoder.
pub struct M2mEncoder<D: M2mDevice = M2mHardware> {
    device: D,
    name: String,
    settings: VideoEncoderSettings,
    input: PixelLayout,
    /// How long to wait for a picture's output before leaving it for the next call.
    settle: Duration,
    /// Cookies are our own counter, not frame numbers: a source that restarts numbering
    /// must not make two pictures in flight indistinguishable. 0 means "no cookie".
    next_cookie: u64,
    in_flight: VecDeque<InFlight>,
    /// Parameter sets that came in a buffer of their own, for the next picture.
    headers: Vec<u8>,
    params: ParameterSets,
    warned_unmatched: bool,
}

impl<D: M2mDevice> std::fmt::Debug for M2mEncoder<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("M2mEncoder")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .field("input", &self.input)
            .field("in_flight", &self.in_flight.len())
            .finish()
    }
}

impl M2mEncoder {
    /// Opens the encoder node `dev` and configures it for `settings`.
    pub fn open(dev: &str, settings: VideoEncoderSettings) -> Result<Self, EncodeError> {
        let device =
            M2mHardware::open(dev).map_err(|e| init_error(&format!("v4l2m2m:{dev}"), &e))?;
        Self::with_device(device, settings)
    }
}

impl<D: M2mDevice> M2mEncoder<D> {
    pub fn with_device(mut device: D, settings: VideoEncoderSettings) -> Result<Self, EncodeError> {
        let name = format!("v4l2m2m:{}", device.path());
        let f = settings.format;
        let refuse = |reason: String| EncodeError::Init {
            encoder: name.clone(),
            reason,
        };
        if f.width == 0 || f.height == 0 {
            return Err(refuse(format!(
                "cannot encode a {}x{} picture",
                f.width, f.height
            )));
        }
        if settings.bitrate == 0 {
            return Err(refuse("bitrate must be above 0".into()));
        }
        let setup = device
            .start(&M2mConfig {
                width: f.width,
                height: f.height,
                rate: f.rate,
                bitrate: settings.bitrate,
                keyframe_interval: settings.keyframe_interval.max(1),
            })
            .map_err(|e| init_error(&name, &e))?;
        let input = setup.input;
        if input.format != PixelFormat::I420 || input.width < f.width || input.height < f.height {
            return Err(refuse(format!(
                "driver wants {}x{} {} pictures for a {}x{} stream",
                input.width, input.height, input.format, f.width, f.height
            )));
        }
        tracing::info!(
            "{name}: encoding {}x{}@{} at {} bit/s, IDR every {} pictures",
            f.width,
            f.height,
            f.rate,
            settings.bitrate,
            settings.keyframe_interval.max(1)
        );
        if input != PixelLayout::packed_i420(f.width, f.height) {
            tracing::debug!(
                "{name}: input padded to {}x{} at {} bytes per line",
                input.width,
                input.height,
                input.bytesperline
            );
        }
        let settle = Duration::from_micros(f.rate.frame_offset_us(1))
            .clamp(Duration::from_millis(5), Duration::from_millis(200));
        Ok(Self {
            device,
            name,
            settings,
            input,
            settle,
            next_cookie: 1,
            in_flight: VecDeque::new(),
            headers: Vec::new(),
            params: ParameterSets::default(),
            warned_unmatched: false,
        })
    }

    #[cfg(test)]
    pub(crate) fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    fn frame_error(&self, frame: u64, e: &V4l2Error) -> EncodeError {
        EncodeError::Frame {
            encoder: self.name.clone(),
            frame,
            reason: e.detail(),
        }
    }

    fn stalled(&self, oldest: &InFlight) -> EncodeError {
        EncodeError::Frame {
            encoder: self.name.clone(),
            frame: oldest.number,
            reason: format!(
                "no H.264 from the encoder within {} ms (VIDIOC_DQBUF on the CAPTURE queue): the hardware encoder has stalled; `dmesg` may say why",
                OUTPUT_TIMEOUT.as_millis()
            ),
        }
    }

    /// Waits for the next access unit: briefly while the pipeline has room (what does not
    /// come now comes with the next call), up to the stall deadline once it is full.
    fn collect(&mut self) -> Result<Option<EncodedFrame>, EncodeError> {
        for _ in 0..MAX_BUFFERS_PER_CALL {
            let Some(oldest) = self.in_flight.front().copied() else {
                return Ok(None);
            };
            let deadline = oldest.queued + OUTPUT_TIMEOUT;
            let left = deadline.saturating_duration_since(Instant::now());
            let full = self.in_flight.len() > MAX_IN_FLIGHT;
            let wait = if full { left } else { left.min(self.settle) };
            let got = self
                .device
                .dequeue_encoded(wait)
                .map_err(|e| self.frame_error(oldest.number, &e))?;
            match got {
                Some(buf) => {
                    if let Some(frame) = self.assemble(buf)? {
                        return Ok(Some(frame));
                    }
                }
                None if full || Instant::now() >= deadline => return Err(self.stalled(&oldest)),
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Turns one output buffer into an access unit for the picture it belongs to, or keeps
    /// it for the next one when it holds only parameter sets (as the Pi's firmware sends
    /// them ahead of the first IDR).
    fn assemble(&mut self, buf: EncodedBuffer) -> Result<Option<EncodedFrame>, EncodeError> {
        let types: Vec<u8> = annexb::nal_units(&buf.data).map(annexb::nal_type).collect();
        if types.is_empty() {
            tracing::warn!(
                "{}: dropped {} bytes of encoder output that are not Annex-B H.264",
                self.name,
                buf.data.len()
            );
            return Ok(None);
        }
        if !types.iter().any(|t| (1..=5).contains(t)) {
            if self.headers.len() + buf.data.len() <= MAX_PENDING_HEADERS {
                self.headers.extend_from_slice(&buf.data);
            }
            return Ok(None);
        }
        let Some(origin) = self.take_origin(buf.cookie) else {
            tracing::warn!(
                "{}: encoder produced a picture nobody asked for; dropped",
                self.name
            );
            return Ok(None);
        };
        let mut au = std::mem::take(&mut self.headers);
        au.extend_from_slice(&buf.data);
        let (data, idr) = self.params.complete(&au).map_err(|e| EncodeError::Frame {
            encoder: self.name.clone(),
            frame: origin.number,
            reason: format!("hardware produced unusable H.264: {e}"),
        })?;
        Ok(Some(EncodedFrame {
            number: origin.number,
            capture_us: origin.capture_us,
            keyframe: buf.keyframe || idr,
            data,
        }))
    }

    /// The picture an output belongs to. Pictures queued before it that are still waiting
    /// were dropped by the encoder; a driver that returns no cookies is assumed to keep
    /// order.
    fn take_origin(&mut self, cookie: u64) -> Option<InFlight> {
        if cookie != 0 {
            if let Some(pos) = self.in_flight.iter().position(|p| p.cookie == cookie) {
                if pos > 0 {
                    tracing::debug!("{}: encoder dropped {pos} picture(s)", self.name);
                }
                self.in_flight.drain(..pos);
                return self.in_flight.pop_front();
            }
        }
        if !self.warned_unmatched {
            tracing::warn!(
                "{}: encoder output carries no known timestamp; assuming pictures come out in order",
                self.name
            );
            self.warned_unmatched = true;
        }
        self.in_flight.pop_front()
    }
}

impl<D: M2mDevice> VideoEncoder for M2mEncoder<D> {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn encode(
        &mut self,
        frame: &RawFrame,
        force_keyframe: bool,
    ) -> Result<Option<EncodedFrame>, EncodeError> {
        super::check_frame_size(&self.name, self.settings.format, frame)?;
        let need = RawFrame::i420_len(frame.width, frame.height);
        if frame.data.len() < need {
            return Err(EncodeError::Frame {
                encoder: self.name.clone(),
                frame: frame.number,
                reason: format!(
                    "picture has {} bytes, {}x{} I420 needs {need}",
                    frame.data.len(),
                    frame.width,
                    frame.height
                ),
            });
        }
        if force_keyframe {
            self.device
                .force_keyframe()
                .map_err(|e| self.frame_error(frame.number, &e))?;
        }
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        let layout = self.input;
        let mut written = Ok(0);
        self.device
            .queue_raw(cookie, OUTPUT_TIMEOUT, &mut |dst| {
                written = layout.fill_from_i420(frame.width, frame.height, &frame.data, dst);
                written.as_ref().map_or(0, |n| *n)
            })
            .map_err(|e| self.frame_error(frame.number, &e))?;
        if let Err(e) = written {
            return Err(EncodeError::Frame {
                encoder: self.name.clone(),
                frame: frame.number,
                reason: format!("cannot fill the encoder's input buffer: {e}"),
            });
        }
        self.in_flight.push_back(InFlight {
            cookie,
            number: frame.number,
            capture_us: frame.capture_us,
            queued: Instant::now(),
        });
        self.collect()
    }
}

fn init_error(name: &str, e: &V4l2Error) -> EncodeError {
    EncodeError::Init {
        encoder: name.to_owned(),
        reason: e.detail(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameRate, VideoFormat};
    use crate::v4l2::sim::{crop_i420, truth, SimM2mOptions, SimulatedM2m, SIM_SPS};

    fn settings(width: u32, height: u32, keyframe_interval: u32) -> VideoEncoderSettings {
        VideoEncoderSettings {
            format: VideoFormat {
                width,
                height,
                rate: FrameRate::per_second(30),
            },
            bitrate: 2_000_000,
            keyframe_interval,
        }
    }

    fn picture(width: u32, height: u32, n: u64) -> RawFrame {
        RawFrame {
            number: n,
            capture_us: 1_000_000 + n * 33_333,
            width,
            height,
            data: truth(width, height, n),
        }
    }

    fn encoder(opts: SimM2mOptions, s: VideoEncoderSettings) -> M2mEncoder<SimulatedM2m> {
        M2mEncoder::with_device(SimulatedM2m::new(opts), s).unwrap()
    }

    fn starts_with_sps(f: &EncodedFrame) -> bool {
        f.data.starts_with(&[0, 0, 0, 1]) && f.data[4..].starts_with(&SIM_SPS)
    }

    #[test]
    fn v4l2m2m_output_is_matched_to_its_picture_across_the_delay() {
        let mut enc = encoder(SimM2mOptions::default(), settings(64, 36, 5));
        assert!(enc.encode(&picture(64, 36, 0), false).unwrap().is_none());
        for n in 1..12 {
            let out = enc.encode(&picture(64, 36, n), false).unwrap().unwrap();
            let origin = n - 1;
            assert_eq!(out.number, origin);
            assert_eq!(out.capture_us, 1_000_000 + origin * 33_333);
            let key = origin % 5 == 0;
            assert_eq!(out.keyframe, key, "picture {origin}");
            assert_eq!(starts_with_sps(&out), key, "picture {origin}");
            if !key {
                assert!(out.data.starts_with(&[0, 0, 0, 1, 0x41]));
            }
        }
    }

    #[test]
    fn v4l2m2m_pictures_are_written_at_the_driver_stride_with_edge_padding() {
        let opts = SimM2mOptions {
            width_align: 16,
            ..Default::default()
        };
        let mut enc = encoder(opts, settings(60, 36, 30));
        let layout = enc.device_mut().layout().unwrap();
        assert_eq!(
            (layout.width, layout.height, layout.bytesperline),
            (64, 48, 64)
        );
        for n in 0..3 {
            enc.encode(&picture(60, 36, n), false).unwrap();
        }
        let sim = enc.device_mut();
        assert_eq!(sim.bytes_used, vec![layout.min_len(); 3]);
        for (n, full) in sim.received.iter().enumerate() {
            assert_eq!(crop_i420(full, 64, 48, 60, 36), truth(60, 36, n as u64));
            // Padding repeats the last visible column and row of luma.
            let row = |y: usize| &full[y * 64..y * 64 + 64];
            assert!(row(47) == row(35), "bottom padding of picture {n}");
            assert!(
                row(10)[60..].iter().all(|&b| b == row(10)[59]),
                "right padding"
            );
        }
    }

    #[test]
    fn v4l2m2m_forced_keyframe_is_an_idr_with_parameter_sets() {
        let mut enc = encoder(SimM2mOptions::default(), settings(32, 16, 100));
        let mut outs = Vec::new();
        for n in 0..6 {
            outs.extend(enc.encode(&picture(32, 16, n), n == 3).unwrap());
        }
        assert_eq!(enc.device_mut().cookies, vec![1, 2, 3, 4, 5, 6]);
        let keys: Vec<u64> = outs
            .iter()
            .filter(|f| f.keyframe)
            .map(|f| f.number)
            .collect();
        assert_eq!(keys, vec![0, 3]);
        assert!(outs.iter().filter(|f| f.keyframe).all(starts_with_sps));
    }

    #[test]
    fn v4l2m2m_header_buffers_join_the_next_picture() {
        let opts = SimM2mOptions {
            separate_headers: true,
            keyframe_flag: false,
            ..Default::default()
        };
        let mut enc = encoder(opts, settings(32, 16, 4));
        let mut outs = Vec::new();
        for n in 0..10 {
            outs.extend(enc.encode(&picture(32, 16, n), false).unwrap());
        }
        let numbers: Vec<u64> = outs.iter().map(|f| f.number).collect();
        assert_eq!(numbers, (0..9).collect::<Vec<_>>());
        for f in &outs {
            let key = f.number % 4 == 0;
            assert_eq!(
                f.keyframe, key,
                "IDR found by its NAL type, picture {}",
                f.number
            );
            assert_eq!(starts_with_sps(f), key);
        }
    }

    #[test]
    fn v4l2m2m_keyframes_get_parameter_sets_even_if_the_driver_omits_them() {
        let opts = SimM2mOptions {
            headers_once: true,
            delay: 0,
            ..Default::default()
        };
        let mut enc = encoder(opts, settings(32, 16, 3));
        let outs: Vec<EncodedFrame> = (0..7)
            .map(|n| enc.encode(&picture(32, 16, n), false).unwrap().unwrap())
            .collect();
        for f in &outs {
            assert_eq!(f.keyframe, f.number % 3 == 0);
            assert_eq!(starts_with_sps(f), f.keyframe, "picture {}", f.number);
        }
    }

    #[test]
    fn v4l2m2m_works_without_delay_and_with_a_longer_one() {
        for delay in [0usize, 2] {
            let opts = SimM2mOptions {
                delay,
                ..Default::default()
            };
            let mut enc = encoder(opts, settings(32, 16, 30));
            let mut numbers = Vec::new();
            for n in 0..8 {
                if let Some(f) = enc.encode(&picture(32, 16, n), false).unwrap() {
                    assert_eq!(f.number + delay as u64, n);
                    numbers.push(f.number);
                }
            }
            assert_eq!(numbers, (0..8 - delay as u64).collect::<Vec<_>>());
        }
    }

    #[test]
    fn v4l2m2m_without_timestamps_keeps_order() {
        let opts = SimM2mOptions {
            copy_timestamps: false,
            ..Default::default()
        };
        let mut enc = encoder(opts, settings(32, 16, 30));
        let numbers: Vec<u64> = (0..5)
            .filter_map(|n| enc.encode(&picture(32, 16, n), false).unwrap())
            .map(|f| f.number)
            .collect();
        assert_eq!(numbers, vec![0, 1, 2, 3]);
    }

    #[test]
    fn v4l2m2m_stall_is_a_clear_error() {
        let mut enc = encoder(SimM2mOptions::default(), settings(32, 16, 30));
        enc.device_mut().opts.stall = true;
        assert!(enc.encode(&picture(32, 16, 0), false).unwrap().is_none());
        assert!(enc.encode(&picture(32, 16, 1), false).unwrap().is_none());
        let err = enc.encode(&picture(32, 16, 2), false).unwrap_err();
        match &err {
            EncodeError::Frame {
                encoder,
                frame,
                reason,
            } => {
                assert_eq!(encoder, "v4l2m2m:/dev/video-sim-enc");
                assert_eq!(*frame, 0);
                assert!(
                    reason.contains("stalled") && reason.contains("VIDIOC_DQBUF"),
                    "{reason}"
                );
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn v4l2m2m_refuses_a_picture_of_the_wrong_size() {
        let mut enc = encoder(SimM2mOptions::default(), settings(32, 16, 30));
        let err = enc.encode(&picture(64, 16, 0), false).unwrap_err();
        assert!(matches!(
            err,
            EncodeError::SizeMismatch {
                got_w: 64,
                got_h: 16,
                want_w: 32,
                want_h: 16,
                ..
            }
        ));
        let mut short = picture(32, 16, 0);
        short.data.truncate(100);
        assert!(matches!(
            enc.encode(&short, false),
            Err(EncodeError::Frame { .. })
        ));
        assert!(enc.device_mut().received.is_empty());
    }

    #[test]
    fn v4l2m2m_device_errors_name_device_call_and_errno() {
        let opts = SimM2mOptions {
            fail_start: true,
            ..Default::default()
        };
        let err =
            M2mEncoder::with_device(SimulatedM2m::new(opts), settings(32, 16, 30)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "v4l2m2m:/dev/video-sim-enc: cannot start: VIDIOC_S_FMT failed: EINVAL: Invalid argument"
        );

        let mut enc = encoder(SimM2mOptions::default(), settings(32, 16, 30));
        enc.device_mut().opts.fail_queue = true;
        let err = enc
            .encode(&picture(32, 16, 7), false)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "v4l2m2m:/dev/video-sim-enc: frame 7 failed: VIDIOC_QBUF failed: EIO: I/O error"
        );

        enc.device_mut().opts.fail_queue = false;
        enc.device_mut().opts.fail_force = true;
        let err = enc
            .encode(&picture(32, 16, 8), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("FORCE_KEY_FRAME"), "{err}");

        let mut zero = settings(32, 16, 30);
        zero.bitrate = 0;
        assert!(M2mEncoder::with_device(SimulatedM2m::default(), zero).is_err());
    }

    #[test]
    fn v4l2m2m_open_of_a_missing_node_says_which_and_why() {
        let err = M2mEncoder::open("/dev/video-no-such-encoder", settings(32, 16, 30)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "v4l2m2m:/dev/video-no-such-encoder: cannot start: open failed: ENOENT"
            ),
            "{msg}"
        );
        let via_choice = super::super::open_video_encoder(
            &super::super::EncoderChoice::V4l2M2m("/dev/video-no-such-encoder".into()),
            settings(32, 16, 30),
        );
        assert!(matches!(via_choice, Err(EncodeError::Init { .. })));
    }
}
