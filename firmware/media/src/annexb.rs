//! H.264 Annex-B byte streams: NAL units between start codes, access units, parameter sets.
//!
//! Every byte here may come from a file or the network, so nothing panics: malformed input
//! is an [`AnnexBError`] that says what was wrong.

use bytes::Bytes;

pub const NAL_SLICE: u8 = 1;
pub const NAL_IDR: u8 = 5;
pub const NAL_SEI: u8 = 6;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
pub const NAL_AUD: u8 = 9;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnnexBError {
    #[error("not an H.264 Annex-B stream: no start code (00 00 01) in the first {0} bytes")]
    NoStartCode(usize),
    #[error("invalid NAL unit: {0}")]
    InvalidNal(String),
    #[error("keyframe without SPS/PPS: the stream must carry parameter sets before its first IDR")]
    NoParameterSets,
    #[error("cannot read SPS: {0}")]
    BadSps(String),
}

/// The NAL unit type (low 5 bits of the first byte).
pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1F)
}

/// Splits an Annex-B buffer into NAL units (without start codes).
pub fn nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&s| s - 3)
        .chain(std::iter::once(data.len()))
        .collect();
    starts.into_iter().zip(ends).filter_map(move |(s, e)| {
        // Trailing zeros belong to the next 4-byte start code, not to this NAL.
        let mut end = e;
        while end > s && data[end - 1] == 0 {
            end -= 1;
        }
        (end > s).then(|| &data[s..end])
    })
}

/// Checks the NAL header: forbidden bit clear, a type H.264 defines.
pub fn check_nal(nal: &[u8]) -> Result<(), AnnexBError> {
    let first = *nal
        .first()
        .ok_or_else(|| AnnexBError::InvalidNal("empty NAL unit".into()))?;
    if first & 0x80 != 0 {
        return Err(AnnexBError::InvalidNal(format!(
            "forbidden bit set in header byte {first:#04x}"
        )));
    }
    if nal_type(nal) == 0 {
        return Err(AnnexBError::InvalidNal(
            "NAL unit type 0 is unspecified".into(),
        ));
    }
    Ok(())
}

fn is_vcl(t: u8) -> bool {
    (1..=5).contains(&t)
}

/// True when a slice NAL starts a new picture (first_mb_in_slice == 0, coded as a single 1 bit).
fn starts_picture(nal: &[u8]) -> bool {
    nal.get(1).is_some_and(|b| b & 0x80 != 0)
}

/// Cuts a byte stream into access units (one picture each), fed in arbitrary chunks.
#[derive(Debug, Default)]
pub struct AccessUnitSplitter {
    buf: Vec<u8>,
    /// NALs of the access unit being assembled.
    current: Vec<Vec<u8>>,
    current_has_vcl: bool,
    seen_start_code: bool,
}

impl AccessUnitSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes buffered but not yet parsed (used to detect a stream that is not Annex-B).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    pub fn seen_start_code(&self) -> bool {
        self.seen_start_code
    }

    /// Adds bytes and returns the access units they completed.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>, AnnexBError> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        // Complete NALs are those followed by another start code.
        let Some(first) = find_start(&self.buf, 0) else {
            return Ok(out);
        };
        self.seen_start_code = true;
        let mut pos = first;
        while let Some(next) = find_start(&self.buf, pos + 3) {
            let nal = trim_zeros(&self.buf[pos + 3..next]).to_vec();
            self.add_nal(nal, &mut out)?;
            pos = next;
        }
        self.buf.drain(..pos);
        Ok(out)
    }

    /// Flushes the last access unit at end of stream.
    pub fn finish(&mut self) -> Result<Vec<Vec<u8>>, AnnexBError> {
        let mut out = Vec::new();
        if let Some(pos) = find_start(&self.buf, 0) {
            let nal = trim_zeros(&self.buf[pos + 3..]).to_vec();
            self.add_nal(nal, &mut out)?;
        }
        self.buf.clear();
        if !self.current.is_empty() {
            out.push(join_au(std::mem::take(&mut self.current)));
        }
        self.current_has_vcl = false;
        Ok(out)
    }

    fn add_nal(&mut self, nal: Vec<u8>, out: &mut Vec<Vec<u8>>) -> Result<(), AnnexBError> {
        if nal.is_empty() {
            return Ok(());
        }
        check_nal(&nal)?;
        let t = nal_type(&nal);
        let boundary = self.current_has_vcl
            && (matches!(t, NAL_AUD | NAL_SPS | NAL_PPS | NAL_SEI)
                || (is_vcl(t) && starts_picture(&nal)));
        if boundary {
            out.push(join_au(std::mem::take(&mut self.current)));
            self.current_has_vcl = false;
        }
        self.current_has_vcl |= is_vcl(t);
        self.current.push(nal);
        Ok(())
    }
}

fn find_start(buf: &[u8], from: usize) -> Option<usize> {
    if buf.len() < 3 {
        return None;
    }
    (from..buf.len() - 2).find(|&i| buf[i] == 0 && buf[i + 1] == 0 && buf[i + 2] == 1)
}

fn trim_zeros(nal: &[u8]) -> &[u8] {
    let mut end = nal.len();
    while end > 0 && nal[end - 1] == 0 {
        end -= 1;
    }
    &nal[..end]
}

fn join_au(nals: Vec<Vec<u8>>) -> Vec<u8> {
    let mut au = Vec::with_capacity(nals.iter().map(|n| n.len() + 4).sum());
    for nal in nals {
        au.extend_from_slice(&[0, 0, 0, 1]);
        au.extend_from_slice(&nal);
    }
    au
}

/// Remembers the latest SPS and PPS and puts them before every IDR that lacks them, so a
/// viewer joining at any keyframe can start decoding.
#[derive(Debug, Default, Clone)]
pub struct ParameterSets {
    pub sps: Option<Bytes>,
    pub pps: Option<Bytes>,
}

impl ParameterSets {
    /// Returns the access unit, completed with parameter sets if it is a keyframe, and
    /// whether it is a keyframe (contains an IDR slice).
    pub fn complete(&mut self, au: &[u8]) -> Result<(Bytes, bool), AnnexBError> {
        let (mut has_sps, mut has_pps, mut idr) = (false, false, false);
        for nal in nal_units(au) {
            check_nal(nal)?;
            match nal_type(nal) {
                NAL_SPS => {
                    has_sps = true;
                    self.sps = Some(Bytes::copy_from_slice(nal));
                }
                NAL_PPS => {
                    has_pps = true;
                    self.pps = Some(Bytes::copy_from_slice(nal));
                }
                NAL_IDR => idr = true,
                _ => {}
            }
        }
        if !idr || (has_sps && has_pps) {
            return Ok((Bytes::copy_from_slice(au), idr));
        }
        let (Some(sps), Some(pps)) = (&self.sps, &self.pps) else {
            return Err(AnnexBError::NoParameterSets);
        };
        let mut out = Vec::with_capacity(au.len() + sps.len() + pps.len() + 8);
        if !has_sps {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(sps);
        }
        if !has_pps {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(pps);
        }
        out.extend_from_slice(au);
        Ok((Bytes::from(out), true))
    }
}

/// What a decoder must be told before the first picture: parameter sets and picture size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    pub sps: Bytes,
    pub pps: Bytes,
    pub width: u32,
    pub height: u32,
}

impl AvcConfig {
    /// Finds SPS and PPS in a keyframe access unit.
    pub fn from_keyframe(au: &[u8]) -> Result<Self, AnnexBError> {
        let (mut sps, mut pps) = (None, None);
        for nal in nal_units(au) {
            match nal_type(nal) {
                NAL_SPS => sps = Some(Bytes::copy_from_slice(nal)),
                NAL_PPS => pps = Some(Bytes::copy_from_slice(nal)),
                _ => {}
            }
        }
        let (Some(sps), Some(pps)) = (sps, pps) else {
            return Err(AnnexBError::NoParameterSets);
        };
        let (width, height) = sps_size(&sps)?;
        Ok(Self {
            sps,
            pps,
            width,
            height,
        })
    }

    /// RFC 6381 codec string, e.g. `avc1.42c01f`, for MSE and SDP.
    pub fn codec_string(&self) -> String {
        let b = |i: usize| self.sps.get(i).copied().unwrap_or(0);
        format!("avc1.{:02x}{:02x}{:02x}", b(1), b(2), b(3))
    }
}

/// Removes emulation-prevention bytes (00 00 03 -> 00 00).
pub fn to_rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Reads exp-Golomb coded fields, MSB first, from an RBSP.
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn bit(&mut self) -> Result<u32, AnnexBError> {
        let byte = self
            .data
            .get(self.pos / 8)
            .ok_or_else(|| AnnexBError::BadSps("ends early".into()))?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(bit as u32)
    }

    fn bits(&mut self, n: u32) -> Result<u32, AnnexBError> {
        (0..n).try_fold(0, |acc, _| Ok((acc << 1) | self.bit()?))
    }

    fn ue(&mut self) -> Result<u32, AnnexBError> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(AnnexBError::BadSps("exp-Golomb code too long".into()));
            }
        }
        Ok(((1u64 << zeros) - 1 + self.bits(zeros)? as u64) as u32)
    }

    fn se(&mut self) -> Result<i32, AnnexBError> {
        let k = self.ue()? as i64;
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) } as i32)
    }
}

/// Picture size coded in an SPS NAL unit (header byte included), cropping applied.
pub fn sps_size(sps: &[u8]) -> Result<(u32, u32), AnnexBError> {
    let rbsp = to_rbsp(sps.get(1..).unwrap_or_default());
    let mut r = BitReader {
        data: &rbsp,
        pos: 0,
    };
    let profile = r.bits(8)?;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // sps id
    let mut chroma_format = 1;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format = r.ue()?;
        if chroma_format == 3 {
            r.bit()?;
        }
        r.ue()?;
        r.ue()?;
        r.bit()?;
        if r.bit()? == 1 {
            for i in 0..if chroma_format == 3 { 12 } else { 8 } {
                if r.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i32, 8i32);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + r.se()? + 256) % 256;
                        }
                        last = if next == 0 { last } else { next };
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            for _ in 0..r.ue()?.min(255) {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?;
    let width_mbs = r.ue()? as u64 + 1;
    let height_units = r.ue()? as u64 + 1;
    let frame_mbs_only = r.bit()? == 1;
    if !frame_mbs_only {
        r.bit()?;
    }
    r.bit()?;
    let mbs_h = if frame_mbs_only { 1 } else { 2 };
    let mut w = width_mbs * 16;
    let mut h = height_units * 16 * mbs_h;
    if r.bit()? == 1 {
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        // Crop units for 4:2:0; 4:4:4 and monochrome crop in single pixels horizontally.
        let unit_x = if chroma_format == 1 || chroma_format == 2 {
            2
        } else {
            1
        };
        let unit_y = if chroma_format == 1 { 2 } else { 1 } * mbs_h;
        w = w.saturating_sub(unit_x * (left as u64 + right as u64));
        h = h.saturating_sub(unit_y * (top as u64 + bottom as u64));
    }
    if w == 0 || h == 0 || w > 16384 || h > 16384 {
        return Err(AnnexBError::BadSps(format!("implausible size {w}x{h}")));
    }
    Ok((w as u32, h as u32))
}

/// An access unit as an MP4 sample: 4-byte lengths instead of start codes, parameter sets
/// and delimiters left out (they live in the `avcC` box).
pub fn to_length_prefixed(au: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(au.len());
    for nal in nal_units(au) {
        if matches!(nal_type(nal), NAL_SPS | NAL_PPS | NAL_AUD) {
            continue;
        }
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

/// The reverse of [`to_length_prefixed`], for samples read back from MP4.
pub fn from_length_prefixed(sample: &[u8]) -> Result<Vec<u8>, AnnexBError> {
    let mut out = Vec::with_capacity(sample.len() + 16);
    let mut rest = sample;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| AnnexBError::InvalidNal("truncated NAL length".into()))?;
        let len = u32::from_be_bytes(*len) as usize;
        let nal = tail.get(..len).ok_or_else(|| {
            AnnexBError::InvalidNal(format!("NAL length {len} exceeds the sample"))
        })?;
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
        rest = &tail[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Parameter sets as bytes; their content does not matter to the splitter.
    const SPS: &[u8] = &[
        0x67, 0x42, 0xc0, 0x1f, 0x8c, 0x8d, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x6c, 0x80, 0x00, 0x00,
        0x03, 0x00, 0x80, 0x00, 0x00, 0x1e, 0x07, 0x8c, 0x18, 0xcb,
    ];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

    fn au(nals: &[&[u8]]) -> Vec<u8> {
        join_au(nals.iter().map(|n| n.to_vec()).collect())
    }

    #[test]
    fn splits_nals_with_3_and_4_byte_start_codes() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4,
        ];
        let nals: Vec<&[u8]> = nal_units(&data).collect();
        assert_eq!(
            nals,
            vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4][..]]
        );
    }

    #[test]
    fn splitter_cuts_at_picture_starts_across_chunks() {
        let idr = [0x65, 0x88, 1, 2];
        let p1 = [0x41, 0x9a, 5];
        let p2 = [0x41, 0x9a, 6];
        let stream = [au(&[SPS, PPS, &idr]), au(&[&p1]), au(&[&p2])].concat();
        let mut s = AccessUnitSplitter::new();
        let mut aus = Vec::new();
        for chunk in stream.chunks(5) {
            aus.extend(s.push(chunk).unwrap());
        }
        aus.extend(s.finish().unwrap());
        assert_eq!(aus.len(), 3);
        assert_eq!(aus[0], au(&[SPS, PPS, &idr]));
        assert_eq!(aus[2], au(&[&p2]));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut s = AccessUnitSplitter::new();
        assert!(s.push(b"this is plain text, not video").unwrap().is_empty());
        assert!(!s.seen_start_code());
        let mut s = AccessUnitSplitter::new();
        assert!(s.push(&[0, 0, 1, 0x80, 1, 0, 0, 1, 0x65]).is_err());
        // Pseudo-random bytes never panic, whatever they contain.
        let mut x = 0x1234_5678u32;
        let noise: Vec<u8> = (0..20_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 7) as u8 // many zeros, so many start codes
            })
            .collect();
        let mut s = AccessUnitSplitter::new();
        let _ = s.push(&noise).and_then(|_| s.finish());
        let mut ps = ParameterSets::default();
        let _ = ps.complete(&noise);
        let _ = AvcConfig::from_keyframe(&noise);
    }

    #[test]
    fn parameter_sets_are_put_before_every_idr() {
        let mut ps = ParameterSets::default();
        let first = au(&[SPS, PPS, &[0x65, 0x88]]);
        let (out, key) = ps.complete(&first).unwrap();
        assert!(key);
        assert_eq!(&out[..], &first[..]);
        let (out, key) = ps.complete(&au(&[&[0x41, 0x9a]])).unwrap();
        assert!(!key);
        assert_eq!(nal_units(&out).count(), 1);
        let (out, key) = ps.complete(&au(&[&[0x65, 0x88, 7]])).unwrap();
        assert!(key);
        let types: Vec<u8> = nal_units(&out).map(nal_type).collect();
        assert_eq!(types, vec![NAL_SPS, NAL_PPS, NAL_IDR]);
        let mut fresh = ParameterSets::default();
        assert_eq!(
            fresh.complete(&au(&[&[0x65, 0x88]])).unwrap_err(),
            AnnexBError::NoParameterSets
        );
    }

    #[test]
    fn reads_size_and_codec_from_an_encoders_sps() {
        use crate::encode::openh264::OpenH264Encoder;
        use crate::encode::{VideoEncoder, VideoEncoderSettings};
        use crate::frame::{FrameRate, RawFrame, VideoFormat};
        for (w, h) in [(1280u32, 720u32), (640, 360), (320, 180)] {
            let format = VideoFormat {
                width: w,
                height: h,
                rate: FrameRate::per_second(30),
            };
            let mut enc = OpenH264Encoder::new(VideoEncoderSettings {
                format,
                bitrate: 500_000,
                keyframe_interval: 30,
            })
            .unwrap();
            let frame = RawFrame {
                number: 0,
                capture_us: 0,
                width: w,
                height: h,
                data: vec![100; RawFrame::i420_len(w, h)],
            };
            let out = enc.encode(&frame, true).unwrap().unwrap();
            assert!(out.keyframe);
            let cfg = AvcConfig::from_keyframe(&out.data).unwrap();
            assert_eq!((cfg.width, cfg.height), (w, h));
            assert!(
                cfg.codec_string().starts_with("avc1.42"),
                "{}",
                cfg.codec_string()
            );
        }
        assert!(sps_size(&[0x67]).is_err());
        assert!(sps_size(&[0x67, 0x42, 0xc0]).is_err());
    }

    #[test]
    fn length_prefixed_round_trip_drops_parameter_sets() {
        let a = au(&[SPS, PPS, &[0x65, 0x88, 0, 0, 3, 1]]);
        let sample = to_length_prefixed(&a);
        assert_eq!(sample, vec![0, 0, 0, 6, 0x65, 0x88, 0, 0, 3, 1]);
        assert_eq!(
            from_length_prefixed(&sample).unwrap(),
            au(&[&[0x65, 0x88, 0, 0, 3, 1]])
        );
        assert!(from_length_prefixed(&[0, 0, 0, 9, 1]).is_err());
        assert!(from_length_prefixed(&[0, 0]).is_err());
    }
}
