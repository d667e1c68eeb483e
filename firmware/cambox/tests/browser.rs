//! Headless Chromium (Debian's, driven by playwright-core) opens the box's page, presses
//! play as a person would, and reads the test strip and the sound of what it plays.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

fn script_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Plays `name` on the page of box `b` in headless Chromium; returns play.mjs's figures.
fn play_in_chromium(b: &BoxProc, name: &str) -> serde_json::Value {
    play_in_chromium_with(b, name, &[])
}

fn play_in_chromium_with(b: &BoxProc, name: &str, extra: &[&str]) -> serde_json::Value {
    require("node");
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is not installed; run scripts/test (it installs what the tests need)"
    );
    assert!(
        script_dir().join("node_modules/playwright-core").exists(),
        "playwright-core is missing; run scripts/test or `npm ci --prefix {}`",
        script_dir().display()
    );
    let out = Command::new("node")
        .arg(script_dir().join("play.mjs"))
        .arg(&b.base)
        .arg(name)
        .args(extra)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout.lines().last().unwrap_or_default();
    assert!(
        out.status.success(),
        "browser check failed: {stderr}\n{stdout}\nbox log:\n{}",
        b.logs()
    );
    let result = json(line);
    eprintln!("chromium: {result}");
    assert!(result["advanced"].as_u64().unwrap() >= 50, "{result}");
    assert!(result["maxRms"].as_f64().unwrap() > 0.01, "{result}");
    match result["transport"].as_str() {
        Some("MP4") => assert!(
            result["mime"].as_str().unwrap().contains("opus"),
            "{result}"
        ),
        Some("WebRTC") => {}
        other => panic!("played through {other:?}: {result}"),
    }
    result
}

#[test]
fn chromium_plays_the_page_over_mp4_with_sound_and_an_advancing_picture() {
    let _serial = serial();
    let b = BoxProc::start(&["--live", "--source", "testsrc", "--name", "foyer"]);
    b.wait_live(true);
    let r = play_in_chromium_with(&b, "foyer", &["--transport", "mse"]);
    assert_eq!(r["transport"], "MP4", "{r}");
    // A box without a company CA says that anybody may join its mesh.
    assert_eq!(r["admission"], "lab mesh: any box may join", "{r}");
}

#[test]
fn whep_recovers_lost_packets_by_nack_on_a_lossy_link() {
    let _serial = serial();
    // 2 % of the box's datagrams to the viewer are lost on the way.
    let b = BoxProc::start_with_env(
        &["--live", "--source", "testsrc", "--name", "attic"],
        &[("CAMBOX_WHEP_TEST_LOSS_PERCENT", "2")],
    );
    b.wait_live(true);
    let r = play_in_chromium_with(&b, "attic", &["--transport", "whep", "--seconds", "6"]);
    assert_eq!(r["transport"], "WebRTC", "{r}");
    // Without retransmission, each loss would cost the rest of its group (a frozen
    // picture until the next keyframe); with NACK nearly every frame is still shown.
    let f = &r["frames"];
    let (shown, encoded) = (
        f["presented"].as_i64().unwrap(),
        f["encoded"].as_i64().unwrap(),
    );
    assert!(shown * 100 >= encoded * 95, "{r}");
    assert!(r["advanced"].as_u64().unwrap() >= 150, "{r}");
    // Chromium saw the losses, asked for them again, and got them.
    let w = &r["webrtc"];
    assert!(
        w["packetsLost"].as_i64().unwrap() > 0,
        "no loss was emulated: {w}"
    );
    assert!(w["nackCount"].as_u64().unwrap() > 0, "{w}");
    assert!(
        w["retransmittedPacketsReceived"].as_u64().unwrap() > 0,
        "{w}"
    );
}

#[test]
fn the_page_falls_back_to_mp4_when_whep_is_refused() {
    let _serial = serial();
    let b = BoxProc::start(&["--live", "--source", "testsrc", "--name", "cellar"]);
    b.wait_live(true);
    let r = play_in_chromium_with(&b, "cellar", &["--block-whep"]);
    assert_eq!(r["transport"], "MP4", "{r}");
}

#[test]
fn chromium_plays_over_webrtc_by_ice_tcp_when_no_udp_gets_through() {
    let _serial = serial();
    // The same stream to two boxes' pages: one whose WebRTC UDP port drops everything (a
    // firewall that lets only TCP through, emulated in the box), one as usual.
    let args = ["--live", "--source", "testsrc", "--name", "vault"];
    let tcp_only = BoxProc::start_with_env(&args, &[("CAMBOX_WEBRTC_TEST_DROP_UDP", "1")]);
    let open = BoxProc::start(&args);
    let mut latency = Vec::new();
    for (b, transport) in [(&tcp_only, "tcp"), (&open, "udp")] {
        b.wait_live(true);
        let r = play_in_chromium_with(b, "vault", &["--transport", "whep", "--seconds", "6"]);
        assert_eq!(r["transport"], "WebRTC", "{r}");
        assert_eq!(r["webrtc"]["transport"], transport, "{r}");
        assert!(r["advanced"].as_u64().unwrap() >= 100, "{r}");
        latency.push(format!("{transport} {}", r["latencyMs"]));
    }
    println!("capture to picture in Chromium, ms: {}", latency.join(", "));
}

#[test]
fn chromium_plays_whep_with_sound_and_every_frame_the_box_encoded() {
    let _serial = serial();
    let b = BoxProc::start(&["--live", "--source", "testsrc", "--name", "atrium"]);
    b.wait_live(true);
    let r = play_in_chromium_with(&b, "atrium", &["--transport", "whep", "--seconds", "10"]);
    assert_eq!(r["transport"], "WebRTC", "{r}");
    assert!(r["advanced"].as_u64().unwrap() >= 250, "{r}");
    // Every frame the box encoded in those 10 s reached the picture, but for whole groups
    // dropped for falling behind (1 s groups at 30 fps), and a frame at either edge.
    let f = &r["frames"];
    let (shown, encoded, dropped) = (
        f["presented"].as_i64().unwrap(),
        f["encoded"].as_i64().unwrap(),
        f["groupsDropped"].as_i64().unwrap(),
    );
    assert!(encoded >= 280, "{r}");
    assert!((encoded - shown).abs() <= 3 + dropped * 30, "{r}");
}

#[test]
fn clicking_the_virtual_button_goes_live_lights_the_led_and_the_stream_plays() {
    let _serial = serial();
    let b = BoxProc::start(&["--source", "testsrc", "--name", "porch"]);
    assert_eq!(b.status()["live"], false);
    assert_eq!(b.status()["board"], "simulated");
    let result = play_in_chromium_with(&b, "porch", &["--press-button"]);
    let led = &result["led"];
    let states: Vec<&str> = led["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(states.last(), Some(&"live"), "{led}");
    assert_ne!(
        states.first(),
        Some(&"live"),
        "the LED was live before the press: {led}"
    );
    // The live pattern is steady on: every sample over 1.5 s saw it lit.
    assert_eq!(led["litSamples"], led["samples"], "{led}");
    let status = b.status();
    assert_eq!(status["live"], true);
    // The page itself watched the stream, and its WebRTC session may count as a viewer
    // for a few seconds after the browser went (until its silence ends it).
    let state = status["led"]["state"].as_str().unwrap();
    assert!(matches!(state, "live" | "watched"), "{status}");
}

#[test]
fn a_box_page_lists_and_plays_a_broadcast_from_another_box_of_the_mesh() {
    let _serial = serial();
    let origin = BoxProc::start(&["--live", "--source", "testsrc", "--name", "yard"]);
    origin.wait_live(true);
    let other = BoxProc::start(&["--name", "lobby", "--peer", &origin.mesh_addr]);
    // The other box is not live; its page offers the yard camera of the mesh, and lists
    // its link to the yard box and how it runs.
    let r = play_in_chromium(&other, "yard");
    let links = r["links"].as_str().unwrap_or_default();
    assert!(
        links.contains(&origin.node_id[..12]) && links.contains("QUIC"),
        "{r}"
    );
}

#[test]
fn the_registry_page_lists_a_live_stream_and_its_link_plays_it_on_a_box() {
    require("node");
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    std::fs::write(&release, "board=qemu_aarch64\nversion=7.1\n").unwrap();
    let (hub, own) = start_registry_hub(&[
        "--live",
        "--source",
        "testsrc",
        "--name",
        "gate",
        "--site",
        "east",
        "--release-file",
        release.to_str().unwrap(),
    ]);
    hub.wait_live(true);
    let out = Command::new("node")
        .arg(script_dir().join("registry_page.mjs"))
        .arg(&own)
        .arg("gate")
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "registry page check failed: {stdout}\n{}\nbox log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        hub.logs()
    );
    let result = json(stdout.lines().last().unwrap_or_default());
    eprintln!("chromium: {result}");
    let href = result["href"].as_str().unwrap();
    assert_eq!(
        href,
        format!("{}/#play=gate%40{}", hub.base, hub.node_id),
        "the link opens the stream on the box that carries it"
    );
    assert_eq!(result["playing"], true);
    assert_eq!(
        result["rollout"], "qemu_aarch64: runs 7.1 ×1",
        "the page counts the boxes per board and version"
    );
}

#[test]
fn a_chat_message_typed_on_the_page_reaches_the_other_box() {
    require("node");
    let _serial = serial();
    let a = BoxProc::start(&["--node", "east", "--source", "none", "--site", "lab"]);
    let b = BoxProc::start(&[
        "--node",
        "west",
        "--source",
        "none",
        "--site",
        "lab",
        "--peer",
        &a.mesh_addr,
    ]);
    // b follows the room before the message is sent, as an open page would.
    http(&b.addr(), "GET", "/api/v1/chat/site:lab", "");
    let out = Command::new("node")
        .arg(script_dir().join("chat_page.mjs"))
        .arg(&a.base)
        .arg("hello from the page")
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chat page check failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result = json(stdout.lines().last().unwrap_or_default());
    assert_eq!(result["room"], "site:lab", "{result}");
    assert_eq!(result["cleared"], true, "{result}");
    wait_until(
        "the message on the other box",
        Duration::from_secs(5),
        || {
            http(&b.addr(), "GET", "/api/v1/chat/site:lab", "")
                .1
                .contains("hello from the page")
        },
    );
}

/// Frames ffmpeg decoded, from the last `frame=` of its progress on stderr.
fn ffmpeg_frames(stderr: &str) -> u64 {
    stderr
        .rsplit("frame=")
        .next()
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn twenty_whep_and_five_rtsp_viewers_all_receive_for_a_minute() {
    require("ffmpeg");
    let _serial = serial();
    let b = BoxProc::start(&[
        "--live", "--source", "testsrc", "--width", "320", "--height", "180", "--name", "arena",
    ]);
    b.wait_live(true);
    // Every viewer below watches for 60 s from after this instant.
    let started = std::time::Instant::now();
    let whep = Command::new("node")
        .arg(script_dir().join("whep_load.mjs"))
        .args([&b.base, "arena", "--viewers", "20", "--seconds", "60"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run node");
    let viewers = |p: &str| b.metric(&format!("cambox_viewers_by_protocol{{protocol=\"{p}\"}}"));
    wait_until("20 WebRTC viewers", Duration::from_secs(30), || {
        viewers("whep") == 20.0
    });
    let url = b.rtsp_url("arena");
    let rtsp: Vec<_> = ["tcp", "tcp", "tcp", "udp", "udp"]
        .iter()
        .map(|t| {
            Command::new("ffmpeg")
                .args([
                    "-hide_banner",
                    "-nostdin",
                    "-stats",
                    "-rtsp_transport",
                    t,
                    "-i",
                    &url,
                ])
                .args(["-t", "60", "-f", "null", "-"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("ffmpeg")
        })
        .collect();
    wait_until("5 RTSP viewers", Duration::from_secs(15), || {
        viewers("rtsp") == 5.0
    });
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!((viewers("whep"), viewers("rtsp")), (20.0, 5.0));
    assert_eq!(
        b.metric("cambox_viewers"),
        25.0,
        "the total agrees with the parts"
    );
    // While all 25 watch, none falls a whole group behind. Read before the RTSP viewers'
    // minute ends: a client that stops reading before it closes (ffmpeg at `-t`) rightly
    // has a group dropped while its TCP window is full, and that is not what this checks.
    std::thread::sleep(Duration::from_secs(50).saturating_sub(started.elapsed()));
    assert_eq!(
        (viewers("whep"), viewers("rtsp")),
        (20.0, 5.0),
        "all still watching"
    );
    assert_eq!(b.metric("cambox_viewer_groups_dropped_total"), 0.0);

    for p in rtsp {
        let out = p.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        // 60 s at 30 fps.
        assert!(
            ffmpeg_frames(&err) >= 1700,
            "an RTSP viewer fell short: {err}"
        );
    }
    let out = whep.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(stdout.trim());
    let list = r["viewers"].as_array().unwrap();
    assert_eq!(list.len(), 20);
    // All 20 on the box's one WebRTC UDP port, as Chromium saw it.
    let shared = b.status()["webrtc_udp"].clone();
    assert_eq!(shared.as_array().map(Vec::len), Some(1), "{shared}");
    for v in list {
        // Each still decoded 10 s of pictures at the end of the minute.
        assert!(v["recentFrames"].as_u64().unwrap() >= 250, "{v}");
        assert_eq!(
            (&v["boxAddress"], &v["protocol"]),
            (&shared[0], &"udp".into()),
            "{v}"
        );
    }
    let received: f64 = list
        .iter()
        .map(|v| v["bytesReceived"].as_f64().unwrap())
        .sum();
    assert!(
        b.metric("cambox_bytes_sent_total") >= received,
        "/metrics counted what went out"
    );
    // The WebRTC viewers closed without a DELETE: the box notices their silence.
    wait_until("every viewer is gone", Duration::from_secs(20), || {
        b.metric("cambox_viewers") == 0.0
    });
}
