//! The simulated board as a person uses it through the API: presses go through the same
//! debouncing and press lengths as the real button, and the LED follows the box.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

fn press(b: &BoxProc, body: &str) -> (u16, serde_json::Value) {
    let (code, body) = http(&b.addr(), "POST", "/api/v1/button", body);
    (code, json(&body))
}

#[test]
fn a_short_press_toggles_live_and_the_led_follows() {
    let _serial = serial();
    let b = BoxProc::start(&["--source", "testsrc", "--width", "320", "--height", "180"]);
    wait_until("the LED leaves booting", Duration::from_secs(5), || {
        b.status()["led"]["state"] != "booting"
    });
    // Alone, with no neighbours: looking for other boxes (or, on a machine with no
    // interface but loopback, no network).
    let state = b.status()["led"]["state"].clone();
    assert!(state == "searching" || state == "no_network", "{state}");
    let (code, body) = press(&b, r#"{"press": "short"}"#);
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["held_ms"], 200);
    b.wait_live(true);
    wait_until("the LED shows live", Duration::from_secs(5), || {
        b.status()["led"]["state"] == "live"
    });
    assert_eq!(b.status()["led"]["pattern"], serde_json::json!([1000]));
    // Holding and letting go through the page's calls is a press too.
    assert_eq!(press(&b, r#"{"hold": true}"#).0, 202);
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(press(&b, r#"{"hold": false}"#).0, 202);
    b.wait_live(false);
}

#[test]
fn a_press_shorter_than_the_debounce_does_nothing() {
    let _serial = serial();
    let b = BoxProc::start(&["--source", "testsrc", "--width", "320", "--height", "180"]);
    // Down and up again within a few ms: contact bounce, not a press.
    assert_eq!(press(&b, r#"{"hold": true}"#).0, 202);
    assert_eq!(press(&b, r#"{"hold": false}"#).0, 202);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.status()["live"], false);
}

#[test]
fn a_long_press_blinks_the_address_and_does_not_touch_live() {
    let _serial = serial();
    let b = BoxProc::start(&["--source", "testsrc", "--width", "320", "--height", "180"]);
    let (code, body) = press(&b, r#"{"press": "long"}"#);
    assert_eq!((code, body["held_ms"].as_u64()), (202, Some(5500)));
    // At 5 s, while still held, the LED confirms; after the release it blinks digits.
    wait_until(
        "the long-press confirmation",
        Duration::from_secs(7),
        || b.status()["led"]["overlay"] == "long_reached",
    );
    wait_until("the address digits", Duration::from_secs(3), || {
        b.status()["led"]["overlay"] == "digits"
    });
    assert_eq!(b.status()["live"], false);
}

#[test]
fn bad_button_requests_are_named() {
    let _serial = serial();
    let b = BoxProc::start(&["--source", "testsrc"]);
    for bad in [
        "",
        "{\"press\": \"forever\"}",
        "{\"press\": \"short\", \"hold\": true}",
        "{}",
        "{\"hold\": 1}",
    ] {
        let (code, body) = press(&b, bad);
        assert_eq!(code, 400, "{bad:?} -> {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    assert_eq!(b.status()["live"], false);
}

#[test]
fn the_event_stream_carries_the_led() {
    let _serial = serial();
    let b = BoxProc::start(&["--source", "testsrc", "--width", "320", "--height", "180"]);
    let mut s = TcpStream::connect(b.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut lines = BufReader::new(s).lines();
    let mut next_led = || loop {
        let line = lines.next().expect("stream open").expect("read");
        if line == "event: led" {
            let data = lines.next().unwrap().unwrap();
            return json(data.strip_prefix("data: ").expect("data line"));
        }
    };
    let first = next_led();
    assert!(first["state"].is_string(), "{first}");
    press(&b, r#"{"press": "short"}"#);
    // Every change arrives, so "live" comes by within a few seconds.
    let mut seen = Vec::new();
    loop {
        let v = next_led();
        seen.push(v["state"].as_str().unwrap().to_string());
        if v["state"] == "live" && v["on"] == true {
            break;
        }
        assert!(seen.len() < 200, "no live LED in {seen:?}");
    }
}
