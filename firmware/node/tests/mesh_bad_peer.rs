//! A peer that sends garbage, a huge length, an unknown version or a lie about its id is
//! disconnected with a reason; the box does not panic and its other neighbours keep
//! receiving. Real QUIC on 127.0.0.1.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cambox_media::broadcast::track;
use cambox_media::{Broadcast, FrameRate, GroupObject};
use cambox_mesh::identity::Identity;
use cambox_mesh::wire;
use cambox_mesh::Msg;
use cambox_node::mesh::{tls, Mesh, MeshSettings};
use cambox_node::metrics::Metrics;
use tokio::sync::watch;

fn settings(site: &str, peers: Vec<String>) -> MeshSettings {
    MeshSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        peers,
        site: site.into(),
        node_name: site.into(),
        mdns: false,
        uplink_kbps: 20_000,
        command_allow: Default::default(),
        rtsp_port: None,
        trust: None,
        watch: String::new(),
        watchers: Default::default(),
        tcp_listen: None,
        proxy: None,
        updates: None,
    }
}

/// A broadcast fed with 30 small "frames" a second, a group per second.
fn fake_broadcast() -> (Broadcast, tokio::task::JoinHandle<()>) {
    let (mut w, video) = track("video", 2);
    let b = Broadcast {
        name: "cam".into(),
        video,
        audio: None,
        rate: FrameRate::per_second(30),
        audio_pre_skip: None,
    };
    let feeder = tokio::spawn(async move {
        for i in 0u64.. {
            if i % 30 == 0 {
                w.start_group();
            }
            w.write(GroupObject {
                capture_us: i * 33_333,
                payload: Bytes::from(vec![(i % 251) as u8; 500]),
            });
            tokio::time::sleep(Duration::from_millis(33)).await;
        }
    });
    (b, feeder)
}

/// A rogue node with a valid certificate of its own.
async fn rogue_connection(to: std::net::SocketAddr, seed: u8) -> quinn::Connection {
    let id = Identity::from_seed([seed; 32]);
    let client = tls::quic_configs(&id, &[], Arc::new(quinn::TransportConfig::default()))
        .unwrap()
        .client;
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(client);
    ep.connect(to, &tls::server_name_for(None))
        .unwrap()
        .await
        .expect("the handshake itself succeeds: the certificate is valid")
}

fn frame(msg: &Msg) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode(msg, &mut out);
    out
}

/// Sends `bytes` on a new control stream and returns why the box closed the connection.
async fn send_and_get_closed(to: std::net::SocketAddr, seed: u8, bytes: Vec<u8>) -> String {
    let conn = rogue_connection(to, seed).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    let _ = send.write_all(&bytes).await;
    let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("the box closes a misbehaving peer's connection");
    reason.to_string()
}

/// Waits until `mesh` has heard of the broadcast "cam" (a loaded machine takes a while
/// to link the two boxes), up to 10 s.
async fn knows_cam(mesh: &Mesh) {
    for _ in 0..200 {
        if mesh.list().await.unwrap().iter().any(|b| b.name == "cam") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the good peer never heard of the broadcast");
}

async fn receives(mesh: &Mesh) -> u64 {
    let w = mesh
        .watch("cam", Duration::from_secs(5))
        .await
        .expect("watch");
    let mut r = w.broadcast.video.subscribe();
    let mut n = 0;
    let _ = tokio::time::timeout(Duration::from_millis(700), async {
        while r.next().await.is_some() {
            n += 1;
        }
    })
    .await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_one_peer_costs_only_its_own_link() {
    let (b, _feeder) = fake_broadcast();
    let (_on_air_tx, on_air) = watch::channel(Some(b));
    let origin = Mesh::start(
        settings("a", vec![]),
        Identity::from_seed([1; 32]),
        on_air,
        Arc::new(Metrics::new()),
    )
    .await
    .unwrap();
    let (_idle_tx, idle) = watch::channel(None);
    let good = Mesh::start(
        settings("b", vec![origin.local_addr.to_string()]),
        Identity::from_seed([2; 32]),
        idle,
        Arc::new(Metrics::new()),
    )
    .await
    .unwrap();
    knows_cam(&good).await;
    assert!(receives(&good).await > 10, "the good peer receives before");

    let rogue_id = Identity::from_seed([9; 32]).node_id();
    let hello = frame(&Msg::Hello {
        node: rogue_id,
        site: "x".into(),
        uplink_kbps: 0,
        tree: false,
    });
    let mut garbage = hello.clone();
    garbage.extend_from_slice(&[wire::VERSION, 0xee, 0, 0, 0, 3, 1, 2, 3]);
    let mut huge = hello.clone();
    huge.extend_from_slice(&[wire::VERSION, 0x02, 0xff, 0xff, 0xff, 0xff]);
    let mut version = hello.clone();
    version.extend_from_slice(&[7, 0x09, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
    let liar = frame(&Msg::Hello {
        node: Identity::from_seed([2; 32]).node_id(),
        site: "x".into(),
        uplink_kbps: 0,
        tree: false,
    });
    let cases = [
        ("unknown message type", garbage, "unknown"),
        ("huge length", huge, "over the"),
        ("unknown version", version, "version"),
        ("Hello naming another node", liar, "certificate proves"),
    ];
    for (what, bytes, expect) in cases {
        let reason = send_and_get_closed(origin.local_addr, 9, bytes).await;
        assert!(
            reason.to_lowercase().contains(expect),
            "{what}: closed with '{reason}', want it to mention '{expect}'"
        );
    }
    // Media on the control stream is refused too.
    let object = frame(&Msg::Object {
        broadcast: cambox_mesh::BroadcastId {
            origin: rogue_id,
            name: "x".into(),
        },
        track: 0,
        group: 0,
        index: 0,
        capture_us: 0,
        payload: Bytes::from_static(b"x"),
    });
    let mut media = hello.clone();
    media.extend_from_slice(&object);
    let reason = send_and_get_closed(origin.local_addr, 9, media).await;
    assert!(reason.contains("media on the control stream"), "{reason}");

    assert!(
        receives(&good).await > 10,
        "the good peer still receives after the rogue was thrown out"
    );
    assert_eq!(
        origin.peers().await.unwrap().len(),
        1,
        "only the good peer is left"
    );
}

#[tokio::test]
async fn a_node_that_is_not_the_one_dialled_is_refused_at_the_handshake() {
    let (_tx, idle) = watch::channel(None);
    let real = Identity::from_seed([4; 32]);
    let mesh = Mesh::start(settings("a", vec![]), real, idle, Arc::new(Metrics::new()))
        .await
        .unwrap();
    let me = Identity::from_seed([5; 32]);
    let client = tls::quic_configs(&me, &[], Arc::new(quinn::TransportConfig::default()))
        .unwrap()
        .client;
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(client);
    // We believe node [6; 32] is at that address; the certificate proves [4; 32].
    let expected = Identity::from_seed([6; 32]).node_id();
    let err = ep
        .connect(mesh.local_addr, &tls::server_name_for(Some(expected)))
        .unwrap()
        .await
        .expect_err("a certificate for another node must be refused");
    assert!(err.to_string().contains("not the node"), "{err}");
    // The right id is accepted.
    let right = Identity::from_seed([4; 32]).node_id();
    ep.connect(mesh.local_addr, &tls::server_name_for(Some(right)))
        .unwrap()
        .await
        .expect("the node it claims to be");
}
