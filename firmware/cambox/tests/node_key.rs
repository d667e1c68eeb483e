//! The node key as a person meets it: a second box started with a key that a running box
//! holds is refused with the fix; two boxes that hold copies of one key say so plainly;
//! and the stream list names other boxes by their names.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn streams(b: &BoxProc) -> Vec<serde_json::Value> {
    let (_, body) = http(&b.addr(), "GET", "/api/v1/streams", "");
    json(&body)["streams"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_key_in_use_by_a_running_box_is_refused_at_start_with_the_fix() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("node.key");
    let key_arg = key.to_str().unwrap();
    let first = BoxProc::start(&["--key", key_arg, "--source", "none"]);
    let second = Command::new(BIN)
        .args([
            "run", "--key", key_arg, "--source", "none", "--mdns", "false",
        ])
        .args([
            "--http",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--rtsp",
            "off",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run cambox");
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "the second box started: {said}");
    assert!(
        said.contains(key_arg),
        "the message names the key file: {said}"
    );
    assert!(said.contains("in use by another cambox"), "{said}");
    assert!(said.contains("--key"), "the message names the fix: {said}");
    let pid = first.child.id().to_string();
    assert!(
        said.contains(&pid),
        "the message names the process ({pid}): {said}"
    );

    // Once the first box is gone, the key is free again.
    drop(first);
    let again = BoxProc::start(&["--key", key_arg, "--source", "none"]);
    assert!(again.logs().contains("mesh node"));
}

#[test]
fn two_boxes_with_copies_of_one_key_say_they_share_it_once_not_every_tick() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("a.key");
    let copy = dir.path().join("b.key");
    let a = BoxProc::start(&["--key", key.to_str().unwrap(), "--source", "none"]);
    std::fs::copy(&key, &copy).unwrap();
    let b = BoxProc::start(&[
        "--key",
        copy.to_str().unwrap(),
        "--source",
        "none",
        "--peer",
        &a.mesh_addr,
    ]);
    assert_eq!(a.node_id, b.node_id, "the copy proves the same node");
    let shared = "two boxes share one node key";
    wait_until(
        "both boxes to say they share a key",
        Duration::from_secs(10),
        || a.logs().contains(shared) && b.logs().contains(shared),
    );
    // The static peer is redialled every 500 ms; the warning is not repeated with it.
    std::thread::sleep(Duration::from_secs(3));
    let times = b.logs().matches(shared).count();
    assert_eq!(times, 1, "said {times} times:\n{}", b.logs());
    assert!(!b.logs().contains("connected to itself"), "{}", b.logs());
}

#[test]
fn the_stream_list_names_other_boxes_by_their_names_and_ids_where_names_collide() {
    let _serial = serial();
    let small = ["--source", "testsrc", "--width", "320", "--height", "180"];
    let mut args = vec!["--live", "--name", "cam", "--node", "yard"];
    args.extend(small);
    let yard = BoxProc::start(&args);
    yard.wait_live(true);
    let lobby = BoxProc::start(&[
        "--node",
        "lobby",
        "--name",
        "lobby-cam",
        "--peer",
        &yard.mesh_addr,
    ]);
    let remote_path = format!("/live/cam@{}.mp4", yard.node_id);
    wait_for_stream(&lobby, &remote_path, "lobby to list yard's stream");
    let list = streams(&lobby);
    let remote = list
        .iter()
        .find(|s| s["local"] == false)
        .expect("a remote entry");
    assert_eq!(remote["node"], "yard", "{list:?}");
    assert_eq!(remote["node_id"], yard.node_id.as_str(), "{list:?}");
    let own = list
        .iter()
        .find(|s| s["local"] == true)
        .expect("its own entry");
    assert_eq!(own["node"], "lobby", "{list:?}");
    assert_eq!(own["node_id"], lobby.node_id.as_str(), "{list:?}");

    // A second box called "yard": in its list, each "yard" shows its short id as well.
    let twin = BoxProc::start(&[
        "--node",
        "yard",
        "--name",
        "gate",
        "--peer",
        &yard.mesh_addr,
    ]);
    wait_for_stream(&twin, &remote_path, "the twin to list yard's stream");
    let list = streams(&twin);
    let names: Vec<&str> = list.iter().filter_map(|s| s["node"].as_str()).collect();
    assert!(
        names.contains(&format!("yard ({})", yard.node_id).as_str()),
        "{names:?}"
    );
    assert!(
        names.contains(&format!("yard ({})", twin.node_id).as_str()),
        "{names:?}"
    );

    // `cambox list` shows the box names too.
    let out = Command::new(BIN)
        .args(["list", "--http", &lobby.addr()])
        .output()
        .expect("cambox list");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("cam "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("yard"), "{text}");
}
