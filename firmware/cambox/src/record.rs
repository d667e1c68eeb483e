//! `cambox record`: a live stream or a source, to an MP4 file of a given length.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cambox_media::annexb::AvcConfig;
use cambox_media::encode::opus::OpusEncoder;
use cambox_media::encode::stage::VideoStage;
use cambox_media::encode::{open_video_encoder, EncoderChoice, VideoEncoderSettings};
use cambox_media::fmp4::{init_segment, Fragmenter, Mp4Event, Mp4Reader, StreamInfo, TrackKind};
use cambox_media::frame::now_us;
use cambox_media::source::pacer::Pacing;
use cambox_media::source::spec::{open_audio, open_video, AudioSpec, SourceOptions};
use cambox_media::{FrameRate, SourceSpec, VideoFormat};

use crate::duration::parse_duration;

#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// What to record: a live URL (http://box:8080/live/NAME.mp4), a source
    /// (testsrc, testsrc:grain, file:PATH, -), or a path to an H.264 or Y4M file.
    pub input: String,
    /// Output MP4 file, or - for standard output.
    #[arg(short, long)]
    pub output: PathBuf,
    /// How much to record.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Picture width when recording a synthetic source.
    #[arg(long, default_value_t = 1280)]
    pub width: u32,
    /// Picture height when recording a synthetic source.
    #[arg(long, default_value_t = 720)]
    pub height: u32,
    /// Frames per second when recording a source.
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Video bitrate when encoding a source, bits/s (k, M allowed).
    #[arg(long, default_value = "2M", value_parser = crate::config::parse_bitrate)]
    pub bitrate: u32,
    #[command(flatten)]
    pub session: crate::mesh_cli::SessionToken,
}

fn open_output(path: &PathBuf) -> anyhow::Result<Box<dyn Write>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::BufWriter::new(std::io::stdout())));
    }
    let f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(Box::new(std::io::BufWriter::new(f)))
}

pub async fn record(args: RecordArgs) -> anyhow::Result<()> {
    if args.input.starts_with("http://") || args.input.starts_with("https://") {
        record_url(&args).await
    } else {
        let spec = match args.input.parse::<SourceSpec>() {
            Ok(s) => s,
            Err(_) if std::path::Path::new(&args.input).exists() => {
                SourceSpec::File(args.input.clone().into())
            }
            Err(e) => bail!("{e}; or give an http:// URL or an existing file"),
        };
        tokio::task::spawn_blocking(move || record_source(&args, &spec))
            .await
            .context("recording thread")?
    }
}

/// Tracks how far each track has got, in seconds from the first video frame.
struct Cutoff {
    duration: f64,
    video_base: Option<f64>,
    video_done: bool,
    audio_done: bool,
}

pub async fn record_url(args: &RecordArgs) -> anyhow::Result<()> {
    let mut body = cambox_node::client::get_as(&args.input, args.session.token.as_deref()).await?;
    let mut out = open_output(&args.output)?;
    let mut reader = Mp4Reader::new();
    let mut cut = Cutoff {
        duration: args.duration.as_secs_f64(),
        video_base: None,
        video_done: false,
        audio_done: true,
    };
    let started = Instant::now();
    let deadline = args.duration.saturating_add(Duration::from_secs(15));
    let mut last_progress = 0u64;
    let mut bytes = 0usize;
    while !(cut.video_done && cut.audio_done) {
        let remaining = deadline.saturating_sub(started.elapsed());
        let chunk = match tokio::time::timeout(remaining, body.chunk()).await {
            Err(_) => bail!(
                "the stream stalled: nothing new for {}s",
                deadline.as_secs()
            ),
            Ok(r) => r?,
        };
        let Some(chunk) = chunk else {
            eprintln!("cambox: the stream ended before {:.1} s", cut.duration);
            break;
        };
        for event in reader.push(&chunk).context("reading the live MP4")? {
            match event {
                Mp4Event::Init {
                    bytes: init,
                    tracks,
                    ..
                } => {
                    cut.audio_done = !tracks.iter().any(|t| t.kind == TrackKind::Audio);
                    out.write_all(&init)?;
                    bytes += init.len();
                }
                Mp4Event::Fragment {
                    bytes: frag,
                    samples,
                } => {
                    let mut keep = !samples.is_empty();
                    for s in &samples {
                        let Some(meta) = reader.tracks().iter().find(|t| t.id == s.track_id) else {
                            keep = false;
                            continue;
                        };
                        let t = s.decode_time as f64 / meta.timescale as f64;
                        match meta.kind {
                            TrackKind::Video => {
                                let base = *cut.video_base.get_or_insert(t);
                                if t - base >= cut.duration - 1e-6 {
                                    cut.video_done = true;
                                    keep = false;
                                }
                            }
                            TrackKind::Audio => match cut.video_base {
                                Some(base) if t >= base => {
                                    if t - base >= cut.duration - 1e-6 {
                                        cut.audio_done = true;
                                        keep = false;
                                    }
                                }
                                _ => keep = false,
                            },
                            TrackKind::Other => keep = false,
                        }
                    }
                    if keep {
                        out.write_all(&frag)?;
                        bytes += frag.len();
                    }
                }
            }
        }
        let secs = started.elapsed().as_secs();
        if secs > last_progress {
            last_progress = secs;
            eprintln!("cambox: recording {secs} s, {} kB", bytes / 1000);
        }
    }
    out.flush()?;
    eprintln!(
        "cambox: wrote {} kB to {}",
        bytes / 1000,
        args.output.display()
    );
    Ok(())
}

fn record_source(args: &RecordArgs, spec: &SourceSpec) -> anyhow::Result<()> {
    let rate = FrameRate::per_second(args.fps);
    let opts = SourceOptions {
        format: VideoFormat {
            width: args.width,
            height: args.height,
            rate,
        },
        looping: false,
        pacing: Pacing::Unpaced,
        start_us: now_us(),
    };
    let mut video = open_video(spec, opts)?;
    let format = video.format();
    let gop = format.rate.rounded() as u64;
    let encoder = if video.is_encoded() {
        None
    } else {
        Some(open_video_encoder(
            &EncoderChoice::Auto,
            VideoEncoderSettings {
                format,
                bitrate: args.bitrate,
                keyframe_interval: gop as u32,
            },
        )?)
    };
    // A test picture gets its test tone; files and cameras are recorded as they are.
    let audio_spec = if matches!(spec, SourceSpec::Testsrc | SourceSpec::Grain) {
        AudioSpec::Tone
    } else {
        AudioSpec::None
    };
    let mut audio = open_audio(
        &audio_spec,
        spec,
        format.rate,
        SourceOptions { format, ..opts },
    )?;
    let mut opus = match audio {
        Some(_) => Some(OpusEncoder::new(64_000)?),
        None => None,
    };
    let mut out = open_output(&args.output)?;
    let end_us = opts.start_us + args.duration.as_micros() as u64;
    let mut stage = VideoStage::new(encoder, gop);
    let mut frag: Option<Fragmenter> = None;
    let mut next_block = match audio.as_mut() {
        Some(a) => a.next_block()?,
        None => None,
    };
    let mut frames = 0u64;
    loop {
        let Some(captured) = video.next_frame()? else {
            break;
        };
        if captured.capture_us() >= end_us {
            break;
        }
        let Some(e) = stage.push(captured)?.frame else {
            continue;
        };
        if frag.is_none() {
            let info = StreamInfo {
                video: AvcConfig::from_keyframe(&e.data)?,
                rate: format.rate,
                audio_pre_skip: opus.as_ref().map(|o| o.pre_skip()),
            };
            out.write_all(&init_segment(&info)?)?;
            frag = Some(Fragmenter::new(e.capture_us, format.rate));
        }
        let Some(f) = frag.as_mut() else { continue };
        // Sound captured up to this picture goes first, so the file is interleaved in time.
        while let (Some(block), Some(enc), Some(src)) = (&next_block, opus.as_mut(), audio.as_mut())
        {
            if block.capture_us > e.capture_us || block.capture_us >= end_us {
                break;
            }
            let packet = enc.encode(block)?;
            if block.capture_us >= f.base_us() {
                out.write_all(&f.audio(packet.capture_us, &packet.data)?)?;
            }
            next_block = src.next_block()?;
        }
        out.write_all(&f.video(e.capture_us, e.keyframe, &e.data)?)?;
        frames += 1;
        if frames.is_multiple_of(format.rate.rounded() as u64 * 5) {
            eprintln!("cambox: recorded {frames} frames");
        }
    }
    // The sound after the last picture, up to the end.
    if let Some(f) = frag.as_mut() {
        while let (Some(block), Some(enc), Some(src)) = (&next_block, opus.as_mut(), audio.as_mut())
        {
            if block.capture_us >= end_us {
                break;
            }
            let packet = enc.encode(block)?;
            out.write_all(&f.audio(packet.capture_us, &packet.data)?)?;
            next_block = src.next_block()?;
        }
    } else {
        bail!("the source produced no keyframe, nothing was recorded");
    }
    out.flush()?;
    eprintln!("cambox: wrote {frames} frames to {}", args.output.display());
    Ok(())
}
