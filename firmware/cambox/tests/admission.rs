//! Admission by a company CA, through real processes: `cambox ca` makes the CA and
//! certifies boxes; enrolled boxes link, and a stranger (a key of its own, no certificate),
//! a box certified by another CA and one whose certificate expired are refused at the
//! handshake, with the reason logged at both ends and counted; a revoked box drops out;
//! a registry with the CA enrols boxes that bring a join token and refuses others.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use cambox_mesh::NodeId;
use cambox_trust::authority::NodeClaims;
use cambox_trust::Authority;
use common::*;

/// Runs `cambox ARGS`, which must succeed; its standard output.
fn cambox(args: &[&str]) -> String {
    String::from_utf8(run(Command::new(BIN).args(args))).expect("text")
}

/// A node key in `dir`, made now, and its full id.
fn node_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name).join("node.key");
    let id = cambox(&["id", "--full", "--key", key.to_str().unwrap()]);
    (key, id.trim().to_string())
}

/// A CA made by `cambox ca init` in `dir`/ca; its directory.
fn new_ca(dir: &Path) -> PathBuf {
    let ca = dir.join("ca");
    cambox(&[
        "ca",
        "init",
        "--dir",
        path(&ca),
        "--name",
        "Example cameras",
    ]);
    ca
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// A box named `name` with `key`, dialing `peer` if given, with `extra` (site berlin
/// unless `extra` says otherwise).
fn start(key: &Path, name: &str, peer: Option<&str>, extra: &[String]) -> BoxProc {
    let mut args = vec!["--key", path(key), "--node", name];
    if !extra.iter().any(|a| a == "--site") {
        args.extend(["--site", "berlin"]);
    }
    if let Some(p) = peer {
        args.extend(["--peer", p]);
    }
    args.extend(extra.iter().map(String::as_str));
    BoxProc::start(&args)
}

/// The options of a box in the mesh of CA `ca` with node certificate `crt`.
fn enrolled(ca: &Path, crt: &Path) -> Vec<String> {
    ["--mesh-ca", path(ca), "--node-cert", path(crt)]
        .map(String::from)
        .to_vec()
}

fn peers(b: &BoxProc) -> usize {
    let (_, body) = http(&b.addr(), "GET", "/api/v1/peers", "");
    json(&body)["peers"].as_array().map_or(0, |p| p.len())
}

#[test]
fn only_boxes_the_ca_enrolled_link_and_a_revoked_box_drops_out_within_seconds() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = new_ca(d);
    let ca_crt = ca.join("ca.crt");
    let sign = |id: &str, name: &str, site: &str| {
        let out = d.join(name).join("node.crt");
        cambox(&[
            "ca",
            "sign",
            "--dir",
            path(&ca),
            "--node",
            id,
            "--site",
            site,
            "--name",
            name,
            "--out",
            path(&out),
        ]);
        out
    };
    let (a_key, a_id) = node_key(d, "a");
    let (b_key, b_id) = node_key(d, "b");
    let (c_key, c_id) = node_key(d, "c");
    let (s_key, _) = node_key(d, "stranger");
    let (f_key, f_id) = node_key(d, "forged");
    let (e_key, e_id) = node_key(d, "expired");
    let a_crt = sign(&a_id, "a", "berlin");
    let b_crt = sign(&b_id, "b", "berlin");
    let c_crt = sign(&c_id, "c", "munich");
    // Certified by a CA of the same name that is not this mesh's.
    let other = Authority::create_root("Example cameras", 365, SystemTime::now()).unwrap();
    let claims = |id: &str, days| NodeClaims {
        node: NodeId::from_hex(id).unwrap(),
        site: "berlin".into(),
        name: "x".into(),
        days,
    };
    let forged = d.join("forged.crt");
    let chain = other
        .issue_node(&claims(&f_id, 30), SystemTime::now())
        .unwrap();
    std::fs::write(&forged, cambox_trust::pem::encode_certificates(&chain)).unwrap();
    // Certified by this mesh's CA, but for one day, ten days ago.
    let root = Authority::from_pem(
        &std::fs::read_to_string(&ca_crt).unwrap(),
        &std::fs::read_to_string(ca.join("ca.key")).unwrap(),
    )
    .unwrap();
    let expired = d.join("expired.crt");
    let long_ago = SystemTime::now() - Duration::from_secs(10 * 86_400);
    let chain = root.issue_node(&claims(&e_id, 1), long_ago).unwrap();
    std::fs::write(&expired, cambox_trust::pem::encode_certificates(&chain)).unwrap();

    let live = |mut v: Vec<String>| {
        v.extend(["--live".to_string(), "--name".to_string(), "vm".to_string()]);
        v
    };
    let a = start(&a_key, "a", None, &live(enrolled(&ca_crt, &a_crt)));
    assert_eq!(a.status()["admission"]["mode"], "ca", "{}", a.status());
    assert_eq!(a.status()["admission"]["ca"], "Example cameras");
    let peer = Some(a.mesh_addr.as_str());
    let b = start(&b_key, "b", peer, &enrolled(&ca_crt, &b_crt));
    // c, at another site, reaches a only through b.
    let mut c_opts = enrolled(&ca_crt, &c_crt);
    c_opts.extend(["--site", "munich"].map(String::from));
    let c = start(&c_key, "c", Some(&b.mesh_addr), &c_opts);
    // The stranger is live too: its stream must not reach the mesh.
    let stranger = ["--live", "--name", "strangerstream"].map(String::from);
    let s = start(&s_key, "stranger", peer, &stranger);
    let f = start(&f_key, "forged", peer, &enrolled(&ca_crt, &forged));
    let e = start(&e_key, "expired", peer, &enrolled(&ca_crt, &expired));
    assert_eq!(s.status()["admission"]["mode"], "lab");
    assert!(
        e.status()["admission"]["problem"]
            .as_str()
            .is_some_and(|p| p.contains("expired")),
        "the expired box says so itself: {}",
        e.status()
    );

    wait_for_stream(
        &c,
        &format!("vm@{}", a.node_id),
        "the enrolled boxes to list a's stream",
    );
    let refused =
        |reason: &str| a.metric(&format!("cambox_mesh_refused_total{{reason=\"{reason}\"}}"));
    wait_until(
        "a to refuse the stranger, the forged and the expired box",
        Duration::from_secs(15),
        || {
            refused("no_certificate") >= 1.0
                && refused("untrusted") >= 1.0
                && refused("expired") >= 1.0
        },
    );
    let a_log = a.logs();
    assert!(
        a_log.contains("not admitted: it presented no node certificate"),
        "{a_log}"
    );
    assert!(a_log.contains("is not from this mesh's CA"), "{a_log}");
    assert!(a_log.contains("node certificate expired at"), "{a_log}");
    for (refused_box, why) in [
        (&s, "presented no node certificate"),
        (&f, "is not from this mesh's CA"),
        (&e, "expired at"),
    ] {
        wait_until(
            "the refused box to log the reason",
            Duration::from_secs(10),
            || {
                refused_box.logs().contains("the peer refused this box")
                    && refused_box.logs().contains(why)
            },
        );
        assert!(refused_box.metric("cambox_mesh_refused_by_peer_total") >= 1.0);
        assert_eq!(peers(refused_box), 0, "a refused box has no link");
    }
    // Nothing of the stranger's gets in, nothing of the mesh gets out.
    let (_, streams) = http(&b.addr(), "GET", "/api/v1/streams", "");
    assert!(!streams.contains("strangerstream"), "{streams}");
    let (_, streams) = http(&s.addr(), "GET", "/api/v1/streams", "");
    assert!(!streams.contains(&format!("@{}", a.node_id)), "{streams}");
    let (code, _) = http(&s.addr(), "GET", &format!("/live/vm@{}.mp4", a.node_id), "");
    assert_eq!(code, 404, "the stranger cannot watch a's stream");
    assert_eq!(peers(&b), 2, "b links a and c");

    // Revoke c and hand the list to a alone: it travels to b, which disconnects c.
    assert_eq!(peers(&c), 1);
    let start = std::time::Instant::now();
    cambox(&["ca", "revoke", "--dir", path(&ca), &c_id, "--push", &a.base]);
    wait_until("c to drop out", Duration::from_secs(10), || peers(&c) == 0);
    let took = start.elapsed();
    println!("a box revoked at a dropped out at b, a hop away, {took:?} later");
    assert!(took < Duration::from_secs(10));
    wait_until("c to be told why", Duration::from_secs(10), || {
        c.logs().contains("is revoked by the CA")
    });
    assert!(b.metric("cambox_mesh_refused_total{reason=\"revoked\"}") >= 1.0);
    assert_eq!(b.status()["admission"]["revocation_list"], 1);
    assert_eq!(peers(&b), 1, "b keeps its link to a");
    let (code, list) = http(&b.addr(), "GET", "/api/v1/revocations", "");
    assert_eq!(code, 200);
    assert!(list.contains(&c_id), "{list}");
    // A list the CA did not sign is refused, and changes nothing.
    let forged_list = list.replace(&c_id, &b_id);
    let (code, body) = http(&a.addr(), "PUT", "/api/v1/revocations", &forged_list);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("signature"), "{body}");
    assert_eq!(peers(&b), 1);
    // A list that is not newer is not taken again.
    let (code, body) = http(&a.addr(), "PUT", "/api/v1/revocations", &list);
    assert_eq!(
        (code, json(&body)["adopted"].clone()),
        (200, false.into()),
        "{body}"
    );
}

/// A signed enrolment as a box sends it.
fn enrolment(id: &cambox_mesh::identity::Identity, token: &str, site: &str) -> String {
    enrolment_with(id, token, site, |_| {})
}

/// [`enrolment`], changed by `change` before it is signed.
fn enrolment_with(
    id: &cambox_mesh::identity::Identity,
    token: &str,
    site: &str,
    change: impl FnOnce(&mut cambox_registry::model::Enrolment),
) -> String {
    let mut e = cambox_registry::model::Enrolment {
        token: token.into(),
        certificate: None,
        node: id.node_id().to_hex(),
        name: "raw".into(),
        site: site.into(),
        timestamp_ms: cambox_trust::unix_secs(SystemTime::now()) * 1000,
        web_key: None,
        web_names: Vec::new(),
    };
    change(&mut e);
    serde_json::to_string(&cambox_registry::company_ca::sign(id, e)).unwrap()
}

#[test]
fn a_registry_with_the_ca_enrols_boxes_that_bring_a_join_token_and_refuses_the_rest() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = new_ca(d);
    let enroller = d.join("registry");
    cambox(&[
        "ca",
        "enroller",
        "--dir",
        path(&ca),
        "--out",
        path(&enroller),
    ]);
    let token = cambox(&["ca", "token", "--dir", path(&ca), "--site", "berlin"]);
    let token = token.trim();
    let reg = RegistryProc::start(
        "127.0.0.1:0",
        &[
            "--ca",
            path(&enroller.join("ca.crt")),
            "--enroller",
            path(&enroller),
            "--heartbeat",
            "1",
        ],
    );
    let registry = format!("http://{}", reg.addr);
    // Boxes with nothing but the registry and the token: the token names their site.
    let joining = |name: &str, live: bool| {
        let mut args = vec![
            "--node",
            name,
            "--registry",
            &registry,
            "--join-token",
            token,
        ];
        if live {
            args.push("--live");
        }
        BoxProc::start(&args)
    };
    let x = joining("x", true);
    let y = joining("y", false);
    for b in [&x, &y] {
        let s = b.status();
        assert_eq!(s["site"], "berlin", "{s}");
        assert_eq!(s["admission"]["mode"], "ca", "{s}");
        assert_eq!(s["admission"]["certificate"]["site"], "berlin", "{s}");
        assert!(
            b.logs().contains("enrolled by the registry"),
            "{}",
            b.logs()
        );
    }
    wait_for_stream(
        &y,
        &format!("vm@{}", x.node_id),
        "y to list x's stream through the mesh",
    );

    // A box without a token is refused by the registry (and would be by the boxes).
    let z = BoxProc::start(&["--node", "z", "--site", "berlin", "--registry", &registry]);
    wait_until("the registry to refuse z", Duration::from_secs(10), || {
        z.logs().contains("cannot register: answered 403")
    });
    assert!(
        z.logs().contains("presented no node certificate"),
        "{}",
        z.logs()
    );
    let (_, nodes) = http(&reg.addr, "GET", "/api/v1/nodes", "");
    assert_eq!(
        json(&nodes)["nodes"].as_array().unwrap().len(),
        2,
        "{nodes}"
    );

    // Enrolments the registry refuses, each with its reason.
    let me = cambox_mesh::identity::Identity::from_seed([5; 32]);
    let other_ca = Authority::create_root("Other", 30, SystemTime::now()).unwrap();
    let foreign = cambox_trust::JoinToken::issue(
        &other_ca,
        "berlin",
        SystemTime::now() + Duration::from_secs(3600),
    )
    .unwrap()
    .to_string();
    let mut altered = json(&enrolment(&me, token, "berlin"));
    altered["enrolment"]["name"] = "renamed".into();
    let web_key = cambox_trust::https_cert::WebKey::of_private_pem(
        &cambox_trust::https_cert::WebKey::generate_pem().unwrap(),
    )
    .unwrap()
    .to_hex();
    let x_chain = std::fs::read_to_string(x.state_dir().join("node.crt")).unwrap();
    for (body, why) in [
        (enrolment(&me, token, "munich"), "join token is for site"),
        (enrolment(&me, &foreign, "berlin"), "another CA"),
        (
            enrolment(&me, "cambox-join1.00", "berlin"),
            "not a cambox join token",
        ),
        (altered.to_string(), "signature does not match"),
        (
            enrolment(&me, "", "berlin"),
            "needs a join token or the box's node certificate",
        ),
        (
            // Another box's certificate proves nothing for this key.
            enrolment_with(&me, "", "berlin", |e| e.certificate = Some(x_chain.clone())),
            "not the key it proved",
        ),
        (
            // A box may have only its own names certified for HTTPS.
            enrolment_with(&me, token, "berlin", |e| {
                e.web_key = Some(web_key.clone());
                e.web_names = vec!["intranet.example.com".into()];
            }),
            "may have only cambox-",
        ),
        ("{}".to_string(), "not an enrolment"),
    ] {
        let (code, answer) = http(&reg.addr, "POST", "/api/v1/enrol", &body);
        assert!(matches!(code, 400 | 403), "{code} {answer}");
        assert!(answer.contains(why), "{why}: {answer}");
    }
    let (code, answer) = http(
        &reg.addr,
        "POST",
        "/api/v1/enrol",
        &enrolment(&me, token, "berlin"),
    );
    assert_eq!(code, 200, "{answer}");
    assert!(json(&answer)["certificate"]
        .as_str()
        .unwrap()
        .contains("BEGIN CERTIFICATE"));

    // Revoking y at the registry reaches x with its next heartbeat; x drops y.
    let y_id = y.status()["node_id"].as_str().unwrap().to_string();
    assert_eq!(peers(&x), 1);
    let start = std::time::Instant::now();
    cambox(&[
        "ca",
        "revoke",
        "--dir",
        path(&ca),
        &y_id,
        "--push",
        &registry,
    ]);
    wait_until("x to drop y", Duration::from_secs(10), || peers(&x) == 0);
    println!(
        "a box revoked at the registry dropped out {:?} later (heartbeat 1 s)",
        start.elapsed()
    );
    wait_until(
        "the registry to refuse y's renewal",
        Duration::from_secs(10),
        || y.logs().contains("is revoked by the CA"),
    );
}
