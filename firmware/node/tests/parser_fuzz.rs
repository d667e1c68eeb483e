//! Bounded fuzzing of what viewers send first: WHEP SDP offers and RTSP requests. Random
//! bytes, and real messages cut and mutated, must give an answer or an error, never a
//! panic, and a request that parses must name what was sent.
//! `chromium-offer.sdp` is an offer Chromium 156 made for receive-only video and audio.

use cambox_node::rtsp::conn::{parse, split_uri, Parsed};
use cambox_node::whep::{negotiate, parse_offer};
use proptest::prelude::*;

const LOCAL: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);
const OFFER: &str = include_str!("fixtures/chromium-offer.sdp");

fn rtsp_requests() -> Vec<String> {
    let url = "rtsp://127.0.0.1:8554/hall@3fa2";
    vec![
        "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n".to_string(),
        format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 2\r\nAccept: application/sdp\r\n\r\n"),
        format!("SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"),
        format!("SETUP {url}/trackID=1 RTSP/1.0\r\nCSeq: 4\r\nTransport: RTP/AVP;unicast;client_port=5000-5001\r\nSession: 12ab\r\n\r\n"),
        format!("PLAY {url} RTSP/1.0\r\nCSeq: 5\r\nSession: 12ab\r\nRange: npt=0-\r\n\r\n"),
        format!("TEARDOWN {url} RTSP/1.0\r\nCSeq: 6\r\nSession: 12ab\r\n\r\n"),
    ]
}

fn mutate(base: &[u8], cut: usize, flips: &[(usize, u8)]) -> Vec<u8> {
    let mut b = base[..cut.min(base.len())].to_vec();
    for &(at, byte) in flips {
        if !b.is_empty() {
            let i = at % b.len();
            b[i] = byte;
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn offers_of_random_bytes_are_refused_cleanly(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_offer(&body);
    }

    #[test]
    fn cut_and_mutated_offers_are_answered_or_refused(cut in 0usize..7000, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8)) {
        // Past parsing, into str0m's negotiation, as the handler does.
        if let Ok(offer) = parse_offer(&mutate(OFFER.as_bytes(), cut, &flips)) {
            let _ = negotiate(offer, str0m::IceCreds::new(), &[local()]);
        }
    }

    #[test]
    fn rtsp_random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse(&body);
    }

    #[test]
    fn rtsp_cut_and_mutated_requests_never_panic(which in 0usize..6, cut in 0usize..300, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6)) {
        let req = &rtsp_requests()[which];
        let _ = parse(&mutate(req.as_bytes(), cut, &flips));
    }

    #[test]
    fn a_request_cut_short_waits_for_the_rest(which in 0usize..6, cut in 1usize..300) {
        let req = &rtsp_requests()[which];
        let cut = cut.min(req.len() - 1);
        prop_assert!(matches!(parse(&req.as_bytes()[..cut]), Parsed::Incomplete | Parsed::Garbage));
    }

    #[test]
    fn any_url_splits_or_is_refused(url in ".{0,200}") {
        if let Some((name, control)) = split_uri(&url) {
            prop_assert!(!name.is_empty());
            prop_assert!(control.is_none_or(|c| c.starts_with("trackID=")));
        }
    }
}

#[test]
fn the_real_offer_parses_and_requests_name_what_was_sent() {
    let offer = parse_offer(OFFER.as_bytes()).expect("Chromium's offer");
    let (_, answer) = negotiate(offer, str0m::IceCreds::new(), &[local()]).expect("an answer");
    assert!(
        answer.contains("a=ice-lite") && answer.contains("127.0.0.1 40000 typ host"),
        "{answer}"
    );
    assert!(
        answer.contains("packetization-mode=1;profile-level-id=42e01f"),
        "{answer}"
    );
    assert!(parse_offer(b"v=0\r\nthis is not sdp").is_err());
    assert!(parse_offer(b"hello").is_err());
    let reqs = rtsp_requests();
    let all = reqs.concat();
    let mut at = 0;
    let mut cseqs = Vec::new();
    while at < all.len() {
        match parse(&all.as_bytes()[at..]) {
            Parsed::Request(r, used) => {
                cseqs.push(r.cseq.clone());
                at += used;
            }
            other => panic!("pipelined requests: {other:?} at {at}"),
        }
    }
    assert_eq!(cseqs, ["1", "2", "3", "4", "5", "6"]);
    match parse(reqs[3].as_bytes()) {
        Parsed::Request(r, _) => {
            assert_eq!(r.session.as_deref(), Some("12ab"));
            assert_eq!(r.transports.map(|t| t.len()), Some(1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        split_uri("rtsp://127.0.0.1:8554/hall%40x/trackID=1"),
        Some(("hall@x".into(), Some("trackID=1".into())))
    );
    assert_eq!(split_uri("rtsp://box/"), None);
    assert_eq!(split_uri("rtsp://box/a/b"), None);
}

fn local() -> str0m::Candidate {
    str0m::Candidate::host(LOCAL, "udp").expect("a host candidate")
}
