//! What a box is told at start: resolved from config file, environment and flags by the binary.

use cambox_media::encode::EncoderChoice;
use cambox_media::source::spec::AudioSpec;
use cambox_media::{SourceSpec, VideoFormat};

#[derive(Debug, Clone)]
pub struct BoxSettings {
    /// This box's name on the network.
    pub node: String,
    /// The stream's name: `/live/<stream>.mp4`.
    pub stream: String,
    pub site: String,
    pub source: SourceSpec,
    pub audio: AudioSpec,
    pub looping: bool,
    /// Wanted picture size and rate (cameras and files may differ; status shows the real one).
    pub format: VideoFormat,
    pub encoder: EncoderChoice,
    /// Video bitrate, bits per second.
    pub bitrate: u32,
    /// Seconds between keyframes: the group length a late viewer waits at most.
    pub keyframe_interval: f64,
    /// Audio bitrate, bits per second.
    pub audio_bitrate: u32,
    /// Who may watch this box's stream (`group:ops,site:berlin`; empty: `watch_default`).
    pub watch: String,
    /// Who may watch a stream whose origin names nobody: the mesh-wide default (the same
    /// on every card; empty: everybody who logs in).
    pub watch_default: String,
}

impl BoxSettings {
    /// The encoder as configured, for status before the box goes live.
    pub fn encoder_name(&self) -> String {
        match &self.encoder {
            EncoderChoice::Auto => "auto".into(),
            EncoderChoice::OpenH264 => "openh264".into(),
            EncoderChoice::V4l2M2m(d) => format!("v4l2m2m:{d}"),
        }
    }
}
