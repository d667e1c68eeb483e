//! Source names as a user writes them (`testsrc`, `file:clip.h264`, `-`, `v4l2:/dev/video0`,
//! `libcamera`, `auto`) and opening what they name.

use std::path::PathBuf;

use super::file::{FileInput, FileSource};
use super::pacer::Pacing;
use super::testsrc::TestSource;
use super::tone::ToneSource;
use super::{AudioSource, SourceError, VideoSource};
use crate::frame::{FrameRate, VideoFormat};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A camera if one is found, the test source otherwise.
    Auto,
    Testsrc,
    /// The test picture with fresh grain in every frame, as a camera's sensor noise: it
    /// costs the encoder its whole bitrate, where the clean picture compresses to a tenth
    /// (the rate at which a relay's copies are worth measuring).
    Grain,
    File(PathBuf),
    Stdin,
    V4l2(String),
    /// A libcamera camera, by id or the first one.
    Libcamera(Option<String>),
    /// No camera: a box that only carries sensors, chat and relays.
    None,
}

impl std::str::FromStr for SourceSpec {
    type Err = SourceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "auto" => Self::Auto,
            "testsrc" => Self::Testsrc,
            "testsrc:grain" => Self::Grain,
            "-" => Self::Stdin,
            "libcamera" => Self::Libcamera(None),
            "none" => Self::None,
            _ => {
                if let Some(p) = s.strip_prefix("file:").filter(|p| !p.is_empty()) {
                    Self::File(p.into())
                } else if let Some(d) = s.strip_prefix("v4l2:").filter(|d| !d.is_empty()) {
                    Self::V4l2(d.into())
                } else if let Some(c) = s.strip_prefix("libcamera:").filter(|c| !c.is_empty()) {
                    Self::Libcamera(Some(c.into()))
                } else {
                    return Err(SourceError::UnknownSpec(s.into()));
                }
            }
        })
    }
}

impl std::fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Testsrc => write!(f, "testsrc"),
            Self::Grain => write!(f, "testsrc:grain"),
            Self::File(p) => write!(f, "file:{}", p.display()),
            Self::Stdin => write!(f, "-"),
            Self::V4l2(d) => write!(f, "v4l2:{d}"),
            Self::Libcamera(None) => write!(f, "libcamera"),
            Self::Libcamera(Some(c)) => write!(f, "libcamera:{c}"),
            Self::None => write!(f, "none"),
        }
    }
}

/// Where sound comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioSpec {
    /// The ALSA default microphone where built with `alsa` and the video is a camera;
    /// the test tone otherwise.
    Auto,
    Tone,
    None,
    Alsa(String),
}

impl std::str::FromStr for AudioSpec {
    type Err = SourceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "auto" => Self::Auto,
            "tone" | "testsrc" => Self::Tone,
            "none" => Self::None,
            "alsa" => Self::Alsa("default".into()),
            _ => match s.strip_prefix("alsa:").filter(|d| !d.is_empty()) {
                Some(d) => Self::Alsa(d.into()),
                None => {
                    return Err(SourceError::Format {
                        what: format!("audio source '{s}'"),
                        reason: "unknown: use auto, tone, none, alsa or alsa:DEVICE".into(),
                    })
                }
            },
        })
    }
}

/// How to open a source.
#[derive(Debug, Clone, Copy)]
pub struct SourceOptions {
    /// Wanted size and rate (cameras may adjust; files say their own).
    pub format: VideoFormat,
    pub looping: bool,
    pub pacing: Pacing,
    /// Capture time of frame 0 for synthetic sources.
    pub start_us: u64,
}

/// Opens the video source `spec` names.
pub fn open_video(
    spec: &SourceSpec,
    opts: SourceOptions,
) -> Result<Box<dyn VideoSource>, SourceError> {
    match spec {
        SourceSpec::Auto => open_video(&detect_camera(), opts),
        SourceSpec::Testsrc => Ok(Box::new(TestSource::new(
            opts.format,
            opts.pacing,
            opts.start_us,
        )?)),
        SourceSpec::Grain => Ok(Box::new(
            TestSource::new(opts.format, opts.pacing, opts.start_us)?.with_grain(),
        )),
        SourceSpec::File(p) => Ok(Box::new(FileSource::open(
            FileInput::Path(p.clone()),
            opts.looping,
            opts.format.rate,
            opts.pacing,
            opts.start_us,
        )?)),
        SourceSpec::Stdin => Ok(Box::new(FileSource::open(
            FileInput::Stdin,
            opts.looping,
            opts.format.rate,
            opts.pacing,
            opts.start_us,
        )?)),
        SourceSpec::V4l2(dev) => open_v4l2(dev, opts),
        SourceSpec::Libcamera(cam) => open_libcamera(cam.as_deref(), opts),
        SourceSpec::None => Err(SourceError::NoCamera),
    }
}

/// The camera `auto` picks: libcamera's first camera, else the first V4L2 capture device,
/// else the test source.
pub fn detect_camera() -> SourceSpec {
    #[cfg(feature = "libcamera")]
    if super::libcamera::camera_present() {
        return SourceSpec::Libcamera(None);
    }
    #[cfg(feature = "v4l2")]
    if let Some(dev) = super::v4l2::find_capture_device() {
        return SourceSpec::V4l2(dev);
    }
    SourceSpec::Testsrc
}

#[cfg(feature = "v4l2")]
fn open_v4l2(dev: &str, opts: SourceOptions) -> Result<Box<dyn VideoSource>, SourceError> {
    Ok(Box::new(super::v4l2::V4l2Source::open(dev, opts.format)?))
}

#[cfg(not(feature = "v4l2"))]
fn open_v4l2(dev: &str, _opts: SourceOptions) -> Result<Box<dyn VideoSource>, SourceError> {
    Err(SourceError::NotBuilt {
        spec: format!("v4l2:{dev}"),
        feature: "v4l2",
    })
}

#[cfg(feature = "libcamera")]
fn open_libcamera(
    cam: Option<&str>,
    opts: SourceOptions,
) -> Result<Box<dyn VideoSource>, SourceError> {
    Ok(Box::new(super::libcamera::LibcameraSource::open(
        cam,
        opts.format,
    )?))
}

#[cfg(not(feature = "libcamera"))]
fn open_libcamera(
    cam: Option<&str>,
    _opts: SourceOptions,
) -> Result<Box<dyn VideoSource>, SourceError> {
    Err(SourceError::NotBuilt {
        spec: cam.map_or("libcamera".into(), |c| format!("libcamera:{c}")),
        feature: "libcamera",
    })
}

/// Opens the audio source; `video` says whether the picture is synthetic, so `auto` pairs
/// a test picture with the test tone and a camera with the microphone.
pub fn open_audio(
    spec: &AudioSpec,
    video: &SourceSpec,
    rate: FrameRate,
    opts: SourceOptions,
) -> Result<Option<Box<dyn AudioSource>>, SourceError> {
    let tone =
        || -> Box<dyn AudioSource> { Box::new(ToneSource::new(rate, opts.pacing, opts.start_us)) };
    match spec {
        AudioSpec::None => Ok(None),
        AudioSpec::Tone => Ok(Some(tone())),
        AudioSpec::Alsa(dev) => open_alsa(dev).map(Some),
        AudioSpec::Auto => {
            let camera = matches!(video, SourceSpec::V4l2(_) | SourceSpec::Libcamera(_));
            if camera && cfg!(feature = "alsa") {
                match open_alsa("default") {
                    Ok(a) => return Ok(Some(a)),
                    Err(e) => tracing::warn!("no microphone, using the test tone: {e}"),
                }
            }
            Ok(Some(tone()))
        }
    }
}

#[cfg(feature = "alsa")]
fn open_alsa(dev: &str) -> Result<Box<dyn AudioSource>, SourceError> {
    Ok(Box::new(super::alsa::AlsaSource::open(dev)?))
}

#[cfg(not(feature = "alsa"))]
fn open_alsa(dev: &str) -> Result<Box<dyn AudioSource>, SourceError> {
    Err(SourceError::NotBuilt {
        spec: format!("alsa:{dev}"),
        feature: "alsa",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        assert_eq!(
            "testsrc".parse::<SourceSpec>().unwrap(),
            SourceSpec::Testsrc
        );
        assert_eq!("-".parse::<SourceSpec>().unwrap(), SourceSpec::Stdin);
        assert_eq!(
            "file:a b.h264".parse::<SourceSpec>().unwrap(),
            SourceSpec::File("a b.h264".into())
        );
        assert_eq!(
            "v4l2:/dev/video2".parse::<SourceSpec>().unwrap(),
            SourceSpec::V4l2("/dev/video2".into())
        );
        assert!(matches!(
            "file:".parse::<SourceSpec>(),
            Err(SourceError::UnknownSpec(_))
        ));
        assert!(matches!(
            "webcam".parse::<SourceSpec>(),
            Err(SourceError::UnknownSpec(_))
        ));
        assert_eq!(
            "alsa:hw:1,0".parse::<AudioSpec>().unwrap(),
            AudioSpec::Alsa("hw:1,0".into())
        );
        assert!("mic".parse::<AudioSpec>().is_err());
        for s in [
            "auto",
            "testsrc",
            "-",
            "file:x",
            "v4l2:/dev/video0",
            "libcamera",
        ] {
            assert_eq!(s.parse::<SourceSpec>().unwrap().to_string(), s);
        }
    }
}
