//! Bounded state through real processes: a machine that speaks the protocol announces a
//! million made-up broadcasts to a box; that box and its neighbour in another site stay
//! within their bounds, the liar is disconnected and counted, and both boxes answer.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cambox_mesh::identity::Identity;
use cambox_mesh::sim::made_up_entries;
use cambox_mesh::{wire, Msg};
use cambox_node::mesh::tls;
use common::*;

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    kb / 1024.0
}

/// Connects with a valid certificate of its own, says Hello, then sends `total` made-up
/// catalog entries in frames as large as the wire allows. Returns how many it got out
/// before the box closed the connection, and the box's close reason.
async fn announce(to: SocketAddr, total: usize) -> (usize, String) {
    let id = Identity::from_seed([0x5a; 32]);
    let me = id.node_id();
    let client = tls::quic_configs(&id, &[], Arc::new(quinn::TransportConfig::default()))
        .unwrap()
        .client;
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(client);
    let conn = ep
        .connect(to, &tls::server_name_for(None))
        .unwrap()
        .await
        .expect("the handshake succeeds: the certificate is valid");
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    let mut frame = Vec::new();
    let hello = Msg::Hello {
        node: me,
        site: "s9".into(),
        uplink_kbps: 0,
        tree: false,
    };
    wire::encode(&hello, &mut frame);
    send.write_all(&frame).await.unwrap();
    const PER_FRAME: usize = 25_000;
    let mut sent = 0;
    while sent < total {
        let entries = made_up_entries(sent..(sent + PER_FRAME).min(total), me);
        let n = entries.len();
        frame.clear();
        wire::encode(&Msg::Catalog { entries }, &mut frame);
        if send.write_all(&frame).await.is_err() {
            break;
        }
        sent += n;
    }
    let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .map(|e| e.to_string())
        .unwrap_or_else(|_| "still open".into());
    (sent, reason)
}

fn listed(b: &BoxProc) -> usize {
    let (code, body) = http(&b.addr(), "GET", "/api/v1/streams", "");
    assert_eq!(code, 200, "{body}");
    json(&body)["streams"].as_array().map_or(0, |a| a.len())
}

#[test]
fn a_million_made_up_broadcasts_leave_both_boxes_within_their_bounds() {
    let _serial = serial();
    let a = BoxProc::start(&["--source", "none", "--site", "s1", "--node", "a"]);
    let b = BoxProc::start(&[
        "--source",
        "none",
        "--site",
        "s2",
        "--node",
        "b",
        "--peer",
        &a.mesh_addr,
    ]);
    wait_until("a and b to link", Duration::from_secs(10), || {
        a.metric("cambox_mesh_peers") == 1.0 && b.metric("cambox_mesh_peers") == 1.0
    });
    std::thread::sleep(Duration::from_secs(1));
    let before = (rss_mib(a.child.id()), rss_mib(b.child.id()));

    let at: SocketAddr = a.mesh_addr.parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (sent, reason) = rt.block_on(announce(at, 1_000_000));
    std::thread::sleep(Duration::from_secs(1));
    let after = (rss_mib(a.child.id()), rss_mib(b.child.id()));
    println!(
        "resident MiB of a, b: before {:.1}, {:.1}; after the liar sent {sent} of 1000000 entries {:.1}, {:.1}",
        before.0, before.1, after.0, after.1
    );

    assert!(reason.contains("catalog_entries"), "closed with: {reason}");
    assert!(sent < 1_000_000, "the box read all {sent} entries");
    let counted = "cambox_mesh_peers_disconnected_total{limit=\"catalog_entries\"}";
    assert_eq!(a.metric(counted), 1.0);
    assert_eq!(b.metric(counted), 0.0);
    assert!(
        a.logs().contains("mesh neighbour disconnected"),
        "{}",
        a.logs()
    );
    // Both still answer, list only their own streams, and keep their link.
    assert_eq!((listed(&a), listed(&b)), (1, 1));
    assert_eq!(b.metric("cambox_mesh_peers"), 1.0);
    // One frame of the liar's (under 4 MiB) is all a box buffers before refusing it.
    assert!(
        after.0 < before.0 + 32.0,
        "a grew from {:.1} to {:.1} MiB",
        before.0,
        after.0
    );
    assert!(
        after.1 < before.1 + 8.0,
        "b grew from {:.1} to {:.1} MiB",
        before.1,
        after.1
    );
}
