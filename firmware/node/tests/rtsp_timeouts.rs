//! The RTSP server's clocks, with short limits: a client that says nothing is let go, an
//! RTP-over-UDP session lives as long as RTCP comes back and ends when it stops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cambox_media::encode::EncoderChoice;
use cambox_media::source::spec::AudioSpec;
use cambox_media::{FrameRate, SourceSpec, VideoFormat};
use cambox_node::metrics::Metrics;
use cambox_node::rtsp::conn::Limits;
use cambox_node::{BoxSettings, Station};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const LIMITS: Limits = Limits {
    session_timeout: Duration::from_millis(1500),
    write_stall: Duration::from_secs(1),
};

async fn live_box() -> (Arc<Station>, SocketAddr) {
    let settings = BoxSettings {
        node: "t".into(),
        stream: "cam".into(),
        site: "lab".into(),
        source: SourceSpec::Testsrc,
        audio: AudioSpec::None,
        looping: false,
        format: VideoFormat {
            width: 160,
            height: 96,
            rate: FrameRate::per_second(30),
        },
        encoder: EncoderChoice::OpenH264,
        bitrate: 200_000,
        keyframe_interval: 1.0,
        audio_bitrate: 32_000,
        watch: String::new(),
        watch_default: String::new(),
    };
    let station = Arc::new(Station::new(settings, Arc::new(Metrics::new())));
    let st = station.clone();
    tokio::task::spawn_blocking(move || st.set_live(true))
        .await
        .unwrap()
        .expect("live on the test source");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(cambox_node::rtsp::serve_with(
        listener,
        station.clone(),
        LIMITS,
    ));
    // The first keyframe, so SETUP finds a stream to describe.
    tokio::time::sleep(Duration::from_millis(300)).await;
    (station, addr)
}

/// Reads responses until one with `CSeq: n` is whole; returns everything read.
async fn response(s: &mut TcpStream, n: u32) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let want = format!("CSeq: {n}\r\n");
    while !String::from_utf8_lossy(&got).contains(&want) {
        let k = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert!(k > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..k]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Waits until the server closes `s`; returns how long that took.
async fn closed_after(s: &mut TcpStream) -> Duration {
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return t.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("still open after 10 s"),
        }
    }
}

/// SETUP over UDP to `rtp` (RTCP on the next port) and PLAY; returns the server's RTCP port.
async fn play_udp(s: &mut TcpStream, addr: SocketAddr, rtp: &UdpSocket) -> u16 {
    let port = rtp.local_addr().unwrap().port();
    let url = format!("rtsp://{addr}/cam");
    let setup = format!(
        "SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP;unicast;client_port={port}-{}\r\n\r\n",
        port + 1
    );
    s.write_all(setup.as_bytes()).await.unwrap();
    let head = response(s, 1).await;
    assert!(head.starts_with("RTSP/1.0 200"), "{head}");
    assert!(
        head.contains("timeout=1"),
        "the session announces the limit: {head}"
    );
    let session = head
        .lines()
        .find_map(|l| l.strip_prefix("Session: "))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let server_rtcp: u16 = head
        .split("server_port=")
        .nth(1)
        .and_then(|r| r.split(['-', ';', '\r']).nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap();
    s.write_all(format!("PLAY {url} RTSP/1.0\r\nCSeq: 2\r\nSession: {session}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert!(response(s, 2).await.starts_with("RTSP/1.0 200"));
    // RTP arrives over UDP: version 2, payload type 96.
    let mut buf = [0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), rtp.recv_from(&mut buf))
        .await
        .expect("RTP within 5 s")
        .unwrap();
    let (header, payload) = cambox_media::rtp::Header::parse(&buf[..n]).expect("an RTP packet");
    assert_eq!(header.payload_type, 96);
    assert!(!payload.is_empty());
    server_rtcp
}

#[tokio::test]
async fn a_client_that_says_nothing_is_let_go() {
    let (_st, addr) = live_box().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let took = closed_after(&mut s).await;
    assert!(took >= LIMITS.session_timeout, "closed after {took:?}");
}

#[tokio::test]
async fn udp_sessions_live_on_rtcp_and_end_without_it() {
    let (st, addr) = live_box().await;
    let viewers = || st.metrics.viewers_of("rtsp").get();

    // With receiver reports every 300 ms, the session outlives its timeout twice over.
    let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let server_rtcp = play_udp(&mut s, addr, &rtp).await;
    let reporter = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let until = Instant::now() + 2 * LIMITS.session_timeout;
    while Instant::now() < until {
        reporter
            .send_to(&[0x80, 201, 0, 1, 0, 0, 0, 1], ("127.0.0.1", server_rtcp))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(viewers(), 1, "RTCP kept the session");

    // Silence: the session and its connection end (within 10 s, or closed_after fails),
    // and the viewer is no longer counted.
    closed_after(&mut s).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(viewers(), 0);
}
