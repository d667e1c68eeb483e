//! The synthetic microphone: a 1 kHz beep of 100 ms at the capture time of every frame whose
//! number is a multiple of the frame rate (once a second), silence between.
//!
//! Paired with the test strip it makes audio/video sync measurable by any decoder: the
//! beep's onset in the decoded PCM must sit at the presentation time of its frame.

use super::pacer::{Pacer, Pacing};
use super::{AudioSource, SourceError};
use crate::frame::{AudioBlock, FrameRate, AUDIO_BLOCK_SAMPLES, AUDIO_BLOCK_US, AUDIO_SAMPLE_RATE};

pub const BEEP_HZ: f64 = 1000.0;
pub const BEEP_MS: u64 = 100;
const AMPLITUDE: f64 = 12_000.0;

#[derive(Debug)]
pub struct ToneSource {
    rate: FrameRate,
    pacer: Pacer,
    start_us: u64,
    next_block: u64,
}

impl ToneSource {
    /// `rate` is the video's frame rate and `start_us` the capture time of its frame 0.
    pub fn new(rate: FrameRate, pacing: Pacing, start_us: u64) -> Self {
        Self {
            rate,
            pacer: Pacer::new(pacing, 200_000),
            start_us,
            next_block: 0,
        }
    }

    /// Sample value `index` samples after the start (48 kHz).
    pub fn sample(&self, index: u64) -> i16 {
        // Beeps start at frames k * fps_rounded, i.e. at k * fps_rounded * den / num seconds.
        let fps = self.rate.rounded() as u128;
        let period = (fps * self.rate.den as u128 * AUDIO_SAMPLE_RATE as u128
            / self.rate.num.max(1) as u128)
            .max(1);
        let k = index as u128 / period;
        // Round the onset to the nearest sample; exact for integer frame rates.
        let onset = (k * fps * self.rate.den as u128 * AUDIO_SAMPLE_RATE as u128
            + self.rate.num as u128 / 2)
            / self.rate.num.max(1) as u128;
        let into = (index as u128).saturating_sub(onset) as u64;
        if (index as u128) < onset || into >= BEEP_MS * AUDIO_SAMPLE_RATE as u64 / 1000 {
            return 0;
        }
        let t = into as f64 / AUDIO_SAMPLE_RATE as f64;
        (AMPLITUDE * (2.0 * std::f64::consts::PI * BEEP_HZ * t).sin()) as i16
    }
}

impl AudioSource for ToneSource {
    fn describe(&self) -> String {
        "test tone 1 kHz".into()
    }

    fn next_block(&mut self) -> Result<Option<AudioBlock>, SourceError> {
        let k = self.next_block;
        self.next_block += 1;
        let capture_us = self.start_us + k * AUDIO_BLOCK_US;
        // A microphone hands a block over once its last sample has been captured.
        let _ = self.pacer.wait_until(capture_us + AUDIO_BLOCK_US);
        let first = k * AUDIO_BLOCK_SAMPLES as u64;
        let samples = (0..AUDIO_BLOCK_SAMPLES as u64)
            .map(|i| self.sample(first + i))
            .collect();
        Ok(Some(AudioBlock {
            capture_us,
            samples,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beeps_once_a_second_for_100ms() {
        let tone = ToneSource::new(FrameRate::per_second(30), Pacing::Unpaced, 0);
        let onsets: Vec<u64> = (1..48_000 * 3)
            .filter(|&i| tone.sample(i - 1) == 0 && tone.sample(i) == 0 && tone.sample(i + 1) != 0)
            .collect();
        assert_eq!(
            onsets,
            vec![48_000, 96_000],
            "first beep starts at sample 0"
        );
        assert_ne!(tone.sample(1), 0);
        assert_ne!(tone.sample(4_799), 0);
        assert_eq!(tone.sample(4_800), 0);
        assert_eq!(tone.sample(47_999), 0);
    }

    #[test]
    fn blocks_are_20ms_apart() {
        let mut tone = ToneSource::new(FrameRate::per_second(25), Pacing::Unpaced, 1_000);
        let a = tone.next_block().unwrap().unwrap();
        let b = tone.next_block().unwrap().unwrap();
        assert_eq!(a.samples.len(), 960);
        assert_eq!((a.capture_us, b.capture_us), (1_000, 21_000));
    }

    #[test]
    fn ntsc_rate_beeps_at_frame_multiples_of_30() {
        // 30000/1001: frame 30 is at 1.001 s = sample 48048.
        let tone = ToneSource::new(
            FrameRate {
                num: 30_000,
                den: 1001,
            },
            Pacing::Unpaced,
            0,
        );
        assert_eq!(tone.sample(48_047), 0);
        assert_eq!(tone.sample(48_048), 0, "sin(0) at the onset");
        assert_ne!(tone.sample(48_049), 0);
    }
}
