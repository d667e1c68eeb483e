//! The machine-readable strip in the top 32 rows of every test picture.
//!
//! It lets any decoder (ffmpeg, a browser canvas) recover the frame number and capture time
//! of the picture it shows, so latency, lost and repeated frames are measured without
//! trusting cambox's own counters. The layout is specified in `docs/testsrc.md`:
//! two lines of 48 cells, a cell `width / 48` pixels wide and 16 rows high, white (Y 235)
//! for 1 and black (Y 16) for 0, most significant bit first.
//! - line 1: cells 0-31 the frame number (u32), cells 32-47 the bitwise NOT of its low 16 bits;
//! - line 2: the capture time in milliseconds since the UNIX epoch (u48).

/// Rows the strip occupies at the top of the picture.
pub const STRIP_ROWS: u32 = 32;
/// Cells per line.
pub const CELLS: u32 = 48;
const CELL_ROWS: u32 = 16;
const WHITE: u8 = 235;
const BLACK: u8 = 16;

/// What a strip says about its picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripReading {
    pub frame: u32,
    pub capture_ms: u64,
}

fn line1_bits(frame: u32) -> u64 {
    let check = !(frame as u16) as u64;
    ((frame as u64) << 16) | check
}

/// Draws the strip into a luma plane of `width` x `height` with row stride `stride`.
/// Pictures narrower than 48 pixels or shorter than 32 rows cannot carry it and are left alone.
pub fn write_strip(y: &mut [u8], stride: usize, width: u32, height: u32, reading: StripReading) {
    let cell_w = (width / CELLS) as usize;
    if cell_w == 0 || height < STRIP_ROWS || y.len() < stride * STRIP_ROWS as usize {
        return;
    }
    let lines = [
        line1_bits(reading.frame),
        reading.capture_ms & 0xFFFF_FFFF_FFFF,
    ];
    for (line, bits) in lines.iter().enumerate() {
        let mut row_pixels = vec![BLACK; width as usize];
        for cell in 0..CELLS as usize {
            let bit = (bits >> (CELLS as usize - 1 - cell)) & 1;
            let value = if bit == 1 { WHITE } else { BLACK };
            row_pixels[cell * cell_w..(cell + 1) * cell_w].fill(value);
        }
        for r in 0..CELL_ROWS as usize {
            let row = line * CELL_ROWS as usize + r;
            y[row * stride..row * stride + width as usize].copy_from_slice(&row_pixels);
        }
    }
}

/// Reads the strip from a luma plane by sampling each cell's centre and thresholding at 128.
/// Returns `None` when the picture carries no valid strip (the check bits disagree).
pub fn read_strip(y: &[u8], stride: usize, width: u32, height: u32) -> Option<StripReading> {
    let cell_w = (width / CELLS) as usize;
    if cell_w == 0 || height < STRIP_ROWS {
        return None;
    }
    let read_line = |line: usize| -> Option<u64> {
        let row = line * CELL_ROWS as usize + CELL_ROWS as usize / 2;
        let mut bits = 0u64;
        for cell in 0..CELLS as usize {
            let x = cell * cell_w + cell_w / 2;
            let v = *y.get(row * stride + x)?;
            bits = (bits << 1) | u64::from(v >= 128);
        }
        Some(bits)
    };
    let l1 = read_line(0)?;
    let l2 = read_line(1)?;
    let frame = (l1 >> 16) as u32;
    if (l1 & 0xFFFF) as u16 != !(frame as u16) {
        return None;
    }
    Some(StripReading {
        frame,
        capture_ms: l2,
    })
}

/// Counts what a sequence of readings shows: gaps and repeats in the frame numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Continuity {
    pub frames: u64,
    pub first: Option<u32>,
    pub last: Option<u32>,
    /// Frames missing between consecutive readings (a jump of 3 counts 2).
    pub missing: u64,
    /// Places where the sequence jumped forward.
    pub gaps: u64,
    /// Readings that did not advance (same frame again, or backwards).
    pub repeats: u64,
    /// Pictures without a readable strip.
    pub unreadable: u64,
}

impl Continuity {
    pub fn push(&mut self, reading: Option<StripReading>) {
        let Some(r) = reading else {
            self.unreadable += 1;
            return;
        };
        self.frames += 1;
        if self.first.is_none() {
            self.first = Some(r.frame);
        }
        if let Some(last) = self.last {
            if r.frame <= last {
                self.repeats += 1;
                return;
            }
            if r.frame > last + 1 {
                self.gaps += 1;
                self.missing += u64::from(r.frame - last - 1);
            }
        }
        self.last = Some(r.frame);
    }

    /// Consecutive frames seen from first to last.
    pub fn span(&self) -> u64 {
        match (self.first, self.last) {
            (Some(a), Some(b)) => u64::from(b - a) + 1,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_at_common_sizes() {
        for (w, h) in [(1280u32, 720u32), (640, 360), (48, 32), (1920, 1080)] {
            let mut y = vec![128u8; (w * h) as usize];
            let r = StripReading {
                frame: 0xDEAD_BEEF,
                capture_ms: 1_764_000_000_123,
            };
            write_strip(&mut y, w as usize, w, h, r);
            assert_eq!(read_strip(&y, w as usize, w, h), Some(r), "{w}x{h}");
        }
    }

    #[test]
    fn reads_with_padded_stride_and_noise() {
        let (w, h, stride) = (640u32, 64u32, 704usize);
        let mut y = vec![0u8; stride * h as usize];
        let r = StripReading {
            frame: 1234,
            capture_ms: 42,
        };
        write_strip(&mut y, stride, w, h, r);
        // Compression noise: every pixel moves by up to 60 levels.
        for (i, p) in y.iter_mut().enumerate() {
            let noise = (i * 7919 % 121) as i32 - 60;
            *p = (*p as i32 + noise).clamp(0, 255) as u8;
        }
        assert_eq!(read_strip(&y, stride, w, h), Some(r));
    }

    #[test]
    fn rejects_pictures_without_strip() {
        let y = vec![200u8; 640 * 360];
        assert_eq!(read_strip(&y, 640, 640, 360), None);
        assert_eq!(read_strip(&y[..10], 640, 640, 360), None);
        assert_eq!(read_strip(&y, 40, 40, 360), None);
    }

    #[test]
    fn continuity_counts_gaps_and_repeats() {
        let mut c = Continuity::default();
        for f in [5u32, 6, 7, 7, 10, 11, 9] {
            c.push(Some(StripReading {
                frame: f,
                capture_ms: 0,
            }));
        }
        c.push(None);
        assert_eq!(c.frames, 7);
        assert_eq!((c.gaps, c.missing, c.repeats, c.unreadable), (1, 2, 2, 1));
        assert_eq!(c.span(), 7);
    }
}
