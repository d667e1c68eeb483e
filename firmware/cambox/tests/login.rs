//! Viewers log in: local accounts (`cambox user add`, argon2) and single sign-on at a real
//! OpenID provider nobody here wrote (the npm package oidc-provider), through real
//! processes and headless Chromium. Viewers watch, operators act, strangers get 401 on
//! every protocol, and guessing passwords is bounded per address.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

fn script_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// `cambox user add` with the password on standard input.
fn add_user(users: &Path, name: &str, password: &str, extra: &[&str]) {
    let mut child = Command::new(BIN)
        .args(["user", "add", name, "--users", users.to_str().unwrap()])
        .args(extra)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cambox user add");
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn users_file(dir: &Path) -> PathBuf {
    let users = dir.join("users.toml");
    add_user(&users, "alice", "alice-password", &["--role", "operator"]);
    add_user(&users, "bob", "bob-password", &[]);
    users
}

/// Waits until the audit log at `audit` has a record `matches` accepts.
fn wait_for_audit(what: &str, audit: &Path, matches: impl Fn(&serde_json::Value) -> bool) {
    wait_until(what, Duration::from_secs(20), || {
        let out = Command::new(BIN)
            .args(["audit", "--json", "--file", audit.to_str().unwrap()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| matches(&json(l)))
    });
}

/// Starts watching `stream` over live MP4 with `token`; the connection, which watches
/// until it is dropped.
fn watch_mp4(addr: &str, stream: &str, token: &str) -> std::net::TcpStream {
    let mut mp4 = std::net::TcpStream::connect(addr).unwrap();
    write!(
        mp4,
        "GET /live/{stream}.mp4 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut first = [0u8; 12];
    std::io::Read::read_exact(&mut mp4, &mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200", "watching {stream} at {addr}");
    mp4
}

/// Logs in by the API; the session token.
fn login(addr: &str, name: &str, password: &str) -> String {
    let body = serde_json::json!({ "name": name, "password": password }).to_string();
    let (code, answer) = http(addr, "POST", "/api/v1/login", &body);
    assert_eq!(code, 200, "{answer}");
    json(&answer)["token"].as_str().unwrap().to_string()
}

/// A request with a bearer token; status and body.
fn with_token(addr: &str, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let (code, _, body) = http_full_headers(
        addr,
        method,
        path,
        &[("authorization", &format!("Bearer {token}"))],
        body,
    );
    (code, body)
}

#[test]
fn local_accounts_log_in_viewers_watch_operators_act_and_strangers_get_401_everywhere() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let audit = dir.path().join("audit.log");
    let b = BoxProc::start(&[
        "--users",
        users.to_str().unwrap(),
        "--live",
        "--name",
        "hall",
        "--audit",
        audit.to_str().unwrap(),
    ]);
    let addr = b.addr();
    assert!(
        b.logs().contains("viewers log in: 2 local account(s)"),
        "{}",
        b.logs()
    );

    // A stranger: the page itself loads (to show its login), nothing else does.
    assert_eq!(http(&addr, "GET", "/", "").0, 200);
    let (code, body) = http(&addr, "GET", "/api/v1/session", "");
    assert_eq!(code, 200);
    assert_eq!(json(&body)["required"], true);
    assert!(json(&body)["person"].is_null());
    for (method, path) in [
        ("GET", "/api/v1/status"),
        ("GET", "/api/v1/streams"),
        ("GET", "/live/hall.mp4"),
        ("POST", "/whep/hall"),
        ("POST", "/api/v1/live"),
        ("GET", "/api/v1/sensors"),
    ] {
        let (code, headers, body) = http_full(&addr, method, path, "application/json", "");
        assert_eq!(code, 401, "{method} {path}: {body}");
        assert!(
            headers
                .to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{headers}"
        );
        assert!(body.contains("log in first"), "{body}");
    }
    // Wrong passwords and made-up sessions are refused, and leave no session behind.
    let bad = serde_json::json!({ "name": "alice", "password": "nope" }).to_string();
    assert_eq!(http(&addr, "POST", "/api/v1/login", &bad).0, 401);
    let (code, _) = with_token(&addr, "GET", "/api/v1/status", "made-up", "");
    assert_eq!(code, 401);
    let (code, _, _) = http_full_headers(
        &addr,
        "GET",
        "/api/v1/status",
        &[("cookie", "cambox_session=../../etc")],
        "",
    );
    assert_eq!(code, 401);
    let (code, body) = http(&addr, "POST", "/api/v1/login", "{\"name\": 5}");
    assert_eq!(code, 400, "{body}");

    // A viewer watches and may not act; an operator acts.
    let bob = login(&addr, "bob", "bob-password");
    let (code, status) = with_token(&addr, "GET", "/api/v1/status", &bob, "");
    assert_eq!(code, 200, "{status}");
    // RTSP with Digest credentials, checked by ffmpeg: without them or with a wrong
    // password 401, with bob's his session is listed and audited.
    let rtsp = json(&status)["rtsp_listen"].as_str().unwrap().to_string();
    require("ffmpeg");
    let ffmpeg = |url: &str| {
        Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-rtsp_transport",
                "tcp",
                "-i",
                url,
                "-t",
                "2",
                "-f",
                "null",
                "-",
            ])
            .output()
            .unwrap()
    };
    for url in [
        format!("rtsp://{rtsp}/hall"),
        format!("rtsp://bob:wrong-password@{rtsp}/hall"),
    ] {
        let out = ffmpeg(&url);
        assert!(!out.status.success(), "{url}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("401"), "{url}: {err}");
    }
    let out = ffmpeg(&format!("rtsp://bob:bob-password@{rtsp}/hall"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_audit("bob's RTSP session in the audit log", &audit, |r| {
        r["event"] == "watch" && r["who"] == "bob" && r["protocol"] == "rtsp"
    });
    let (code, body) = with_token(&addr, "POST", "/api/v1/live", &bob, "{\"live\": false}");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("bob is a viewer"), "{body}");
    let (code, body) = with_token(&addr, "POST", "/whep/hall", &bob, "");
    assert_ne!(
        code, 401,
        "a viewer's WHEP offer gets past the login: {body}"
    );
    let (code, _, cookie_body) = http_full_headers(
        &addr,
        "GET",
        "/api/v1/session",
        &[("cookie", &format!("cambox_session={bob}"))],
        "",
    );
    assert_eq!(code, 200);
    assert_eq!(
        json(&cookie_body)["person"]["name"],
        "bob",
        "the cookie works as well"
    );
    let alice = login(&addr, "alice", "alice-password");
    // Bob watches over MP4: the box says who watches, that sound is on, and its LED shows
    // "being watched"; when he stops, the audit log has his session.
    let mp4 = watch_mp4(&addr, "hall", &bob);
    let status = json(&with_token(&addr, "GET", "/api/v1/status", &alice, "").1);
    let watching = status["watching"].as_array().unwrap();
    assert_eq!(watching.len(), 1, "{status}");
    assert_eq!(
        (
            &watching[0]["name"],
            &watching[0]["protocol"],
            &watching[0]["stream"]
        ),
        (&"bob".into(), &"mp4".into(), &"hall".into()),
        "{status}"
    );
    assert!(
        watching[0].get("address").is_none(),
        "addresses stay out of the status"
    );
    assert_eq!(status["sound"], true, "{status}");
    wait_until(
        "the LED to show being watched",
        Duration::from_secs(5),
        || {
            json(&with_token(&addr, "GET", "/api/v1/status", &alice, "").1)["led"]["state"]
                == "watched"
        },
    );
    drop(mp4);
    wait_for_audit("bob's MP4 session in the audit log", &audit, |r| {
        r["event"] == "watch" && r["who"] == "bob" && r["protocol"] == "mp4"
    });
    let (code, body) = with_token(&addr, "POST", "/api/v1/live", &alice, "{\"live\": false}");
    assert_eq!(code, 200, "{body}");
    let out = Command::new(BIN)
        .args(["audit", "--file", audit.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("live") && l.contains("alice (local)") && l.contains("off")),
        "{text}"
    );
    // The command line logs in too: cambox login prints a token that list and watch take.
    let mut child = Command::new(BIN)
        .args(["login", "bob", "--http", &addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "bob-password").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let cli_token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let list = |token: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.args(["list", "--http", &addr])
            .env_remove("CAMBOX_TOKEN");
        if let Some(t) = token {
            cmd.env("CAMBOX_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    let refused = list(None);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("log in first"));
    let listed = list(Some(&cli_token));
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("hall"));
    // Logged out, the token is worth nothing.
    assert_eq!(with_token(&addr, "POST", "/api/v1/logout", &bob, "").0, 204);
    assert_eq!(with_token(&addr, "GET", "/api/v1/status", &bob, "").0, 401);
}

#[test]
fn password_guessing_is_bounded_per_address_and_other_addresses_still_log_in() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let b = BoxProc::start(&["--users", users.to_str().unwrap()]);
    let addr = b.addr();
    let guess = serde_json::json!({ "name": "alice", "password": "guess" }).to_string();
    let from = |src: &str, body: &str| {
        let src = src.parse().unwrap();
        http_full_from(
            src,
            &addr,
            "POST",
            "/api/v1/login",
            "application/json",
            body,
        )
        .0
    };
    let codes: Vec<u16> = (0..12).map(|_| from("127.0.0.7", &guess)).collect();
    assert_eq!(&codes[..10], &[401; 10], "{codes:?}");
    assert_eq!(&codes[10..], &[429; 2], "{codes:?}");
    // Even the right password waits out the minute from that address...
    let right = serde_json::json!({ "name": "alice", "password": "alice-password" }).to_string();
    assert_eq!(from("127.0.0.7", &right), 429);
    // ...while another address logs in at once.
    assert_eq!(from("127.0.0.8", &right), 200);
}

#[test]
fn a_clear_text_password_in_the_accounts_file_stops_the_box_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    std::fs::write(&users, "[[user]]\nname = \"eve\"\nhash = \"hunter22\"\n").unwrap();
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--http",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--mdns",
            "false",
            "--rtsp",
            "off",
        ])
        .args(["--key", dir.path().join("node.key").to_str().unwrap()])
        .args(["--users", users.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the box ran with a broken accounts file");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(
        err.contains("eve") && err.contains("not a PHC string"),
        "{err}"
    );
}

/// The OpenID provider (oidc-provider on node), killed when dropped.
struct Provider {
    child: Child,
    issuer: String,
}

impl Provider {
    fn start(callback: &str) -> Provider {
        require("node");
        assert!(
            script_dir().join("node_modules/oidc-provider").exists(),
            "oidc-provider is missing; run scripts/test or `npm ci --prefix {}`",
            script_dir().display()
        );
        let mut child = Command::new("node")
            .arg(script_dir().join("oidc_provider.mjs"))
            .arg(callback)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node oidc_provider.mjs");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        // Whatever it prints later must find its pipe open, or node dies of EPIPE.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let issuer = line
            .strip_prefix("issuer ")
            .unwrap_or_else(|| panic!("the provider said {line:?}"))
            .trim()
            .to_string();
        Provider { child, issuer }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn login_in_chromium(b: &BoxProc, args: &[&str]) -> serde_json::Value {
    login_in_chromium_at(b, &b.base, &[], args)
}

/// [`login_in_chromium`] starting at `url`, with `env` for Chromium.
fn login_in_chromium_at(
    b: &BoxProc,
    url: &str,
    env: &[(&str, &Path)],
    args: &[&str],
) -> serde_json::Value {
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is not installed; run scripts/test"
    );
    let out = Command::new("node")
        .arg(script_dir().join("login_page.mjs"))
        .arg(url)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "login in Chromium failed: {}\n{stdout}\nbox log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        b.logs()
    );
    let r = json(stdout.lines().last().unwrap_or_default());
    eprintln!("chromium: {r}");
    r
}

#[test]
fn chromium_logs_in_by_single_sign_on_at_a_real_openid_provider_and_by_a_local_account() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    // The provider must know the box's callback, and the box the provider: the box's
    // port is chosen first.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let http_addr = format!("127.0.0.1:{port}");
    let provider = Provider::start(&format!("http://{http_addr}/auth/callback"));
    let audit = dir.path().join("audit.log");
    let b = BoxProc::start(&[
        "--http",
        &http_addr,
        "--users",
        users.to_str().unwrap(),
        "--live",
        "--name",
        "hall",
        "--oidc-issuer",
        &provider.issuer,
        "--oidc-client-id",
        "cambox",
        "--oidc-operators",
        "ops",
        "--audit",
        audit.to_str().unwrap(),
    ]);
    // "opcarol" is in the provider's group ops: an operator.
    let r = login_in_chromium(&b, &["hall", "--sso", "opcarol"]);
    assert_eq!(r["lockedFirst"], true, "{r}");
    assert_eq!(r["statusBefore"], 401, "{r}");
    assert_eq!(r["who"], "opcarol (operator)", "{r}");
    assert_eq!(r["statusAfter"], 200, "{r}");
    assert_eq!(r["playing"], true, "{r}");
    let logged = b.logs();
    assert!(
        logged
            .lines()
            .any(|l| l.contains("logged in") && l.contains("opcarol") && l.contains("sso")),
        "{logged}"
    );
    // Not in ops: a viewer.
    let r = login_in_chromium(&b, &["hall", "--sso", "dave"]);
    assert_eq!(r["who"], "dave (viewer)", "{r}");
    let r = login_in_chromium(&b, &["hall", "--account", "bob", "bob-password"]);
    assert_eq!(r["who"], "bob (viewer)", "{r}");
    assert_eq!(r["playing"], true, "{r}");
    // The page of the box being watched names the viewer soon after the picture moves.
    let shown = r["watchingShownAfterMs"]
        .as_u64()
        .expect("the page listed the viewer");
    println!("the page named the viewer {shown} ms after play started");
    assert!(shown <= 2000, "{r}");
    assert!(
        r["watching"].as_str().unwrap().contains("bob · site"),
        "{r}"
    );
    // Chromium has gone: the audit log has bob's session, from when to when.
    wait_for_audit("bob's session in the audit log", &audit, |r| {
        r["event"] == "watch"
            && r["who"] == "bob"
            && r["from"]
                .as_u64()
                .is_some_and(|f| f <= r["at"].as_u64().unwrap())
    });
    // A callback nobody started is refused, and starts no session.
    let (code, body) = http(&b.addr(), "GET", "/auth/callback?state=forged&code=x", "");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("unknown or too old"), "{body}");
}

/// aiortc's Python, from the virtualenv `scripts/setup-deps test` makes beside the build.
fn aiortc_python() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target dir")
        .to_path_buf();
    let python = target.join("webrtc-venv/bin/python");
    assert!(
        python.exists(),
        "aiortc is not installed at {}; run scripts/test (scripts/setup-deps test installs it)",
        python.display()
    );
    python
}

#[test]
fn an_independent_webrtc_client_watches_over_whep_only_with_a_token() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let b = BoxProc::start(&[
        "--users",
        users.to_str().unwrap(),
        "--live",
        "--name",
        "hall",
    ]);
    let token = login(&b.addr(), "bob", "bob-password");
    let client = |extra: &[&str]| {
        let out = Command::new(aiortc_python())
            .arg(script_dir().join("../webrtc/whep_client.py"))
            .args([b.base.as_str(), "hall"])
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        (
            out.status.code(),
            json(stdout.lines().last().unwrap_or_default()),
        )
    };
    let (code, refused) = client(&[]);
    assert_eq!(
        (code, &refused["status"]),
        (Some(3), &401.into()),
        "{refused}"
    );
    assert!(refused["error"].as_str().unwrap().contains("log in first"));
    let (code, watched) = client(&["--token", &token, "--seconds", "3"]);
    println!("aiortc with a token: {watched}");
    assert_eq!(code, Some(0), "{watched}\n{}", b.logs());
    assert!(watched["frames"].as_u64().unwrap() >= 30, "{watched}");
    let (code, forged) = client(&["--token", "not-a-session"]);
    assert_eq!(
        (code, &forged["status"]),
        (Some(3), &401.into()),
        "{forged}"
    );
}

#[test]
fn a_streams_rule_is_checked_on_every_protocol_by_whichever_box_serves_the_viewer() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    add_user(&users, "alice", "alice-password", &["--group", "ops"]);
    add_user(&users, "bob", "bob-password", &[]);
    let users = users.to_str().unwrap();
    // The hall camera is for ops only; the lobby box names no rule (the default: all).
    let a = BoxProc::start(&[
        "--users",
        users,
        "--live",
        "--name",
        "hall",
        "--watch",
        "group:ops",
    ]);
    let b = BoxProc::start(&["--users", users, "--name", "lobby", "--peer", &a.mesh_addr]);
    let (a_addr, b_addr) = (a.addr(), b.addr());
    let (alice_a, bob_a) = (
        login(&a_addr, "alice", "alice-password"),
        login(&a_addr, "bob", "bob-password"),
    );
    let (alice_b, bob_b) = (
        login(&b_addr, "alice", "alice-password"),
        login(&b_addr, "bob", "bob-password"),
    );
    let remote = format!("hall@{}", a.node_id);
    wait_until(
        "the lobby box to list the hall stream for alice",
        Duration::from_secs(20),
        || {
            with_token(&b_addr, "GET", "/api/v1/streams", &alice_b, "")
                .1
                .contains(&remote)
        },
    );
    // Bob is not in ops: the stream is not listed for him, anywhere.
    assert!(!with_token(&a_addr, "GET", "/api/v1/streams", &bob_a, "")
        .1
        .contains("\"hall\""));
    assert!(!with_token(&b_addr, "GET", "/api/v1/streams", &bob_b, "")
        .1
        .contains(&remote));
    // ...and every protocol at either box refuses him with 403.
    for (addr, token, path) in [
        (&a_addr, &bob_a, "/live/hall.mp4".to_string()),
        (&a_addr, &bob_a, "/whep/hall".to_string()),
        (&b_addr, &bob_b, format!("/live/{remote}.mp4")),
        (&b_addr, &bob_b, format!("/whep/{remote}")),
    ] {
        let method = if path.starts_with("/whep") {
            "POST"
        } else {
            "GET"
        };
        let (code, body) = with_token(addr, method, &path, token, "");
        assert_eq!(code, 403, "{addr}{path}: {body}");
        assert!(body.contains("bob may not watch"), "{body}");
    }
    let rtsp = json(&with_token(&a_addr, "GET", "/api/v1/status", &alice_a, "").1)["rtsp_listen"]
        .as_str()
        .unwrap()
        .to_string();
    require("ffmpeg");
    let ffmpeg = |who: &str| {
        Command::new("ffmpeg")
            .args(["-v", "error", "-rtsp_transport", "tcp"])
            .args([
                "-i",
                &format!("rtsp://{who}@{rtsp}/hall"),
                "-t",
                "1",
                "-f",
                "null",
                "-",
            ])
            .output()
            .unwrap()
    };
    let out = ffmpeg("bob:bob-password");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Alice (ops) watches at both boxes.
    let out = ffmpeg("alice:alice-password");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Alice watches the hall through the lobby box.
    let mp4 = watch_mp4(&b_addr, &remote, &alice_b);
    // The hall box, whose camera it is, lists her too, as served by the lobby box, and
    // forgets her when she stops.
    let watching_at_a = || {
        json(&with_token(&a_addr, "GET", "/api/v1/status", &alice_a, "").1)["watching"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let took = wait_until(
        "the hall box to list alice",
        Duration::from_secs(10),
        || {
            watching_at_a()
                .iter()
                .any(|w| w["name"] == "alice" && w["through"] == b.node_id.as_str())
        },
    );
    println!("the filming box listed a viewer served by another box {took:?} after she started");
    drop(mp4);
    wait_until(
        "the hall box to forget alice",
        Duration::from_secs(10),
        || !watching_at_a().iter().any(|w| w["name"] == "alice"),
    );
}

/// `cambox ARGS`, which must succeed; its standard output.
fn cambox(args: &[&str]) -> String {
    String::from_utf8(run(Command::new(BIN).args(args))).expect("text")
}

/// `curl ARGS`: its exit code and standard output.
fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `GET /api/v1/status` at `https` by curl trusting `ca`: curl's exit code, and the status
/// and OpenSSL's verdict on the chain (0: verified).
fn status_over_https(ca: &str, https: &str) -> (i32, String) {
    curl(&[
        "--cacert",
        ca,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{ssl_verify_result}",
        &format!("https://{https}/api/v1/status"),
    ])
}

/// The address after "HTTPS on " in a box's log, once it has one.
fn https_addr(b: &BoxProc) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !b.logs().contains("cambox: HTTPS on ") {
        assert!(
            std::time::Instant::now() < deadline,
            "the box serves no HTTPS: {}",
            b.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs = b.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("cambox: HTTPS on "))
        .unwrap();
    line.split("HTTPS on ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn an_enrolled_box_serves_https_with_its_ca_certificate_and_redirects_plain_http() {
    let _g = serial();
    require("curl");
    require("certutil");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |p: &Path| p.to_str().unwrap().to_string();
    let ca = d.join("ca");
    cambox(&["ca", "init", "--dir", &p(&ca), "--name", "Example cameras"]);
    let enroller = d.join("enroller");
    cambox(&["ca", "enroller", "--dir", &p(&ca), "--out", &p(&enroller)]);
    let token = cambox(&["ca", "token", "--dir", &p(&ca), "--site", "berlin"]);
    let reg = RegistryProc::start(
        "127.0.0.1:0",
        &["--ca", &p(&ca.join("ca.crt")), "--enroller", &p(&enroller)],
    );
    let registry = format!("http://{}", reg.addr);
    let users = users_file(d);
    let key = d.join("hall").join("node.key");
    let start = |http: &str, extra: &[&str]| {
        let mut args = vec![
            "--node",
            "hall",
            "--key",
            key.to_str().unwrap(),
            "--registry",
            &registry,
            "--users",
            users.to_str().unwrap(),
            "--live",
            "--name",
            "hall",
            "--http",
            http,
        ];
        args.extend(extra);
        BoxProc::start(&args)
    };
    let b = start(
        "127.0.0.1:0",
        &["--join-token", token.trim(), "--https", "127.0.0.1:0"],
    );
    let https = https_addr(&b);
    let ca_crt = p(&ca.join("ca.crt"));

    // Plain HTTP redirects to the same path on HTTPS; what programs scrape stays.
    let (_, redirect) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        &b.url("/api/v1/status?x=1"),
    ]);
    assert_eq!(redirect, format!("308 https://{https}/api/v1/status?x=1"));
    let (_, metrics) = curl(&["-o", "/dev/null", "-w", "%{http_code}", &b.url("/metrics")]);
    assert_eq!(metrics, "200");
    // curl (OpenSSL) verifies the chain to the company CA, and only with that CA.
    assert_eq!(
        status_over_https(&ca_crt, &https),
        (0, "401 0".into()),
        "{}",
        b.logs()
    );
    let (code, _) = curl(&["-o", "/dev/null", &format!("https://{https}/api/v1/status")]);
    assert_eq!(
        code, 60,
        "without the company CA the certificate must not verify"
    );
    // A login over HTTPS sets a Secure cookie.
    let body = serde_json::json!({ "name": "bob", "password": "bob-password" }).to_string();
    let (code, answer) = curl(&[
        "--cacert",
        &ca_crt,
        "-D",
        "-",
        "-H",
        "content-type: application/json",
        "--data",
        &body,
        &format!("https://{https}/api/v1/login"),
    ]);
    assert_eq!(code, 0, "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_default();
    assert!(
        cookie.contains("HttpOnly") && cookie.ends_with("; Secure"),
        "{head}"
    );
    // The command line follows the redirect and trusts the CA it is given.
    let token = json(body)["token"].as_str().unwrap().to_string();
    let listed = Command::new(BIN)
        .args(["list", "--http", &b.addr(), "--token", &token])
        .env("CAMBOX_CA_FILE", &ca_crt)
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("hall"));

    // Chromium, trusting the company CA (its NSS database, as an administrator would roll
    // it out), opens the plain address, lands on HTTPS, logs in and plays.
    let home = d.join("home");
    let nssdb = format!("sql:{}", p(&home.join(".pki/nssdb")));
    std::fs::create_dir_all(home.join(".pki/nssdb")).unwrap();
    run(Command::new("certutil").args(["-N", "-d", &nssdb, "--empty-password"]));
    run(Command::new("certutil").args([
        "-A",
        "-d",
        &nssdb,
        "-n",
        "Example cameras",
        "-t",
        "C,,",
        "-i",
        &ca_crt,
    ]));
    let r = login_in_chromium_at(
        &b,
        &b.url("/"),
        &[("HOME", &home)],
        &["hall", "--account", "bob", "bob-password"],
    );
    assert!(
        r["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("https://{https}/")),
        "{r}"
    );
    assert_eq!(r["secureContext"], true, "{r}");
    assert_eq!(r["cookieSecure"], true, "{r}");
    assert_eq!(r["playing"], true, "{r}");
    drop(b);

    // At a new address the box renews its HTTPS certificate with its node certificate
    // alone: the join token is gone from its configuration.
    let b = start(
        "127.0.0.2:0",
        &[
            "--mesh-ca",
            &p(&key.with_file_name("ca.crt")),
            "--site",
            "berlin",
            "--https",
            "127.0.0.2:0",
        ],
    );
    let https = https_addr(&b);
    assert!(https.starts_with("127.0.0.2:"), "{https}");
    assert!(
        b.logs().contains("asking for an HTTPS certificate"),
        "{}",
        b.logs()
    );
    assert_eq!(
        status_over_https(&ca_crt, &https),
        (0, "401 0".into()),
        "{}",
        b.logs()
    );
}
