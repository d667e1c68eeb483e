//! Software H.264 through Cisco's OpenH264: the encoder wherever the board has no hardware one.

use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile,
    RateControlMode, SpsPpsStrategy, UsageType,
};
use openh264::formats::YUVSlices;
use openh264::OpenH264API;

use super::{EncodeError, VideoEncoder, VideoEncoderSettings};
use crate::frame::{EncodedFrame, RawFrame};

const NAME: &str = "openh264";

pub struct OpenH264Encoder {
    encoder: Encoder,
    settings: VideoEncoderSettings,
    out: Vec<u8>,
}

impl std::fmt::Debug for OpenH264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenH264Encoder")
            .field("settings", &self.settings)
            .finish()
    }
}

impl OpenH264Encoder {
    pub fn new(settings: VideoEncoderSettings) -> Result<Self, EncodeError> {
        let config = EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .bitrate(BitRate::from_bps(settings.bitrate))
            .rate_control_mode(RateControlMode::Bitrate)
            .max_frame_rate(FrameRate::from_hz(settings.format.rate.as_f64() as f32))
            .intra_frame_period(IntraFramePeriod::from_num_frames(
                settings.keyframe_interval.max(1),
            ))
            // A live stream must never silently lose a frame: a skipped frame would look
            // like a gap to every viewer. Rate control adapts quantisation instead.
            .skip_frames(false)
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            .complexity(Complexity::Low)
            .scene_change_detect(false)
            .background_detection(false)
            .num_threads(1);
        let encoder =
            Encoder::with_api_config(OpenH264API::from_source(), config).map_err(|e| {
                EncodeError::Init {
                    encoder: NAME.into(),
                    reason: e.to_string(),
                }
            })?;
        Ok(Self {
            encoder,
            settings,
            out: Vec::new(),
        })
    }
}

impl VideoEncoder for OpenH264Encoder {
    fn describe(&self) -> String {
        NAME.into()
    }

    fn encode(
        &mut self,
        frame: &RawFrame,
        force_keyframe: bool,
    ) -> Result<Option<EncodedFrame>, EncodeError> {
        super::check_frame_size(NAME, self.settings.format, frame)?;
        if force_keyframe {
            self.encoder.force_intra_frame();
        }
        let (cw, _) = frame.chroma_size();
        let yuv = YUVSlices::new(
            (frame.y(), frame.u(), frame.v()),
            (frame.width as usize, frame.height as usize),
            (frame.width as usize, cw, cw),
        );
        let stream = self.encoder.encode(&yuv).map_err(|e| EncodeError::Frame {
            encoder: NAME.into(),
            frame: frame.number,
            reason: e.to_string(),
        })?;
        let keyframe = matches!(stream.frame_type(), FrameType::IDR);
        if matches!(stream.frame_type(), FrameType::Skip | FrameType::Invalid) {
            return Ok(None);
        }
        self.out.clear();
        stream.write_vec(&mut self.out);
        if self.out.is_empty() {
            return Ok(None);
        }
        Ok(Some(EncodedFrame {
            number: frame.number,
            capture_us: frame.capture_us,
            keyframe,
            data: bytes::Bytes::copy_from_slice(&self.out),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameRate, VideoFormat};

    fn encoder() -> OpenH264Encoder {
        OpenH264Encoder::new(VideoEncoderSettings {
            format: VideoFormat {
                width: 64,
                height: 48,
                rate: FrameRate::per_second(30),
            },
            bitrate: 100_000,
            keyframe_interval: 30,
        })
        .unwrap()
    }

    fn frame(w: u32, h: u32, len: usize) -> RawFrame {
        RawFrame {
            number: 3,
            capture_us: 0,
            width: w,
            height: h,
            data: vec![128; len],
        }
    }

    #[test]
    fn refuses_wrong_sizes_and_short_pictures_instead_of_reading_past_them() {
        let mut enc = encoder();
        assert!(matches!(
            enc.encode(&frame(32, 48, RawFrame::i420_len(32, 48)), false),
            Err(EncodeError::SizeMismatch { .. })
        ));
        assert!(matches!(
            enc.encode(&frame(64, 48, 100), false),
            Err(EncodeError::Frame { frame: 3, .. })
        ));
    }

    #[test]
    fn forced_keyframes_carry_parameter_sets_and_others_do_not() {
        let mut enc = encoder();
        let types = |au: &[u8]| -> Vec<u8> {
            crate::annexb::nal_units(au)
                .map(crate::annexb::nal_type)
                .collect()
        };
        let f = frame(64, 48, RawFrame::i420_len(64, 48));
        let first = enc.encode(&f, true).unwrap().unwrap();
        assert!(first.keyframe);
        assert_eq!(&types(&first.data)[..2], &[7, 8]);
        let next = enc.encode(&f, false).unwrap().unwrap();
        assert!(!next.keyframe);
        assert!(!types(&next.data).contains(&5), "a P frame, no IDR");
        let again = enc.encode(&f, true).unwrap().unwrap();
        assert!(again.keyframe && types(&again.data).starts_with(&[7, 8]));
    }
}
