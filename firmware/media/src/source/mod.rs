//! Where pictures and sound come from.
//!
//! A source is a blocking iterator: `next_*` returns when the next frame has been captured
//! (or, for a paced synthetic source, when its capture time has come). The node runs each
//! source on a thread of its own, so a slow device never stalls the network.

#[cfg(feature = "alsa")]
pub mod alsa;
pub mod camera_util;
pub mod file;
#[cfg(feature = "libcamera")]
pub mod libcamera;
pub mod pacer;
pub mod spec;
pub mod testsrc;
pub mod tone;
#[cfg(feature = "v4l2")]
pub mod v4l2;

pub use spec::SourceSpec;

use crate::frame::{AudioBlock, Captured, VideoFormat};

/// Why a source cannot deliver. Every variant says what the user can do about it.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open {what}: {source}")]
    Open {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: read failed: {source}")]
    Read {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {reason}")]
    Format { what: String, reason: String },
    #[error("{what}: device error: {reason}")]
    Device { what: String, reason: String },
    #[error(
        "unknown source '{0}': use testsrc, file:PATH, - (stdin), v4l2:/dev/videoN, libcamera or none"
    )]
    UnknownSpec(String),
    #[error("this box has no camera (source none): it carries sensors, chat and relays only")]
    NoCamera,
    #[error("source '{spec}' needs cargo feature '{feature}', which this build does not have")]
    NotBuilt { spec: String, feature: &'static str },
}

/// A camera or anything that pretends to be one.
pub trait VideoSource: Send {
    /// A short human description for status pages, e.g. `testsrc 1280x720@30`.
    fn describe(&self) -> String;
    /// Size and rate of what `next_frame` delivers.
    fn format(&self) -> VideoFormat;
    /// True when frames come already encoded (H.264 passed through), so no encoder is needed.
    fn is_encoded(&self) -> bool {
        false
    }
    /// Blocks until the next frame; `Ok(None)` at the end of a finite source.
    fn next_frame(&mut self) -> Result<Option<Captured>, SourceError>;
}

/// A microphone or anything that pretends to be one. Blocks are 20 ms, 48 kHz mono.
pub trait AudioSource: Send {
    fn describe(&self) -> String;
    /// Blocks until the next 20 ms block; `Ok(None)` at the end of a finite source.
    fn next_block(&mut self) -> Result<Option<AudioBlock>, SourceError>;
}
