//! One viewer's trouble is nobody else's: a stalled or vanishing viewer does not slow,
//! gap or stop the others.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::*;

fn strip_summary(url: &str, secs: u32) -> serde_json::Value {
    let out =
        run(Command::new(BIN).args(["strip", url, "--duration", &format!("{secs}s"), "--json"]));
    json(String::from_utf8_lossy(&out).trim())
}

#[test]
fn stalled_and_vanishing_viewers_do_not_disturb_the_others() {
    let _serial = serial();
    let b = BoxProc::start(&[
        "--live", "--source", "testsrc", "--width", "640", "--height", "360", "--name", "yard",
    ]);
    b.wait_live(true);
    // A viewer that asks and then never reads.
    let mut stalled = TcpStream::connect(b.addr()).unwrap();
    write!(stalled, "GET /live/yard.mp4 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // Viewers that leave abruptly, mid-fragment.
    for _ in 0..5 {
        let mut v = TcpStream::connect(b.addr()).unwrap();
        write!(v, "GET /live/yard.mp4 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 3000];
        let _ = v.read(&mut buf);
        let _ = v.shutdown(Shutdown::Both);
    }
    let s = strip_summary(&b.url("/live/yard.mp4"), 4);
    assert!(s["frames"].as_u64().unwrap() >= 100, "{s}");
    assert_eq!(
        (s["gaps"].as_u64(), s["repeats"].as_u64()),
        (Some(0), Some(0)),
        "{s}"
    );
    assert_eq!(
        b.metric("cambox_viewers"),
        1.0,
        "only the stalled viewer remains"
    );
    drop(stalled);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.metric("cambox_viewers"), 0.0);
    let (code, _) = http(&b.addr(), "GET", "/api/v1/status", "");
    assert_eq!(code, 200);
    assert_eq!(
        b.metric("cambox_frames_dropped_total"),
        0.0,
        "the source never waited for a viewer"
    );
}

#[test]
fn stopping_ends_every_viewers_stream() {
    let _serial = serial();
    let b = BoxProc::start(&[
        "--live", "--source", "testsrc", "--width", "320", "--height", "180", "--name", "end",
    ]);
    b.wait_live(true);
    let mut v = TcpStream::connect(b.addr()).unwrap();
    v.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        v,
        "GET /live/end.mp4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    assert!(v.read(&mut buf).unwrap() > 0);
    let (code, _) = http(&b.addr(), "POST", "/api/v1/live", "{\"live\": false}");
    assert_eq!(code, 200);
    // The response ends (chunked terminator, then EOF) instead of hanging.
    let mut rest = Vec::new();
    v.read_to_end(&mut rest).expect("stream closes cleanly");
    assert!(rest.ends_with(b"0\r\n\r\n"), "chunked body terminated");
}
