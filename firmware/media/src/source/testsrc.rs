//! The synthetic camera: colour bars, a moving block, and the machine-readable strip.
//!
//! The default source wherever no camera is found, and the one every latency and
//! continuity measurement relies on (see `crate::strip`).

use super::pacer::{Due, Pacer, Pacing};
use super::{SourceError, VideoSource};
use crate::frame::{Captured, RawFrame, VideoFormat};
use crate::strip::{write_strip, StripReading, STRIP_ROWS};

/// Frames more than this late are dropped rather than delivered late.
const MAX_LAG_US: u64 = 100_000;

#[derive(Debug)]
pub struct TestSource {
    format: VideoFormat,
    pacer: Pacer,
    start_us: u64,
    next: u64,
    /// The picture under the moving block and the strip: one, or with grain
    /// [`GRAIN_FRAMES`] of them, taken in turn.
    backgrounds: Vec<Vec<u8>>,
}

/// Pictures of grain taken in turn. Made once, so a frame costs a copy even in an
/// unoptimised build; the encoder keeps one reference frame, so it cannot find the
/// same grain eight frames back.
const GRAIN_FRAMES: u64 = 8;

/// BT.601 limited-range YUV of the classic bars: white, yellow, cyan, green, magenta, red, blue, black.
const BARS: [(u8, u8, u8); 8] = [
    (180, 128, 128),
    (162, 44, 142),
    (131, 156, 44),
    (112, 72, 58),
    (84, 184, 198),
    (65, 100, 212),
    (35, 212, 114),
    (16, 128, 128),
];

impl TestSource {
    /// `start_us` is the capture time of frame 0; share it with the test tone so that the
    /// beeps line up with the frames they belong to.
    pub fn new(format: VideoFormat, pacing: Pacing, start_us: u64) -> Result<Self, SourceError> {
        if format.width < 48
            || format.height < STRIP_ROWS
            || !format.width.is_multiple_of(2)
            || !format.height.is_multiple_of(2)
        {
            return Err(SourceError::Format {
                what: "testsrc".into(),
                reason: format!(
                    "size {}x{} is too small or odd: the test strip needs an even size of at least 48x32",
                    format.width, format.height
                ),
            });
        }
        if format.rate.num == 0 || format.rate.den == 0 {
            return Err(SourceError::Format {
                what: "testsrc".into(),
                reason: "frame rate must be above zero".into(),
            });
        }
        Ok(Self {
            backgrounds: vec![bars(format.width, format.height)],
            format,
            pacer: Pacer::new(pacing, MAX_LAG_US),
            start_us,
            next: 0,
        })
    }

    /// Adds grain below the strip, different from one frame to the next
    /// (`testsrc:grain`).
    pub fn with_grain(mut self) -> Self {
        let luma = (self.format.width * self.format.height) as usize;
        let strip = STRIP_ROWS as usize * self.format.width as usize;
        let clean = self.backgrounds.remove(0);
        self.backgrounds = (0..GRAIN_FRAMES)
            .map(|n| {
                let mut picture = clean.clone();
                add_grain(&mut picture[strip..luma], n);
                picture
            })
            .collect();
        self
    }

    fn render(&self, number: u64, capture_us: u64) -> RawFrame {
        let (w, h) = (self.format.width as usize, self.format.height as usize);
        let turn = (number % self.backgrounds.len() as u64) as usize;
        let mut data = self.backgrounds[turn].clone();
        // A block that sweeps across the picture, so motion (and a frozen picture) is obvious.
        let side = (h / 4).max(2) & !1;
        let travel = w.saturating_sub(side).max(1);
        let x0 = ((number as usize * 8) % (2 * travel))
            .abs_diff(travel)
            .min(travel)
            & !1;
        let y0 = (h / 2 - side / 2) & !1;
        let luma = if number.is_multiple_of(2) { 235 } else { 200 };
        for row in y0..(y0 + side).min(h) {
            data[row * w + x0..row * w + (x0 + side).min(w)].fill(luma);
        }
        write_strip(
            &mut data[..w * h],
            w,
            self.format.width,
            self.format.height,
            StripReading {
                frame: number as u32,
                capture_ms: capture_us / 1000,
            },
        );
        RawFrame {
            number,
            capture_us,
            width: self.format.width,
            height: self.format.height,
            data,
        }
    }
}

/// Up to ±8 of luma on every pixel (xorshift seeded by `seed`: the same picture every run).
fn add_grain(luma: &mut [u8], number: u64) {
    let mut x = number.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for chunk in luma.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for (p, r) in chunk.iter_mut().zip(x.to_le_bytes()) {
            *p = p.saturating_add(r & 15).saturating_sub(8).clamp(16, 235);
        }
    }
}

fn bars(width: u32, height: u32) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = (w / 2, h / 2);
    let mut data = vec![0u8; RawFrame::i420_len(width, height)];
    let (y, uv) = data.split_at_mut(w * h);
    let (u, v) = uv.split_at_mut(cw * ch);
    for x in 0..w {
        let bar = BARS[x * BARS.len() / w];
        for row in 0..h {
            // A vertical luma ramp over the bars keeps the encoder honest about gradients.
            let ramp = (row * 24 / h) as u8;
            y[row * w + x] = bar.0.saturating_add(ramp).min(235);
        }
    }
    for x in 0..cw {
        let bar = BARS[x * BARS.len() / cw];
        // Grey under the strip, so lossy chroma cannot tint its black and white cells.
        for row in 0..ch {
            let neutral = row < STRIP_ROWS as usize / 2;
            u[row * cw + x] = if neutral { 128 } else { bar.1 };
            v[row * cw + x] = if neutral { 128 } else { bar.2 };
        }
    }
    data
}

impl VideoSource for TestSource {
    fn describe(&self) -> String {
        format!(
            "testsrc {}x{}@{}",
            self.format.width, self.format.height, self.format.rate
        )
    }

    fn format(&self) -> VideoFormat {
        self.format
    }

    fn next_frame(&mut self) -> Result<Option<Captured>, SourceError> {
        loop {
            let number = self.next;
            self.next += 1;
            let capture_us = self.start_us + self.format.rate.frame_offset_us(number);
            match self.pacer.wait_until(capture_us) {
                Due::Now => return Ok(Some(Captured::Raw(self.render(number, capture_us)))),
                // Too late: skip it, as a camera drops frames its consumer did not take.
                Due::Late => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameRate;
    use crate::strip::read_strip;

    fn fmt(w: u32, h: u32) -> VideoFormat {
        VideoFormat {
            width: w,
            height: h,
            rate: FrameRate::per_second(30),
        }
    }

    #[test]
    fn frames_carry_number_and_capture_time() {
        let start = 1_700_000_000_000_000;
        let mut src = TestSource::new(fmt(640, 360), Pacing::Unpaced, start).unwrap();
        for n in 0..40u64 {
            let Some(Captured::Raw(f)) = src.next_frame().unwrap() else {
                panic!("testsrc must give raw frames")
            };
            assert_eq!(f.number, n);
            assert_eq!(f.capture_us, start + n * 1_000_000 / 30);
            assert_eq!(f.data.len(), 640 * 360 * 3 / 2);
            let r = read_strip(f.y(), 640, 640, 360).expect("strip readable");
            assert_eq!(r.frame as u64, n);
            assert_eq!(r.capture_ms, f.capture_us / 1000);
        }
    }

    #[test]
    fn picture_moves() {
        let src = TestSource::new(fmt(320, 240), Pacing::Unpaced, 0).unwrap();
        let a = src.render(1, 0);
        let b = src.render(10, 0);
        assert_ne!(a.y()[32 * 320..], b.y()[32 * 320..]);
    }

    #[test]
    fn grain_changes_every_frame_and_leaves_the_strip_readable() {
        let start = 1_000_000;
        let mut src = TestSource::new(fmt(320, 240), Pacing::Unpaced, start)
            .unwrap()
            .with_grain();
        let mut raw = || match src.next_frame().unwrap() {
            Some(Captured::Raw(f)) => f,
            _ => panic!("testsrc must give raw frames"),
        };
        let (a, b) = (raw(), raw());
        let clean = TestSource::new(fmt(320, 240), Pacing::Unpaced, start)
            .unwrap()
            .render(0, start);
        let (w, h) = (320usize, 240usize);
        let body = STRIP_ROWS as usize * w..w * h;
        let differs = |x: &[u8], y: &[u8]| x.iter().zip(y).filter(|(p, q)| p != q).count();
        assert!(differs(&a.data[body.clone()], &clean.data[body.clone()]) > w * h / 2);
        assert!(differs(&a.data[body.clone()], &b.data[body]) > w * h / 2);
        let reading = read_strip(&a.data, w, 320, 240).expect("strip");
        assert_eq!(reading.frame, 0);
        assert_eq!(reading.capture_ms, start / 1000);
    }

    #[test]
    fn refuses_sizes_without_room_for_the_strip() {
        assert!(TestSource::new(fmt(40, 360), Pacing::Unpaced, 0).is_err());
        assert!(TestSource::new(fmt(641, 360), Pacing::Unpaced, 0).is_err());
    }
}
