//! From captured frames to a sequence a viewer can join: the one place that encodes raw
//! pictures, decides when to start a group, and completes parameter sets. The live
//! pipeline and `record` both run frames through it.

use std::time::{Duration, Instant};

use super::{EncodeError, VideoEncoder};
use crate::annexb::{AnnexBError, ParameterSets};
use crate::frame::{Captured, EncodedFrame};

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("the source gave raw pictures but no encoder is open")]
    NoEncoder,
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("H.264 from the source: {0}")]
    Stream(#[from] AnnexBError),
}

/// What one captured frame turned into.
#[derive(Debug, Default)]
pub struct StageOutput {
    /// The access unit to publish, parameter sets before every IDR; `None` while a
    /// pipelined encoder still holds the picture, or before the first keyframe.
    pub frame: Option<EncodedFrame>,
    /// Frame numbers the source skipped just before this one (dropped at the source).
    pub skipped: u64,
    /// A frame thrown away because the sequence has not reached its first keyframe.
    pub before_first_keyframe: bool,
    /// How long the encoder took, for raw pictures.
    pub encode_time: Option<Duration>,
}

pub struct VideoStage {
    encoder: Option<Box<dyn VideoEncoder>>,
    gop: u64,
    params: ParameterSets,
    since_key: u64,
    last_number: Option<u64>,
    started: bool,
}

impl std::fmt::Debug for VideoStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoStage")
            .field("gop", &self.gop)
            .finish()
    }
}

impl VideoStage {
    /// `encoder` is `None` for sources that deliver H.264 already; `gop` is the number of
    /// frames between forced keyframes.
    pub fn new(encoder: Option<Box<dyn VideoEncoder>>, gop: u64) -> Self {
        Self {
            encoder,
            gop: gop.max(1),
            params: ParameterSets::default(),
            since_key: u64::MAX,
            last_number: None,
            started: false,
        }
    }

    pub fn encoder_name(&self) -> Option<String> {
        self.encoder.as_ref().map(|e| e.describe())
    }

    pub fn push(&mut self, captured: Captured) -> Result<StageOutput, StageError> {
        let mut out = StageOutput::default();
        let n = captured.number();
        if let Some(last) = self.last_number {
            out.skipped = n.saturating_sub(last + 1);
        }
        self.last_number = Some(n);
        let encoded = match captured {
            Captured::Encoded(e) => Some(e),
            Captured::Raw(raw) => {
                let enc = self.encoder.as_mut().ok_or(StageError::NoEncoder)?;
                // After a gap in time, start a new group: players (MSE above all) treat a
                // jump in timestamps as a discontinuity and wait for a keyframe.
                let force = self.since_key >= self.gop || out.skipped > 0;
                let t = Instant::now();
                let frame = enc.encode(&raw, force)?;
                out.encode_time = Some(t.elapsed());
                frame
            }
        };
        let Some(frame) = encoded else {
            return Ok(out);
        };
        let (data, keyframe) = self.params.complete(&frame.data)?;
        self.since_key = if keyframe {
            1
        } else {
            self.since_key.saturating_add(1)
        };
        // A sequence starts at a keyframe; anything before it is undecodable.
        if !self.started && !keyframe {
            out.before_first_keyframe = true;
            return Ok(out);
        }
        self.started = true;
        out.frame = Some(EncodedFrame {
            data,
            keyframe,
            ..frame
        });
        Ok(out)
    }
}
