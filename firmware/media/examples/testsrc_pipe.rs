//! The test source's frames on a pipe, and a strip reader for decoded frames, so that a
//! pipeline nobody here wrote (GStreamer's `x264enc tune=zerolatency` over RTP) is measured
//! with the same frames, the same strip and the same clock as cambox (`scripts/bench`).
//!
//!   testsrc_pipe send WIDTHxHEIGHT FPS SECONDS   raw I420 to stdout, paced in real time;
//!                                                each frame's strip holds its capture time
//!   testsrc_pipe read WIDTHxHEIGHT [SKIP]        GRAY8 frames on stdin; at the end prints
//!       {"frames", "gaps", "repeats", "unreadable", "latency_median_ms", "latency_p95_ms"}
//!       where latency is the arrival time of a decoded frame minus its capture time,
//!       after the first SKIP frames (default 30: the start-up).

use std::io::{Read, Write};

use cambox_media::frame::{now_us, Captured, FrameRate, VideoFormat};
use cambox_media::source::pacer::Pacing;
use cambox_media::source::testsrc::TestSource;
use cambox_media::source::VideoSource;
use cambox_media::strip::{read_strip, Continuity};

fn usage() -> ! {
    eprintln!(
        "usage: testsrc_pipe send WIDTHxHEIGHT FPS SECONDS | testsrc_pipe read WIDTHxHEIGHT [SKIP]"
    );
    std::process::exit(2)
}

fn size(arg: Option<&String>) -> (u32, u32) {
    arg.and_then(|s| s.split_once('x'))
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .unwrap_or_else(|| usage())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("send") => send(&args),
        Some("read") => read(&args),
        _ => usage(),
    }
}

fn send(args: &[String]) {
    let (width, height) = size(args.get(1));
    let fps: u32 = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| usage());
    let seconds: u64 = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| usage());
    let format = VideoFormat {
        width,
        height,
        rate: FrameRate::per_second(fps),
    };
    let mut src = TestSource::new(format, Pacing::RealTime, now_us()).unwrap_or_else(|e| {
        eprintln!("testsrc_pipe: {e}");
        std::process::exit(2)
    });
    let mut out = std::io::stdout().lock();
    for _ in 0..seconds * u64::from(fps) {
        match src.next_frame() {
            Ok(Some(Captured::Raw(f))) => {
                if out.write_all(&f.data).and_then(|_| out.flush()).is_err() {
                    return; // the pipeline ended
                }
            }
            Ok(_) => return,
            Err(e) => {
                eprintln!("testsrc_pipe: {e}");
                std::process::exit(1)
            }
        }
    }
}

fn read(args: &[String]) {
    let (width, height) = size(args.get(1));
    let skip: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(30);
    let mut input = std::io::stdin().lock();
    let mut frame = vec![0u8; (width * height) as usize];
    let mut c = Continuity::default();
    let mut latencies = Vec::new();
    let mut n = 0usize;
    while input.read_exact(&mut frame).is_ok() {
        let arrived_ms = now_us() as f64 / 1000.0;
        let r = read_strip(&frame, width as usize, width, height);
        c.push(r);
        n += 1;
        if let Some(r) = r {
            if n > skip {
                latencies.push(arrived_ms - r.capture_ms as f64);
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "{{\"frames\":{},\"gaps\":{},\"repeats\":{},\"unreadable\":{},\"latency_median_ms\":{:.1},\"latency_p95_ms\":{:.1}}}",
        c.frames,
        c.gaps,
        c.repeats,
        c.unreadable,
        pick(0.5),
        pick(0.95)
    );
}
