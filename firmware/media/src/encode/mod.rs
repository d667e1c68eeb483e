//! Turning pictures into H.264 and sound into Opus.
//!
//! Hardware first: where the board has a V4L2 memory-to-memory encoder (`/dev/video11` on a
//! Pi 4) it is used, OpenH264 in software otherwise. Either way the output is constrained
//! baseline without B-frames (browsers' WebRTC cannot play them), SPS/PPS before every IDR.

pub mod openh264;
pub mod opus;
pub mod stage;
#[cfg(feature = "v4l2")]
pub mod v4l2m2m;

use crate::frame::{EncodedFrame, RawFrame, VideoFormat};

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("{encoder}: cannot start: {reason}")]
    Init { encoder: String, reason: String },
    #[error("{encoder}: frame {frame} failed: {reason}")]
    Frame {
        encoder: String,
        frame: u64,
        reason: String,
    },
    #[error("{encoder}: frame is {got_w}x{got_h}, encoder was set up for {want_w}x{want_h}")]
    SizeMismatch {
        encoder: String,
        got_w: u32,
        got_h: u32,
        want_w: u32,
        want_h: u32,
    },
    #[error("unknown encoder '{0}': use auto, openh264 or v4l2m2m[:/dev/videoN]")]
    UnknownChoice(String),
    #[error("encoder '{choice}' needs cargo feature '{feature}', which this build does not have")]
    NotBuilt {
        choice: String,
        feature: &'static str,
    },
}

/// What every H.264 encoder is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoEncoderSettings {
    pub format: VideoFormat,
    /// Target bitrate in bits per second.
    pub bitrate: u32,
    /// Frames between IDRs: one group of pictures, the unit a relay caches and drops.
    pub keyframe_interval: u32,
}

/// An H.264 encoder. Synchronous on purpose: one frame in, at most one access unit out,
/// so latency is one encode and the capture timestamp travels with its own picture.
pub trait VideoEncoder: Send {
    fn describe(&self) -> String;
    /// Encodes one picture; `force_keyframe` asks for an IDR now.
    /// Returns `None` when no access unit is ready yet: a pipelined hardware encoder hands
    /// a picture back on a later call, with that picture's own number and capture time.
    fn encode(
        &mut self,
        frame: &RawFrame,
        force_keyframe: bool,
    ) -> Result<Option<EncodedFrame>, EncodeError>;
}

/// Refuses a picture whose size differs from what the encoder was set up for: encoders
/// would otherwise read past a plane or produce garbage.
pub(crate) fn check_frame_size(
    encoder: &str,
    want: VideoFormat,
    frame: &RawFrame,
) -> Result<(), EncodeError> {
    if frame.width != want.width || frame.height != want.height {
        return Err(EncodeError::SizeMismatch {
            encoder: encoder.into(),
            got_w: frame.width,
            got_h: frame.height,
            want_w: want.width,
            want_h: want.height,
        });
    }
    let need = RawFrame::i420_len(frame.width, frame.height);
    if frame.data.len() < need {
        return Err(EncodeError::Frame {
            encoder: encoder.into(),
            frame: frame.number,
            reason: format!("picture has {} bytes, I420 needs {need}", frame.data.len()),
        });
    }
    Ok(())
}

/// Which encoder to use, as written in config (`auto`, `openh264`, `v4l2m2m[:DEV]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncoderChoice {
    /// Hardware when a V4L2 H.264 encoder is present, OpenH264 otherwise.
    Auto,
    OpenH264,
    V4l2M2m(String),
}

/// The Pi 4's hardware H.264 encoder node.
pub const DEFAULT_M2M_DEVICE: &str = "/dev/video11";

impl std::str::FromStr for EncoderChoice {
    type Err = EncodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "openh264" => Ok(Self::OpenH264),
            "v4l2m2m" => Ok(Self::V4l2M2m(DEFAULT_M2M_DEVICE.into())),
            _ => match s.strip_prefix("v4l2m2m:") {
                Some(dev) if !dev.is_empty() => Ok(Self::V4l2M2m(dev.into())),
                _ => Err(EncodeError::UnknownChoice(s.into())),
            },
        }
    }
}

/// Opens the encoder `choice` names; `Auto` probes for hardware and falls back to software.
pub fn open_video_encoder(
    choice: &EncoderChoice,
    settings: VideoEncoderSettings,
) -> Result<Box<dyn VideoEncoder>, EncodeError> {
    match choice {
        EncoderChoice::OpenH264 => Ok(Box::new(openh264::OpenH264Encoder::new(settings)?)),
        EncoderChoice::V4l2M2m(dev) => open_m2m(dev, settings),
        EncoderChoice::Auto => {
            if std::path::Path::new(DEFAULT_M2M_DEVICE).exists() {
                match open_m2m(DEFAULT_M2M_DEVICE, settings) {
                    Ok(enc) => return Ok(enc),
                    Err(e) => tracing::warn!("hardware encoder unusable, using OpenH264: {e}"),
                }
            }
            Ok(Box::new(openh264::OpenH264Encoder::new(settings)?))
        }
    }
}

#[cfg(feature = "v4l2")]
fn open_m2m(
    dev: &str,
    settings: VideoEncoderSettings,
) -> Result<Box<dyn VideoEncoder>, EncodeError> {
    Ok(Box::new(v4l2m2m::M2mEncoder::open(dev, settings)?))
}

#[cfg(not(feature = "v4l2"))]
fn open_m2m(
    dev: &str,
    _settings: VideoEncoderSettings,
) -> Result<Box<dyn VideoEncoder>, EncodeError> {
    Err(EncodeError::NotBuilt {
        choice: format!("v4l2m2m:{dev}"),
        feature: "v4l2",
    })
}
