//! A running box's live MP4, checked by ffprobe and ffmpeg: codecs, every frame decodable,
//! 300 consecutive frames in 10 s, beeps where their frames are, fast join at a keyframe.

mod common;

use std::process::Command;

use cambox_media::fmp4::{Mp4Event, Mp4Reader, TrackKind};
use cambox_media::strip::Continuity;
use common::*;

/// Decoded audio frames (pts, samples) and the PCM they make, from ffprobe and ffmpeg.
fn audio_timeline(path: &std::path::Path) -> (Vec<(f64, usize)>, Vec<i16>) {
    let frames = ffprobe(
        path,
        &[
            "-select_streams",
            "a:0",
            "-show_frames",
            "-show_entries",
            "frame=pts_time,nb_samples",
        ],
    );
    let frames: Vec<(f64, usize)> = frames["frames"]
        .as_array()
        .expect("audio frames")
        .iter()
        .map(|f| {
            (
                f["pts_time"].as_str().unwrap().parse().unwrap(),
                f["nb_samples"].as_u64().unwrap() as usize,
            )
        })
        .collect();
    let raw = run(Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args([
            "-map", "0:a:0", "-f", "s16le", "-ac", "1", "-ar", "48000", "-",
        ]));
    let pcm = raw
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    (frames, pcm)
}

/// Times (s) where a beep starts: loud after at least 200 ms of quiet.
fn beep_onsets(frames: &[(f64, usize)], pcm: &[i16]) -> Vec<f64> {
    let mut times = Vec::with_capacity(pcm.len());
    for &(pts, n) in frames {
        times.extend((0..n).map(|i| pts + i as f64 / 48_000.0));
    }
    let mut onsets = Vec::new();
    let mut quiet = 9600usize;
    for (i, s) in pcm.iter().enumerate().take(times.len()) {
        if s.unsigned_abs() > 3000 {
            if quiet >= 9600 {
                onsets.push(times[i]);
            }
            quiet = 0;
        } else {
            quiet += 1;
        }
    }
    onsets
}

#[test]
fn ten_seconds_of_live_mp4_decode_frame_by_frame_with_beeps_in_sync() {
    require("ffmpeg");
    require("ffprobe");
    let _serial = serial();
    let b = BoxProc::start(&["--live", "--source", "testsrc", "--name", "hall"]);
    b.wait_live(true);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rec.mp4");
    run(Command::new(BIN)
        .args(["record", &b.url("/live/hall.mp4"), "-o"])
        .arg(&out)
        .args(["--duration", "10s"]));

    let probe = ffprobe(&out, &["-show_streams", "-show_format"]);
    let streams = probe["streams"].as_array().unwrap();
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .expect("video stream");
    let audio = streams
        .iter()
        .find(|s| s["codec_type"] == "audio")
        .expect("audio stream");
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(video["profile"], "Constrained Baseline");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(1280), Some(720))
    );
    assert_eq!(audio["codec_name"], "opus");
    assert_eq!(audio["sample_rate"], "48000");
    let duration = probed_duration(&out);
    assert!(
        (duration - 10.0).abs() <= 1.0 / 30.0 + 1e-3,
        "duration {duration}"
    );

    // Every frame decodes, and the strip counts 300 +- 1 consecutive frames.
    let readings = strip_via_ffmpeg(&out, 1280, 720);
    let mut c = Continuity::default();
    readings.iter().for_each(|r| c.push(*r));
    assert_eq!(c.unreadable, 0, "every decoded picture carries its strip");
    assert_eq!((c.gaps, c.repeats), (0, 0), "{c:?}");
    assert!((299..=301).contains(&c.frames), "{c:?}");

    // Beeps start within 40 ms of the frames whose number is a multiple of 30.
    let video_frames = ffprobe(
        &out,
        &[
            "-select_streams",
            "v:0",
            "-show_frames",
            "-show_entries",
            "frame=pts_time,key_frame",
        ],
    );
    // A keyframe every second (30 frames), each at a frame number that is a multiple of 30.
    let keyframes: Vec<u32> = video_frames["frames"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&readings)
        .filter(|(f, _)| f["key_frame"] == 1)
        .map(|(_, r)| r.unwrap().frame)
        .collect();
    assert!((10..=11).contains(&keyframes.len()), "{keyframes:?}");
    assert!(keyframes.iter().all(|n| n % 30 == 0), "{keyframes:?}");
    // cambox's own strip reader agrees with what ffmpeg decoded.
    let ours = run(Command::new(BIN).args(["strip", "--json"]).arg(&out));
    let ours = json(String::from_utf8_lossy(&ours).trim());
    assert_eq!(ours["frames"].as_u64(), Some(c.frames), "{ours}");
    assert_eq!(
        (ours["gaps"].as_u64(), ours["repeats"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(ours["first"].as_u64(), c.first.map(u64::from));
    let pts: Vec<f64> = video_frames["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["pts_time"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(pts.len(), readings.len());
    let second_marks: Vec<f64> = readings
        .iter()
        .zip(&pts)
        .filter(|(r, _)| r.is_some_and(|r| r.frame % 30 == 0))
        .map(|(_, &t)| t)
        .collect();
    let (aframes, pcm) = audio_timeline(&out);
    let onsets = beep_onsets(&aframes, &pcm);
    assert!(onsets.len() >= 9, "found beeps at {onsets:?}");
    let mut worst = 0.0f64;
    for onset in &onsets {
        let nearest = second_marks
            .iter()
            .map(|t| (t - onset).abs())
            .fold(f64::MAX, f64::min);
        assert!(
            nearest <= 0.040,
            "beep at {onset:.3}s is {:.1} ms from its frame (marks {second_marks:?})",
            nearest * 1000.0
        );
        worst = worst.max(nearest);
    }
    eprintln!(
        "{} beeps, worst offset from its frame {:.1} ms",
        onsets.len(),
        worst * 1000.0
    );
}

#[test]
fn a_joining_viewer_starts_with_a_keyframe() {
    require("ffprobe");
    let _serial = serial();
    let b = BoxProc::start(&[
        "--live", "--source", "testsrc", "--width", "640", "--height", "360", "--name", "door",
    ]);
    b.wait_live(true);
    for attempt in 0..3 {
        // Join at different points within the group.
        std::thread::sleep(std::time::Duration::from_millis(300 + attempt * 170));
        let mut body = std::net::TcpStream::connect(b.addr()).unwrap();
        use std::io::{Read, Write};
        write!(body, "GET /live/door.mp4 HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = vec![0u8; 200_000];
        let mut got = Vec::new();
        let mut reader = Mp4Reader::new();
        let mut first_video = None;
        let mut head_done = false;
        while first_video.is_none() {
            let n = body.read(&mut buf).unwrap();
            assert!(n > 0, "stream ended early");
            let mut data = &buf[..n];
            if !head_done {
                got.extend_from_slice(data);
                let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                head_done = true;
                let rest = got.split_off(i + 4);
                got = rest.clone();
                data = &[];
                for e in reader.push(&rest).unwrap() {
                    if let Mp4Event::Fragment { samples, .. } = e {
                        first_video = first_video.or(samples.first().cloned());
                    }
                }
            }
            got.extend_from_slice(data);
            for e in reader.push(data).unwrap() {
                if let Mp4Event::Fragment { samples, .. } = e {
                    first_video = first_video.or(samples.into_iter().find(|s| {
                        reader
                            .tracks()
                            .iter()
                            .any(|t| t.id == s.track_id && t.kind == TrackKind::Video)
                    }));
                }
            }
        }
        assert!(
            first_video.unwrap().keyframe,
            "first fragment is flagged a sync sample"
        );
        // ffprobe agrees: the first decoded frame of what we received is a key frame.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("join.mp4");
        std::fs::write(&path, &got).unwrap();
        let frames = ffprobe(
            &path,
            &[
                "-select_streams",
                "v:0",
                "-show_frames",
                "-show_entries",
                "frame=key_frame,pict_type",
            ],
        );
        let first = &frames["frames"][0];
        assert_eq!(first["key_frame"], 1, "{frames}");
        assert_eq!(first["pict_type"], "I");
    }
}

#[test]
fn metrics_count_frames_and_viewers() {
    let _serial = serial();
    let b = BoxProc::start(&[
        "--live", "--source", "testsrc", "--width", "320", "--height", "180", "--name", "m",
    ]);
    b.wait_live(true);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let viewer = std::thread::spawn({
        let url = b.url("/live/m.mp4");
        move || run(Command::new(BIN).args(["strip", &url, "--duration", "2s", "--json"]))
    });
    std::thread::sleep(std::time::Duration::from_millis(1000));
    assert_eq!(b.metric("cambox_viewers"), 1.0);
    let out = viewer.join().unwrap();
    let summary = json(String::from_utf8_lossy(&out).trim());
    assert!(summary["frames"].as_u64().unwrap() >= 45, "{summary}");
    assert_eq!(summary["gaps"], 0);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(b.metric("cambox_viewers"), 0.0);
    let captured = b.metric("cambox_frames_captured_total");
    let encoded = b.metric("cambox_frames_encoded_total");
    assert!(captured >= 60.0, "captured {captured}");
    assert!(encoded >= captured - 1.0 && encoded <= captured);
    assert!(b.metric("cambox_bytes_sent_total") > 10_000.0);
    assert!(b.metric("cambox_encode_seconds_count") >= encoded - 1.0);
    assert_eq!(b.metric("cambox_live"), 1.0);
}
