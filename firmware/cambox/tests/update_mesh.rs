//! An update bundle published at one box reaches the boxes of another site through the
//! mesh, chunk by chunk, with one copy across the sites' link, and is kept whole.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn cambox(args: &[&str]) -> String {
    let (ok, text) = cambox_says(args);
    assert!(ok, "cambox {args:?}: {text}");
    text
}

/// Bytes `b` sent to all its mesh neighbours.
fn sent_bytes(b: &BoxProc) -> f64 {
    let (_, body) = http(&b.addr(), "GET", "/metrics", "");
    body.lines()
        .filter(|l| l.starts_with("cambox_mesh_sent_bytes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn kept_whole(b: &BoxProc, id: &str, original: &[u8]) -> bool {
    let dir = b.state_dir().join("bundles");
    let have = std::fs::read(dir.join(format!("{id}.have"))).unwrap_or_default();
    !have.is_empty()
        && have.iter().all(|c| *c == b'1')
        && std::fs::read(dir.join(format!("{id}.cbx"))).is_ok_and(|f| f == original)
}

/// A scratch directory with a release key (`key/`), a stranger's (`stranger/`), a root
/// file system of `mb` MB that does not compress, and a release file saying version 1.
struct Kit {
    dir: tempfile::TempDir,
}

impl Kit {
    fn new(mb: u64) -> Kit {
        let kit = Kit {
            dir: tempfile::tempdir().unwrap(),
        };
        cambox(&["release", "init", "--dir", &kit.path("key")]);
        cambox(&["release", "init", "--dir", &kit.path("stranger")]);
        let rootfs: Vec<u8> = (0..mb << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(kit.path("rootfs.ext4"), rootfs).unwrap();
        std::fs::write(kit.path("release"), "board=qemu_aarch64\nversion=1\n").unwrap();
        kit
    }

    fn path(&self, p: &str) -> String {
        self.dir.path().join(p).to_str().unwrap().to_string()
    }

    /// Packs `rootfs` as `version`, signed by `signer` ("key" or "stranger"), into `out`;
    /// its bytes.
    fn pack(&self, signer: &str, version: &str, rootfs: &str, out: &str) -> Vec<u8> {
        cambox(&[
            "release",
            "pack",
            "--key",
            &self.path(&format!("{signer}/release.key")),
            "--board",
            "qemu_aarch64",
            "--version",
            version,
            "--rootfs",
            &self.path(rootfs),
            "-o",
            &self.path(out),
        ]);
        std::fs::read(self.path(out)).unwrap()
    }
}

#[test]
fn a_published_bundle_reaches_another_site_once_and_is_kept_whole() {
    let _serial = serial();
    // 8 MB: 32 chunks.
    let kit = Kit::new(8);
    let d = |p: &str| kit.path(p);
    let original = kit.pack("key", "2", "rootfs.ext4", "v2.cbx");
    let keys = d("key/release.pub");
    let release = d("release");

    // The publisher at site a; two boxes of site b that both link to it and to each other,
    // the second one live.
    let p = BoxProc::start(&["--name", "p", "--site", "a", "--release-keys", &keys]);
    let box_b = |name: &str, peers: &[&str], extra: &[&str]| {
        let mut args = vec![
            "--name",
            name,
            "--site",
            "b",
            "--release-keys",
            &keys,
            "--release-file",
            &release,
        ];
        for peer in peers {
            args.extend(["--peer", peer]);
        }
        args.extend(extra);
        BoxProc::start(&args)
    };
    let b1 = box_b("b1", &[&p.mesh_addr], &[]);
    let live = [
        "--live", "--source", "testsrc", "--width", "320", "--height", "180",
    ];
    let b2 = box_b("b2", &[&p.mesh_addr, &b1.mesh_addr], &live);
    wait_until("every link up", Duration::from_secs(15), || {
        let n = |b: &BoxProc| {
            json(&http(&b.addr(), "GET", "/api/v1/peers", "").1)["peers"]
                .as_array()
                .map_or(0, Vec::len)
        };
        n(&p) == 2 && n(&b1) == 2 && n(&b2) == 2
    });
    let before = sent_bytes(&p);
    let said = cambox(&["update", "publish", &d("v2.cbx"), "--http", &p.addr()]);
    let id = said
        .split_whitespace()
        .nth(1)
        .expect("the bundle's id")
        .to_string();
    let took = wait_until(
        "both boxes of site b to keep the bundle whole",
        Duration::from_secs(60),
        || kept_whole(&b1, &id, &original) && kept_whole(&b2, &id, &original),
    );
    let across = sent_bytes(&p) - before;
    let ratio = across / original.len() as f64;
    println!(
        "bundle {id}: {} bytes to both boxes of site b in {took:?}; the publisher sent {across} bytes ({ratio:.3} copies)",
        original.len()
    );
    assert!(ratio < 1.1, "{ratio:.3} copies crossed into site b");
    assert!(ratio > 0.99, "{ratio:.3}: the bundle did not cross at all?");
    // Neither box is an image with two slots: each says so instead of installing, the
    // live one only once an operator says "now".
    let cannot = |b: &BoxProc| b.logs().contains("this box cannot install it");
    wait_until(
        "b1 to say it cannot install",
        Duration::from_secs(10),
        || cannot(&b1),
    );
    wait_until("b2 to wait while live", Duration::from_secs(10), || {
        b2.logs()
            .contains("installed when the box is no longer live")
    });
    assert!(!cannot(&b2), "b2 tried to install while live");
    assert_eq!(http(&b1.addr(), "POST", "/api/v1/update/now", "").0, 409);
    wait_until(
        "b2 to take the operator's word",
        Duration::from_secs(5),
        || http(&b2.addr(), "POST", "/api/v1/update/now", "").0 == 202,
    );
    wait_until(
        "b2 to install at the operator's word",
        Duration::from_secs(10),
        || cannot(&b2),
    );
    // A stranger's bundle is not taken.
    kit.pack("stranger", "3", "rootfs.ext4", "v3.cbx");
    let out = Command::new(env!("CARGO_BIN_EXE_cambox"))
        .args(["update", "publish", &d("v3.cbx"), "--http", &p.addr()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("answered 403") && said.contains("not signed by a release key"),
        "{said}"
    );

    // Version 3, rolled out to site c only: site b's boxes relay it and fetch nothing.
    std::fs::write(d("small.ext4"), &original[..1 << 20]).unwrap();
    kit.pack("key", "3", "small.ext4", "v3.cbx");
    let (key, v3) = (d("key/release.key"), d("v3.cbx"));
    let rollout = |name: &str, extra: &[&str]| {
        let out = d(name);
        let mut args = vec![
            "release", "rollout", "--key", &key, "--bundle", &v3, "-o", &out,
        ];
        args.extend(extra);
        cambox(&args);
        // Each rollout is signed a millisecond after the one before, at least.
        std::thread::sleep(Duration::from_millis(5));
        out
    };
    let only_c = rollout("only-c.rollout", &["--site", "c"]);
    let said = cambox(&[
        "update",
        "publish",
        &d("v3.cbx"),
        "--rollout",
        &only_c,
        "--http",
        &p.addr(),
    ]);
    assert!(said.contains("100 % of sites c) published"), "{said}");
    let offer = |b: &BoxProc| {
        let (_, body) = http(&b.addr(), "GET", "/api/v1/update", "");
        json(&body)["offers"]
            .as_array()
            .and_then(|o| o.iter().find(|o| o["version"] == "3").cloned())
            .unwrap_or_default()
    };
    for b in [&b1, &b2] {
        wait_until(
            "site b to hear of the rollout",
            Duration::from_secs(10),
            || offer(b)["state"] == "excluded",
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    for b in [&b1, &b2] {
        assert_eq!(offer(b)["have"], 0, "{}", offer(b));
    }

    // Every site, paused: they fetch it and wait; the metrics say so.
    let paused = rollout("paused.rollout", &["--pause"]);
    cambox(&["update", "publish", &paused, "--http", &p.addr()]);
    for b in [&b1, &b2] {
        wait_until(
            "site b to fetch it and wait",
            Duration::from_secs(30),
            || offer(b)["state"] == "paused",
        );
        let (_, metrics) = http(&b.addr(), "GET", "/metrics", "");
        assert!(
            metrics.contains("cambox_update_state{state=\"paused\"} 1"),
            "{metrics}"
        );
    }
    // Resumed: they may install it (and, off an image, say they cannot).
    let resumed = rollout("resumed.rollout", &[]);
    cambox(&["update", "publish", &resumed, "--http", &b1.addr()]);
    for b in [&b1, &b2] {
        wait_until("site b to take it up", Duration::from_secs(10), || {
            offer(b)["state"] == "ready"
        });
    }
    // The paused one again is older than what the boxes hold: nothing changes.
    let said = cambox(&["update", "publish", &paused, "--http", &b2.addr()]);
    assert!(said.contains("has it or a newer one"), "{said}");
}

#[test]
fn a_bundle_published_at_the_registry_reaches_the_mesh_through_two_seeds_only() {
    let _serial = serial();
    let kit = Kit::new(2);
    let d = |p: &str| kit.path(p);
    let original = kit.pack("key", "2", "rootfs.ext4", "v2.cbx");
    let keys = d("key/release.pub");
    let reg = RegistryProc::start(
        "127.0.0.1:0",
        &[
            "--heartbeat",
            "1",
            "--release-keys",
            &keys,
            "--updates",
            &d("depot"),
        ],
    );
    let url = format!("http://{}", reg.addr);
    let release = d("release");
    let start = |name: &str, site: &str| {
        BoxProc::start(&[
            "--name",
            name,
            "--site",
            site,
            "--registry",
            &url,
            "--release-keys",
            &keys,
            "--release-file",
            &release,
        ])
    };
    let boxes = [start("a1", "a"), start("b1", "b"), start("b2", "b")];
    wait_until("every box to link up", Duration::from_secs(20), || {
        boxes.iter().all(|b| {
            json(&http(&b.addr(), "GET", "/api/v1/peers", "").1)["peers"]
                .as_array()
                .is_some_and(|p| !p.is_empty())
        })
    });

    // A stranger's bundle is refused before the registry keeps it.
    kit.pack("stranger", "2", "rootfs.ext4", "forged.cbx");
    let (ok, said) = cambox_says(&["update", "publish", &d("forged.cbx"), "--registry", &url]);
    assert!(
        !ok && said.contains("answered 403") && said.contains("not signed"),
        "{said}"
    );

    let said = cambox(&["update", "publish", &d("v2.cbx"), "--registry", &url]);
    let id = said.split_whitespace().nth(1).expect("an id").to_string();
    wait_until(
        "every box to keep the bundle whole",
        Duration::from_secs(60),
        || boxes.iter().all(|b| kept_whole(b, &id, &original)),
    );
    let (_, listed) = http(&reg.addr, "GET", "/api/v1/updates", "");
    let listed = json(&listed);
    let seeds = listed["updates"][0]["seeds"].as_array().unwrap().len();
    assert!((1..=2).contains(&seeds), "{listed}");
    let fetched = boxes
        .iter()
        .filter(|b| b.logs().contains("fetching an update from the registry"))
        .count();
    println!(
        "bundle {id}: {fetched} of 3 boxes fetched it from the registry, the rest from the mesh"
    );
    assert!(
        (1..=2).contains(&fetched),
        "{fetched} boxes fetched it from the registry"
    );

    // A rollout handed to the registry reaches the boxes at their next registration.
    let paused = d("paused.rollout");
    cambox(&[
        "release",
        "rollout",
        "--key",
        &d("key/release.key"),
        "--bundle",
        &id,
        "--pause",
        "-o",
        &paused,
    ]);
    let said = cambox(&["update", "publish", &paused, "--registry", &url]);
    assert!(
        said.contains("(paused, 100 % of every site) published"),
        "{said}"
    );
    for b in &boxes {
        wait_until(
            "the box to hold the update paused",
            Duration::from_secs(15),
            || {
                let (_, body) = http(&b.addr(), "GET", "/api/v1/update", "");
                json(&body)["offers"][0]["state"] == "paused"
            },
        );
    }
}
