//! H.264 decoding, only to read the test strip back (`cambox strip`): boxes never decode
//! what they relay.

use openh264::decoder::Decoder;
use openh264::formats::YUVSource;

/// The luma plane of one decoded picture.
#[derive(Debug, Clone)]
pub struct LumaPicture {
    pub width: u32,
    pub height: u32,
    pub stride: usize,
    pub y: Vec<u8>,
}

pub struct H264Decoder {
    decoder: Decoder,
}

impl std::fmt::Debug for H264Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("H264Decoder")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("H.264 decoding failed: {0}")]
pub struct DecodeError(String);

impl H264Decoder {
    pub fn new() -> Result<Self, DecodeError> {
        Ok(Self {
            decoder: Decoder::new().map_err(|e| DecodeError(e.to_string()))?,
        })
    }

    /// Decodes one Annex-B access unit; `None` when it produced no picture.
    pub fn decode(&mut self, au: &[u8]) -> Result<Option<LumaPicture>, DecodeError> {
        let Some(pic) = self
            .decoder
            .decode(au)
            .map_err(|e| DecodeError(e.to_string()))?
        else {
            return Ok(None);
        };
        let (w, h) = pic.dimensions();
        let (stride, _, _) = pic.strides();
        Ok(Some(LumaPicture {
            width: w as u32,
            height: h as u32,
            stride,
            y: pic.y().to_vec(),
        }))
    }
}
