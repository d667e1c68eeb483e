//! The raw picture layouts cameras deliver and the encoder takes, and conversion between
//! them and the crate's tightly packed I420.
//!
//! Drivers pad rows (`bytesperline`) and sometimes whole planes to their hardware's
//! alignment; ignoring that gives sheared or green pictures. Every function here checks
//! buffer lengths first and returns an error rather than reading past the end, because the
//! bytes and the layout both come from a device.

use super::sys::{V4L2_PIX_FMT_NV12, V4L2_PIX_FMT_YUV420, V4L2_PIX_FMT_YUYV};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// Packed 4:2:2, `Y0 U Y1 V`: what nearly every USB webcam offers uncompressed.
    Yuyv,
    /// Y plane, then one plane of interleaved U/V at half resolution.
    Nv12,
    /// Y plane, then U, then V (V4L2's `YU12`).
    I420,
}

impl PixelFormat {
    /// Preference when a camera offers several: I420 needs only a copy, NV12 a
    /// de-interleave, YUYV also a vertical chroma average (and twice the USB bandwidth).
    pub const PREFERENCE: [PixelFormat; 3] =
        [PixelFormat::I420, PixelFormat::Nv12, PixelFormat::Yuyv];

    pub fn fourcc(self) -> u32 {
        match self {
            Self::Yuyv => V4L2_PIX_FMT_YUYV,
            Self::Nv12 => V4L2_PIX_FMT_NV12,
            Self::I420 => V4L2_PIX_FMT_YUV420,
        }
    }

    pub fn from_fourcc(code: u32) -> Option<Self> {
        Self::PREFERENCE.into_iter().find(|f| f.fourcc() == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Yuyv => "YUYV",
            Self::Nv12 => "NV12",
            Self::I420 => "YU12",
        }
    }

    /// The format to ask for among those a device offers.
    pub fn choose(offered: &[u32]) -> Option<Self> {
        Self::PREFERENCE
            .into_iter()
            .find(|f| offered.contains(&f.fourcc()))
    }

    /// The smallest row stride that holds one row of `width` pixels (and of its chroma).
    pub fn min_bytesperline(self, width: u32) -> usize {
        let cw = (width as usize).div_ceil(2);
        match self {
            Self::Yuyv => 4 * cw,
            Self::Nv12 | Self::I420 => 2 * cw,
        }
    }
}

impl std::fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A picture that does not fit the buffer it is supposed to be in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConvertError(pub String);

/// A single-buffer raw picture as a driver lays it out: every plane at the same
/// `bytesperline` (chroma planes of I420 at half of it), planes one after another, as
/// `linux/videodev2.h` defines for these formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelLayout {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub bytesperline: u32,
}

/// Where one plane lies in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plane {
    offset: usize,
    stride: usize,
    row_bytes: usize,
    rows: usize,
}

impl Plane {
    /// One past the last byte this plane needs (the last row needs no trailing padding).
    fn end(&self) -> usize {
        if self.rows == 0 {
            return self.offset;
        }
        self.offset + self.stride * (self.rows - 1) + self.row_bytes
    }

    fn row<'a>(&self, buf: &'a [u8], y: usize) -> Option<&'a [u8]> {
        let start = self.offset + self.stride * y;
        buf.get(start..start + self.row_bytes)
    }

    fn row_mut<'a>(&self, buf: &'a mut [u8], y: usize) -> Option<&'a mut [u8]> {
        let start = self.offset + self.stride * y;
        buf.get_mut(start..start + self.row_bytes)
    }
}

/// Pictures larger than this are not video from any device cambox drives; the bound keeps
/// every size computation far from overflow.
const MAX_DIMENSION: u32 = 16_384;

impl PixelLayout {
    /// Checks what a driver reported for a format. `bytesperline` 0 means "tightly packed"
    /// (some drivers say so for planar formats); `sizeimage` 0 means "not reported".
    pub fn from_driver(
        format: PixelFormat,
        width: u32,
        height: u32,
        bytesperline: u32,
        sizeimage: u32,
    ) -> Result<Self, String> {
        if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
            return Err(format!(
                "driver reported an unusable picture size {width}x{height}"
            ));
        }
        let min = format.min_bytesperline(width);
        let bytesperline = if bytesperline == 0 {
            min as u32
        } else {
            bytesperline
        };
        if (bytesperline as usize) < min || bytesperline > 4 * MAX_DIMENSION {
            return Err(format!(
                "driver reported {bytesperline} bytes per line for {width}x{height} {format}, which needs at least {min}"
            ));
        }
        let layout = Self {
            format,
            width,
            height,
            bytesperline,
        };
        if sizeimage != 0 && (sizeimage as usize) < layout.min_len() {
            return Err(format!(
                "driver's buffer size {sizeimage} is too small for {width}x{height} {format} at {bytesperline} bytes per line (needs {})",
                layout.min_len()
            ));
        }
        Ok(layout)
    }

    /// Tightly packed: what the crate's `RawFrame` holds.
    pub fn packed_i420(width: u32, height: u32) -> Self {
        Self {
            format: PixelFormat::I420,
            width,
            height,
            bytesperline: PixelFormat::I420.min_bytesperline(width) as u32,
        }
    }

    fn chroma_size(&self) -> (usize, usize) {
        (
            (self.width as usize).div_ceil(2),
            (self.height as usize).div_ceil(2),
        )
    }

    fn planes(&self) -> Vec<Plane> {
        let (w, h) = (self.width as usize, self.height as usize);
        let (cw, ch) = self.chroma_size();
        let bpl = self.bytesperline as usize;
        let luma = Plane {
            offset: 0,
            stride: bpl,
            row_bytes: w,
            rows: h,
        };
        match self.format {
            PixelFormat::Yuyv => vec![Plane {
                row_bytes: 4 * cw,
                ..luma
            }],
            PixelFormat::Nv12 => vec![
                luma,
                Plane {
                    offset: bpl * h,
                    stride: bpl,
                    row_bytes: 2 * cw,
                    rows: ch,
                },
            ],
            PixelFormat::I420 => {
                let cstride = bpl / 2;
                let u = Plane {
                    offset: bpl * h,
                    stride: cstride,
                    row_bytes: cw,
                    rows: ch,
                };
                let v = Plane {
                    offset: u.offset + cstride * ch,
                    ..u
                };
                vec![luma, u, v]
            }
        }
    }

    /// The fewest bytes a buffer in this layout can have.
    pub fn min_len(&self) -> usize {
        self.planes().iter().map(Plane::end).max().unwrap_or(0)
    }

    fn check_len(&self, got: usize) -> Result<(), ConvertError> {
        let need = self.min_len();
        if got < need {
            return Err(ConvertError(format!(
                "{} frame of {got} bytes is too short: {}x{} at {} bytes per line needs {need}",
                self.format, self.width, self.height, self.bytesperline
            )));
        }
        Ok(())
    }

    /// Converts one picture in this layout to packed I420.
    pub fn to_i420(&self, src: &[u8]) -> Result<Vec<u8>, ConvertError> {
        self.check_len(src.len())?;
        let short = || ConvertError(format!("{} frame ends inside a row", self.format));
        let (w, h) = (self.width as usize, self.height as usize);
        let (cw, ch) = self.chroma_size();
        let mut out = Vec::with_capacity(w * h + 2 * cw * ch);
        let planes = self.planes();
        match self.format {
            PixelFormat::I420 => {
                for plane in &planes {
                    for y in 0..plane.rows {
                        out.extend_from_slice(plane.row(src, y).ok_or_else(short)?);
                    }
                }
            }
            PixelFormat::Nv12 => {
                let (luma, uv) = (planes[0], planes[1]);
                for y in 0..h {
                    out.extend_from_slice(luma.row(src, y).ok_or_else(short)?);
                }
                let mut v = Vec::with_capacity(cw * ch);
                for y in 0..ch {
                    let row = uv.row(src, y).ok_or_else(short)?;
                    for pair in row.chunks_exact(2) {
                        out.push(pair[0]);
                        v.push(pair[1]);
                    }
                }
                out.extend_from_slice(&v);
            }
            PixelFormat::Yuyv => {
                let packed = planes[0];
                for y in 0..h {
                    let row = packed.row(src, y).ok_or_else(short)?;
                    out.extend(row.iter().step_by(2).take(w));
                }
                // 4:2:2 to 4:2:0: average each pair of rows (the last row of an odd height
                // stands alone).
                for chroma in [1usize, 3] {
                    for cy in 0..ch {
                        let top = packed.row(src, 2 * cy).ok_or_else(short)?;
                        let bottom = packed.row(src, (2 * cy + 1).min(h - 1)).ok_or_else(short)?;
                        for x in 0..cw {
                            let i = 4 * x + chroma;
                            let a = u16::from(top[i]);
                            let b = u16::from(bottom[i]);
                            out.push((a + b).div_ceil(2) as u8);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Writes a packed I420 picture of `width`x`height` into a buffer in this (I420) layout,
    /// which may be larger because the driver pads the size to its block size. The padding
    /// repeats the last column and row, which costs the encoder almost no bits.
    /// Returns the number of bytes used.
    pub fn fill_from_i420(
        &self,
        width: u32,
        height: u32,
        src: &[u8],
        dst: &mut [u8],
    ) -> Result<usize, ConvertError> {
        if self.format != PixelFormat::I420 {
            return Err(ConvertError(format!(
                "cannot write I420 into a {} buffer",
                self.format
            )));
        }
        if width == 0 || height == 0 || width > self.width || height > self.height {
            return Err(ConvertError(format!(
                "a {width}x{height} picture does not fit the {}x{} buffer",
                self.width, self.height
            )));
        }
        let from = Self::packed_i420(width, height);
        from.check_len(src.len())?;
        self.check_len(dst.len())?;
        let short = || ConvertError("buffer ends inside a row".into());
        for (sp, dp) in from.planes().iter().zip(self.planes()) {
            for y in 0..dp.rows {
                let src_row = sp.row(src, y.min(sp.rows - 1)).ok_or_else(short)?;
                let dst_row = dp.row_mut(dst, y).ok_or_else(short)?;
                let (visible, pad) = dst_row.split_at_mut(sp.row_bytes);
                visible.copy_from_slice(src_row);
                if let Some(&last) = src_row.last() {
                    pad.fill(last);
                }
            }
        }
        Ok(self.min_len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(format: PixelFormat, w: u32, h: u32, bpl: u32) -> PixelLayout {
        PixelLayout::from_driver(format, w, h, bpl, 0).unwrap()
    }

    #[test]
    fn v4l2_yuyv_to_i420_averages_chroma_rows_and_skips_padding() {
        // 4x2 picture, 10 bytes per line (2 bytes of padding, 0xEE).
        #[rustfmt::skip]
        let src = [
            // Y0  U   Y1  V    Y2  U   Y3  V    pad
            10, 100, 11, 200,  12, 50, 13, 60,  0xEE, 0xEE,
            20, 102, 21, 201,  22, 51, 23, 61,  0xEE, 0xEE,
        ];
        let out = layout(PixelFormat::Yuyv, 4, 2, 10).to_i420(&src).unwrap();
        #[rustfmt::skip]
        let want = [
            10, 11, 12, 13,
            20, 21, 22, 23,
            101, 51,   // U: (100+102+1)/2, (50+51+1)/2
            201, 61,   // V: (200+201+1)/2, (60+61+1)/2
        ];
        assert_eq!(out, want);
    }

    #[test]
    fn v4l2_yuyv_odd_height_keeps_the_last_chroma_row() {
        let src = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        // 2x3, packed (4 bytes per line).
        let out = layout(PixelFormat::Yuyv, 2, 3, 0).to_i420(&src).unwrap();
        // Y: 1 3 / 5 7 / 9 11. U rows: (2+6+1)/2=4, then 10 alone. V: (4+8+1)/2=6, 12.
        assert_eq!(out, [1, 3, 5, 7, 9, 11, 4, 10, 6, 12]);
    }

    #[test]
    fn v4l2_nv12_to_i420_deinterleaves_with_stride() {
        // 4x2, 6 bytes per line: Y plane 2 rows, UV plane 1 row.
        #[rustfmt::skip]
        let src = [
            1, 2, 3, 4, 0xEE, 0xEE,
            5, 6, 7, 8, 0xEE, 0xEE,
            30, 40, 31, 41, 0xEE, 0xEE,
        ];
        let out = layout(PixelFormat::Nv12, 4, 2, 6).to_i420(&src).unwrap();
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8, 30, 31, 40, 41]);
    }

    #[test]
    fn v4l2_strided_i420_to_packed() {
        // 4x2 with 8 bytes per line: chroma planes at stride 4.
        #[rustfmt::skip]
        let src = [
            1, 2, 3, 4, 0xEE, 0xEE, 0xEE, 0xEE,
            5, 6, 7, 8, 0xEE, 0xEE, 0xEE, 0xEE,
            50, 51, 0xEE, 0xEE,
            60, 61, 0xEE, 0xEE,
        ];
        let out = layout(PixelFormat::I420, 4, 2, 8).to_i420(&src).unwrap();
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8, 50, 51, 60, 61]);
        // The last row of the last plane needs no padding after it.
        assert_eq!(out.len(), 12);
        assert!(layout(PixelFormat::I420, 4, 2, 8)
            .to_i420(&src[..22])
            .is_ok());
    }

    #[test]
    fn v4l2_short_frames_are_errors_not_panics() {
        let l = layout(PixelFormat::Yuyv, 4, 2, 10);
        for len in [0, 1, 17] {
            let err = l.to_i420(&vec![0; len]).unwrap_err();
            assert!(err.0.contains("too short"), "{err}");
        }
        assert!(layout(PixelFormat::Nv12, 4, 2, 6)
            .to_i420(&[0; 15])
            .is_err());
        assert!(layout(PixelFormat::I420, 4, 2, 8)
            .to_i420(&[0; 21])
            .is_err());
    }

    #[test]
    fn v4l2_driver_layouts_are_checked() {
        assert!(PixelLayout::from_driver(PixelFormat::Yuyv, 640, 480, 1000, 0).is_err());
        assert!(PixelLayout::from_driver(PixelFormat::Yuyv, 0, 480, 0, 0).is_err());
        assert!(PixelLayout::from_driver(PixelFormat::I420, 640, 480, 640, 1000).is_err());
        let l =
            PixelLayout::from_driver(PixelFormat::I420, 640, 480, 0, 640 * 480 * 3 / 2).unwrap();
        assert_eq!(l.bytesperline, 640);
        assert_eq!(l.min_len(), 640 * 480 * 3 / 2);
    }

    #[test]
    fn v4l2_choose_prefers_least_conversion() {
        let mjpg = super::super::sys::fourcc(b"MJPG");
        assert_eq!(PixelFormat::choose(&[mjpg]), None);
        assert_eq!(
            PixelFormat::choose(&[mjpg, V4L2_PIX_FMT_YUYV]),
            Some(PixelFormat::Yuyv)
        );
        assert_eq!(
            PixelFormat::choose(&[V4L2_PIX_FMT_YUYV, V4L2_PIX_FMT_NV12, V4L2_PIX_FMT_YUV420]),
            Some(PixelFormat::I420)
        );
    }

    #[test]
    fn v4l2_fill_pads_by_repeating_the_edge() {
        // A 2x2 picture into a 4x4 buffer at 4 bytes per line (chroma 2x2 at stride 2).
        let src = [1, 2, 3, 4, 50, 60];
        let l = layout(PixelFormat::I420, 4, 4, 4);
        let mut dst = vec![0xEE; l.min_len()];
        let used = l.fill_from_i420(2, 2, &src, &mut dst).unwrap();
        assert_eq!(used, 24);
        #[rustfmt::skip]
        let want = [
            1, 2, 2, 2,
            3, 4, 4, 4,
            3, 4, 4, 4,
            3, 4, 4, 4,
            50, 50,
            50, 50,
            60, 60,
            60, 60,
        ];
        assert_eq!(dst, want);
    }

    #[test]
    fn v4l2_fill_respects_stride_and_refuses_misfits() {
        let src: Vec<u8> = (1..=6).collect(); // 2x2 I420
        let l = layout(PixelFormat::I420, 2, 2, 8);
        let mut dst = vec![0xEE; l.min_len()];
        l.fill_from_i420(2, 2, &src, &mut dst).unwrap();
        assert_eq!(
            &dst[..10],
            &[1, 2, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 3, 4]
        );
        assert_eq!(dst[16], 5);
        assert_eq!(dst[20], 6);
        assert!(l.fill_from_i420(4, 2, &[0; 12], &mut dst).is_err());
        assert!(l.fill_from_i420(2, 2, &src[..5], &mut dst).is_err());
        assert!(l.fill_from_i420(2, 2, &src, &mut [0; 4]).is_err());
    }
}
