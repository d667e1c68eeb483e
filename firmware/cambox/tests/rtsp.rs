//! RTSP as VLC, NVRs and scripts use it, checked with players nobody here wrote: ffmpeg
//! and ffprobe over TCP and UDP, and GStreamer's `rtspsrc`. The strip in the picture tells
//! whether every frame came, in order.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use cambox_media::strip::{read_strip, Continuity};
use common::*;

const W: u32 = 640;
const H: u32 = 360;

fn camera_box(name: &str) -> BoxProc {
    let b = BoxProc::start(&[
        "--live", "--source", "testsrc", "--width", "640", "--height", "360", "--name", name,
    ]);
    b.wait_live(true);
    b
}

fn continuity(
    readings: impl IntoIterator<Item = Option<cambox_media::strip::StripReading>>,
) -> Continuity {
    let mut c = Continuity::default();
    for r in readings {
        c.push(r);
    }
    c
}

#[test]
fn ffmpeg_plays_ten_seconds_over_tcp_and_udp_frame_by_frame() {
    require("ffmpeg");
    require("ffprobe");
    let _serial = serial();
    let b = camera_box("hall");
    let url = b.rtsp_url("hall");
    for transport in ["tcp", "udp"] {
        let probe = run(Command::new("ffprobe").args([
            "-v",
            "error",
            "-rtsp_transport",
            transport,
            "-of",
            "json",
            "-show_streams",
            &url,
        ]));
        let probe = json(&String::from_utf8_lossy(&probe));
        let codecs: Vec<&str> = probe["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["codec_name"].as_str().unwrap())
            .collect();
        assert_eq!(codecs, ["h264", "opus"], "{transport}: {probe}");
        let readings = strip_via_ffmpeg_input(
            &["-rtsp_transport", transport, "-t", "10"],
            url.as_ref(),
            W,
            H,
        );
        let c = continuity(readings);
        // 10 s at 30 fps, from the newest keyframe on.
        assert!(c.frames >= 270, "{transport}: {c:?}");
        assert_eq!(
            (c.gaps, c.repeats, c.unreadable),
            (0, 0, 0),
            "{transport}: {c:?}"
        );
    }
    // The metric counted what went out: 20 s of this picture are a few hundred kB.
    let sent = b.metric("cambox_bytes_sent_total");
    assert!(sent > 100e3, "{sent} bytes counted");
}

#[test]
fn gstreamer_rtspsrc_plays_ten_seconds_frame_by_frame() {
    require("gst-launch-1.0");
    let _serial = serial();
    let b = camera_box("gate");
    let url = b.rtsp_url("gate");
    for protocol in ["tcp", "udp"] {
        let mut gst = Command::new("gst-launch-1.0")
            .args([
                "-q",
                "rtspsrc",
                &format!("location={url}"),
                &format!("protocols={protocol}"),
            ])
            .args([
                "latency=0",
                "!",
                "rtph264depay",
                "!",
                "h264parse",
                "!",
                "avdec_h264",
            ])
            .args([
                "!",
                "videoconvert",
                "!",
                "video/x-raw,format=GRAY8",
                "!",
                "fdsink",
                "fd=1",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("gst-launch-1.0");
        let mut out = gst.stdout.take().unwrap();
        let mut frame = vec![0u8; (W * H) as usize];
        let mut c = Continuity::default();
        for _ in 0..300 {
            if out.read_exact(&mut frame).is_err() {
                break;
            }
            c.push(read_strip(&frame, W as usize, W, H));
        }
        let _ = gst.kill();
        let _ = gst.wait();
        assert_eq!(
            c.frames, 300,
            "{protocol}: GStreamer decoded fewer frames: {c:?}"
        );
        assert_eq!(
            (c.gaps, c.repeats, c.unreadable),
            (0, 0, 0),
            "{protocol}: {c:?}"
        );
    }
}

/// Sends `request` on a fresh connection and returns the response's head.
fn ask(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains("\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends a SETUP on `s`; returns the session id of its 200 answer.
fn set_up(s: &mut TcpStream, setup: &str) -> String {
    s.write_all(setup.as_bytes()).unwrap();
    let mut buf = [0u8; 2048];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(head.starts_with("RTSP/1.0 200"), "{head}");
    head.lines()
        .find_map(|l| l.strip_prefix("Session: "))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn garbage_wrong_requests_and_a_client_that_never_reads_leave_others_playing() {
    require("ffmpeg");
    let _serial = serial();
    let b = camera_box("dock");
    let url = b.rtsp_url("dock");
    let addr = url
        .trim_start_matches("rtsp://")
        .split('/')
        .next()
        .unwrap()
        .to_string();

    // Not RTSP at all: 400, and the connection is closed.
    let mut junk = TcpStream::connect(&addr).unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    junk.write_all(b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    junk.read_to_end(&mut reply).unwrap();
    assert!(
        String::from_utf8_lossy(&reply).starts_with("RTSP/1.0 400"),
        "{reply:?}"
    );
    assert_eq!(b.metric("cambox_rtsp_bad_requests_total"), 1.0);

    let unknown = ask(
        &addr,
        &format!("DESCRIBE rtsp://{addr}/nope RTSP/1.0\r\nCSeq: 2\r\n\r\n"),
    );
    assert!(
        unknown.starts_with("RTSP/1.0 404") && unknown.contains("CSeq: 2"),
        "{unknown}"
    );
    let no_transport = ask(
        &addr,
        &format!("SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 3\r\n\r\n"),
    );
    assert!(no_transport.starts_with("RTSP/1.0 461"), "{no_transport}");
    let no_session = ask(
        &addr,
        &format!("PLAY {url} RTSP/1.0\r\nCSeq: 4\r\nSession: 1234\r\n\r\n"),
    );
    assert!(no_session.starts_with("RTSP/1.0 454"), "{no_session}");
    let options = ask(&addr, "OPTIONS * RTSP/1.0\r\nCSeq: 5\r\n\r\n");
    assert!(
        options.starts_with("RTSP/1.0 200") && options.contains("TEARDOWN"),
        "{options}"
    );

    // A client that plays over TCP and then never reads.
    let mut stalled = TcpStream::connect(&addr).unwrap();
    let setup = format!(
        "SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
    );
    let session = set_up(&mut stalled, &setup);
    stalled
        .write_all(
            format!("PLAY {url} RTSP/1.0\r\nCSeq: 2\r\nSession: {session}\r\n\r\n").as_bytes(),
        )
        .unwrap();
    wait_until(
        "the stalled client counts as a viewer",
        Duration::from_secs(5),
        || b.metric("cambox_viewers_by_protocol{protocol=\"rtsp\"}") == 1.0,
    );

    // Everyone else plays on, frame by frame.
    let readings =
        strip_via_ffmpeg_input(&["-rtsp_transport", "tcp", "-t", "6"], url.as_ref(), W, H);
    let c = continuity(readings);
    assert!(c.frames >= 150, "{c:?}");
    assert_eq!((c.gaps, c.repeats), (0, 0), "{c:?}");

    // TEARDOWN on a playing session ends it; the box is still fine.
    let mut s = TcpStream::connect(&addr).unwrap();
    let id = set_up(&mut s, &setup);
    let mut buf = [0u8; 2048];
    s.write_all(format!("PLAY {url} RTSP/1.0\r\nCSeq: 2\r\nSession: {id}\r\n\r\nTEARDOWN {url} RTSP/1.0\r\nCSeq: 3\r\nSession: {id}\r\n\r\n").as_bytes()).unwrap();
    let mut seen = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Media may come between the two answers: read until the TEARDOWN's.
    while !String::from_utf8_lossy(&seen).contains("CSeq: 3") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    assert!(
        String::from_utf8_lossy(&seen).contains("RTSP/1.0 200 OK\r\nCSeq: 3"),
        "no TEARDOWN answer"
    );
    drop(stalled);
    wait_until("every RTSP viewer is gone", Duration::from_secs(15), || {
        b.metric("cambox_viewers_by_protocol{protocol=\"rtsp\"}") == 0.0
    });
    let (code, _) = http(&b.addr(), "GET", "/api/v1/status", "");
    assert_eq!(code, 200);
}
