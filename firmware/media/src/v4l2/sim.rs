//! Simulated V4L2 devices for tests: a camera and a hardware encoder that behave like the
//! real drivers do in the ways that matter to the logic above them (padded strides,
//! adjusted sizes, pipeline delay, header buffers, damaged frames, stalls).

use std::collections::VecDeque;
use std::time::Duration;

use nix::errno::Errno;

use super::capture::{CaptureBuffer, CaptureDevice, CaptureSetup};
use super::m2m::{EncodedBuffer, M2mConfig, M2mDevice, M2mSetup};
use super::pixfmt::{PixelFormat, PixelLayout};
use super::V4l2Error;
use crate::frame::{FrameRate, VideoFormat};

/// Packed I420 test picture `n`: every value depends on position and frame number, and
/// chroma is constant over each 2x2 block so that 4:2:2 sources convert back exactly.
pub fn truth(width: u32, height: u32, n: u64) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let n = n as usize;
    let mut out = Vec::with_capacity(w * h + 2 * cw * ch);
    for y in 0..h {
        out.extend((0..w).map(|x| (x + 3 * y + n) as u8));
    }
    for base in [100, 200] {
        for cy in 0..ch {
            out.extend((0..cw).map(|cx| (base + cx + 7 * cy + n) as u8));
        }
    }
    out
}

/// Lays packed I420 out as `layout` says, padding with 0xEE.
pub fn render(layout: &PixelLayout, i420: &[u8]) -> Vec<u8> {
    let (w, h) = (layout.width as usize, layout.height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let bpl = layout.bytesperline as usize;
    let (y_plane, rest) = i420.split_at(w * h);
    let (u_plane, v_plane) = rest.split_at(cw * ch);
    let mut out = vec![0xEE; layout.min_len()];
    for y in 0..h {
        let row = &y_plane[y * w..(y + 1) * w];
        match layout.format {
            PixelFormat::Yuyv => {
                for (x, &luma) in row.iter().enumerate() {
                    out[y * bpl + 2 * x] = luma;
                }
                for cx in 0..cw {
                    out[y * bpl + 4 * cx + 1] = u_plane[(y / 2) * cw + cx];
                    out[y * bpl + 4 * cx + 3] = v_plane[(y / 2) * cw + cx];
                }
            }
            _ => out[y * bpl..y * bpl + w].copy_from_slice(row),
        }
    }
    for cy in 0..ch {
        match layout.format {
            PixelFormat::Nv12 => {
                for cx in 0..cw {
                    out[h * bpl + cy * bpl + 2 * cx] = u_plane[cy * cw + cx];
                    out[h * bpl + cy * bpl + 2 * cx + 1] = v_plane[cy * cw + cx];
                }
            }
            PixelFormat::I420 => {
                let cs = bpl / 2;
                let u = h * bpl + cy * cs;
                let v = h * bpl + ch * cs + cy * cs;
                out[u..u + cw].copy_from_slice(&u_plane[cy * cw..(cy + 1) * cw]);
                out[v..v + cw].copy_from_slice(&v_plane[cy * cw..(cy + 1) * cw]);
            }
            PixelFormat::Yuyv => {}
        }
    }
    out
}

/// The top-left `width`x`height` of a packed I420 picture of `full_w`x`full_h`.
pub fn crop_i420(full: &[u8], full_w: u32, full_h: u32, width: u32, height: u32) -> Vec<u8> {
    let (fw, fh) = (full_w as usize, full_h as usize);
    let (w, h) = (width as usize, height as usize);
    let (fcw, fch) = (fw.div_ceil(2), fh.div_ceil(2));
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let mut out = Vec::new();
    for y in 0..h {
        out.extend_from_slice(&full[y * fw..y * fw + w]);
    }
    for plane in 0..2 {
        let base = fw * fh + plane * fcw * fch;
        for cy in 0..ch {
            out.extend_from_slice(&full[base + cy * fcw..base + cy * fcw + cw]);
        }
    }
    out
}

/// What a simulated camera does on one `next_buffer` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CamEvent {
    /// Delivers the next picture.
    Frame,
    /// Delivers it with the driver's error flag.
    Damaged,
    /// Delivers only half of it.
    Truncated,
    /// The driver skips `n` sequence numbers, then delivers.
    Drop(u32),
    /// Nothing arrives in time.
    Timeout,
    /// The device fails (unplugged).
    Fail,
}

#[derive(Debug)]
pub struct SimulatedCamera {
    pub format: PixelFormat,
    /// The size the camera delivers whatever is asked.
    pub size: (u32, u32),
    pub stride_pad: u32,
    pub rate: Option<FrameRate>,
    /// Offset of the buffer timestamps from "now" (None: no monotonic timestamps).
    pub timestamp_age_us: Option<u64>,
    pub script: VecDeque<CamEvent>,
    pub fail_start: bool,
    layout: Option<PixelLayout>,
    frames: u64,
    sequence: u32,
}

impl SimulatedCamera {
    pub fn new(format: PixelFormat, width: u32, height: u32) -> Self {
        Self {
            format,
            size: (width, height),
            stride_pad: 0,
            rate: Some(FrameRate::per_second(30)),
            timestamp_age_us: Some(0),
            script: VecDeque::new(),
            fail_start: false,
            layout: None,
            frames: 0,
            sequence: 0,
        }
    }
}

impl CaptureDevice for SimulatedCamera {
    fn path(&self) -> &str {
        "/dev/video-sim"
    }

    fn start(&mut self, _want: VideoFormat) -> Result<CaptureSetup, V4l2Error> {
        if self.fail_start {
            return Err(V4l2Error::unsupported(
                self.path(),
                "offers only MJPG; cambox needs YUYV, NV12 or YU12",
            ));
        }
        let (w, h) = self.size;
        let bpl = self.format.min_bytesperline(w) as u32 + self.stride_pad;
        let layout = PixelLayout::from_driver(self.format, w, h, bpl, 0)
            .map_err(|r| V4l2Error::protocol(self.path(), r))?;
        self.layout = Some(layout);
        Ok(CaptureSetup {
            layout,
            rate: self.rate,
            buffers: 4,
        })
    }

    fn next_buffer(
        &mut self,
        _timeout: Duration,
        sink: &mut dyn FnMut(CaptureBuffer<'_>),
    ) -> Result<bool, V4l2Error> {
        let layout = self
            .layout
            .ok_or_else(|| V4l2Error::protocol(self.path(), "not started"))?;
        let event = self.script.pop_front().unwrap_or(CamEvent::Frame);
        match event {
            CamEvent::Timeout => return Ok(false),
            CamEvent::Fail => {
                return Err(V4l2Error::failed(
                    self.path(),
                    "the device reported an error while streaming (POLLERR): was it unplugged?",
                ))
            }
            CamEvent::Drop(n) => self.sequence += n,
            _ => {}
        }
        let mut data = render(&layout, &truth(layout.width, layout.height, self.frames));
        if event == CamEvent::Truncated {
            data.truncate(data.len() / 2);
        }
        let monotonic_us = self
            .timestamp_age_us
            .map(|age| super::clock::monotonic_us().saturating_sub(age));
        sink(CaptureBuffer {
            data: &data,
            monotonic_us,
            sequence: self.sequence,
            error: event == CamEvent::Damaged,
        });
        self.frames += 1;
        self.sequence += 1;
        Ok(true)
    }
}

/// How the simulated encoder behaves.
#[derive(Debug, Clone, Copy)]
pub struct SimM2mOptions {
    /// The driver rounds the height up to this (the Pi's codec: 16).
    pub height_align: u32,
    pub width_align: u32,
    /// Row stride alignment (the Pi's codec: 32 or 64).
    pub stride_align: u32,
    /// Output for a picture appears only after this many later pictures were queued.
    pub delay: usize,
    pub input_buffers: usize,
    /// SPS/PPS come in a buffer of their own before the IDR (as MMAL does).
    pub separate_headers: bool,
    /// Sets V4L2_BUF_FLAG_KEYFRAME on keyframes.
    pub keyframe_flag: bool,
    /// Copies input timestamps (cookies) to outputs.
    pub copy_timestamps: bool,
    /// Leaves SPS/PPS out after the first keyframe (REPEAT_SEQ_HEADER ignored).
    pub headers_once: bool,
    pub fail_start: bool,
    pub fail_queue: bool,
    pub fail_force: bool,
    /// Accepts pictures but never produces output.
    pub stall: bool,
}

impl Default for SimM2mOptions {
    fn default() -> Self {
        Self {
            height_align: 16,
            width_align: 1,
            stride_align: 64,
            delay: 1,
            input_buffers: 4,
            separate_headers: false,
            keyframe_flag: true,
            copy_timestamps: true,
            headers_once: false,
            fail_start: false,
            fail_queue: false,
            fail_force: false,
            stall: false,
        }
    }
}

pub const SIM_SPS: [u8; 10] = [0x67, 0x42, 0xC0, 0x28, 0xDA, 0x01, 0xE0, 0x08, 0x9F, 0x96];
pub const SIM_PPS: [u8; 4] = [0x68, 0xCE, 0x3C, 0x80];

#[derive(Debug, Default)]
pub struct SimulatedM2m {
    pub opts: SimM2mOptions,
    config: Option<M2mConfig>,
    layout: Option<PixelLayout>,
    in_flight: VecDeque<(u64, bool)>,
    ready: VecDeque<EncodedBuffer>,
    since_idr: Option<u32>,
    sent_headers: bool,
    force_next: bool,
    /// Every picture received, unpacked from the padded buffer at the driver's full size.
    pub received: Vec<Vec<u8>>,
    /// Bytes used as reported for each picture.
    pub bytes_used: Vec<usize>,
    /// Cookie of each picture received.
    pub cookies: Vec<u64>,
}

impl SimulatedM2m {
    pub fn new(opts: SimM2mOptions) -> Self {
        Self {
            opts,
            ..Default::default()
        }
    }

    pub fn layout(&self) -> Option<PixelLayout> {
        self.layout
    }

    fn encode_one(&mut self) {
        let Some((cookie, forced)) = self.in_flight.pop_front() else {
            return;
        };
        let period = self.config.map_or(30, |c| c.keyframe_interval.max(1));
        let key = forced || self.since_idr.is_none_or(|n| n >= period);
        self.since_idr = Some(if key {
            1
        } else {
            self.since_idr.unwrap_or(0) + 1
        });
        let ts = if self.opts.copy_timestamps { cookie } else { 0 };
        let tag = cookie.to_string().into_bytes();
        let mut headers = Vec::new();
        if key && !(self.opts.headers_once && self.sent_headers) {
            for nal in [&SIM_SPS[..], &SIM_PPS[..]] {
                headers.extend_from_slice(&[0, 0, 0, 1]);
                headers.extend_from_slice(nal);
            }
            self.sent_headers = true;
        }
        let mut picture = vec![0, 0, 0, 1];
        picture.extend_from_slice(if key {
            &[0x65, 0x88, 0x84]
        } else {
            &[0x41, 0x9A, 0x24]
        });
        picture.extend_from_slice(&tag);
        picture.push(0x80);
        let keyframe = key && self.opts.keyframe_flag;
        if self.opts.separate_headers && !headers.is_empty() {
            self.ready.push_back(EncodedBuffer {
                cookie: 0,
                keyframe: false,
                data: headers,
            });
            self.ready.push_back(EncodedBuffer {
                cookie: ts,
                keyframe,
                data: picture,
            });
        } else {
            headers.extend_from_slice(&picture);
            self.ready.push_back(EncodedBuffer {
                cookie: ts,
                keyframe,
                data: headers,
            });
        }
    }
}

fn align(v: u32, to: u32) -> u32 {
    v.div_ceil(to.max(1)) * to.max(1)
}

impl M2mDevice for SimulatedM2m {
    fn path(&self) -> &str {
        "/dev/video-sim-enc"
    }

    fn start(&mut self, config: &M2mConfig) -> Result<M2mSetup, V4l2Error> {
        if self.opts.fail_start {
            return Err(V4l2Error::sys(self.path(), "VIDIOC_S_FMT", Errno::EINVAL));
        }
        let w = align(config.width, self.opts.width_align);
        let h = align(config.height, self.opts.height_align);
        let bpl = align(w, self.opts.stride_align);
        let input = PixelLayout::from_driver(PixelFormat::I420, w, h, bpl, bpl * h * 3 / 2)
            .map_err(|r| V4l2Error::protocol(self.path(), r))?;
        self.config = Some(*config);
        self.layout = Some(input);
        Ok(M2mSetup {
            input,
            input_buffers: self.opts.input_buffers,
            output_buffers: 4,
        })
    }

    fn queue_raw(
        &mut self,
        cookie: u64,
        _timeout: Duration,
        fill: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> Result<(), V4l2Error> {
        let layout = self
            .layout
            .ok_or_else(|| V4l2Error::protocol(self.path(), "not started"))?;
        if self.opts.fail_queue {
            return Err(V4l2Error::sys(self.path(), "VIDIOC_QBUF", Errno::EIO));
        }
        if self.in_flight.len() >= self.opts.input_buffers {
            return Err(V4l2Error::failed(
                self.path(),
                "no free input buffer (VIDIOC_DQBUF on OUTPUT): the encoder is not taking pictures",
            ));
        }
        let mut buf = vec![0xEE; (layout.bytesperline * layout.height * 3 / 2) as usize];
        let used = fill(&mut buf);
        self.bytes_used.push(used);
        self.received.push(layout.to_i420(&buf).unwrap_or_default());
        self.cookies.push(cookie);
        let forced = std::mem::take(&mut self.force_next);
        self.in_flight.push_back((cookie, forced));
        while !self.opts.stall && self.in_flight.len() > self.opts.delay {
            self.encode_one();
        }
        Ok(())
    }

    fn dequeue_encoded(&mut self, _timeout: Duration) -> Result<Option<EncodedBuffer>, V4l2Error> {
        Ok(self.ready.pop_front())
    }

    fn force_keyframe(&mut self) -> Result<(), V4l2Error> {
        if self.opts.fail_force {
            return Err(V4l2Error::sys(
                self.path(),
                "VIDIOC_S_EXT_CTRLS(FORCE_KEY_FRAME)",
                Errno::EINVAL,
            ));
        }
        self.force_next = true;
        Ok(())
    }
}
