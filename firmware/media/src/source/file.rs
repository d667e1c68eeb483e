//! Video from a file or standard input: Annex-B H.264 is passed through untouched, Y4M raw
//! video is handed to the encoder. Frames are paced at the file's frame rate, like a camera.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use super::pacer::{Pacer, Pacing};
use super::{SourceError, VideoSource};
use crate::annexb::{AccessUnitSplitter, AvcConfig, ParameterSets};
use crate::frame::{Captured, EncodedFrame, FrameRate, VideoFormat};
use crate::y4m::Y4mReader;

/// Where the bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileInput {
    Path(PathBuf),
    Stdin,
}

impl FileInput {
    fn name(&self) -> String {
        match self {
            FileInput::Path(p) => p.display().to_string(),
            FileInput::Stdin => "standard input".into(),
        }
    }

    fn open(&self) -> Result<Box<dyn BufRead + Send>, SourceError> {
        match self {
            FileInput::Path(p) => {
                let f = std::fs::File::open(p).map_err(|source| SourceError::Open {
                    what: p.display().to_string(),
                    source,
                })?;
                Ok(Box::new(BufReader::with_capacity(1 << 16, f)))
            }
            FileInput::Stdin => Ok(Box::new(BufReader::with_capacity(
                1 << 16,
                std::io::stdin(),
            ))),
        }
    }
}

/// An H.264 stream with no access unit to start from within this many bytes is refused.
const MAX_BYTES_BEFORE_KEYFRAME: usize = 8 << 20;

enum Reader {
    Y4m(Y4mReader<Box<dyn BufRead + Send>>),
    AnnexB {
        input: Box<dyn BufRead + Send>,
        splitter: AccessUnitSplitter,
        params: ParameterSets,
        queue: std::collections::VecDeque<Vec<u8>>,
        eof: bool,
    },
}

pub struct FileSource {
    input: FileInput,
    looping: bool,
    format: VideoFormat,
    pacer: Pacer,
    start_us: u64,
    next: u64,
    reader: Reader,
    kind: &'static str,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("input", &self.input)
            .field("format", &self.format)
            .finish()
    }
}

impl FileSource {
    /// `h264_rate` is the frame rate for raw H.264, which carries no timing of its own;
    /// Y4M files say their own rate.
    pub fn open(
        input: FileInput,
        looping: bool,
        h264_rate: FrameRate,
        pacing: Pacing,
        start_us: u64,
    ) -> Result<Self, SourceError> {
        if looping && input == FileInput::Stdin {
            return Err(SourceError::Format {
                what: input.name(),
                reason: "standard input cannot be looped; drop --loop or give a file".into(),
            });
        }
        let (reader, format, kind) = open_reader(&input, h264_rate)?;
        Ok(Self {
            input,
            looping,
            format,
            pacer: Pacer::new(pacing, u64::MAX),
            start_us,
            next: 0,
            reader,
            kind,
        })
    }

    fn read_next(&mut self) -> Result<Option<Captured>, SourceError> {
        let what = self.input.name();
        match &mut self.reader {
            Reader::Y4m(r) => Ok(r
                .next_frame()
                .map_err(|e| SourceError::Format {
                    what,
                    reason: e.to_string(),
                })?
                .map(Captured::Raw)),
            Reader::AnnexB {
                input,
                splitter,
                params,
                queue,
                eof,
            } => {
                let Some(au) = next_au(input, splitter, queue, eof, &what)? else {
                    return Ok(None);
                };
                let (data, keyframe) = params.complete(&au).map_err(|e| SourceError::Format {
                    what,
                    reason: e.to_string(),
                })?;
                Ok(Some(Captured::Encoded(EncodedFrame {
                    number: 0,
                    capture_us: 0,
                    keyframe,
                    data,
                })))
            }
        }
    }
}

fn next_au(
    input: &mut Box<dyn BufRead + Send>,
    splitter: &mut AccessUnitSplitter,
    queue: &mut std::collections::VecDeque<Vec<u8>>,
    eof: &mut bool,
    what: &str,
) -> Result<Option<Vec<u8>>, SourceError> {
    let fmt_err = |e: crate::annexb::AnnexBError| SourceError::Format {
        what: what.into(),
        reason: e.to_string(),
    };
    while queue.is_empty() && !*eof {
        let mut chunk = vec![0u8; 1 << 16];
        let n = input.read(&mut chunk).map_err(|source| SourceError::Read {
            what: what.into(),
            source,
        })?;
        if n == 0 {
            *eof = true;
            queue.extend(splitter.finish().map_err(fmt_err)?);
        } else {
            queue.extend(splitter.push(&chunk[..n]).map_err(fmt_err)?);
            if !splitter.seen_start_code() && splitter.pending() > 4096 {
                return Err(fmt_err(crate::annexb::AnnexBError::NoStartCode(4096)));
            }
        }
    }
    Ok(queue.pop_front())
}

fn open_reader(
    input: &FileInput,
    h264_rate: FrameRate,
) -> Result<(Reader, VideoFormat, &'static str), SourceError> {
    let what = input.name();
    let mut stream = input.open()?;
    let head = stream.fill_buf().map_err(|source| SourceError::Read {
        what: what.clone(),
        source,
    })?;
    if head.is_empty() {
        return Err(SourceError::Format {
            what,
            reason: "is empty".into(),
        });
    }
    if head.starts_with(b"YUV4MPEG2") {
        let r = Y4mReader::new(stream).map_err(|e| SourceError::Format {
            what,
            reason: e.to_string(),
        })?;
        let format = r.format();
        return Ok((Reader::Y4m(r), format, "y4m"));
    }
    // H.264: find the first keyframe, learn the picture size from its SPS, and start there.
    let mut splitter = AccessUnitSplitter::new();
    let mut queue = std::collections::VecDeque::new();
    let mut eof = false;
    let mut skipped = 0usize;
    loop {
        let Some(au) = next_au(&mut stream, &mut splitter, &mut queue, &mut eof, &what)? else {
            return Err(SourceError::Format {
                what,
                reason: if splitter.seen_start_code() {
                    "no keyframe (IDR with SPS and PPS) found: the H.264 stream is truncated or damaged".into()
                } else {
                    "not H.264 Annex-B (no start code) and not Y4M (no YUV4MPEG2 header)".into()
                },
            });
        };
        if let Ok(cfg) = AvcConfig::from_keyframe(&au) {
            queue.push_front(au);
            let format = VideoFormat {
                width: cfg.width,
                height: cfg.height,
                rate: h264_rate,
            };
            let reader = Reader::AnnexB {
                input: stream,
                splitter,
                params: ParameterSets::default(),
                queue,
                eof,
            };
            return Ok((reader, format, "h264"));
        }
        skipped += au.len();
        if skipped > MAX_BYTES_BEFORE_KEYFRAME {
            return Err(SourceError::Format {
                what,
                reason: format!(
                    "no keyframe with SPS/PPS in the first {} MiB",
                    MAX_BYTES_BEFORE_KEYFRAME >> 20
                ),
            });
        }
    }
}

impl VideoSource for FileSource {
    fn describe(&self) -> String {
        format!(
            "file {} ({} {}x{}@{}{})",
            self.input.name(),
            self.kind,
            self.format.width,
            self.format.height,
            self.format.rate,
            if self.looping { ", looped" } else { "" }
        )
    }

    fn format(&self) -> VideoFormat {
        self.format
    }

    fn is_encoded(&self) -> bool {
        matches!(self.reader, Reader::AnnexB { .. })
    }

    fn next_frame(&mut self) -> Result<Option<Captured>, SourceError> {
        let mut frame = match self.read_next()? {
            Some(f) => f,
            None if self.looping => {
                let (reader, _, _) = open_reader(&self.input, self.format.rate)?;
                self.reader = reader;
                match self.read_next()? {
                    Some(f) => f,
                    None => return Ok(None),
                }
            }
            None => return Ok(None),
        };
        let number = self.next;
        self.next += 1;
        let capture_us = self.start_us + self.format.rate.frame_offset_us(number);
        self.pacer.wait_until(capture_us);
        match &mut frame {
            Captured::Raw(f) => {
                f.number = number;
                f.capture_us = capture_us;
            }
            Captured::Encoded(f) => {
                f.number = number;
                f.capture_us = capture_us;
            }
        }
        Ok(Some(frame))
    }
}
