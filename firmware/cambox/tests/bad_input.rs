//! Bad input gets a clear error, never a panic, and the box keeps serving.

mod common;

use std::process::Command;

use common::*;
use std::time::Duration;

/// Runs cambox with `args`, expects failure, returns stderr.
fn fails(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().expect("run cambox");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} should fail: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    stderr
}

/// An H.264 Annex-B clip from x264 (an encoder nobody here wrote).
fn x264_clip(dir: &std::path::Path, frames: u32) -> std::path::PathBuf {
    let path = dir.join("clip.h264");
    run(Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=30",
        ])
        .args([
            "-frames:v",
            &frames.to_string(),
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
        ])
        .args(["-g", "30", "-f", "h264", "-y"])
        .arg(&path));
    path
}

#[test]
fn garbage_and_truncated_h264_are_refused_with_a_reason() {
    require("ffmpeg");
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.h264");
    let mut x = 0x9e37_79b9u32;
    let bytes: Vec<u8> = (0..100_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    std::fs::write(&garbage, &bytes).unwrap();
    let src = format!("file:{}", garbage.display());
    let err = fails(&["record", &src, "-o", "/dev/null"]);
    assert!(err.contains("garbage.h264"), "{err}");
    assert!(
        err.contains("not an H.264")
            || err.contains("not H.264")
            || err.contains("invalid NAL")
            || err.contains("no keyframe"),
        "{err}"
    );

    let clip = x264_clip(dir.path(), 60);
    let data = std::fs::read(&clip).unwrap();
    let truncated = dir.path().join("truncated.h264");
    std::fs::write(&truncated, &data[..100]).unwrap();
    let err = fails(&[
        "record",
        &format!("file:{}", truncated.display()),
        "-o",
        "/dev/null",
    ]);
    assert!(err.contains("no keyframe"), "{err}");

    let empty = dir.path().join("empty.h264");
    std::fs::write(&empty, b"").unwrap();
    assert!(fails(&[
        "record",
        &format!("file:{}", empty.display()),
        "-o",
        "/dev/null"
    ])
    .contains("empty"));
}

#[test]
fn h264_files_pass_through_and_y4m_files_are_encoded() {
    require("ffmpeg");
    require("ffprobe");
    let dir = tempfile::tempdir().unwrap();
    let clip = x264_clip(dir.path(), 60);
    let out = dir.path().join("h264.mp4");
    run(Command::new(BIN)
        .args(["record"])
        .arg(&clip)
        .arg("-o")
        .arg(&out)
        .args(["--duration", "10s"]));
    assert_eq!(decoded_video_frames(&out), 60);
    // Passed through, not re-encoded: x264's SEI (its version banner) is still in the stream.
    let raw = std::fs::read(&out).unwrap();
    assert!(raw.windows(4).any(|w| w == b"x264"), "x264's SEI survived");

    // The same clip through standard input.
    let piped = dir.path().join("stdin.mp4");
    let status = Command::new(BIN)
        .args(["record", "-", "-o"])
        .arg(&piped)
        .stdin(std::fs::File::open(&clip).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(decoded_video_frames(&piped), 60);

    let y4m = dir.path().join("clip.y4m");
    run(Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-frames:v",
            "25",
        ])
        .args(["-pix_fmt", "yuv420p", "-y"])
        .arg(&y4m));
    let out = dir.path().join("y4m.mp4");
    run(Command::new(BIN)
        .args(["record"])
        .arg(&y4m)
        .arg("-o")
        .arg(&out));
    let probe = ffprobe(
        &out,
        &["-count_frames", "-show_streams", "-select_streams", "v:0"],
    );
    assert_eq!(probe["streams"][0]["nb_read_frames"], "25");
    assert_eq!(probe["streams"][0]["codec_name"], "h264");
}

#[test]
fn recording_a_source_lasts_exactly_the_duration() {
    require("ffprobe");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("testsrc.mp4");
    run(Command::new(BIN)
        .args([
            "record",
            "testsrc",
            "--width",
            "640",
            "--height",
            "360",
            "--duration",
            "10s",
            "-o",
        ])
        .arg(&out));
    let probe = ffprobe(&out, &["-show_format", "-count_frames", "-show_streams"]);
    let duration = probed_duration(&out);
    assert!(
        (duration - 10.0).abs() <= 1.0 / 30.0 + 1e-3,
        "duration {duration}"
    );
    let video = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_type"] == "video")
        .unwrap();
    assert_eq!(video["nb_read_frames"], "300");
}

#[test]
fn a_y4m_with_a_bad_header_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.y4m");
    std::fs::write(&bad, b"YUV4MPEG2 W320 Hxyz F30:1\nFRAME\n").unwrap();
    let err = fails(&[
        "record",
        &format!("file:{}", bad.display()),
        "-o",
        "/dev/null",
    ]);
    assert!(err.contains("bad.y4m") && err.contains("Y4M"), "{err}");
    std::fs::write(&bad, b"YUV4MPEG2 W320 H240 C444\n").unwrap();
    let err = fails(&[
        "record",
        &format!("file:{}", bad.display()),
        "-o",
        "/dev/null",
    ]);
    assert!(err.contains("colour space '444'"), "{err}");
}

#[test]
fn unknown_config_keys_and_bad_flags_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cambox.toml");
    std::fs::write(&cfg, "name = \"hall\"\ncolour = \"red\"\n").unwrap();
    let err = fails(&[
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--http",
        "127.0.0.1:0",
    ]);
    assert!(
        err.contains("colour") && err.contains("cambox.toml"),
        "{err}"
    );
    let err = fails(&["run", "--source", "webcam", "--http", "127.0.0.1:0"]);
    assert!(err.contains("unknown source 'webcam'"), "{err}");
    let err = fails(&["run", "--bitrate", "fast", "--http", "127.0.0.1:0"]);
    assert!(err.contains("not a bitrate"), "{err}");
    let out = Command::new(BIN)
        .args(["run", "--http", "127.0.0.1:0", "--name", "x"])
        .env("CAMBOX_FPS", "0")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fps 0 is out of range"));
}

#[test]
fn api_errors_are_json_with_the_right_status_and_the_box_keeps_serving() {
    let _serial = serial();
    let b = BoxProc::start(&[
        "--source", "testsrc", "--width", "320", "--height", "180", "--name", "lobby",
    ]);
    let addr = b.addr();
    // Not live yet: the stream is known but has nothing to play.
    let (code, body) = http(&addr, "GET", "/live/lobby.mp4", "");
    assert_eq!(code, 404);
    assert!(json(&body)["error"].as_str().unwrap().contains("not live"));
    let (code, body) = http(&addr, "GET", "/live/nowhere.mp4", "");
    assert_eq!(code, 404);
    assert!(json(&body)["error"]
        .as_str()
        .unwrap()
        .contains("unknown stream 'nowhere'"));
    let (code, body) = http(&addr, "GET", "/no/such/page", "");
    assert_eq!((code, json(&body)["error"].is_string()), (404, true));
    for bad in [
        "{\"live\": ",
        "[1,2]",
        "{\"live\": \"yes\"}",
        "{\"go\": true}",
        "\u{1}\u{2}",
    ] {
        let (code, body) = http(&addr, "POST", "/api/v1/live", bad);
        assert_eq!(code, 400, "{bad:?} -> {body}");
        assert!(
            json(&body)["error"].as_str().unwrap().contains("JSON"),
            "{body}"
        );
    }
    // Still alive and still obeying.
    let (code, body) = http(&addr, "POST", "/api/v1/live", "{\"live\": true}");
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["live"], true);
    let (code, body) = http(&addr, "POST", "/api/v1/live", "");
    assert_eq!(
        (code, json(&body)["live"].clone()),
        (200, serde_json::Value::Bool(false))
    );
}

#[test]
fn a_source_that_cannot_open_is_reported_and_the_box_keeps_serving() {
    let _serial = serial();
    let b = BoxProc::start(&["--source", "file:/nonexistent/clip.h264", "--name", "gate"]);
    let (code, body) = http(&b.addr(), "POST", "/api/v1/live", "{\"live\": true}");
    assert_eq!(code, 503, "{body}");
    let err = json(&body)["error"].as_str().unwrap().to_string();
    assert!(err.contains("/nonexistent/clip.h264"), "{err}");
    let (code, body) = http(&b.addr(), "GET", "/api/v1/status", "");
    assert_eq!(code, 200);
    let status = json(&body);
    assert_eq!(status["live"], false);
    assert!(status["error"].as_str().unwrap().contains("clip.h264"));
    // The LED says why: the error pattern for a missing camera.
    wait_until("the LED shows the error", Duration::from_secs(5), || {
        b.status()["led"]["fault"] == "camera_missing"
    });
    assert_eq!(b.status()["led"]["state"], "error");
}

#[test]
fn idle_connections_from_one_address_are_bounded_and_other_addresses_are_served() {
    let _serial = serial();
    let b = BoxProc::start(&["--source", "testsrc", "--width", "320", "--height", "180"]);
    assert_connections_bounded_per_address(
        &b.addr(),
        cambox_node::connection_limit::MAX_PER_SOURCE,
        "/api/v1/status",
    );
    assert!(b.metric("cambox_http_refused_connections_total") >= 1.0);
}
