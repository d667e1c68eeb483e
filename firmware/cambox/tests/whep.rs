//! WHEP over plain HTTP: what a WHEP client gets for good and bad offers, and that a
//! session is counted, can be ended, and ends by itself when its peer never connects;
//! offers that never connect hold only a few sessions per address.
//! (Chromium playing WHEP is in browser.rs.)

mod common;

use std::time::Duration;

use common::*;

const OFFER: &str = include_str!("../../node/tests/fixtures/chromium-offer.sdp");

/// A box live with the test source as stream `lobby`.
fn live_lobby() -> BoxProc {
    let b = BoxProc::start(&[
        "--live", "--source", "testsrc", "--width", "320", "--height", "180", "--name", "lobby",
    ]);
    b.wait_live(true);
    b
}

fn whep_viewers(b: &BoxProc) -> f64 {
    b.metric("cambox_viewers_by_protocol{protocol=\"whep\"}")
}

#[test]
fn offers_are_answered_refused_and_ended_as_the_whep_draft_says() {
    let _serial = serial();
    let b = live_lobby();
    let addr = b.addr();

    let (code, _, body) = http_full(&addr, "POST", "/whep/lobby", "text/plain", OFFER);
    assert_eq!(code, 415, "{body}");
    assert!(body.contains("application/sdp"), "{body}");
    let (code, _, body) = http_full(&addr, "POST", "/whep/lobby", "application/sdp", "hello");
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("v=0"),
        "the error says what an offer looks like: {body}"
    );
    let (code, _, body) = http_full(
        &addr,
        "POST",
        "/whep/lobby",
        "application/sdp",
        "v=0\r\nm=nonsense\r\n",
    );
    assert_eq!(code, 400, "{body}");
    let (code, _, body) = http_full(&addr, "POST", "/whep/nowhere", "application/sdp", OFFER);
    assert_eq!(code, 404, "{body}");
    assert!(
        body.contains("lobby"),
        "the error names this box's stream: {body}"
    );
    let (code, _, _) = http_full(&addr, "DELETE", "/whep/session/0123", "application/sdp", "");
    assert_eq!(code, 404);
    assert_eq!(whep_viewers(&b), 0.0, "refused offers made no session");

    let (code, head, answer) = http_full(&addr, "POST", "/whep/lobby", "application/sdp", OFFER);
    assert_eq!(code, 201, "{head}\n{answer}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/sdp"),
        "{head}"
    );
    let location = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("location: ")
                .or_else(|| l.strip_prefix("Location: "))
        })
        .expect("a Location header")
        .trim()
        .to_string();
    assert!(location.starts_with("/whep/session/"), "{location}");
    assert!(
        answer.starts_with("v=0") && answer.contains("a=ice-lite"),
        "{answer}"
    );
    assert!(
        answer.contains("127.0.0.1") && answer.contains("typ host"),
        "{answer}"
    );
    assert!(
        answer.contains("H264/90000") && answer.contains("opus/48000/2"),
        "{answer}"
    );
    assert_eq!(whep_viewers(&b), 1.0);

    let (code, _, _) = http_full(
        &addr,
        "PATCH",
        &location,
        "application/trickle-ice-sdpfrag",
        "a=x\r\n",
    );
    assert_eq!(code, 405, "an ICE-lite box takes no trickled candidates");
    let (code, _, _) = http_full(&addr, "DELETE", &location, "application/sdp", "");
    assert_eq!(code, 200);
    wait_until(
        "the deleted session is gone",
        Duration::from_secs(5),
        || whep_viewers(&b) == 0.0,
    );
    let (code, _, _) = http_full(&addr, "DELETE", &location, "application/sdp", "");
    assert_eq!(code, 404, "a session ends once");

    // An offer whose peer never connects (nobody answers ICE) ends by itself.
    let (code, _, _) = http_full(&addr, "POST", "/whep/lobby", "application/sdp", OFFER);
    assert_eq!(code, 201);
    assert_eq!(whep_viewers(&b), 1.0);
    wait_until(
        "the unconnected session gives up",
        Duration::from_secs(25),
        || whep_viewers(&b) == 0.0,
    );
    assert!(
        b.logs().contains("ICE/DTLS did not complete"),
        "{}",
        b.logs()
    );
}

#[test]
fn offers_that_never_connect_hold_a_few_sessions_per_address_not_the_box() {
    use cambox_node::whep::MAX_CONNECTING_PER_SOURCE;
    let _serial = serial();
    let b = live_lobby();
    let addr = b.addr();
    // Nobody completes ICE for these: each waits for its peer with a socket and a task.
    for i in 0..MAX_CONNECTING_PER_SOURCE {
        let (code, _, body) = http_full(&addr, "POST", "/whep/lobby", "application/sdp", OFFER);
        assert_eq!(code, 201, "offer {i}: {body}");
    }
    let (code, head, body) = http_full(&addr, "POST", "/whep/lobby", "application/sdp", OFFER);
    assert_eq!(code, 429, "{head}\n{body}");
    assert!(
        body.contains("still connecting") && body.contains("127.0.0.1"),
        "the refusal says why and for which address: {body}"
    );
    assert_eq!(b.metric("cambox_whep_refused_connecting_total"), 1.0);
    // A viewer at another address is served as before.
    let other: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let (code, _, body) = http_full_from(
        other,
        &addr,
        "POST",
        "/whep/lobby",
        "application/sdp",
        OFFER,
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        whep_viewers(&b),
        (MAX_CONNECTING_PER_SOURCE + 1) as f64,
        "the refused offer made no session"
    );
}
