//! Media for cambox: where pictures and sound come from, how they are encoded, and how
//! encoded frames are organised and packaged for viewers.
//!
//! Everything physical sits behind a trait ([`VideoSource`], [`AudioSource`],
//! [`VideoEncoder`]) with a real implementation and a simulated one, so that the logic above
//! the device is tested on any machine.

pub mod annexb;
pub mod broadcast;
pub mod decode;
pub mod encode;
pub mod fmp4;
pub mod frame;
pub mod rtp;
pub mod source;
pub mod strip;
#[cfg(feature = "v4l2")]
pub mod v4l2;
pub mod y4m;

pub use broadcast::{Broadcast, GroupObject, Track, TrackReader, TrackWriter};
pub use encode::{EncodeError, EncoderChoice, VideoEncoder, VideoEncoderSettings};
pub use frame::{AudioBlock, Captured, EncodedFrame, FrameRate, RawFrame, VideoFormat};
pub use source::{AudioSource, SourceError, SourceSpec, VideoSource};
