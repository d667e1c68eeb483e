//! A microphone through ALSA, delivered as 20 ms blocks of 48 kHz mono like every other
//! audio source.
//!
//! Devices rarely offer exactly that: USB microphones are often stereo-only or 44.1 kHz-only.
//! The device is asked for S16_LE, mono, 48 kHz; whatever it insists on instead is down-mixed
//! and linearly resampled here, so the rest of the box sees one format.
//!
//! # Capture times
//!
//! A block's capture time is `anchor + 20 ms × block number`: derived from the sample count,
//! never read per block, so that timestamps do not jitter and the audio track stays
//! contiguous. The anchor and the ongoing check of it come from the device: after each read,
//! the wall clock minus `snd_pcm_delay` (frames digitised but not yet read, converter latency
//! included) is the capture time of the next frame. We use the delay and the system clock
//! rather than the status `htstamp`: the htstamp's clock depends on the timestamp type the
//! driver or plugin (dsnoop, pulse) honours, and the alsa 0.9 status wrapper asserts on the
//! C struct's size, which device input must not risk.
//!
//! The check keeps the sample count honest:
//! - a device clock that drifts from the system clock (tens of ppm is common; 100 ppm is
//!   6 ms a minute) is followed by nudging the resampling ratio, so sound stays in sync with
//!   pictures over hours without clicks;
//! - samples lost in an overrun are replaced by the same duration of silence, so the sound
//!   after the overrun keeps its true time;
//! - a wall clock step (NTP's first sync on a Pi without a real-time clock) restarts the
//!   timeline on the new clock.

use std::collections::VecDeque;
use std::io;

use super::{AudioSource, SourceError};
use crate::frame::{now_us, AudioBlock, AUDIO_BLOCK_SAMPLES, AUDIO_BLOCK_US, AUDIO_SAMPLE_RATE};

/// One read's worth: short enough for low latency, long enough not to wake up needlessly.
const PERIOD_US: u64 = 10_000;
/// Periods in the device buffer: slack for a busy system before an overrun loses sound.
const BUFFER_PERIODS: usize = 16;
/// A device that delivers nothing for this long is stalled, not slow.
const STALL_TIMEOUT_MS: u32 = 2_000;
/// Timing errors above this are fixed at once (silence inserted or samples skipped) rather
/// than by slowly adjusting the resampling ratio.
const RESYNC_US: f64 = 20_000.0;
/// Timing errors above this mean the wall clock itself jumped: start a new timeline.
const REANCHOR_US: f64 = 2_000_000.0;
/// Drift corrections aim to remove the smoothed error over this many seconds.
const CORRECTION_HORIZON_S: f64 = 10.0;
/// Smoothed errors below this are left alone, so a device in step with the system clock is
/// passed through bit-exact instead of being interpolated for nothing.
const CORRECTION_DEADBAND_US: f64 = 500.0;
/// A real device is never further off than this; beyond it, trust the clock less, not more.
const MAX_CORRECTION: f64 = 1e-3;
/// Weight of each new timing measurement (one per read, ~1 s time constant at 10 ms reads).
const ERROR_SMOOTHING: f64 = 0.01;
/// `ESTRPIPE` on Linux (asm-generic): the device was suspended; recovery is the same as for
/// an overrun.
const ESTRPIPE: i32 = 86;

/// Why a read from a capture device failed.
#[derive(Debug)]
pub enum PcmError {
    /// The reader fell behind and samples were lost; [`PcmCapture::recover`] resumes capture.
    Overrun,
    /// Nothing arrived for `waited_ms`: the device stopped (unplugged, clock lost, or held
    /// by another program).
    Stalled { waited_ms: u32 },
    /// Anything else: the device is gone or refuses to work.
    Io { op: &'static str, source: io::Error },
}

/// The device-facing part of microphone capture, so that everything above it (block
/// assembly, down-mix, resampling, timestamps, overrun handling) is tested without a device.
pub trait PcmCapture: Send {
    /// Interleaved channels per frame.
    fn channels(&self) -> u16;
    /// Frames per second the device delivers.
    fn rate(&self) -> u32;
    /// Frames per read that keep latency low: one device period.
    fn period_frames(&self) -> usize;
    /// Blocks until frames are available and reads at most `buf.len() / channels` of them,
    /// interleaved; returns the number of frames read.
    fn read_interleaved(&mut self, buf: &mut [i16]) -> Result<usize, PcmError>;
    /// Makes the device capture again after [`PcmError::Overrun`].
    fn recover(&mut self) -> Result<(), PcmError>;
    /// Wall-clock time (µs since the UNIX epoch) at which the frame that the next read will
    /// return was captured, if the device can tell.
    fn next_frame_time_us(&mut self) -> Option<u64>;
}

/// A real ALSA capture device.
pub struct AlsaPcm {
    pcm: alsa::PCM,
    device: String,
    channels: u16,
    rate: u32,
    period: usize,
}

impl std::fmt::Debug for AlsaPcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlsaPcm")
            .field("device", &self.device)
            .field("channels", &self.channels)
            .field("rate", &self.rate)
            .field("period", &self.period)
            .finish()
    }
}

fn alsa_io(e: alsa::Error) -> io::Error {
    io::Error::from_raw_os_error(e.errno())
}

fn is_overrun(e: &alsa::Error) -> bool {
    e.errno() == ESTRPIPE || alsa_io(*e).kind() == io::ErrorKind::BrokenPipe
}

impl AlsaPcm {
    /// Opens `device` (e.g. `default`, `hw:1,0`, `plughw:CARD=Mic`) for capture and
    /// negotiates the format closest to 48 kHz mono S16_LE that it accepts.
    pub fn open(device: &str) -> Result<Self, SourceError> {
        let what = format!("microphone '{device}'");
        if device.is_empty() || device.contains('\0') {
            return Err(SourceError::Format {
                what,
                reason: "not a valid ALSA device name: use e.g. 'default' or 'hw:1,0' \
                         (see `arecord -L`)"
                    .into(),
            });
        }
        let pcm = alsa::PCM::new(device, alsa::Direction::Capture, false).map_err(|e| {
            SourceError::Open {
                what: format!("{what} (list capture devices with `arecord -L`)"),
                source: alsa_io(e),
            }
        })?;
        let device_error = |step: &str, e: alsa::Error| SourceError::Device {
            what: what.clone(),
            reason: format!("{step}: {}", alsa_io(e)),
        };
        let (channels, rate, period) = {
            use alsa::pcm::{Access, Format, HwParams};
            let hwp = HwParams::any(&pcm).map_err(|e| device_error("reading capabilities", e))?;
            hwp.set_access(Access::RWInterleaved)
                .map_err(|e| device_error("interleaved read access refused", e))?;
            hwp.set_format(Format::s16())
                .map_err(|_| SourceError::Format {
                    what: what.clone(),
                    reason: "the device does not offer 16-bit samples (S16_LE); try the \
                             'plughw:' form of the device name, which converts"
                        .into(),
                })?;
            let channels = if hwp.test_channels(1).is_ok() {
                1
            } else if hwp.test_channels(2).is_ok() {
                2
            } else {
                hwp.get_channels_min()
                    .map_err(|e| device_error("reading channel counts", e))?
            };
            hwp.set_channels(channels)
                .map_err(|e| device_error(&format!("{channels} channels refused"), e))?;
            let rate = hwp
                .set_rate_near(AUDIO_SAMPLE_RATE, alsa::ValueOr::Nearest)
                .map_err(|e| device_error("no usable sample rate", e))?;
            let want_period = (rate as u64 * PERIOD_US / 1_000_000).max(1);
            let period = hwp
                .set_period_size_near(want_period as alsa::pcm::Frames, alsa::ValueOr::Nearest)
                .map_err(|e| device_error("period size refused", e))?;
            hwp.set_buffer_size_near(period * BUFFER_PERIODS as alsa::pcm::Frames)
                .map_err(|e| device_error("buffer size refused", e))?;
            pcm.hw_params(&hwp)
                .map_err(|e| device_error("applying the capture format", e))?;
            (channels, rate, period)
        };
        let period = usize::try_from(period).unwrap_or(0).max(1);
        {
            let swp = pcm
                .sw_params_current()
                .map_err(|e| device_error("reading software parameters", e))?;
            swp.set_avail_min(period as alsa::pcm::Frames)
                .map_err(|e| device_error("wake-up threshold refused", e))?;
            pcm.sw_params(&swp)
                .map_err(|e| device_error("applying software parameters", e))?;
        }
        pcm.start()
            .map_err(|e| device_error("starting capture", e))?;
        let channels = u16::try_from(channels).map_err(|_| SourceError::Format {
            what: what.clone(),
            reason: format!("{channels} channels is more than a microphone should have"),
        })?;
        tracing::info!(device, channels, rate, period, "microphone opened");
        Ok(Self {
            pcm,
            device: device.to_owned(),
            channels,
            rate,
            period,
        })
    }
}

impl PcmCapture for AlsaPcm {
    fn channels(&self) -> u16 {
        self.channels
    }

    fn rate(&self) -> u32 {
        self.rate
    }

    fn period_frames(&self) -> usize {
        self.period
    }

    fn read_interleaved(&mut self, buf: &mut [i16]) -> Result<usize, PcmError> {
        // Wait first: a blocking read on a device that stopped producing would never return.
        match self.pcm.wait(Some(STALL_TIMEOUT_MS)) {
            Ok(true) => {}
            Ok(false) => {
                return Err(PcmError::Stalled {
                    waited_ms: STALL_TIMEOUT_MS,
                })
            }
            Err(e) if is_overrun(&e) => return Err(PcmError::Overrun),
            Err(e) => {
                return Err(PcmError::Io {
                    op: "waiting for samples",
                    source: alsa_io(e),
                })
            }
        }
        let io = self.pcm.io_i16().map_err(|e| PcmError::Io {
            op: "accessing 16-bit samples",
            source: alsa_io(e),
        })?;
        match io.readi(buf) {
            Ok(n) => Ok(n),
            Err(e) if is_overrun(&e) => Err(PcmError::Overrun),
            Err(e) => Err(PcmError::Io {
                op: "reading samples",
                source: alsa_io(e),
            }),
        }
    }

    fn recover(&mut self) -> Result<(), PcmError> {
        self.pcm.prepare().map_err(|e| PcmError::Io {
            op: "preparing after an overrun",
            source: alsa_io(e),
        })?;
        self.pcm.start().map_err(|e| PcmError::Io {
            op: "restarting after an overrun",
            source: alsa_io(e),
        })
    }

    fn next_frame_time_us(&mut self) -> Option<u64> {
        let delay = self.pcm.delay().ok()?;
        let now = now_us();
        let delay_us = (delay.max(0) as u64).saturating_mul(1_000_000) / self.rate.max(1) as u64;
        Some(now.saturating_sub(delay_us))
    }
}

/// A microphone: any [`PcmCapture`] turned into 20 ms blocks of 48 kHz mono.
pub struct AlsaSource<P: PcmCapture = AlsaPcm> {
    device: String,
    pcm: P,
    channels: usize,
    in_rate: u32,
    read_buf: Vec<i16>,
    mono: Vec<i16>,
    resampler: Resampler,
    /// Output samples not yet handed out, the first at timeline index `timeline.emitted`.
    out: VecDeque<i16>,
    timeline: Option<Timeline>,
    /// Set by an overrun: the next timing check corrects any gap at once, however small.
    resync: bool,
    overruns: u64,
    empty_reads: u32,
}

impl<P: PcmCapture> std::fmt::Debug for AlsaSource<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlsaSource")
            .field("device", &self.device)
            .field("channels", &self.channels)
            .field("in_rate", &self.in_rate)
            .field("timeline", &self.timeline)
            .field("overruns", &self.overruns)
            .finish_non_exhaustive()
    }
}

/// Where output samples sit in wall-clock time.
#[derive(Debug, Clone, Copy)]
struct Timeline {
    /// Capture time of output sample 0.
    anchor_us: u64,
    /// Output samples handed out in blocks since the anchor.
    emitted: u64,
    /// Observed minus predicted capture time, smoothed (µs).
    smoothed_error_us: f64,
}

impl AlsaSource<AlsaPcm> {
    /// Opens an ALSA capture device, e.g. `default` or `hw:1,0`.
    pub fn open(device: &str) -> Result<Self, SourceError> {
        let pcm = AlsaPcm::open(device)?;
        Self::with_pcm(device, pcm)
    }
}

impl<P: PcmCapture> AlsaSource<P> {
    /// Wraps any capture device; `device` names it in descriptions and errors.
    pub fn with_pcm(device: &str, pcm: P) -> Result<Self, SourceError> {
        let (channels, in_rate) = (pcm.channels() as usize, pcm.rate());
        if channels == 0 || !(8_000..=384_000).contains(&in_rate) {
            return Err(SourceError::Format {
                what: format!("microphone '{device}'"),
                reason: format!(
                    "the device offers {channels} channels at {in_rate} Hz, which cannot be \
                     made into 48 kHz mono"
                ),
            });
        }
        let period = pcm.period_frames().max(1);
        Ok(Self {
            device: device.to_owned(),
            channels,
            in_rate,
            read_buf: vec![0; period * channels],
            mono: Vec::with_capacity(period),
            resampler: Resampler::new(in_rate),
            out: VecDeque::with_capacity(AUDIO_BLOCK_SAMPLES * 2),
            timeline: None,
            resync: false,
            overruns: 0,
            empty_reads: 0,
            pcm,
        })
    }

    /// Overruns since opening: each one is a gap of silence in the sound.
    pub fn overruns(&self) -> u64 {
        self.overruns
    }

    /// The rate the device actually runs at, before resampling to 48 kHz.
    pub fn device_rate(&self) -> u32 {
        self.in_rate
    }

    fn what(&self) -> String {
        format!("microphone '{}'", self.device)
    }

    fn error(&self, e: PcmError) -> SourceError {
        match e {
            PcmError::Overrun => SourceError::Device {
                what: self.what(),
                reason: "could not recover from an overrun".into(),
            },
            PcmError::Stalled { waited_ms } => SourceError::Device {
                what: self.what(),
                reason: format!(
                    "no sound for {} s: the device stopped delivering (unplugged, or taken \
                     by another program?)",
                    waited_ms as f64 / 1000.0
                ),
            },
            PcmError::Io { op, source } => SourceError::Read {
                what: format!("{} ({op})", self.what()),
                source,
            },
        }
    }

    fn pop_block(&mut self) -> Option<AudioBlock> {
        if self.out.len() < AUDIO_BLOCK_SAMPLES {
            return None;
        }
        let tl = self.timeline.as_mut()?;
        let samples: Vec<i16> = self.out.drain(..AUDIO_BLOCK_SAMPLES).collect();
        let block = tl.emitted / AUDIO_BLOCK_SAMPLES as u64;
        tl.emitted += AUDIO_BLOCK_SAMPLES as u64;
        Some(AudioBlock {
            capture_us: tl.anchor_us + block * AUDIO_BLOCK_US,
            samples,
        })
    }

    /// Takes `frames` just read into `read_buf`; `next_time_us` is the device's capture time
    /// of the frame after them.
    fn ingest(&mut self, frames: usize, next_time_us: Option<u64>) {
        self.mono.clear();
        downmix(
            &self.read_buf[..frames * self.channels],
            self.channels,
            &mut self.mono,
        );
        let chunk_us = frames as f64 * 1e6 / self.in_rate as f64;
        let observed = next_time_us.map(|t| t as f64 - chunk_us);
        match (self.timeline.as_mut(), observed) {
            (None, observed) => {
                let anchor = observed.unwrap_or(now_us() as f64 - chunk_us).max(0.0);
                self.timeline = Some(Timeline {
                    anchor_us: anchor.round() as u64,
                    emitted: 0,
                    smoothed_error_us: 0.0,
                });
                self.resampler.reset();
            }
            (Some(tl), Some(observed)) => {
                let produced = tl.emitted + self.out.len() as u64;
                let predicted = tl.anchor_us as f64
                    + produced as f64 * 1e6 / AUDIO_SAMPLE_RATE as f64
                    - self.resampler.pos * 1e6 / self.in_rate as f64;
                let error = observed - predicted;
                let resync = std::mem::take(&mut self.resync);
                if error.abs() > REANCHOR_US {
                    tracing::warn!(
                        device = %self.device,
                        jump_ms = error / 1000.0,
                        "wall clock jumped; restarting the audio timeline"
                    );
                    self.out.clear();
                    *tl = Timeline {
                        anchor_us: observed.max(0.0).round() as u64,
                        emitted: 0,
                        smoothed_error_us: 0.0,
                    };
                    self.resampler.reset();
                } else if error.abs() > RESYNC_US
                    || (resync && error.abs() * 1e-6 * AUDIO_SAMPLE_RATE as f64 >= 0.5)
                {
                    if error > 0.0 {
                        let missing = (error * 1e-6 * AUDIO_SAMPLE_RATE as f64).round() as usize;
                        tracing::debug!(
                            device = %self.device,
                            gap_ms = error / 1000.0,
                            "filling a gap with silence"
                        );
                        self.out.extend(std::iter::repeat_n(0, missing));
                    } else {
                        tracing::debug!(
                            device = %self.device,
                            excess_ms = -error / 1000.0,
                            "skipping samples"
                        );
                        self.resampler.skip(-error * 1e-6 * self.in_rate as f64);
                    }
                    tl.smoothed_error_us = 0.0;
                    self.resampler.set_correction(0.0);
                } else {
                    tl.smoothed_error_us += ERROR_SMOOTHING * (error - tl.smoothed_error_us);
                    let e = tl.smoothed_error_us;
                    let correction = if e.abs() < CORRECTION_DEADBAND_US {
                        0.0
                    } else {
                        (e * 1e-6 / CORRECTION_HORIZON_S).clamp(-MAX_CORRECTION, MAX_CORRECTION)
                    };
                    self.resampler.set_correction(correction);
                }
            }
            (Some(_), None) => {}
        }
        self.resampler.process(&self.mono, &mut self.out);
    }
}

impl<P: PcmCapture> AudioSource for AlsaSource<P> {
    fn describe(&self) -> String {
        let channels = match self.channels {
            1 => "mono".to_string(),
            2 => "stereo".to_string(),
            n => format!("{n} channels"),
        };
        if self.in_rate == AUDIO_SAMPLE_RATE && self.channels == 1 {
            format!("microphone {} (48 kHz mono)", self.device)
        } else {
            format!(
                "microphone {} ({} Hz {channels}, converted to 48 kHz mono)",
                self.device, self.in_rate
            )
        }
    }

    fn next_block(&mut self) -> Result<Option<AudioBlock>, SourceError> {
        loop {
            if let Some(block) = self.pop_block() {
                return Ok(Some(block));
            }
            match self.pcm.read_interleaved(&mut self.read_buf) {
                Ok(0) => {
                    self.empty_reads += 1;
                    if self.empty_reads > 100 {
                        return Err(SourceError::Device {
                            what: self.what(),
                            reason: "the device keeps returning no samples".into(),
                        });
                    }
                }
                Ok(frames) => {
                    self.empty_reads = 0;
                    let frames = frames.min(self.read_buf.len() / self.channels);
                    let next_time = self.pcm.next_frame_time_us();
                    self.ingest(frames, next_time);
                }
                Err(PcmError::Overrun) => {
                    self.overruns += 1;
                    tracing::warn!(
                        device = %self.device,
                        overruns = self.overruns,
                        "microphone overrun: samples were lost because capture fell behind"
                    );
                    self.resync = true;
                    if let Err(e) = self.pcm.recover() {
                        return Err(self.error(e));
                    }
                }
                Err(e) => return Err(self.error(e)),
            }
        }
    }
}

/// Averages interleaved channels into one.
fn downmix(interleaved: &[i16], channels: usize, out: &mut Vec<i16>) {
    if channels == 1 {
        out.extend_from_slice(interleaved);
        return;
    }
    out.extend(interleaved.chunks_exact(channels).map(|frame| {
        let sum: i32 = frame.iter().map(|&s| s as i32).sum();
        (sum / channels as i32) as i16
    }));
}

/// Streaming linear-interpolation resampler to 48 kHz with an adjustable ratio.
///
/// Linear interpolation is enough for a microphone feeding Opus at speech and ambience
/// quality; the adjustable ratio is what follows a device clock that drifts. At a ratio of
/// exactly 1 it passes samples through untouched.
#[derive(Debug, Clone)]
struct Resampler {
    /// Input frames per output sample at the nominal rates.
    nominal_step: f64,
    step: f64,
    /// Position of the next output sample in input frames, relative to the first frame of
    /// the next chunk; in [-1, 0) it lies between `prev` and that first frame.
    pos: f64,
    /// The last frame of the previous chunk.
    prev: i16,
}

impl Resampler {
    fn new(in_rate: u32) -> Self {
        let step = in_rate as f64 / AUDIO_SAMPLE_RATE as f64;
        Self {
            nominal_step: step,
            step,
            pos: 0.0,
            prev: 0,
        }
    }

    fn reset(&mut self) {
        self.step = self.nominal_step;
        self.pos = 0.0;
    }

    /// Positive `correction` makes more output per input: for a device running slow.
    fn set_correction(&mut self, correction: f64) {
        self.step = self.nominal_step * (1.0 - correction);
    }

    fn skip(&mut self, frames: f64) {
        self.pos += frames.max(0.0);
    }

    fn process(&mut self, input: &[i16], out: &mut VecDeque<i16>) {
        let Some(&last_frame) = input.last() else {
            return;
        };
        let last = (input.len() - 1) as f64;
        while self.pos < last {
            let i = self.pos.floor();
            let frac = self.pos - i;
            let a = if i < 0.0 {
                self.prev
            } else {
                input[i as usize]
            } as f64;
            let b = input[(i + 1.0) as usize] as f64;
            out.push_back((a + (b - a) * frac).round().clamp(-32768.0, 32767.0) as i16);
            self.pos += self.step;
        }
        self.pos -= input.len() as f64;
        self.prev = last_frame;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START_US: u64 = 1_700_000_000_000_000;
    const AMPLITUDE: f64 = 12_000.0;

    /// A device playing the box's test tone: a 1 kHz beep for the first 100 ms of every
    /// second of its own clock, silence between.
    struct SimPcm {
        rate: u32,
        channels: u16,
        period: usize,
        /// Device frames per real second (differs from `rate` to simulate clock drift).
        true_rate: f64,
        /// Next frame to be captured.
        pos: u64,
        /// An overrun at this frame, losing this many frames.
        overrun: Option<(u64, u64)>,
        /// A hard read error at this frame.
        fail_at: Option<u64>,
    }

    impl SimPcm {
        fn new(rate: u32, channels: u16) -> Self {
            Self {
                rate,
                channels,
                period: rate as usize / 100,
                true_rate: rate as f64,
                pos: 0,
                overrun: None,
                fail_at: None,
            }
        }

        fn sample(&self, frame: u64) -> i16 {
            let into = frame % self.rate as u64;
            if into >= self.rate as u64 / 10 {
                return 0;
            }
            let t = into as f64 / self.rate as f64;
            (AMPLITUDE * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16
        }

        /// Real (wall-clock) time of a device frame.
        fn frame_time_us(&self, frame: u64) -> f64 {
            START_US as f64 + frame as f64 * 1e6 / self.true_rate
        }
    }

    impl PcmCapture for SimPcm {
        fn channels(&self) -> u16 {
            self.channels
        }
        fn rate(&self) -> u32 {
            self.rate
        }
        fn period_frames(&self) -> usize {
            self.period
        }
        fn read_interleaved(&mut self, buf: &mut [i16]) -> Result<usize, PcmError> {
            if let Some((at, lost)) = self.overrun {
                if self.pos >= at {
                    self.overrun = None;
                    self.pos += lost;
                    return Err(PcmError::Overrun);
                }
            }
            if self.fail_at.is_some_and(|at| self.pos >= at) {
                return Err(PcmError::Io {
                    op: "reading samples",
                    source: io::Error::other("simulated I/O error"),
                });
            }
            let ch = self.channels as usize;
            let frames = (buf.len() / ch).min(self.period);
            for f in 0..frames {
                let s = self.sample(self.pos + f as u64);
                for c in 0..ch {
                    // Right channel at half level, so the down-mix is really an average.
                    buf[f * ch + c] = if c == 0 { s } else { s / 2 };
                }
            }
            self.pos += frames as u64;
            Ok(frames)
        }
        fn recover(&mut self) -> Result<(), PcmError> {
            Ok(())
        }
        fn next_frame_time_us(&mut self) -> Option<u64> {
            Some(self.frame_time_us(self.pos).round() as u64)
        }
    }

    fn collect(src: &mut AlsaSource<SimPcm>, seconds: f64) -> Vec<AudioBlock> {
        let n = (seconds * 50.0) as usize;
        (0..n)
            .map(|_| src.next_block().unwrap().expect("a live source never ends"))
            .collect()
    }

    fn assert_contiguous(blocks: &[AudioBlock]) {
        for b in blocks {
            assert_eq!(b.samples.len(), AUDIO_BLOCK_SAMPLES);
        }
        for w in blocks.windows(2) {
            assert_eq!(w[1].capture_us - w[0].capture_us, AUDIO_BLOCK_US);
        }
    }

    /// Capture times of beep onsets: where the energy of the last millisecond first exceeds
    /// a quarter of a full beep's after at least 50 ms of quiet.
    fn onsets_us(blocks: &[AudioBlock]) -> Vec<f64> {
        let t0 = blocks[0].capture_us as f64;
        let samples: Vec<f64> = blocks
            .iter()
            .flat_map(|b| b.samples.iter().map(|&s| s as f64))
            .collect();
        let window = 48;
        let threshold = AMPLITUDE * AMPLITUDE / 2.0 * 0.25 * window as f64;
        let mut energy = 0.0;
        let mut quiet = usize::MAX / 2;
        let mut onsets = Vec::new();
        for (i, &s) in samples.iter().enumerate() {
            energy += s * s;
            if i >= window {
                energy -= samples[i - window] * samples[i - window];
            }
            if energy > threshold {
                if quiet >= 2_400 {
                    onsets.push(t0 + i as f64 * 1e6 / AUDIO_SAMPLE_RATE as f64);
                }
                quiet = 0;
            } else {
                quiet += 1;
            }
        }
        onsets
    }

    fn assert_onsets_on_whole_seconds(
        blocks: &[AudioBlock],
        expected_us: &[f64],
        tolerance_us: f64,
    ) {
        let onsets = onsets_us(blocks);
        assert_eq!(
            onsets.len(),
            expected_us.len(),
            "onsets {onsets:?}, expected {expected_us:?}"
        );
        for (got, want) in onsets.iter().zip(expected_us) {
            assert!(
                (got - want).abs() <= tolerance_us,
                "beep at {:.0} µs off by {:.0} µs (tolerance {tolerance_us})",
                want - START_US as f64,
                got - want
            );
        }
    }

    fn whole_seconds(n: u64) -> Vec<f64> {
        (0..n).map(|k| (START_US + k * 1_000_000) as f64).collect()
    }

    #[test]
    fn alsa_48k_mono_is_passed_through_in_exact_blocks() {
        let mut src = AlsaSource::with_pcm("sim:48k", SimPcm::new(48_000, 1)).unwrap();
        let blocks = collect(&mut src, 3.5);
        assert_contiguous(&blocks);
        assert_eq!(blocks[0].capture_us, START_US);
        assert_onsets_on_whole_seconds(&blocks, &whole_seconds(4), 1_000.0);
        // Bit-exact: nothing is resampled when the device already speaks 48 kHz mono.
        let reference = SimPcm::new(48_000, 1);
        for (i, s) in blocks.iter().flat_map(|b| &b.samples).enumerate() {
            assert_eq!(*s, reference.sample(i as u64), "sample {i}");
        }
        assert_eq!(src.overruns(), 0);
        assert_eq!(src.describe(), "microphone sim:48k (48 kHz mono)");
    }

    #[test]
    fn alsa_44k1_stereo_is_downmixed_and_resampled() {
        let mut src = AlsaSource::with_pcm("sim:44k1", SimPcm::new(44_100, 2)).unwrap();
        assert_eq!(src.device_rate(), 44_100);
        let blocks = collect(&mut src, 3.5);
        assert_contiguous(&blocks);
        assert!(blocks[0].capture_us.abs_diff(START_US) <= 1);
        assert_onsets_on_whole_seconds(&blocks, &whole_seconds(4), 2_000.0);
        // Down-mixed level: the average of full and half level.
        let peak = blocks
            .iter()
            .flat_map(|b| &b.samples)
            .map(|s| s.unsigned_abs())
            .max();
        let peak = peak.unwrap() as f64;
        assert!(
            (peak - AMPLITUDE * 0.75).abs() < AMPLITUDE * 0.02,
            "peak {peak}"
        );
        assert!(
            src.describe().contains("44100 Hz stereo"),
            "{}",
            src.describe()
        );
    }

    #[test]
    fn alsa_overrun_is_recovered_and_gap_filled() {
        let mut pcm = SimPcm::new(48_000, 1);
        // 30.25 ms lost in the silence after the second beep.
        pcm.overrun = Some((72_000, 1_452));
        let mut src = AlsaSource::with_pcm("sim:xrun", pcm).unwrap();
        let blocks = collect(&mut src, 3.5);
        assert_eq!(src.overruns(), 1);
        assert_contiguous(&blocks);
        assert_onsets_on_whole_seconds(&blocks, &whole_seconds(4), 1_000.0);
    }

    #[test]
    fn alsa_overrun_in_resampled_stream() {
        let mut pcm = SimPcm::new(44_100, 2);
        pcm.overrun = Some((44_100 + 10_000, 777));
        let mut src = AlsaSource::with_pcm("sim:xrun44", pcm).unwrap();
        let blocks = collect(&mut src, 3.5);
        assert_eq!(src.overruns(), 1);
        assert_contiguous(&blocks);
        assert_onsets_on_whole_seconds(&blocks, &whole_seconds(4), 2_000.0);
    }

    #[test]
    fn alsa_drifting_device_clock_is_followed() {
        // The device's "48 kHz" is 100 ppm fast: uncorrected, its beeps would land 6 ms
        // early after a minute. Corrected, the error settles near drift x horizon = 1 ms.
        let mut pcm = SimPcm::new(48_000, 1);
        pcm.true_rate = 48_000.0 * 1.0001;
        let truth: Vec<f64> = (0..60).map(|k| pcm.frame_time_us(k * 48_000)).collect();
        let mut src = AlsaSource::with_pcm("sim:drift", pcm).unwrap();
        let blocks = collect(&mut src, 59.5);
        assert_contiguous(&blocks);
        assert_onsets_on_whole_seconds(&blocks, &truth, 1_500.0);
    }

    #[test]
    fn alsa_read_error_names_the_device() {
        let mut pcm = SimPcm::new(48_000, 1);
        pcm.fail_at = Some(4_800);
        let mut src = AlsaSource::with_pcm("sim:broken", pcm).unwrap();
        let err = loop {
            match src.next_block() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("a live source never ends"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, SourceError::Read { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("sim:broken"), "{text}");
        assert!(text.contains("simulated I/O error"), "{text}");
    }

    #[test]
    fn alsa_unusable_formats_are_refused() {
        let err = AlsaSource::with_pcm("sim:0ch", SimPcm::new(48_000, 0)).unwrap_err();
        assert!(err.to_string().contains("sim:0ch"), "{err}");
        let err = AlsaSource::with_pcm("sim:slow", SimPcm::new(4_000, 1)).unwrap_err();
        assert!(err.to_string().contains("4000 Hz"), "{err}");
    }

    #[test]
    fn alsa_stalled_device_is_an_error() {
        struct Dead;
        impl PcmCapture for Dead {
            fn channels(&self) -> u16 {
                1
            }
            fn rate(&self) -> u32 {
                48_000
            }
            fn period_frames(&self) -> usize {
                480
            }
            fn read_interleaved(&mut self, _: &mut [i16]) -> Result<usize, PcmError> {
                Err(PcmError::Stalled { waited_ms: 2_000 })
            }
            fn recover(&mut self) -> Result<(), PcmError> {
                Ok(())
            }
            fn next_frame_time_us(&mut self) -> Option<u64> {
                None
            }
        }
        let mut src = AlsaSource::with_pcm("sim:dead", Dead).unwrap();
        let err = src.next_block().unwrap_err();
        assert!(matches!(err, SourceError::Device { .. }), "{err:?}");
        assert!(err.to_string().contains("sim:dead"), "{err}");
    }

    #[test]
    fn alsa_downmix_and_resampler_basics() {
        let mut out = Vec::new();
        downmix(&[100, 300, -32768, -32768, 32767, 32767], 2, &mut out);
        assert_eq!(out, [200, -32768, 32767]);

        // 24 kHz -> 48 kHz doubles the samples, interpolating midpoints.
        let mut r = Resampler::new(24_000);
        let mut out = VecDeque::new();
        r.process(&[0, 100, 200], &mut out);
        r.process(&[300], &mut out);
        assert_eq!(
            out.iter().copied().collect::<Vec<_>>(),
            [0, 50, 100, 150, 200, 250]
        );
    }
}
