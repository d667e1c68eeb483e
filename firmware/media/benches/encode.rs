//! OpenH264 (what a box without a hardware encoder runs) against x264 through ffmpeg on the
//! same testsrc frames, in the same run. Prints frames per second and the ratio.
//!
//! `cargo bench -p cambox-media --bench encode` (ffmpeg with libx264 must be installed).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use cambox_media::encode::openh264::OpenH264Encoder;
use cambox_media::encode::{VideoEncoder, VideoEncoderSettings};
use cambox_media::source::pacer::Pacing;
use cambox_media::source::testsrc::TestSource;
use cambox_media::{Captured, FrameRate, RawFrame, VideoFormat, VideoSource};

const FRAMES: u64 = 300;

fn frames(format: VideoFormat) -> Vec<RawFrame> {
    let mut src = TestSource::new(format, Pacing::Unpaced, 0).expect("testsrc");
    (0..FRAMES)
        .map(|_| match src.next_frame() {
            Ok(Some(Captured::Raw(f))) => f,
            other => panic!("testsrc gave {other:?}"),
        })
        .collect()
}

fn openh264_fps(format: VideoFormat, frames: &[RawFrame]) -> f64 {
    let mut enc = OpenH264Encoder::new(VideoEncoderSettings {
        format,
        bitrate: 2_000_000,
        keyframe_interval: 30,
    })
    .expect("openh264");
    let t = Instant::now();
    for (i, f) in frames.iter().enumerate() {
        enc.encode(f, i % 30 == 0).expect("encode");
    }
    frames.len() as f64 / t.elapsed().as_secs_f64()
}

/// x264 `ultrafast`/`zerolatency`, one thread like OpenH264 here, reading the same frames as Y4M.
fn x264_fps(format: VideoFormat, frames: &[RawFrame]) -> Option<f64> {
    let mut y4m = Vec::new();
    cambox_media::y4m::write_header(&mut y4m, format);
    for f in frames {
        cambox_media::y4m::write_frame(&mut y4m, f);
    }
    let dir = std::env::temp_dir().join(format!("cambox-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join("frames.y4m");
    std::fs::File::create(&path).ok()?.write_all(&y4m).ok()?;
    let t = Instant::now();
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-threads",
            "1",
        ])
        .args(["-b:v", "2M", "-g", "30", "-f", "null", "-"])
        .stdout(Stdio::null())
        .status()
        .ok()?;
    let secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    status.success().then(|| frames.len() as f64 / secs)
}

fn main() {
    println!("encode speed, {FRAMES} testsrc frames, one thread each, 2 Mbit/s, GOP 30");
    println!(
        "{:>10} {:>14} {:>14} {:>8}",
        "size", "openh264 fps", "x264 fps", "ratio"
    );
    for (w, h) in [(640u32, 360u32), (1280, 720)] {
        let format = VideoFormat {
            width: w,
            height: h,
            rate: FrameRate::per_second(30),
        };
        let frames = frames(format);
        let ours = openh264_fps(format, &frames);
        match x264_fps(format, &frames) {
            Some(reference) => println!(
                "{:>10} {:>14.1} {:>14.1} {:>8.2}",
                format!("{w}x{h}"),
                ours,
                reference,
                ours / reference
            ),
            None => println!(
                "{:>10} {:>14.1} {:>14} {:>8}",
                format!("{w}x{h}"),
                ours,
                "no ffmpeg",
                "-"
            ),
        }
    }
    println!("(ratio = openh264 / x264; x264 timing includes ffmpeg start-up and Y4M reading)");
}
