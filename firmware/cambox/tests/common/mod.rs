//! Test harness: real `cambox` processes on 127.0.0.1, talked to with plain HTTP and
//! checked with tools nobody on this team wrote (ffmpeg, ffprobe, Chromium).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_cambox");

/// Boxes encode in real time; running two tests' boxes at once on a small machine would
/// make them drop frames. Every test that starts a box holds this lock.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fails with a clear message when a peer tool is missing (the README's test command installs them).
pub fn require(tool: &str) {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{tool} is not installed; run scripts/test (it installs what the tests need)"
    );
}

/// A `cambox run` process on a free loopback port; killed when dropped.
pub struct BoxProc {
    pub child: Child,
    pub base: String,
    pub log: Arc<Mutex<String>>,
    /// The QUIC endpoint other boxes reach this one at.
    pub mesh_addr: String,
    /// Short node id, as logs, metrics and stream URLs show it.
    pub node_id: String,
    /// Holds the node key.
    state: tempfile::TempDir,
}

impl BoxProc {
    /// Starts a box on loopback ports the OS picks, with a key of its own and without
    /// mDNS (tests must not find boxes of other tests); `args` come after and may add more.
    pub fn start(args: &[&str]) -> BoxProc {
        Self::start_with_env(args, &[])
    }

    /// As `start`, with more environment variables for the box.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> BoxProc {
        let state = tempfile::tempdir().expect("temp dir");
        let key = state.path().join("node.key");
        let mut cmd = Command::new(BIN);
        cmd.arg("run");
        let given = |flag: &str| args.contains(&flag);
        for (flag, value) in [
            ("--http", "127.0.0.1:0"),
            ("--listen", "127.0.0.1:0"),
            ("--mdns", "false"),
            ("--rtsp", "127.0.0.1:0"),
            ("--https", "off"),
            ("--webrtc-udp", "0"),
            ("--webrtc-tcp", "127.0.0.1:0"),
            ("--mesh-tcp", "127.0.0.1:0"),
        ] {
            if !given(flag) {
                cmd.args([flag, value]);
            }
        }
        if !given("--key") {
            cmd.arg("--key").arg(&key);
        }
        let mut child = cmd
            .args(args)
            .env("CAMBOX_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cambox");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("cambox: mesh node ") {
                    let mut words = rest.split_whitespace();
                    let id = words.next().unwrap_or("").to_string();
                    let addr = words.nth(2).unwrap_or("").to_string();
                    let _ = tx.send((id, addr));
                }
                if let Some(i) = line.find("at http://") {
                    let url: String = line[i + 3..].split_whitespace().next().unwrap_or("").into();
                    let _ = tx.send((url, String::new()));
                }
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let next = || {
            rx.recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("cambox did not start: {}", log.lock().unwrap()))
        };
        // The mesh line comes first, then the HTTP line.
        let (node_id, mesh_addr) = next();
        let (base, _) = next();
        BoxProc {
            child,
            base: base.trim_end_matches('/').to_string(),
            log,
            mesh_addr,
            node_id,
            state,
        }
    }

    /// Where the box keeps its key and certificates (unless `--key` put them elsewhere).
    pub fn state_dir(&self) -> &std::path::Path {
        self.state.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    /// `rtsp://.../<path>` on this box's RTSP server.
    pub fn rtsp_url(&self, path: &str) -> String {
        let addr = self.status()["rtsp_listen"]
            .as_str()
            .expect("the box serves RTSP")
            .to_string();
        format!("rtsp://{addr}/{path}")
    }

    pub fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// `/api/v1/status` as JSON.
    pub fn status(&self) -> serde_json::Value {
        let (code, body) = http(&self.addr(), "GET", "/api/v1/status", "");
        assert_eq!(code, 200, "{body}");
        json(&body)
    }

    /// Waits until the box's live state is `live`.
    pub fn wait_live(&self, live: bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let (code, body) = http(&self.addr(), "GET", "/api/v1/status", "");
            if code == 200 && json(&body)["live"] == serde_json::Value::Bool(live) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("box never became live={live}: {}", self.logs());
    }

    pub fn metric(&self, name: &str) -> f64 {
        let (_, body) = http(&self.addr(), "GET", "/metrics", "");
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing in:\n{body}"))
    }
}

impl Drop for BoxProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 request; returns status and body (for small, non-streaming answers).
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let (code, _, body) = http_full(addr, method, path, "application/json", body);
    (code, body)
}

/// One request with any content type; returns the status, the response head and body.
pub fn http_full(
    addr: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, String, String) {
    http_full_headers(addr, method, path, &[("Content-Type", content_type)], body)
}

/// One request with these headers (besides Host, Connection and Content-Length).
pub fn http_full_headers(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    exchange(
        TcpStream::connect(addr).expect("connect"),
        addr,
        method,
        path,
        headers,
        body,
    )
}

/// `http_full` from another source address (`127.0.0.2`: loopback answers from all of
/// 127/8), as a second client machine would.
pub fn http_full_from(
    source: IpAddr,
    addr: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, String, String) {
    let target: SocketAddr = addr.parse().expect("a box address is ip:port");
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(target),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .unwrap_or_else(|e| panic!("bind {source}: {e}"));
    socket.connect(&target.into()).expect("connect");
    let headers = [("Content-Type", content_type)];
    exchange(socket.into(), addr, method, path, &headers, body)
}

fn exchange(
    mut s: TcpStream,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let headers: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_string(), rest.to_string())
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// `cambox ARGS`: whether it succeeded, and what it printed (stdout, then stderr).
pub fn cambox_says(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).output().expect("run cambox");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs a command to completion; panics with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// ffprobe's view of a file, as JSON.
pub fn ffprobe(path: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let out = run(Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(extra)
        .arg(path));
    serde_json::from_slice(&out).expect("ffprobe JSON")
}

/// Decodes the video with ffmpeg and reads the strip of every decoded picture.
pub fn strip_via_ffmpeg(
    path: &std::path::Path,
    width: u32,
    height: u32,
) -> Vec<Option<cambox_media::strip::StripReading>> {
    strip_via_ffmpeg_input(&[], path.as_os_str(), width, height)
}

/// As `strip_via_ffmpeg`, for any ffmpeg input (a URL too), with options that go before
/// its `-i` (e.g. `-rtsp_transport tcp -t 10`).
pub fn strip_via_ffmpeg_input(
    options: &[&str],
    input: &std::ffi::OsStr,
    width: u32,
    height: u32,
) -> Vec<Option<cambox_media::strip::StripReading>> {
    let path = input;
    let mut child = Command::new("ffmpeg")
        .args(["-v", "error"])
        .args(options)
        .arg("-i")
        .arg(path)
        .args(["-map", "0:v:0", "-fps_mode", "passthrough"])
        .args(["-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("ffmpeg");
    let mut stdout = child.stdout.take().unwrap();
    let size = (width * height) as usize;
    let mut frame = vec![0u8; size];
    let mut readings = Vec::new();
    while stdout.read_exact(&mut frame).is_ok() {
        readings.push(cambox_media::strip::read_strip(
            &frame,
            width as usize,
            width,
            height,
        ));
    }
    assert!(
        child.wait().unwrap().success(),
        "ffmpeg could not decode {path:?}"
    );
    readings
}

/// Frames of the first video stream, counted by ffprobe decoding every one.
pub fn decoded_video_frames(path: &std::path::Path) -> u64 {
    let probe = ffprobe(
        path,
        &["-count_frames", "-show_streams", "-select_streams", "v:0"],
    );
    probe["streams"][0]["nb_read_frames"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no video frames in {path:?}: {probe}"))
}

/// The container duration ffprobe reports, in seconds.
pub fn probed_duration(path: &std::path::Path) -> f64 {
    let probe = ffprobe(path, &["-show_format"]);
    probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no duration for {path:?}: {probe}"))
}

/// Polls `ok` every 100 ms until it holds; returns how long that took.
#[allow(dead_code)]
pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ok() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Waits until box `b` lists the stream at `path` (learned through the mesh).
#[allow(dead_code)]
pub fn wait_for_stream(b: &BoxProc, path: &str, what: &str) {
    wait_until(what, Duration::from_secs(20), || {
        http(&b.addr(), "GET", "/api/v1/streams", "")
            .1
            .contains(path)
    });
}

/// A box that serves a registry at `/registry` and lists that registry by address, so it
/// registers there itself; `args` are the rest of its options. Returns the box and the
/// registry's URL.
#[allow(dead_code)]
pub fn start_registry_hub(args: &[&str]) -> (BoxProc, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let own = format!("http://127.0.0.1:{port}/registry");
    let http = format!("127.0.0.1:{port}");
    let mut all = vec!["--http", &http, "--serve-registry", "--registry", &own];
    all.extend_from_slice(args);
    (BoxProc::start(&all), own)
}

/// Holds `max` idle connections to `addr` from 127.0.0.1 and checks that one more from
/// there is closed unanswered, that 127.0.0.2 is answered meanwhile, and that 127.0.0.1 is
/// answered again once they closed. `path`: a GET that answers 200.
pub fn assert_connections_bounded_per_address(addr: &str, max: usize, path: &str) {
    let idle: Vec<TcpStream> = (0..max)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    // The kernel accepts the connection; the server closes it as soon as it takes it.
    let answer = get_or_nothing(addr, path);
    assert!(
        answer.is_empty(),
        "connection {} from one address was served: {}",
        max + 1,
        String::from_utf8_lossy(&answer)
    );
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let (code, _, body) = http_full_from(other, addr, "GET", path, "", "");
    assert_eq!(code, 200, "another address is served: {body}");
    drop(idle);
    // The server counts a connection down once it has seen it close: until then a new
    // one is still closed unanswered.
    wait_until(
        "the address is served again once its connections closed",
        Duration::from_secs(5),
        || get_or_nothing(addr, path).starts_with(b"HTTP/1.1 200"),
    );
}

/// A GET's whole answer, or nothing when the server closes or resets the connection.
fn get_or_nothing(addr: &str, path: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut answer = Vec::new();
    if s.read_to_end(&mut answer).is_err() {
        answer.clear();
    }
    answer
}

/// A `cambox registry` process; killed when dropped.
pub struct RegistryProc {
    pub child: Child,
    pub addr: String,
}

impl RegistryProc {
    pub fn start(http: &str, extra: &[&str]) -> RegistryProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cambox"))
            .args(["registry", "--http", http])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .expect("cambox registry");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let line = lines.next().expect("a line").expect("text");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or_else(|| panic!("no address in '{line}'"))
            .to_string();
        std::thread::spawn(move || for _ in lines {});
        RegistryProc { child, addr }
    }
}

impl Drop for RegistryProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
