//! Capture → encode → broadcast, on threads of their own.
//!
//! Sources and encoders block (a camera waits for its next frame, an encoder works for
//! milliseconds), so each runs on a plain thread; the async side only ever sees the
//! broadcast's tracks, which never block their writer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use cambox_media::broadcast::{track, GroupObject, TrackWriter};
use cambox_media::encode::opus::OpusEncoder;
use cambox_media::encode::stage::VideoStage;
use cambox_media::encode::{open_video_encoder, VideoEncoderSettings};
use cambox_media::frame::now_us;
use cambox_media::source::pacer::Pacing;
use cambox_media::source::spec::{open_audio, open_video, SourceOptions};
use cambox_media::{AudioSource, Broadcast, EncodedFrame, VideoFormat, VideoSource};

use crate::metrics::Metrics;
use crate::settings::BoxSettings;

/// Groups a track keeps for new viewers: the current one and the one before.
const VIDEO_CACHE_GROUPS: usize = 2;
/// Audio groups are one second; keep enough to cover the oldest cached video group.
const AUDIO_CACHE_GROUPS: usize = 4;
const AUDIO_GROUP_BLOCKS: u64 = 50;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("video source: {0}")]
    Source(#[from] cambox_media::SourceError),
    #[error("video encoder: {0}")]
    Encoder(#[from] cambox_media::EncodeError),
    #[error("cannot start a capture thread: {0}")]
    Thread(std::io::Error),
}

/// What the pipeline reports about itself while it runs.
#[derive(Debug, Default)]
pub struct PipelineState {
    /// Set when the source ended or failed; the box is no longer live.
    pub ended: AtomicBool,
    pub error: Mutex<Option<String>>,
}

/// A running capture pipeline. Dropping it stops the threads and closes the broadcast.
#[derive(Debug)]
pub struct Pipeline {
    pub broadcast: Broadcast,
    pub source: String,
    pub encoder: String,
    pub format: VideoFormat,
    pub state: Arc<PipelineState>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Pipeline {
    /// Opens source and encoders and starts capturing. Fails before any thread starts when
    /// the source or an encoder cannot be opened, so the caller can tell the user why.
    pub fn start(
        settings: &BoxSettings,
        metrics: Arc<Metrics>,
        pacing: Pacing,
    ) -> Result<Self, PipelineError> {
        let opts = SourceOptions {
            format: settings.format,
            looping: settings.looping,
            pacing,
            start_us: now_us(),
        };
        let video = open_video(&settings.source, opts)?;
        let format = video.format();
        let gop = ((settings.keyframe_interval * format.rate.as_f64()).round() as u32).max(1);
        let encoder = if video.is_encoded() {
            None
        } else {
            Some(open_video_encoder(
                &settings.encoder,
                VideoEncoderSettings {
                    format,
                    bitrate: settings.bitrate,
                    keyframe_interval: gop,
                },
            )?)
        };
        let audio = open_audio(&settings.audio, &settings.source, format.rate, opts)?;
        let opus = match &audio {
            Some(_) => Some(OpusEncoder::new(settings.audio_bitrate)?),
            None => None,
        };
        let (video_writer, video_track) = track("video", VIDEO_CACHE_GROUPS);
        let (audio_writer, audio_track) = match &audio {
            Some(_) => {
                let (w, t) = track("audio", AUDIO_CACHE_GROUPS);
                (Some(w), Some(t))
            }
            None => (None, None),
        };
        let broadcast = Broadcast {
            name: settings.stream.clone(),
            video: video_track,
            audio: audio_track,
            rate: format.rate,
            audio_pre_skip: opus.as_ref().map(|o| o.pre_skip()),
        };
        let source_desc = video.describe();
        let encoder_desc = encoder
            .as_ref()
            .map_or_else(|| "passthrough (H.264 source)".into(), |e| e.describe());
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(PipelineState::default());
        let mut threads = Vec::new();
        let video_loop = VideoLoop {
            source: video,
            stage: VideoStage::new(encoder, u64::from(gop)),
            writer: video_writer,
            metrics: metrics.clone(),
            stop: stop.clone(),
            state: state.clone(),
        };
        threads.push(
            std::thread::Builder::new()
                .name("video".into())
                .spawn(move || video_loop.run())
                .map_err(PipelineError::Thread)?,
        );
        if let (Some(source), Some(opus), Some(writer)) = (audio, opus, audio_writer) {
            let audio_loop = AudioLoop {
                source,
                opus,
                writer,
                metrics,
                stop: stop.clone(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name("audio".into())
                    .spawn(move || audio_loop.run())
                    .map_err(PipelineError::Thread)?,
            );
        }
        Ok(Self {
            broadcast,
            source: source_desc,
            encoder: encoder_desc,
            format,
            state,
            stop,
            threads,
        })
    }

    pub fn is_running(&self) -> bool {
        !self.state.ended.load(Ordering::Relaxed)
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Threads notice within one frame; joining keeps devices from being reopened
        // while still held.
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

struct VideoLoop {
    source: Box<dyn VideoSource>,
    stage: VideoStage,
    writer: TrackWriter,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    state: Arc<PipelineState>,
}

impl VideoLoop {
    fn run(mut self) {
        let result = self.capture();
        if let Err(e) = &result {
            tracing::error!("video pipeline stopped: {e}");
            if let Ok(mut err) = self.state.error.lock() {
                *err = Some(e.clone());
            }
        } else {
            tracing::info!("video source ended");
        }
        self.state.ended.store(true, Ordering::Relaxed);
    }

    fn capture(&mut self) -> Result<(), String> {
        while !self.stop.load(Ordering::Relaxed) {
            let Some(captured) = self.source.next_frame().map_err(|e| e.to_string())? else {
                return Ok(());
            };
            self.metrics.frames_captured.inc();
            let out = self.stage.push(captured).map_err(|e| e.to_string())?;
            self.metrics.frames_dropped.inc_by(out.skipped);
            if out.before_first_keyframe {
                self.metrics.frames_dropped.inc();
            }
            if let Some(t) = out.encode_time {
                self.metrics.encode_seconds.observe(t.as_secs_f64());
            }
            if let Some(frame) = out.frame {
                self.publish(frame);
            }
        }
        Ok(())
    }

    fn publish(&mut self, frame: EncodedFrame) {
        if frame.keyframe {
            self.writer.start_group();
        }
        self.writer.write(GroupObject {
            capture_us: frame.capture_us,
            payload: frame.data,
        });
        self.metrics.frames_encoded.inc();
    }
}

struct AudioLoop {
    source: Box<dyn AudioSource>,
    opus: OpusEncoder,
    writer: TrackWriter,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
}

impl AudioLoop {
    fn run(mut self) {
        let mut blocks = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let block = match self.source.next_block() {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!("audio source stopped: {e}");
                    break;
                }
            };
            let packet = match self.opus.encode(&block) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!("audio encoder stopped: {e}");
                    break;
                }
            };
            if blocks.is_multiple_of(AUDIO_GROUP_BLOCKS) {
                self.writer.start_group();
            }
            blocks += 1;
            self.writer.write(GroupObject {
                capture_us: packet.capture_us,
                payload: packet.data,
            });
            self.metrics.audio_frames_encoded.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cambox_media::encode::openh264::OpenH264Encoder;
    use cambox_media::{Captured, FrameRate, RawFrame, SourceError};

    /// A camera that loses frames 3 and 4.
    struct LossySource {
        numbers: std::vec::IntoIter<u64>,
        format: VideoFormat,
    }

    impl VideoSource for LossySource {
        fn describe(&self) -> String {
            "lossy".into()
        }
        fn format(&self) -> VideoFormat {
            self.format
        }
        fn next_frame(&mut self) -> Result<Option<Captured>, SourceError> {
            Ok(self.numbers.next().map(|n| {
                Captured::Raw(RawFrame {
                    number: n,
                    capture_us: n * 33_333,
                    width: 64,
                    height: 48,
                    data: vec![(n * 20) as u8; RawFrame::i420_len(64, 48)],
                })
            }))
        }
    }

    #[test]
    fn a_gap_at_the_source_starts_a_new_group() {
        let format = VideoFormat {
            width: 64,
            height: 48,
            rate: FrameRate::per_second(30),
        };
        let (writer, video) = track("video", 4);
        let metrics = Arc::new(Metrics::new());
        let looped = VideoLoop {
            source: Box::new(LossySource {
                numbers: vec![0, 1, 2, 5, 6, 7].into_iter(),
                format,
            }),
            stage: VideoStage::new(
                Some(Box::new(
                    OpenH264Encoder::new(VideoEncoderSettings {
                        format,
                        bitrate: 100_000,
                        keyframe_interval: 30,
                    })
                    .unwrap(),
                )),
                30,
            ),
            writer,
            metrics: metrics.clone(),
            stop: Arc::new(AtomicBool::new(false)),
            state: Arc::new(PipelineState::default()),
        };
        let mut reader = video.subscribe_from(0);
        looped.run();
        let got: Vec<(u64, usize)> = std::iter::from_fn(|| reader.try_next())
            .map(|o| (o.object.capture_us / 33_333, o.index))
            .collect();
        assert_eq!(got, vec![(0, 0), (1, 1), (2, 2), (5, 0), (6, 1), (7, 2)]);
        assert_eq!(metrics.frames_dropped.get(), 2);
        assert_eq!(metrics.frames_encoded.get(), 6);
    }
}
