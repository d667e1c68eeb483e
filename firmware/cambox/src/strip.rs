//! `cambox strip`: what the test strip says about every frame of a recording or live stream.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cambox_media::annexb::{from_length_prefixed, AccessUnitSplitter};
use cambox_media::decode::{H264Decoder, LumaPicture};
use cambox_media::fmp4::{Mp4Event, Mp4Reader, TrackKind};
use cambox_media::frame::now_us;
use cambox_media::strip::{read_strip, Continuity};
use cambox_media::y4m::Y4mReader;
use serde::Serialize;

use crate::duration::parse_duration;

#[derive(Debug, clap::Args)]
pub struct StripArgs {
    /// A live URL (http://box:8080/live/NAME.mp4), or a file: fragmented MP4 as cambox
    /// writes it, H.264 Annex-B, or Y4M.
    pub input: String,
    /// How long to read a live stream.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Print only the summary.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub frames: u64,
    pub first: Option<u32>,
    pub last: Option<u32>,
    pub gaps: u64,
    pub missing: u64,
    pub repeats: u64,
    pub unreadable: u64,
    /// Arrival minus capture, for live streams.
    pub latency_mean_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    /// The median: the steady state, without the burst of cached frames a joining viewer
    /// receives at once.
    pub latency_median_ms: Option<f64>,
}

struct Collector {
    quiet: bool,
    continuity: Continuity,
    latencies: Vec<f64>,
}

impl Collector {
    fn picture(&mut self, pic: &LumaPicture, arrival_ms: Option<u64>) {
        let reading = read_strip(&pic.y, pic.stride, pic.width, pic.height);
        self.continuity.push(reading);
        match (reading, arrival_ms) {
            (Some(r), Some(a)) => {
                let latency = a as f64 - r.capture_ms as f64;
                self.latencies.push(latency);
                if !self.quiet {
                    println!(
                        "frame {} capture {} arrival {} latency {:.0} ms",
                        r.frame, r.capture_ms, a, latency
                    );
                }
            }
            (Some(r), None) => {
                if !self.quiet {
                    println!("frame {} capture {}", r.frame, r.capture_ms);
                }
            }
            (None, _) => {
                if !self.quiet {
                    println!("frame unreadable (no strip)");
                }
            }
        }
    }

    fn summary(mut self) -> Summary {
        let c = &self.continuity;
        let mut s = Summary {
            frames: c.frames,
            first: c.first,
            last: c.last,
            gaps: c.gaps,
            missing: c.missing,
            repeats: c.repeats,
            unreadable: c.unreadable,
            ..Default::default()
        };
        if !self.latencies.is_empty() {
            self.latencies.sort_by(|a, b| a.total_cmp(b));
            let n = self.latencies.len();
            s.latency_mean_ms = Some(self.latencies.iter().sum::<f64>() / n as f64);
            s.latency_p95_ms =
                Some(self.latencies[((n * 95).div_ceil(100)).saturating_sub(1).min(n - 1)]);
            s.latency_median_ms = Some(self.latencies[n / 2]);
        }
        s
    }
}

pub async fn strip(args: StripArgs) -> anyhow::Result<()> {
    let mut col = Collector {
        quiet: args.quiet || args.json,
        continuity: Continuity::default(),
        latencies: Vec::new(),
    };
    if args.input.starts_with("http://") || args.input.starts_with("https://") {
        read_live(&args, &mut col).await?;
    } else {
        let data =
            std::fs::read(&args.input).with_context(|| format!("cannot read {}", args.input))?;
        read_file(&data, &mut col).with_context(|| format!("reading {}", args.input))?;
    }
    let s = col.summary();
    if args.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        println!(
            "summary: {} frames ({:?}..{:?}), {} gaps ({} missing), {} repeats, {} unreadable{}",
            s.frames,
            s.first,
            s.last,
            s.gaps,
            s.missing,
            s.repeats,
            s.unreadable,
            match (s.latency_mean_ms, s.latency_p95_ms) {
                (Some(m), Some(p)) => format!(", latency mean {m:.1} ms p95 {p:.1} ms"),
                _ => String::new(),
            }
        );
    }
    if s.frames == 0 {
        bail!("no readable test strip in {}", args.input);
    }
    Ok(())
}

fn decode_samples(
    dec: &mut H264Decoder,
    col: &mut Collector,
    events: Vec<Mp4Event>,
    reader: &Mp4Reader,
    sps_pps: &mut Option<Vec<u8>>,
    arrival_ms: Option<u64>,
) -> anyhow::Result<()> {
    for e in events {
        match e {
            Mp4Event::Init {
                avc: Some((sps, pps)),
                ..
            } => {
                let mut prefix = vec![0, 0, 0, 1];
                prefix.extend_from_slice(&sps);
                prefix.extend_from_slice(&[0, 0, 0, 1]);
                prefix.extend_from_slice(&pps);
                *sps_pps = Some(prefix);
            }
            Mp4Event::Init { .. } => bail!("the MP4 has no H.264 track"),
            Mp4Event::Fragment { samples, .. } => {
                for s in samples {
                    let video = reader
                        .tracks()
                        .iter()
                        .any(|t| t.id == s.track_id && t.kind == TrackKind::Video);
                    if !video {
                        continue;
                    }
                    let mut au = Vec::new();
                    if s.keyframe {
                        au.extend_from_slice(sps_pps.as_deref().unwrap_or_default());
                    }
                    au.extend_from_slice(&from_length_prefixed(&s.data)?);
                    if let Some(pic) = dec.decode(&au)? {
                        col.picture(&pic, arrival_ms);
                    }
                }
            }
        }
    }
    Ok(())
}

fn read_file(data: &[u8], col: &mut Collector) -> anyhow::Result<()> {
    if data.starts_with(b"YUV4MPEG2") {
        let mut r = Y4mReader::new(data)?;
        while let Some(f) = r.next_frame()? {
            let pic = LumaPicture {
                width: f.width,
                height: f.height,
                stride: f.width as usize,
                y: f.y().to_vec(),
            };
            col.picture(&pic, None);
        }
        return Ok(());
    }
    let mut dec = H264Decoder::new()?;
    if data.get(4..8) == Some(b"ftyp") {
        let mut reader = Mp4Reader::new();
        let events = reader.push(data)?;
        let mut sps_pps = None;
        return decode_samples(&mut dec, col, events, &reader, &mut sps_pps, None);
    }
    let mut splitter = AccessUnitSplitter::new();
    let mut aus = splitter.push(data)?;
    aus.extend(splitter.finish()?);
    if aus.is_empty() {
        bail!("not fragmented MP4, H.264 Annex-B or Y4M");
    }
    for au in aus {
        if let Some(pic) = dec.decode(&au)? {
            col.picture(&pic, None);
        }
    }
    Ok(())
}

async fn read_live(args: &StripArgs, col: &mut Collector) -> anyhow::Result<()> {
    let mut body = cambox_node::client::get(&args.input).await?;
    let mut reader = Mp4Reader::new();
    let mut dec = H264Decoder::new()?;
    let mut sps_pps = None;
    let started = Instant::now();
    while started.elapsed() < args.duration {
        let left = args.duration.saturating_sub(started.elapsed());
        let Ok(chunk) = tokio::time::timeout(left, body.chunk()).await else {
            break;
        };
        let Some(chunk) = chunk? else { break };
        let arrival_ms = now_us() / 1000;
        let events = reader.push(&chunk)?;
        decode_samples(
            &mut dec,
            col,
            events,
            &reader,
            &mut sps_pps,
            Some(arrival_ms),
        )?;
    }
    Ok(())
}
