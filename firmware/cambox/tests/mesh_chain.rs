//! Tier b: real `cambox run` processes on loopback relaying a broadcast through a chain,
//! and a relay killed mid-stream.

mod common;

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use cambox_media::strip::StripReading;
use common::*;

const W: u32 = 640;
const H: u32 = 360;

/// The neighbour `b` receives `broadcast` from, per its /metrics.
fn parent_of(b: &BoxProc, broadcast: &str) -> Option<String> {
    let (_, body) = http(&b.addr(), "GET", "/metrics", "");
    let want = format!("cambox_mesh_parent{{broadcast=\"{broadcast}\",parent=\"");
    body.lines().find_map(|l| {
        let rest = l.strip_prefix(&want)?;
        Some(rest.split('"').next()?.to_string())
    })
}

/// Reads `path` from a box for `secs` and throws it away: a viewer at that box.
fn drain(b: &BoxProc, path: &str, secs: u64) -> thread::JoinHandle<()> {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-m", &secs.to_string(), "-o", "/dev/null"])
        .arg(b.url(path))
        .stdout(Stdio::null());
    thread::spawn(move || {
        let _ = cmd.status();
    })
}

#[test]
fn a_chain_of_four_boxes_relays_and_heals_when_the_middle_relay_is_killed() {
    require("ffmpeg");
    require("curl");
    let _serial = serial();
    let origin = BoxProc::start(&[
        "--live", "--source", "testsrc", "--width", "640", "--height", "360", "--name", "cam",
        "--site", "a", "--uplink", "1k",
    ]);
    origin.wait_live(true);
    // Four sites, every box knows only the origin, and every uplink has room for one
    // copy out: each site's one copy crosses its own uplink, and a newcomer is sent down
    // to the site the full one serves, which builds the chain in the order they join.
    let peer = origin.mesh_addr.clone();
    let one_copy = ["--uplink", "1k", "--peer", &peer];
    let mut relay1 = BoxProc::start(&[&["--name", "r1", "--site", "b"][..], &one_copy].concat());
    let relay2 = BoxProc::start(&[&["--name", "r2", "--site", "c"][..], &one_copy].concat());
    let viewer = BoxProc::start(&[&["--name", "v", "--site", "d"][..], &one_copy].concat());
    let broadcast = format!("cam@{}", origin.node_id);
    let live_path = format!("/live/{broadcast}.mp4");
    wait_for_stream(&viewer, &live_path, "the viewer box to learn the broadcast");

    let r1_viewer = drain(&relay1, &live_path, 30);
    wait_until(
        "relay 1 to join the origin",
        Duration::from_secs(10),
        || parent_of(&relay1, &broadcast).as_deref() == Some(origin.node_id.as_str()),
    );
    let r2_viewer = drain(&relay2, &live_path, 30);
    wait_until(
        "relay 2 to be sent down below relay 1",
        Duration::from_secs(10),
        || parent_of(&relay2, &broadcast).as_deref() == Some(relay1.node_id.as_str()),
    );
    // The recording at the end of the chain, through `cambox watch`.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("watch.mp4");
    let watch = Command::new(env!("CARGO_BIN_EXE_cambox"))
        .args([
            "watch",
            &broadcast,
            "--http",
            &viewer.addr(),
            "--duration",
            "14s",
            "-o",
        ])
        .arg(&out)
        .stderr(Stdio::piped())
        .spawn()
        .expect("cambox watch");
    wait_until(
        "the viewer box to be sent down below relay 2",
        Duration::from_secs(10),
        || parent_of(&viewer, &broadcast).as_deref() == Some(relay2.node_id.as_str()),
    );
    assert_eq!(
        parent_of(&relay1, &broadcast).as_deref(),
        Some(origin.node_id.as_str()),
        "chain origin -> r1 -> r2 -> viewer"
    );

    // Mid-recording, the middle relay dies without a word.
    thread::sleep(Duration::from_secs(4));
    relay1.child.kill().expect("SIGKILL relay 1");
    let _ = relay1.child.wait();
    // The tree heals: nobody receives through the dead relay (which node takes which
    // parent depends on who notices first: the viewer box may move up to the origin and
    // relay 2 below it).
    let healed = Instant::now() + Duration::from_secs(5);
    loop {
        let parents = [
            parent_of(&relay2, &broadcast),
            parent_of(&viewer, &broadcast),
        ];
        if parents
            .iter()
            .all(|p| p.as_ref().is_some_and(|p| *p != relay1.node_id))
        {
            break;
        }
        assert!(
            Instant::now() < healed,
            "the tree did not heal; parents of relay 2 and the viewer box: {parents:?}\nrelay 2 log:\n{}",
            relay2.logs(),
        );
        thread::sleep(Duration::from_millis(100));
    }

    let result = watch.wait_with_output().expect("cambox watch");
    assert!(
        result.status.success(),
        "cambox watch failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    let _ = (r1_viewer, r2_viewer);

    // Every decoded picture is whole (its strip reads), the frames advance, and the
    // largest hole in capture time, the repair, stays under a second.
    let worst_ms = whole_and_in_order(&out, 250);
    eprintln!("largest gap in capture time through the repair: {worst_ms} ms");
}

#[test]
fn the_far_end_of_a_chain_of_static_peers_plays_when_the_box_between_watches_nothing() {
    far_end_of_a_chain_plays(["a", "b", "c"]);
}

/// In one site a route is told by the box with the best one only, which assumes a full
/// LAN mesh; boxes of one site chained by static peers tell each other every route.
#[test]
fn the_far_end_of_a_chain_of_static_peers_inside_one_site_plays() {
    far_end_of_a_chain_plays(["hq", "hq", "hq"]);
}

fn far_end_of_a_chain_plays(sites: [&str; 3]) {
    require("ffprobe");
    require("curl");
    let _serial = serial();
    let a = BoxProc::start(&[
        "--live", "--source", "testsrc", "--width", "320", "--height", "180", "--name", "a",
        "--site", sites[0],
    ]);
    a.wait_live(true);
    // c knows only b, b only a; b watches nothing.
    let b = BoxProc::start(&["--name", "b", "--site", sites[1], "--peer", &a.mesh_addr]);
    let c = BoxProc::start(&["--name", "c", "--site", sites[2], "--peer", &b.mesh_addr]);
    let path = format!("/live/a@{}.mp4", a.node_id);
    wait_for_stream(&c, &path, "c to learn a's broadcast through b");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.mp4");
    let got = Command::new("curl")
        .args(["-s", "-m", "6", "-o"])
        .arg(&out)
        .args(["-w", "%{http_code}"])
        .arg(c.url(&path))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "200",
        "c answered: {}",
        c.logs()
    );
    let frames = decoded_video_frames(&out);
    assert!(frames > 60, "only {frames} frames from c in 6 s");
    assert_eq!(
        parent_of(&b, &format!("a@{}", a.node_id)).as_deref(),
        Some(a.node_id.as_str()),
        "b relays a for c"
    );
    // What b's frames to c add to the media: objects after a group's first go as
    // `ObjectNext` (10 bytes each); whole objects everywhere were 1.25 and more here.
    let to_c = |m: &str| b.metric(&format!("{m}_total{{peer=\"{}\"}}", &c.node_id[..12]));
    let media = to_c("cambox_mesh_media_sent_bytes");
    let frames = to_c("cambox_mesh_sent_bytes");
    let datagrams = to_c("cambox_mesh_datagram_sent_bytes");
    println!(
        "b to c: {media} media bytes, frames {:.3}x, UDP datagrams {:.3}x",
        frames / media,
        datagrams / media
    );
    assert!(
        media > 0.0 && frames / media < 1.12,
        "framing {:.3}x",
        frames / media
    );
}

/// The address after "and tcp " in a box's start line: where it takes links over TCP.
fn mesh_tcp_addr(b: &BoxProc) -> String {
    let logs = b.logs();
    let line = logs
        .lines()
        .find(|l| l.starts_with("cambox: mesh node ") && l.contains(" and tcp "))
        .unwrap_or_else(|| panic!("no mesh TCP address: {logs}"));
    line.rsplit(" and tcp ").next().unwrap().trim().to_string()
}

/// `transport` of each of `b`'s links.
fn transports(b: &BoxProc) -> Vec<String> {
    let (_, body) = http(&b.addr(), "GET", "/api/v1/peers", "");
    json(&body)["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["transport"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_link_over_tcp_carries_the_mesh_as_quic_does() {
    require("ffprobe");
    require("curl");
    let _serial = serial();
    let a = BoxProc::start(&[
        "--live", "--source", "testsrc", "--width", "320", "--height", "180", "--name", "a",
        "--site", "berlin",
    ]);
    a.wait_live(true);
    // b reaches a only over TCP (as from a site whose UDP is dropped), c reaches b by QUIC.
    let b = BoxProc::start(&[
        "--name",
        "b",
        "--site",
        "munich",
        "--peer",
        &format!("tcp://{}", mesh_tcp_addr(&a)),
    ]);
    let c = BoxProc::start(&["--name", "c", "--site", "paris", "--peer", &b.mesh_addr]);
    let path = format!("/live/a@{}.mp4", a.node_id);
    wait_for_stream(&c, &path, "c to learn a's broadcast through b");
    assert_eq!(transports(&a), ["tcp"], "{}", a.logs());
    let mut at_b = transports(&b);
    at_b.sort();
    assert_eq!(at_b, ["quic", "tcp"]);
    for viewer in [&b, &c] {
        let frames = frames_in_6s(viewer, &path);
        assert!(frames > 60, "only {frames} frames in 6 s");
    }
    let (_, peers) = http(&b.addr(), "GET", "/api/v1/peers", "");
    println!("b's links: {peers}");
    // What a firewall inspecting the port sees: TLS 1.3, as OpenSSL (nobody here wrote
    // it) reads it.
    let hello = Command::new("openssl")
        .args(["s_client", "-alpn", "cambox-tcp/1", "-connect"])
        .arg(mesh_tcp_addr(&a))
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    let said = String::from_utf8_lossy(&hello.stderr).to_string()
        + &String::from_utf8_lossy(&hello.stdout);
    assert!(said.contains("TLSv1.3"), "{said}");
    assert!(said.contains("ALPN protocol: cambox-tcp/1"), "{said}");
}

#[test]
fn cambox_doctor_fails_and_says_what_to_open_when_a_peer_answers_no_way() {
    // Nobody listens at either address.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (udp_addr, tcp_port) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap().port());
    drop((udp, tcp));
    let (passed, report) = doctor(&[
        "--peer",
        &udp_addr.to_string(),
        "--mesh-tcp",
        &format!("127.0.0.1:{tcp_port}"),
    ]);
    assert!(!passed, "{report}");
    assert!(report.contains("FAIL peer"), "{report}");
    assert!(
        report.contains(&format!("TCP {tcp_port} to 127.0.0.1 as a way through")),
        "{report}"
    );
    assert!(report.contains("cannot reach all it needs"), "{report}");
}

/// Box a, live at 127.0.0.2 with its mesh TCP port on `port`, its UDP dropped while the
/// file `firewall` exists (made here; removing it lets UDP through).
fn behind_a_udp_firewall(firewall: &std::path::Path, port: u16, w: u32, h: u32) -> BoxProc {
    std::fs::write(firewall, "").unwrap();
    let (w, h, tcp) = (w.to_string(), h.to_string(), format!("127.0.0.2:{port}"));
    let a = BoxProc::start_with_env(
        &[
            "--live",
            "--source",
            "testsrc",
            "--width",
            &w,
            "--height",
            &h,
            "--name",
            "a",
            "--site",
            "berlin",
            "--listen",
            "127.0.0.2:0",
            "--mesh-tcp",
            &tcp,
        ],
        &[(
            "CAMBOX_MESH_TEST_DROP_UDP_WHILE",
            firewall.to_str().unwrap(),
        )],
    );
    a.wait_live(true);
    a
}

/// The pictures ffmpeg decodes of 6 s of `path` played at `b` as MP4.
fn frames_in_6s(b: &BoxProc, path: &str) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("6s.mp4");
    let got = Command::new("curl")
        .args(["-s", "-m", "6", "-o"])
        .arg(&out)
        .args(["-w", "%{http_code}"])
        .arg(b.url(path))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&got.stdout), "200", "{}", b.logs());
    decoded_video_frames(&out)
}

/// Checks a recording's strip: more than `min_frames` pictures, each whole, none repeated
/// or backwards, and no hole of a second in capture time. The largest hole, in ms.
fn whole_and_in_order(out: &std::path::Path, min_frames: usize) -> u64 {
    let readings = strip_via_ffmpeg(out, W, H);
    assert!(
        readings.len() > min_frames,
        "only {} frames",
        readings.len()
    );
    let unreadable = readings.iter().filter(|r| r.is_none()).count();
    assert_eq!(unreadable, 0, "pictures with a broken strip: {unreadable}");
    let frames: Vec<StripReading> = readings.into_iter().flatten().collect();
    let mut worst_ms = 0;
    for pair in frames.windows(2) {
        assert!(
            pair[1].frame > pair[0].frame,
            "frame {} after {}: repeated or backwards",
            pair[1].frame,
            pair[0].frame
        );
        worst_ms = worst_ms.max(pair[1].capture_ms - pair[0].capture_ms);
    }
    assert!(
        worst_ms < 1000,
        "the viewer went {worst_ms} ms without a new frame"
    );
    worst_ms
}

/// Box b at 127.0.0.3 (site munich, the same mesh TCP port) with `a` as its static peer,
/// and `extra` options.
fn dialing(a: &BoxProc, port: u16, extra: &[&str]) -> BoxProc {
    let tcp = format!("127.0.0.3:{port}");
    let mut args = vec![
        "--name",
        "b",
        "--site",
        "munich",
        "--listen",
        "127.0.0.3:0",
        "--mesh-tcp",
        &tcp,
        "--peer",
        &a.mesh_addr,
    ];
    args.extend(extra);
    BoxProc::start(&args)
}

/// `cambox doctor ARGS`: whether it passed, and what it printed.
fn doctor(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cambox"))
        .arg("doctor")
        .args(["--mdns", "false"])
        .args(args)
        .output()
        .expect("cambox doctor");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    (out.status.success(), text)
}

/// A TCP port free on both addresses: the mesh's one TCP port for two boxes.
fn port_free_on(ips: &[&str]) -> u16 {
    loop {
        let port = std::net::TcpListener::bind((ips[0], 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if ips
            .iter()
            .all(|ip| std::net::TcpListener::bind((*ip, port)).is_ok())
        {
            return port;
        }
    }
}

#[test]
fn a_box_quic_cannot_reach_is_linked_over_tcp_and_moves_back_to_quic_when_udp_returns() {
    require("ffmpeg");
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let firewall = dir.path().join("udp-dropped");
    let port = port_free_on(&["127.0.0.2", "127.0.0.3"]);
    let a = behind_a_udp_firewall(&firewall, port, W, H);
    // b knows a's QUIC address only; QUIC gets no answer, so b dials a's TCP port.
    let started = Instant::now();
    let b = dialing(&a, port, &[]);
    wait_until("b to link to a over TCP", Duration::from_secs(15), || {
        transports(&b) == ["tcp"]
    });
    println!("linked over TCP {:?} after b started", started.elapsed());
    // `cambox doctor` on b's configuration finds the same: no answer over UDP, a over TCP.
    let report = doctor(&[
        "--peer",
        &a.mesh_addr,
        "--mesh-tcp",
        &format!("127.0.0.3:{port}"),
    ]);
    assert!(report.0, "{}", report.1);
    let udp_port = a.mesh_addr.rsplit(':').next().unwrap();
    for expected in [
        format!("QUIC over UDP {}: no answer", a.mesh_addr),
        format!(
            "QUIC over TCP 127.0.0.2:{port}: node {} answers",
            &a.node_id[..12]
        ),
        format!("UDP {udp_port} to 127.0.0.2 for QUIC"),
    ] {
        assert!(
            report.1.contains(&expected),
            "{expected:?} not in:\n{}",
            report.1
        );
    }
    let path = format!("/live/a@{}.mp4", a.node_id);
    wait_for_stream(&b, &path, "b to learn a's broadcast");
    // A viewer at b records across the move.
    let out = dir.path().join("b.mp4");
    let record = Command::new("curl")
        .args(["-s", "-m", "16", "-o"])
        .arg(&out)
        .arg(b.url(&path))
        .spawn()
        .expect("curl");
    thread::sleep(Duration::from_secs(5));
    std::fs::remove_file(&firewall).unwrap();
    let opened = Instant::now();
    wait_until(
        "the link to move back to QUIC",
        Duration::from_secs(30),
        || transports(&b) == ["quic"],
    );
    println!(
        "back on QUIC {:?} after UDP got through again",
        opened.elapsed()
    );
    let _ = record.wait_with_output();
    let worst_ms = whole_and_in_order(&out, 200);
    println!("largest gap in capture time across the move: {worst_ms} ms");
}

/// tinyproxy (Debian's, nobody here wrote it) on 127.0.0.1, letting CONNECT through to
/// `port` only, as a company proxy lets it through to 443. Killed when dropped.
struct Proxy {
    child: std::process::Child,
    url: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Proxy {
    fn start(dir: &std::path::Path, port: u16) -> Proxy {
        require("tinyproxy");
        let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy_port = listen.local_addr().unwrap().port();
        drop(listen);
        let conf = dir.join("tinyproxy.conf");
        std::fs::write(
            &conf,
            format!(
                "Port {proxy_port}\nListen 127.0.0.1\nTimeout 600\nMaxClients 16\n\
                 Allow 127.0.0.1\nConnectPort {port}\nUser nobody\nGroup nogroup\nLogLevel Connect\n"
            ),
        )
        .unwrap();
        let mut child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tinyproxy");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    log.lock().unwrap().push_str(&(line + "\n"));
                }
            });
        }
        wait_until("tinyproxy to listen", Duration::from_secs(5), || {
            std::net::TcpStream::connect(("127.0.0.1", proxy_port)).is_ok()
        });
        Proxy {
            child,
            url: format!("http://127.0.0.1:{proxy_port}"),
            log,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_box_that_may_only_leave_through_an_http_proxy_links_through_it() {
    require("ffprobe");
    require("curl");
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let firewall = dir.path().join("udp-dropped");
    let port = port_free_on(&["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    let proxy = Proxy::start(dir.path(), port);
    // The registry too is reachable only through the proxy (it lets CONNECT through to
    // `port` only, as a company's to 443).
    let registry = RegistryProc::start(&format!("127.0.0.4:{port}"), &["--heartbeat", "1"]);
    let registry_url = format!("http://{}", registry.addr);
    let a = behind_a_udp_firewall(&firewall, port, 320, 180);
    let b = dialing(
        &a,
        port,
        &["--proxy", &proxy.url, "--registry", &registry_url],
    );
    wait_until(
        "b to link to a through the proxy",
        Duration::from_secs(15),
        || transports(&b) == ["tcp via proxy"],
    );
    let log = proxy.log();
    assert!(
        log.contains(&format!("CONNECT 127.0.0.2:{port}")),
        "tinyproxy saw no CONNECT to a:\n{log}"
    );
    wait_until(
        "b to register through the proxy",
        Duration::from_secs(10),
        || {
            http(&registry.addr, "GET", "/api/v1/nodes", "")
                .1
                .contains(&b.node_id[..12])
        },
    );
    assert!(proxy.log().contains(&format!("CONNECT 127.0.0.4:{port}")));
    let report = doctor(&[
        "--peer",
        &a.mesh_addr,
        "--mesh-tcp",
        &format!("127.0.0.3:{port}"),
        "--proxy",
        &proxy.url,
        "--registry",
        &registry_url,
    ]);
    assert!(report.0, "{}", report.1);
    for expected in [
        format!("registry {registry_url}: answers through the proxy"),
        format!(
            "QUIC over TCP 127.0.0.2:{port} through the proxy: node {}",
            &a.node_id[..12]
        ),
    ] {
        assert!(
            report.1.contains(&expected),
            "{expected:?} not in:\n{}",
            report.1
        );
    }
    let path = format!("/live/a@{}.mp4", a.node_id);
    wait_for_stream(&b, &path, "b to learn a's broadcast");
    let frames = frames_in_6s(&b, &path);
    assert!(frames > 60, "only {frames} frames through the proxy in 6 s");
    let (_, peers) = http(&b.addr(), "GET", "/api/v1/peers", "");
    println!("b's link through tinyproxy: {peers}");
}

/// `cambox strip` of `path` at `b` for `secs` seconds, started now: its JSON summary.
fn strip_later(b: &BoxProc, path: &str, secs: u32) -> thread::JoinHandle<serde_json::Value> {
    let url = b.url(path);
    thread::spawn(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_cambox"))
            .args(["strip", &url, "--duration", &format!("{secs}s"), "--json"])
            .output()
            .expect("cambox strip");
        json(String::from_utf8_lossy(&out.stdout).trim())
    })
}

#[test]
fn a_slow_tcp_link_gets_whole_groups_only_and_its_sibling_every_frame() {
    let _serial = serial();
    let a = BoxProc::start(&[
        "--live",
        "--source",
        "testsrc:grain",
        "--width",
        "640",
        "--height",
        "360",
        "--bitrate",
        "1M",
        "--name",
        "a",
        "--site",
        "berlin",
    ]);
    a.wait_live(true);
    let tcp = format!("tcp://{}", mesh_tcp_addr(&a));
    // Both reach a over TCP; the slow one reads at 400 kbit/s, under half the stream.
    let slow = BoxProc::start_with_env(
        &["--name", "slow", "--site", "munich", "--peer", &tcp],
        &[("CAMBOX_MESH_TEST_TCP_READ_KBPS", "400")],
    );
    let fast = BoxProc::start(&["--name", "fast", "--site", "paris", "--peer", &tcp]);
    let broadcast = format!("a@{}", a.node_id);
    let path = format!("/live/{broadcast}.mp4");
    wait_for_stream(&slow, &path, "the slow box to learn a's broadcast");
    wait_for_stream(&fast, &path, "the fast box to learn a's broadcast");
    let (at_slow, at_fast) = (strip_later(&slow, &path, 12), strip_later(&fast, &path, 12));
    // Siblings: the slow box links to a only, and the fast one receives from a.
    thread::sleep(Duration::from_secs(4));
    assert_eq!(transports(&slow), ["tcp"]);
    assert_eq!(
        parent_of(&fast, &broadcast).as_deref(),
        Some(a.node_id.as_str())
    );
    let (at_slow, at_fast) = (at_slow.join().unwrap(), at_fast.join().unwrap());
    println!("strip at the slow box: {at_slow}\nstrip at its sibling: {at_fast}");
    // The slow link loses whole groups: every picture that arrives is whole.
    assert_eq!(at_slow["unreadable"], 0, "{at_slow}");
    assert!(at_slow["missing"].as_u64().unwrap() > 0, "{at_slow}");
    assert!(at_slow["frames"].as_u64().unwrap() > 0, "{at_slow}");
    // Its sibling on the same relay misses nothing.
    assert_eq!(
        (&at_fast["unreadable"], &at_fast["missing"]),
        (&0.into(), &0.into()),
        "{at_fast}"
    );
    assert!(at_fast["frames"].as_u64().unwrap() >= 300, "{at_fast}");
}

/// `(transport, dialed)` of each of `b`'s links.
fn links(b: &BoxProc) -> Vec<(String, bool)> {
    let (_, body) = http(&b.addr(), "GET", "/api/v1/peers", "");
    json(&body)["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let transport = p["transport"].as_str().unwrap_or_default().to_string();
            (transport, p["dialed"].as_bool().unwrap_or_default())
        })
        .collect()
}

/// Box b's firewall lets nothing in and drops UDP both ways; it says it is reached from
/// its own site only. The registry tells a that nobody can dial b, and b that it must dial
/// out: b links to a over TCP, at the TCP port a registered (not b's own), and a never
/// dials at all. a plays b's stream over the link b opened.
#[test]
fn a_box_reached_from_its_site_only_dials_out_and_nobody_dials_it() {
    require("ffprobe");
    require("curl");
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let firewall = dir.path().join("udp-dropped");
    std::fs::write(&firewall, "").unwrap();
    let registry = RegistryProc::start("127.0.0.1:0", &["--heartbeat", "1"]);
    let url = format!("http://{}", registry.addr);
    let a = BoxProc::start(&["--name", "a", "--site", "berlin", "--registry", &url]);
    let b = BoxProc::start_with_env(
        &[
            "--live",
            "--source",
            "testsrc",
            "--width",
            "320",
            "--height",
            "180",
            "--name",
            "b",
            "--site",
            "munich",
            "--registry",
            &url,
            "--reachable",
            "site",
        ],
        &[(
            "CAMBOX_MESH_TEST_DROP_UDP_WHILE",
            firewall.to_str().unwrap(),
        )],
    );
    wait_until(
        "the registry to tell each box its reach",
        Duration::from_secs(10),
        || a.status()["reachable"] == "anywhere" && b.status()["reachable"] == "site",
    );
    wait_until("b to dial a over TCP", Duration::from_secs(15), || {
        links(&b) == [("tcp".to_string(), true)]
    });
    assert_eq!(links(&a), [("tcp".to_string(), false)], "{}", a.logs());
    let path = format!("/live/b@{}.mp4", b.node_id);
    wait_for_stream(&a, &path, "a to learn b's broadcast");
    let frames = frames_in_6s(&a, &path);
    assert!(
        frames > 60,
        "only {frames} frames in 6 s over the link b opened"
    );
    for transport in ["quic", "tcp"] {
        let dials = a.metric(&format!(
            "cambox_mesh_dials_total{{transport=\"{transport}\"}}"
        ));
        assert_eq!(dials, 0.0, "a dialed b over {transport}: {}", a.logs());
    }
    let (passed, report) = doctor(&["--registry", &url]);
    assert!(passed, "{report}");
    let own = "sees this box at its own address 127.0.0.1: boxes of other sites dial it";
    assert!(report.contains(own), "{report}");
    let (_, report) = doctor(&["--registry", &url, "--reachable", "site"]);
    assert!(
        report.contains("reach: set to its own site only"),
        "{report}"
    );
    let failed = b.metric("cambox_mesh_dial_failures_total{transport=\"quic\"}");
    println!(
        "b: {failed} QUIC dials failed before TCP; b's status: {}",
        b.status()
    );
}
