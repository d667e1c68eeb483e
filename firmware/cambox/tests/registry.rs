//! The registry as a process: boxes with no peers configured find each other through it,
//! streams survive its death, it is complete again one heartbeat after a restart, its
//! event stream reports adds and removes, and bad requests get their 4xx.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cambox_mesh::identity::Identity;
use cambox_registry::model::{BroadcastInfo, Registration};
use cambox_registry::signing::sign;
use common::*;

fn node_count(reg: &str) -> usize {
    let (code, body) = http(reg, "GET", "/api/v1/nodes", "");
    if code != 200 {
        return 0;
    }
    json(&body)["nodes"].as_array().map_or(0, |a| a.len())
}

/// A registration sent from a chosen loopback source address.
fn post_from(src: &str, reg: &str, body: &[u8]) -> (u16, String) {
    let src = src.parse().expect("an address");
    let body = std::str::from_utf8(body).expect("these bodies are text");
    let (code, _, body) = http_full_from(
        src,
        reg,
        "POST",
        "/api/v1/register",
        "application/json",
        body,
    );
    (code, body)
}

fn registration(id: &Identity, ts: u64) -> Registration {
    Registration {
        node: id.node_id().to_hex(),
        name: "sensor".into(),
        site: "lab".into(),
        addrs: vec!["0.0.0.0:4433".into()],
        http: None,
        broadcasts: vec![BroadcastInfo {
            name: "t".into(),
            live: false,
        }],
        capabilities: vec![],
        timestamp_ms: ts,
        ttl_s: 30,
        tcp: None,
        reachable: None,
        board: None,
        version: None,
        update: None,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn boxes_find_each_other_through_the_registry_and_streams_outlive_it() {
    require("ffprobe");
    let _serial = serial();
    let reg = RegistryProc::start("127.0.0.1:0", &["--heartbeat", "2"]);
    let url = format!("http://{}", reg.addr);
    // The event stream, opened before anyone registers.
    let mut sse = TcpStream::connect(&reg.addr).unwrap();
    sse.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(sse, "GET /api/v1/events HTTP/1.1\r\nHost: r\r\n\r\n").unwrap();
    let mut sse = BufReader::new(sse);

    let origin = BoxProc::start(&[
        "--live",
        "--source",
        "testsrc",
        "--width",
        "320",
        "--height",
        "180",
        "--name",
        "yard",
        "--site",
        "north",
        "--registry",
        &url,
    ]);
    origin.wait_live(true);
    let viewer = BoxProc::start(&["--name", "lobby", "--site", "south", "--registry", &url]);
    let path = format!("/live/yard@{}.mp4", origin.node_id);
    wait_for_stream(&viewer, &path, "the viewer box to learn the broadcast");
    let (_, b) = http(&reg.addr, "GET", "/api/v1/broadcasts?name=yard", "");
    let list = json(&b)["broadcasts"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1, "{b}");
    assert_eq!(list[0]["site"], "north");
    assert_eq!(list[0]["live"], true);

    // Adds arrive on the event stream.
    let mut adds = 0;
    let mut line = String::new();
    while adds < 2 {
        line.clear();
        assert!(sse.read_line(&mut line).unwrap() > 0, "event stream ended");
        if line.trim() == "event: add" {
            adds += 1;
        }
    }

    // Kill the registry while the viewer box plays through the mesh.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("through.mp4");
    let watch = Command::new(env!("CARGO_BIN_EXE_cambox"))
        .args([
            "watch",
            &format!("yard@{}", origin.node_id),
            "--http",
            &viewer.addr(),
        ])
        .args(["--duration", "6s", "-o"])
        .arg(&out)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let reg_addr = reg.addr.clone();
    drop(reg);
    let status = watch.wait_with_output().unwrap().status;
    assert!(
        status.success(),
        "the stream kept flowing without the registry"
    );
    assert!(
        decoded_video_frames(&out) >= 150,
        "6 s at 30 fps through the mesh"
    );

    // A restarted registry is complete again within one heartbeat (2 s) of its start.
    let reg = RegistryProc::start(&reg_addr, &["--heartbeat", "2"]);
    let took = wait_until(
        "both boxes to register again",
        Duration::from_secs(4),
        || node_count(&reg.addr) == 2,
    );
    eprintln!("registry complete again after {took:?}");

    // A box that stops renewing is removed, and the event stream says so.
    let mut sse = TcpStream::connect(&reg.addr).unwrap();
    sse.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(sse, "GET /api/v1/events HTTP/1.1\r\nHost: r\r\n\r\n").unwrap();
    let mut sse = BufReader::new(sse);
    drop(viewer);
    let mut removed = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !removed && Instant::now() < deadline {
        line.clear();
        if sse.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        removed = line.trim() == "event: remove";
    }
    assert!(removed, "no remove event for the box that went away");
    assert_eq!(node_count(&reg.addr), 1);
}

#[test]
fn bad_registrations_get_their_4xx_and_store_nothing() {
    let _serial = serial();
    let reg = RegistryProc::start("127.0.0.1:0", &["--rate", "8"]);
    let id = Identity::from_seed([3; 32]);
    let ok = serde_json::to_vec(&sign(&id, registration(&id, now_ms()))).unwrap();

    let forged = {
        let thief = Identity::from_seed([4; 32]);
        serde_json::to_vec(&sign(&thief, registration(&id, now_ms()))).unwrap()
    };
    let skewed = serde_json::to_vec(&sign(&id, registration(&id, now_ms() - 600_000))).unwrap();
    let mut unknown: serde_json::Value = serde_json::from_slice(&ok).unwrap();
    unknown["registration"]["admin"] = serde_json::json!(true);
    let unknown = serde_json::to_vec(&unknown).unwrap();
    let huge = vec![b' '; 64 * 1024];
    let cases: [(&str, &[u8], u16); 5] = [
        ("garbage", b"{not json", 400),
        ("unknown field", &unknown, 400),
        ("forged signature", &forged, 401),
        ("clock 10 minutes off", &skewed, 400),
        ("oversized body", &huge, 413),
    ];
    for (what, body, want) in cases {
        let (code, text) = post_from("127.0.0.1", &reg.addr, body);
        assert_eq!(code, want, "{what}: {text}");
        assert!(json(&text)["error"].is_string(), "{what}: {text}");
    }
    assert_eq!(node_count(&reg.addr), 0, "nothing stored");
    let (code, text) = post_from("127.0.0.1", &reg.addr, &ok);
    assert_eq!(code, 200, "{text}");
    let (code, text) = post_from("127.0.0.1", &reg.addr, &ok);
    assert_eq!(code, 409, "replayed: {text}");
    // A flood from one source: cut off at the limit (8 a minute, the above included)...
    let mut last = 0;
    for _ in 0..5 {
        last = post_from("127.0.0.1", &reg.addr, b"{}").0;
    }
    assert_eq!(last, 429);
    // ...while others are served.
    let other = Identity::from_seed([5; 32]);
    let body = serde_json::to_vec(&sign(&other, registration(&other, now_ms()))).unwrap();
    let (code, text) = post_from("127.0.0.2", &reg.addr, &body);
    assert_eq!(code, 200, "{text}");
    assert_eq!(node_count(&reg.addr), 2);
}

#[test]
fn a_box_can_serve_the_registry_for_its_site() {
    let _serial = serial();
    // The serving box lists its own registry by address, so it registers there too.
    let (hub, own) = start_registry_hub(&[
        "--live", "--source", "testsrc", "--width", "320", "--height", "180", "--name", "hub",
    ]);
    hub.wait_live(true);
    let other = BoxProc::start(&["--name", "far", "--site", "elsewhere", "--registry", &own]);
    let path = format!("/live/hub@{}.mp4", hub.node_id);
    wait_for_stream(
        &other,
        &path,
        "the other box to find the hub through its registry",
    );
    let (code, body) = http(&hub.addr(), "GET", "/registry/api/v1/nodes", "");
    assert_eq!(code, 200);
    assert_eq!(json(&body)["nodes"].as_array().unwrap().len(), 2, "{body}");
    let (code, page) = http(&hub.addr(), "GET", "/registry", "");
    assert_eq!(code, 200);
    assert!(page.contains("cambox registry"));
}

#[test]
fn idle_connections_to_the_registry_from_one_address_are_bounded() {
    let _serial = serial();
    let reg = RegistryProc::start("127.0.0.1:0", &[]);
    assert_connections_bounded_per_address(
        &reg.addr,
        cambox_node::connection_limit::MAX_PER_SOURCE,
        "/api/v1/nodes",
    );
}

/// Behind a reverse proxy (`--forwarded-for`) the registry takes a request's source from
/// the address the proxy appended last to X-Forwarded-For; otherwise the header is the
/// client's word and is ignored.
#[test]
fn a_registry_behind_a_reverse_proxy_reads_sources_from_x_forwarded_for() {
    let forwarded = [("X-Forwarded-For", "192.0.2.1, 203.0.113.9")];
    for (flags, want) in [
        (&["--forwarded-for"][..], "203.0.113.9"),
        (&[][..], "127.0.0.1"),
    ] {
        let reg = RegistryProc::start("127.0.0.1:0", flags);
        let (status, _, body) =
            http_full_headers(&reg.addr, "GET", "/api/v1/address", &forwarded, "");
        assert_eq!(status, 200, "{body}");
        assert_eq!(json(&body)["address"], want, "with {flags:?}");
        // A registration seen from there: its own address (127.0.0.1) is not it.
        let id = Identity::from_seed([9; 32]);
        let signed = sign(
            &id,
            Registration {
                addrs: vec!["127.0.0.1:4433".into()],
                ..registration(&id, now_ms())
            },
        );
        let (status, _, body) = http_full_headers(
            &reg.addr,
            "POST",
            "/api/v1/register",
            &[forwarded[0], ("Content-Type", "application/json")],
            &serde_json::to_string(&signed).unwrap(),
        );
        assert_eq!(status, 200, "{body}");
        let reach = if want == "127.0.0.1" {
            "anywhere"
        } else {
            "site"
        };
        assert_eq!(json(&body)["reachable"], reach, "{body}");
        assert_eq!(json(&body)["seen_from"], want, "{body}");
    }
}
