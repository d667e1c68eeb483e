//! Two boxes that hold one node key (a card copied with its key, say) have one node id: a
//! connection between them is refused as such, and told apart from a box that reached
//! one of its own addresses. Real QUIC on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::Arc;

use cambox_mesh::identity::Identity;
use cambox_mesh::{Msg, NodeId};
use cambox_node::mesh::conn::{establish, Me, Refusal};
use cambox_node::mesh::tls;

/// A QUIC endpoint on loopback proving `id` with a certificate of its own, as one
/// `cambox run` process has.
fn endpoint(id: &Identity) -> (quinn::Endpoint, Me) {
    let configs = tls::quic_configs(id, &[], Arc::new(quinn::TransportConfig::default())).unwrap();
    let mut ep = quinn::Endpoint::server(configs.server, "127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(configs.client);
    let me = Me {
        id: id.node_id(),
        certificate: configs.certificate,
        trust: None,
    };
    (ep, me)
}

fn hello(node: NodeId) -> Msg {
    Msg::Hello {
        node,
        site: "lab".into(),
        uplink_kbps: 0,
        tree: false,
    }
}

/// `from` dials `to`'s endpoint; both sides run the handshake. Returns (dialer, acceptor),
/// each a link's peer or the refusal.
async fn connect(
    from: &(quinn::Endpoint, Me),
    to: &(quinn::Endpoint, Me),
    at: SocketAddr,
) -> (Result<NodeId, Refusal>, Result<NodeId, Refusal>) {
    let accepting = {
        let (ep, me) = (to.0.clone(), to.1.clone());
        tokio::spawn(async move {
            let conn = ep.accept().await.unwrap().await.unwrap();
            establish(conn, false, &me, &hello(me.id)).await
        })
    };
    let conn = from
        .0
        .connect(at, &tls::server_name_for(None))
        .unwrap()
        .await
        .unwrap();
    let dialer = establish(conn, true, &from.1, &hello(from.1.id)).await;
    // Both links stay open until both handshakes are over.
    let acceptor = accepting.await.unwrap();
    (dialer.map(|e| e.peer), acceptor.map(|e| e.peer))
}

#[tokio::test]
async fn two_processes_with_one_key_are_told_they_share_it() {
    let key = Identity::from_seed([7; 32]);
    let a = endpoint(&key);
    let b = endpoint(&key);
    let at = a.0.local_addr().unwrap();
    let (dialer, acceptor) = connect(&b, &a, at).await;
    assert_eq!(dialer.unwrap_err(), Refusal::SameKey);
    assert_eq!(acceptor.unwrap_err(), Refusal::SameKey);
    let said = Refusal::SameKey.to_string();
    assert!(said.contains("two boxes share one node key"), "{said}");
    assert!(said.contains("--key"), "{said}");
}

#[tokio::test]
async fn a_box_that_reaches_its_own_address_knows_it_is_itself() {
    let a = endpoint(&Identity::from_seed([8; 32]));
    let at = a.0.local_addr().unwrap();
    let (dialer, acceptor) = connect(&a, &a, at).await;
    assert_eq!(dialer.unwrap_err(), Refusal::Itself);
    assert_eq!(acceptor.unwrap_err(), Refusal::Itself);
}

#[tokio::test]
async fn boxes_with_keys_of_their_own_link() {
    let a = endpoint(&Identity::from_seed([9; 32]));
    let b = endpoint(&Identity::from_seed([10; 32]));
    let at = a.0.local_addr().unwrap();
    let (dialer, acceptor) = connect(&b, &a, at).await;
    assert_eq!(dialer.unwrap(), a.1.id);
    assert_eq!(acceptor.unwrap(), b.1.id);
}
