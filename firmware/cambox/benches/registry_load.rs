//! Registry under load: N simulated boxes (default 10 000) register, then renew, against a
//! real `cambox registry` process; prints registrations per second, latency percentiles
//! and the registry's resident memory (goal: 10 000 boxes in <= 64 MB on one core).
//! The reference, measured in the same run: the same number of trivial requests
//! (`GET /api/v1/nodes/<unknown id>`, a 404 with no signature to check) on the same
//! connections, so the ratio shows what signature checks and state cost.
//!
//! `cargo bench -p cambox --bench registry_load` (`REGISTRY_BOXES=N` to change N)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cambox_mesh::identity::Identity;
use cambox_registry::model::{BroadcastInfo, Registration};
use cambox_registry::signing::sign;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const CONCURRENCY: usize = 32;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn registration(id: &Identity, i: usize, ts: u64) -> Registration {
    Registration {
        node: id.node_id().to_hex(),
        name: format!("box-{i}"),
        site: format!("site-{}", i % 100),
        addrs: vec!["0.0.0.0:4433".into()],
        http: Some("0.0.0.0:8080".into()),
        broadcasts: vec![BroadcastInfo {
            name: format!("cam-{i}"),
            live: i.is_multiple_of(3),
        }],
        capabilities: vec!["video".into(), "audio".into()],
        timestamp_ms: ts,
        ttl_s: 300,
        tcp: None,
        reachable: None,
        board: None,
        version: None,
        update: None,
    }
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Sends every request of `reqs` with CONCURRENCY in flight; returns wall time and
/// per-request latencies; panics on an unexpected status.
async fn run(base: &str, reqs: Vec<Option<Vec<u8>>>, want: u16) -> (Duration, Vec<Duration>) {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(CONCURRENCY)
        .build_http::<Full<Bytes>>();
    let reqs = Arc::new(std::sync::Mutex::new(reqs.into_iter()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, reqs, base) = (client.clone(), reqs.clone(), base.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let next = reqs.lock().unwrap().next();
                let Some(body) = next else { break };
                let req = match body {
                    Some(b) => hyper::Request::post(format!("{base}/api/v1/register"))
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(b))),
                    None => hyper::Request::get(format!("{base}/api/v1/nodes/{}", "0".repeat(64)))
                        .body(Full::new(Bytes::new())),
                }
                .unwrap();
                let t = Instant::now();
                let resp = client.request(req).await.expect("request");
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                lat.push(t.elapsed());
                assert_eq!(status, want, "{}", String::from_utf8_lossy(&body));
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let wall = start.elapsed();
    all.sort();
    (wall, all)
}

fn report(what: &str, n: usize, wall: Duration, lat: &[Duration]) -> f64 {
    let rate = n as f64 / wall.as_secs_f64();
    println!(
        "{what:<34} {rate:>9.0}/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
        percentile(lat, 0.5).as_secs_f64() * 1e3,
        percentile(lat, 0.99).as_secs_f64() * 1e3
    );
    rate
}

/// Stops the registry even when the bench panics.
struct Stop(std::process::Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let n: usize = std::env::var("REGISTRY_BOXES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cambox"))
        .args(["registry", "--http", "127.0.0.1:0", "--rate", "100000000"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cambox registry");
    let pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let _stop = Stop(child);
    let line = BufReader::new(stderr)
        .lines()
        .next()
        .expect("registry line")
        .expect("text");
    let base = format!(
        "http://{}",
        line.split("http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .expect("address")
    );
    // Pin the registry to one core, as the goal says.
    let _ = Command::new("taskset")
        .args(["-pc", "0", &pid.to_string()])
        .output();
    let idle_kb = rss_kb(pid, "VmRSS");

    println!("registry load: {n} simulated boxes, {CONCURRENCY} requests in flight, registry on one core");
    let ids: Vec<Identity> = (0..n)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            Identity::from_seed(seed)
        })
        .collect();
    let bodies = |ts: u64| -> Vec<Option<Vec<u8>>> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| Some(serde_json::to_vec(&sign(id, registration(id, i, ts))).unwrap()))
            .collect()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (wall, lat) = run(&base, vec![None; n], 404).await;
        let reference = report("reference: trivial GET (404)", n, wall, &lat);
        let first = bodies(now_ms());
        let (wall, lat) = run(&base, first, 200).await;
        let reg = report("first registration of each box", n, wall, &lat);
        let renew = bodies(now_ms() + 1);
        let (wall, lat) = run(&base, renew, 200).await;
        let ren = report("renewal of each box", n, wall, &lat);
        println!(
            "ratio to the reference: registration {:.2}, renewal {:.2}",
            reg / reference,
            ren / reference
        );
    });
    let (rss, peak) = (rss_kb(pid, "VmRSS"), rss_kb(pid, "VmHWM"));
    println!(
        "registry memory: {:.1} MB resident with {n} boxes (peak {:.1} MB, {:.1} MB idle before)",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0,
        idle_kb as f64 / 1024.0
    );
}
