//! The overlay as a bus between real `cambox run` processes on loopback: commands,
//! sensors and chat, through the same HTTP API and subcommands a person uses.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn full_id(b: &BoxProc) -> String {
    b.status()["node_id"].as_str().unwrap().to_string()
}

fn cambox(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run cambox")
}

#[test]
fn cambox_cmd_turns_a_remote_box_live_and_an_unlisted_box_is_refused() {
    let _serial = serial();
    let operator = BoxProc::start(&["--node", "desk", "--source", "none"]);
    let stranger = BoxProc::start(&["--node", "intruder", "--source", "none"]);
    let operator_id = full_id(&operator);
    let cam = BoxProc::start(&[
        "--node",
        "yard",
        "--source",
        "testsrc",
        "--width",
        "320",
        "--height",
        "180",
        "--peer",
        &operator.mesh_addr,
        "--peer",
        &stranger.mesh_addr,
        "--allow-commands",
        &operator_id,
    ]);
    let cam_id = full_id(&cam);
    wait_until(
        "the operator hears of the camera box",
        Duration::from_secs(10),
        || {
            http(&operator.addr(), "GET", "/api/v1/sensors", "")
                .1
                .contains(&cam_id)
        },
    );
    // By the first digits of its id, as `cambox sensors` shows them.
    let out = cambox(&[
        "cmd",
        &cam_id[..8],
        "live",
        "start",
        "--http",
        &operator.addr(),
    ]);
    assert!(
        out.status.success(),
        "{}{}\ncam log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        cam.logs()
    );
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["result"]["live"], true, "{reply}");
    assert_eq!(cam.status()["live"], true);
    // By its name, and the LED too.
    let out = cambox(&["cmd", "yard", "led", "identify", "--http", &operator.addr()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the LED identifies", Duration::from_secs(3), || {
        cam.status()["led"]["overlay"] == "identify"
    });
    // A box not on the allow-list gets no answer: the command is dropped and counted.
    let (code, body) = http(
        &stranger.addr(),
        "POST",
        "/api/v1/cmd",
        &format!(r#"{{"node": "{cam_id}", "capability": "live", "action": "stop"}}"#),
    );
    assert_eq!(code, 504, "{body}");
    assert!(body.contains("allow-list"), "{body}");
    assert_eq!(cam.status()["live"], true, "the stranger could not stop it");
    wait_until("the refusal is counted", Duration::from_secs(2), || {
        cam.metric("cambox_mesh_routed{outcome=\"unauthorized\"}") == 1.0
    });
    // Unknown nodes and bad bodies are named.
    let (code, body) = http(
        &operator.addr(),
        "POST",
        "/api/v1/cmd",
        r#"{"node": "nobody", "capability": "live", "action": "stop"}"#,
    );
    assert_eq!(code, 404, "{body}");
    let (code, _) = http(&operator.addr(), "POST", "/api/v1/cmd", r#"{"node": 1}"#);
    assert_eq!(code, 400);
    // An action the box does not have is refused with what it offers.
    let out = cambox(&["cmd", "yard", "led", "paint", "--http", &operator.addr()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("led identify|status"), "{err}");
}

#[test]
fn a_sensor_file_change_shows_in_cambox_sensors_on_another_box_within_a_second() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("temp");
    std::fs::write(&file, "21.5\n").unwrap();
    let viewer = BoxProc::start(&["--node", "office", "--source", "none"]);
    let sensor = BoxProc::start(&[
        "--node",
        "greenhouse",
        "--source",
        "none",
        "--peer",
        &viewer.mesh_addr,
        "--sensor",
        &format!("name=temp,unit=C,min=-40,max=85,file={}", file.display()),
    ]);
    let sensor_id = full_id(&sensor);
    let reading = |b: &BoxProc| -> Option<serde_json::Value> {
        let (_, body) = http(&b.addr(), "GET", "/api/v1/sensors", "");
        let v = json(&body);
        v["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["id"] == sensor_id.as_str())
            .map(|n| n["telemetry"]["readings"]["temp"]["value"].clone())
    };
    wait_until(
        "the first reading on the other box",
        Duration::from_secs(10),
        || reading(&viewer) == Some(serde_json::json!(21.5)),
    );
    let mut worst = Duration::ZERO;
    for value in ["22.25", "-3", "40"] {
        std::fs::write(&file, format!("{value}\n")).unwrap();
        let changed = Instant::now();
        let want: serde_json::Value = serde_json::from_str(value).unwrap();
        loop {
            if reading(&viewer).as_ref().and_then(|v| v.as_f64()) == want.as_f64() {
                break;
            }
            assert!(
                changed.elapsed() < Duration::from_secs(5),
                "reading {value} never arrived"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        worst = worst.max(changed.elapsed());
    }
    eprintln!("sensor file to another box's API: worst {worst:?}");
    assert!(worst < Duration::from_secs(1), "took {worst:?}");
    // The table a person reads names the box, its sensor and the reading.
    let out = cambox(&["sensors", "--http", &viewer.addr()]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    let row = table
        .lines()
        .find(|l| l.contains("greenhouse"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("sensor:temp") && row.contains("temp=40C"),
        "{row}"
    );
    assert!(
        !row.contains("camera"),
        "a box without a camera says so: {row}"
    );
    // And the sensor can be read by command.
    let (code, body) = http(
        &viewer.addr(),
        "POST",
        "/api/v1/cmd",
        &format!(r#"{{"node": "{sensor_id}", "capability": "sensor:temp", "action": "read"}}"#),
    );
    assert_eq!(code, 504, "not allowed to command it: {body}");
}

#[test]
fn chat_messages_reach_the_other_box_once_in_order_with_history() {
    let _serial = serial();
    let a = BoxProc::start(&["--node", "north", "--source", "none", "--site", "hq"]);
    let b = BoxProc::start(&[
        "--node",
        "south",
        "--source",
        "none",
        "--site",
        "hq",
        "--peer",
        &a.mesh_addr,
    ]);
    wait_until("the boxes meet", Duration::from_secs(10), || {
        http(&a.addr(), "GET", "/api/v1/peers", "")
            .1
            .contains("rtt_ms")
    });
    for k in 1..=3 {
        let out = cambox(&[
            "chat",
            "--send",
            &format!("hello {k}"),
            "--name",
            "ann",
            "--http",
            &a.addr(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("ann ("));
    }
    // b opens the room afterwards: the history is there, once each, in order.
    let texts = |v: &serde_json::Value| -> Vec<String> {
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_string())
            .collect()
    };
    wait_until(
        "the history on the other box",
        Duration::from_secs(5),
        || texts(&json(&http(&b.addr(), "GET", "/api/v1/chat/site:hq", "").1)).len() == 3,
    );
    let v = json(&http(&b.addr(), "GET", "/api/v1/chat/site:hq", "").1);
    assert_eq!(texts(&v), ["hello 1", "hello 2", "hello 3"]);
    assert_eq!(v["messages"][0]["name"], "ann");
    assert_eq!(v["messages"][0]["from"], full_id(&a).as_str());
    // A follower on b sees what is said on both boxes as it is said.
    let follower = Command::new(BIN)
        .args(["chat", "--duration", "4s", "--http", &b.addr()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let (code, body) = http(
        &b.addr(),
        "POST",
        "/api/v1/chat/site:hq",
        r#"{"text": "from south"}"#,
    );
    assert_eq!(code, 201, "{body}");
    let (code, _) = http(
        &a.addr(),
        "POST",
        "/api/v1/chat/site:hq",
        r#"{"text": "hello 4"}"#,
    );
    assert_eq!(code, 201);
    let out = follower.wait_with_output().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 5, "{printed}");
    assert!(
        lines[3].contains("south") && lines[3].ends_with("from south"),
        "{printed}"
    );
    assert!(lines[4].ends_with("hello 4"), "{printed}");
    // Bad rooms and messages are named.
    let (code, _) = http(&a.addr(), "POST", "/api/v1/chat/a%20b", r#"{"text": "x"}"#);
    assert_eq!(code, 400);
    let (code, _) = http(
        &a.addr(),
        "POST",
        "/api/v1/chat/site:hq",
        r#"{"text": "  "}"#,
    );
    assert_eq!(code, 400);
}
