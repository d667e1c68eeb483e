//! YUV4MPEG2 (Y4M): raw video with a one-line header, the common currency of raw test clips.
//!
//! Only 4:2:0 8-bit is accepted, because that is what every H.264 encoder here takes; any
//! other colour space is refused with a message naming it.

use std::io::{BufRead, Read};

use crate::frame::{FrameRate, RawFrame, VideoFormat};

const MAGIC: &[u8] = b"YUV4MPEG2";
/// A header or frame line longer than this is not Y4M.
const MAX_LINE: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Y4mError {
    #[error("not a Y4M file: it does not start with 'YUV4MPEG2 '")]
    NotY4m,
    #[error("bad Y4M header: {0}")]
    BadHeader(String),
    #[error("Y4M colour space '{0}' is not supported: use 4:2:0 (C420jpeg, C420mpeg2, C420paldv or C420)")]
    Colourspace(String),
    #[error("bad Y4M frame {frame}: {reason}")]
    BadFrame { frame: u64, reason: String },
    #[error("Y4M read failed: {0}")]
    Io(String),
}

/// Parses the header line (without the trailing newline).
pub fn parse_header(line: &[u8]) -> Result<VideoFormat, Y4mError> {
    let text = std::str::from_utf8(line).map_err(|_| Y4mError::NotY4m)?;
    let mut parts = text.split(' ');
    if parts.next().map(str::as_bytes) != Some(MAGIC) {
        return Err(Y4mError::NotY4m);
    }
    let (mut width, mut height, mut rate) = (None, None, FrameRate::per_second(30));
    for p in parts.filter(|p| !p.is_empty()) {
        let (tag, value) = p.split_at(1);
        let bad = || Y4mError::BadHeader(format!("cannot read '{p}'"));
        match tag {
            "W" => width = Some(value.parse::<u32>().map_err(|_| bad())?),
            "H" => height = Some(value.parse::<u32>().map_err(|_| bad())?),
            "F" => {
                let (n, d) = value.split_once(':').ok_or_else(bad)?;
                rate = FrameRate {
                    num: n.parse().map_err(|_| bad())?,
                    den: d.parse().map_err(|_| bad())?,
                };
                if rate.num == 0 || rate.den == 0 {
                    return Err(bad());
                }
            }
            "I" if value != "p" && value != "?" => {
                return Err(Y4mError::BadHeader(format!(
                    "interlaced video ('{p}') is not supported"
                )))
            }
            "C" if !value.starts_with("420") || value.contains("p10") || value.contains("p12") => {
                return Err(Y4mError::Colourspace(value.into()))
            }
            _ => {}
        }
    }
    let width = width.ok_or_else(|| Y4mError::BadHeader("no width (W)".into()))?;
    let height = height.ok_or_else(|| Y4mError::BadHeader("no height (H)".into()))?;
    if width == 0 || height == 0 || width > 8192 || height > 8192 {
        return Err(Y4mError::BadHeader(format!(
            "size {width}x{height} out of range"
        )));
    }
    Ok(VideoFormat {
        width,
        height,
        rate,
    })
}

fn read_line<R: BufRead>(r: &mut R) -> Result<Option<Vec<u8>>, Y4mError> {
    let mut line = Vec::new();
    let n = r
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .map_err(|e| Y4mError::Io(e.to_string()))?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(Y4mError::BadHeader(
            "line too long or not terminated by a newline".into(),
        ));
    }
    line.pop();
    Ok(Some(line))
}

/// Reads Y4M frames from a byte stream.
#[derive(Debug)]
pub struct Y4mReader<R> {
    input: R,
    format: VideoFormat,
    frame: u64,
}

impl<R: BufRead> Y4mReader<R> {
    pub fn new(mut input: R) -> Result<Self, Y4mError> {
        let header = read_line(&mut input)?.ok_or(Y4mError::NotY4m)?;
        let format = parse_header(&header)?;
        Ok(Self {
            input,
            format,
            frame: 0,
        })
    }

    pub fn format(&self) -> VideoFormat {
        self.format
    }

    /// Next picture, numbered from 0 within this file; `None` at a clean end of file.
    /// `capture_us` is left 0 for the caller to stamp.
    pub fn next_frame(&mut self) -> Result<Option<RawFrame>, Y4mError> {
        let Some(line) = read_line(&mut self.input)? else {
            return Ok(None);
        };
        if !line.starts_with(b"FRAME") {
            return Err(Y4mError::BadFrame {
                frame: self.frame,
                reason: "missing FRAME marker".into(),
            });
        }
        let len = RawFrame::i420_len(self.format.width, self.format.height);
        let mut data = vec![0u8; len];
        self.input
            .read_exact(&mut data)
            .map_err(|e| Y4mError::BadFrame {
                frame: self.frame,
                reason: format!("truncated picture ({e}); expected {len} bytes"),
            })?;
        let number = self.frame;
        self.frame += 1;
        Ok(Some(RawFrame {
            number,
            capture_us: 0,
            width: self.format.width,
            height: self.format.height,
            data,
        }))
    }
}

/// Writes Y4M: used by tests and benchmarks to hand the same frames to other encoders.
pub fn write_header(out: &mut Vec<u8>, format: VideoFormat) {
    out.extend_from_slice(
        format!(
            "YUV4MPEG2 W{} H{} F{}:{} Ip A1:1 C420jpeg\n",
            format.width, format.height, format.rate.num, format.rate.den
        )
        .as_bytes(),
    );
}

pub fn write_frame(out: &mut Vec<u8>, frame: &RawFrame) {
    out.extend_from_slice(b"FRAME\n");
    out.extend_from_slice(&frame.data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes() {
        let format = VideoFormat {
            width: 64,
            height: 48,
            rate: FrameRate {
                num: 30000,
                den: 1001,
            },
        };
        let mut file = Vec::new();
        write_header(&mut file, format);
        for n in 0..3u8 {
            let frame = RawFrame {
                number: n as u64,
                capture_us: 0,
                width: 64,
                height: 48,
                data: vec![n; RawFrame::i420_len(64, 48)],
            };
            write_frame(&mut file, &frame);
        }
        let mut r = Y4mReader::new(&file[..]).unwrap();
        assert_eq!(r.format(), format);
        for n in 0..3u8 {
            let f = r.next_frame().unwrap().unwrap();
            assert_eq!((f.number, f.data[0]), (n as u64, n));
        }
        assert!(r.next_frame().unwrap().is_none());
    }

    #[test]
    fn bad_headers_are_named() {
        assert_eq!(
            Y4mReader::new(&b"hello\n"[..]).unwrap_err(),
            Y4mError::NotY4m
        );
        assert!(matches!(
            Y4mReader::new(&b"YUV4MPEG2 W64 F30:1\n"[..]).unwrap_err(),
            Y4mError::BadHeader(_)
        ));
        assert_eq!(
            Y4mReader::new(&b"YUV4MPEG2 W64 H48 C444\n"[..]).unwrap_err(),
            Y4mError::Colourspace("444".into())
        );
        assert!(Y4mReader::new(&b"YUV4MPEG2 W64 H48 F30:0\n"[..]).is_err());
        assert!(Y4mReader::new(&b"YUV4MPEG2 Wxx H48\n"[..]).is_err());
        assert!(Y4mReader::new(&[b'Y'; 5000][..]).is_err());
    }

    #[test]
    fn truncated_frame_is_an_error() {
        let mut file = b"YUV4MPEG2 W64 H48\nFRAME\n".to_vec();
        file.extend_from_slice(&[0u8; 100]);
        let mut r = Y4mReader::new(&file[..]).unwrap();
        assert!(matches!(
            r.next_frame(),
            Err(Y4mError::BadFrame { frame: 0, .. })
        ));
    }
}
