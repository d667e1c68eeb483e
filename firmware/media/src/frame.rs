//! The units that flow from capture to viewers.
//!
//! All times are microseconds since the UNIX epoch, taken at capture: one clock for picture
//! and sound, so that tracks stay in sync through every relay and so that a viewer can
//! compute glass-to-glass latency from the picture alone.

use bytes::Bytes;

/// Audio is always 48 kHz mono, 20 ms a block: what Opus wants and what browsers play.
pub const AUDIO_SAMPLE_RATE: u32 = 48_000;
/// Samples in one 20 ms block at 48 kHz.
pub const AUDIO_BLOCK_SAMPLES: usize = 960;
/// Length of one audio block in microseconds.
pub const AUDIO_BLOCK_US: u64 = 20_000;

/// A frame rate as a fraction, because cameras and Y4M files speak 30000/1001.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRate {
    pub num: u32,
    pub den: u32,
}

impl FrameRate {
    pub const fn per_second(fps: u32) -> Self {
        Self { num: fps, den: 1 }
    }

    /// Capture-time offset of frame `n` from the first frame, in microseconds.
    pub fn frame_offset_us(&self, n: u64) -> u64 {
        (n as u128 * 1_000_000 * self.den as u128 / self.num.max(1) as u128) as u64
    }

    /// The whole number of frames closest to one second (30 for 30000/1001).
    pub fn rounded(&self) -> u32 {
        ((self.num as f64 / self.den.max(1) as f64).round() as u32).max(1)
    }

    pub fn as_f64(&self) -> f64 {
        self.num as f64 / self.den.max(1) as f64
    }
}

impl std::fmt::Display for FrameRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{:.3}", self.as_f64())
        }
    }
}

/// What a video source delivers: size and rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoFormat {
    pub width: u32,
    pub height: u32,
    pub rate: FrameRate,
}

/// One uncompressed picture in I420 (planar Y, then U and V at half resolution).
#[derive(Debug, Clone)]
pub struct RawFrame {
    /// Frame number since the source started, 0 first.
    pub number: u64,
    pub capture_us: u64,
    pub width: u32,
    pub height: u32,
    /// Y plane (width*height), then U and V (each (width/2)*(height/2)), tightly packed.
    pub data: Vec<u8>,
}

impl RawFrame {
    /// Size of an I420 picture in bytes; odd sizes round the chroma planes up.
    pub fn i420_len(width: u32, height: u32) -> usize {
        let (w, h) = (width as usize, height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        w * h + 2 * cw * ch
    }

    pub fn chroma_size(&self) -> (usize, usize) {
        (
            (self.width as usize).div_ceil(2),
            (self.height as usize).div_ceil(2),
        )
    }

    pub fn y(&self) -> &[u8] {
        &self.data[..self.width as usize * self.height as usize]
    }

    pub fn u(&self) -> &[u8] {
        let y = self.width as usize * self.height as usize;
        let (cw, ch) = self.chroma_size();
        &self.data[y..y + cw * ch]
    }

    pub fn v(&self) -> &[u8] {
        let y = self.width as usize * self.height as usize;
        let (cw, ch) = self.chroma_size();
        &self.data[y + cw * ch..y + 2 * cw * ch]
    }
}

/// One H.264 access unit in Annex-B form (start codes), SPS/PPS before every IDR.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    pub number: u64,
    pub capture_us: u64,
    pub keyframe: bool,
    pub data: Bytes,
}

/// What a video source hands over: pictures to encode, or H.264 already encoded
/// (a file passed through, a camera with its own encoder).
#[derive(Debug, Clone)]
pub enum Captured {
    Raw(RawFrame),
    Encoded(EncodedFrame),
}

impl Captured {
    pub fn number(&self) -> u64 {
        match self {
            Captured::Raw(f) => f.number,
            Captured::Encoded(f) => f.number,
        }
    }

    pub fn capture_us(&self) -> u64 {
        match self {
            Captured::Raw(f) => f.capture_us,
            Captured::Encoded(f) => f.capture_us,
        }
    }
}

/// 20 ms of 48 kHz mono PCM.
#[derive(Debug, Clone)]
pub struct AudioBlock {
    pub capture_us: u64,
    pub samples: Vec<i16>,
}

/// Wall-clock time in microseconds since the UNIX epoch.
///
/// The only place media reads the clock; sources take their start time from it once and
/// derive every later capture time from the frame count, so timestamps never jitter.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
