//! One QUIC connection to a neighbour: the handshake that names it, a control stream for
//! everything but media, and a unidirectional stream per group (as Media over QUIC), so a
//! group that is dropped or lost never holds up the next one.

use std::collections::HashMap;
use std::time::Duration;

use cambox_mesh::wire::{self, Decoder, GroupEncoder};
use cambox_mesh::{BroadcastId, Msg, NodeId};
use tokio::sync::mpsc;

use super::tls::{node_id_of, peer_certificates};
use super::trust::Trust;
use super::Input;
use prometheus_client::metrics::counter::Counter;

/// How long a new connection may take to say who it is.
const HELLO_TIMEOUT: Duration = Duration::from_secs(3);
/// QUIC application error codes.
pub const CLOSE_NORMAL: u32 = 0;
pub const CLOSE_PROTOCOL: u32 = 1;
pub const CLOSE_DUPLICATE: u32 = 2;
/// The peer went past one of the core's limits (the reason names it).
pub const CLOSE_LIMIT: u32 = 3;
/// The mesh's CA does not admit the peer (the reason says why).
pub const CLOSE_NOT_ADMITTED: u32 = 4;
/// The stream error code of a group stream reset because a newer group overtook it.
const STALE_GROUP: u32 = 1;

/// A connection whose peer proved its node id and said hello.
#[derive(Debug)]
pub struct Established {
    pub peer: NodeId,
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    /// Holds whatever arrived after the peer's Hello.
    pub decoder: Decoder,
    pub hello: Msg,
    /// True when this node opened the connection (the tie-break between two connections
    /// that two nodes opened to each other at the same moment).
    pub dialed: bool,
}

/// This node as a connection sees it: its id, the certificate this process presents and
/// the mesh's admission rule, if it has a CA.
#[derive(Debug, Clone)]
pub struct Me {
    pub id: NodeId,
    pub certificate: rustls::pki_types::CertificateDer<'static>,
    pub trust: Option<std::sync::Arc<Trust>>,
}

/// Why a connection did not become a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The peer is this very process: the box reached one of its own addresses.
    Itself,
    /// The peer proves this node's id with another certificate: another box, or another
    /// process, holds the same node key.
    SameKey,
    /// This node's CA does not admit the peer.
    NotAdmitted(cambox_trust::Refused),
    /// The peer's CA does not admit this node; its reason.
    RefusedByPeer(String),
    Other(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Itself => f.write_str("connected to itself"),
            Refusal::SameKey => f.write_str(
                "the peer has this box's own node id: two boxes share one node key; \
                 give one of them a key of its own (cambox run --key FILE)",
            ),
            Refusal::NotAdmitted(why) => write!(f, "not admitted: {why}"),
            Refusal::RefusedByPeer(why) => write!(f, "the peer refused this box: {why}"),
            Refusal::Other(reason) => f.write_str(reason),
        }
    }
}

impl From<String> for Refusal {
    fn from(reason: String) -> Self {
        Refusal::Other(reason)
    }
}

impl From<&str> for Refusal {
    fn from(reason: &str) -> Self {
        Refusal::Other(reason.into())
    }
}

fn close(conn: &quinn::Connection, code: u32, reason: &str) {
    conn.close(code.into(), reason.as_bytes());
}

/// Exchanges Hellos on the control stream. The peer's Hello must name the node its
/// certificate proves; anything else closes the connection with the reason.
pub async fn establish(
    conn: quinn::Connection,
    dialed: bool,
    me: &Me,
    our_hello: &Msg,
) -> Result<Established, Refusal> {
    let result = tokio::time::timeout(HELLO_TIMEOUT, handshake(&conn, dialed, me, our_hello))
        .await
        .unwrap_or_else(|_| Err(format!("no Hello within {HELLO_TIMEOUT:?}").into()));
    let refusal = match result {
        Ok(est) => return Ok(est),
        Err(refusal) => refused_by_peer(&conn).unwrap_or(refusal),
    };
    let code = match refusal {
        Refusal::NotAdmitted(_) => CLOSE_NOT_ADMITTED,
        _ => CLOSE_PROTOCOL,
    };
    close(&conn, code, &refusal.to_string());
    Err(refusal)
}

/// The peer's reason, when it closed the connection because its CA does not admit this
/// node: whatever error the handshake met on the way is only the consequence.
fn refused_by_peer(conn: &quinn::Connection) -> Option<Refusal> {
    match conn.close_reason()? {
        quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code == quinn::VarInt::from_u32(CLOSE_NOT_ADMITTED) =>
        {
            let why = String::from_utf8_lossy(&c.reason);
            Some(Refusal::RefusedByPeer(
                why.strip_prefix("not admitted: ")
                    .unwrap_or(&why)
                    .to_owned(),
            ))
        }
        _ => None,
    }
}

async fn handshake(
    conn: &quinn::Connection,
    dialed: bool,
    me: &Me,
    our_hello: &Msg,
) -> Result<Established, Refusal> {
    let certs = peer_certificates(conn);
    let cert = certs.first().ok_or("peer presented no certificate")?;
    let peer = node_id_of(cert).ok_or("peer presented no node certificate")?;
    if peer == me.id {
        return Err(if *cert == me.certificate {
            Refusal::Itself
        } else {
            Refusal::SameKey
        });
    }
    let certified_site = match &me.trust {
        Some(trust) => Some(
            trust
                .check(peer, &certs[1..])
                .map_err(Refusal::NotAdmitted)?
                .site,
        ),
        None => None,
    };
    let (mut send, mut recv) = if dialed {
        conn.open_bi().await
    } else {
        conn.accept_bi().await
    }
    .map_err(|e| format!("no control stream: {e}"))?;
    let mut frame = Vec::new();
    wire::encode(our_hello, &mut frame);
    send.write_all(&frame)
        .await
        .map_err(|e| format!("cannot send Hello: {e}"))?;
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; 16 * 1024];
    let hello = loop {
        if let Some(msg) = decoder.next().map_err(|e| format!("bad Hello: {e}"))? {
            break msg;
        }
        match recv.read(&mut buf).await {
            Ok(Some(n)) => decoder.push(&buf[..n]),
            Ok(None) => return Err("control stream ended before Hello".into()),
            Err(e) => return Err(format!("reading Hello: {e}").into()),
        }
    };
    match &hello {
        Msg::Hello { site, .. } if certified_site.as_ref().is_some_and(|c| c != site) => {
            return Err(format!(
                "Hello claims site {site:?} but the node certificate says {:?}",
                certified_site.unwrap_or_default()
            )
            .into())
        }
        Msg::Hello { node, .. } if *node == peer => {}
        Msg::Hello { node, .. } => {
            return Err(
                format!("Hello claims node {node} but the certificate proves {peer}").into(),
            )
        }
        other => return Err(format!("first message is not Hello: {other:?}").into()),
    }
    Ok(Established {
        peer,
        conn: conn.clone(),
        send,
        recv,
        decoder,
        hello,
        dialed,
    })
}

/// Everything read from a connection goes to the driver as inputs tagged with the
/// connection, so inputs from a replaced connection can be told apart.
#[derive(Debug, Clone)]
pub struct Inbox {
    pub peer: NodeId,
    pub conn_id: usize,
    pub tx: mpsc::UnboundedSender<Input>,
    /// This neighbour's byte counters, looked up once rather than per read.
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub media_out: Counter,
}

impl Inbox {
    fn msg(&self, msg: Msg) -> bool {
        self.tx
            .send(Input::Message {
                peer: self.peer,
                conn_id: self.conn_id,
                msg,
            })
            .is_ok()
    }

    fn down(&self, reason: String) {
        let _ = self.tx.send(Input::Down {
            peer: self.peer,
            conn_id: self.conn_id,
            reason,
        });
    }

    fn count_in(&self, n: usize) {
        self.bytes_in.inc_by(n as u64);
    }
}

/// Reads the control stream until it ends or carries garbage, which closes the
/// connection with the decoder's reason: a broken peer costs its own link, nothing else.
pub async fn read_control(
    inbox: Inbox,
    conn: quinn::Connection,
    mut recv: quinn::RecvStream,
    mut decoder: Decoder,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let reason = loop {
        match decoder.next() {
            Ok(Some(Msg::Object { .. })) => break "media on the control stream".to_string(),
            Ok(Some(msg)) => {
                if !inbox.msg(msg) {
                    return;
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => break format!("protocol error: {e}"),
        }
        match recv.read(&mut buf).await {
            Ok(Some(n)) => {
                inbox.count_in(n);
                decoder.push(&buf[..n]);
            }
            Ok(None) => break "control stream ended".into(),
            Err(e) => break format!("connection lost: {e}"),
        }
    };
    if reason.starts_with("protocol") || reason.starts_with("media") {
        tracing::warn!(peer = %inbox.peer, %reason, "disconnecting peer");
        close(&conn, CLOSE_PROTOCOL, &reason);
    }
    inbox.down(reason);
}

/// Accepts the peer's group streams, each read by a task of its own.
pub async fn accept_groups(inbox: Inbox, conn: quinn::Connection) {
    while let Ok(stream) = conn.accept_uni().await {
        tokio::spawn(read_group(inbox.clone(), conn.clone(), stream));
    }
}

async fn read_group(inbox: Inbox, conn: quinn::Connection, mut recv: quinn::RecvStream) {
    let mut decoder = Decoder::group_stream();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match decoder.next() {
            Ok(Some(msg @ (Msg::Object { .. } | Msg::ChunkData { .. }))) => {
                if !inbox.msg(msg) {
                    return;
                }
                continue;
            }
            Ok(Some(other)) => {
                let reason = format!("{other:?} on a group stream");
                tracing::warn!(peer = %inbox.peer, %reason, "disconnecting peer");
                close(&conn, CLOSE_PROTOCOL, &reason);
                return;
            }
            Ok(None) => {}
            Err(e) => {
                let reason = format!("protocol error: {e}");
                tracing::warn!(peer = %inbox.peer, %reason, "disconnecting peer");
                close(&conn, CLOSE_PROTOCOL, &reason);
                return;
            }
        }
        match recv.read(&mut buf).await {
            Ok(Some(n)) => {
                inbox.count_in(n);
                decoder.push(&buf[..n]);
            }
            // The group ended, or the sender dropped it: the core copes with either.
            Ok(None) | Err(_) => return,
        }
    }
}

/// Sends what the core queued for this peer: objects on their group's stream, everything
/// else on the control stream, and reports media bytes sent so the core's window moves.
pub async fn write_loop(
    inbox: Inbox,
    conn: quinn::Connection,
    mut control: quinn::SendStream,
    mut rx: mpsc::UnboundedReceiver<Msg>,
) {
    // Each track's current group stream, with the encoder that writes its objects after
    // the first as `ObjectNext`.
    let mut groups: HashMap<(BroadcastId, u8), (u64, GroupEncoder, quinn::SendStream)> =
        HashMap::new();
    // Each track's previous group, finished but perhaps not all delivered yet. When the
    // group after the current one starts, what is left of it is stale: it is reset, so a
    // slow link loses that group's tail instead of queueing it ahead of newer ones.
    let mut finished: HashMap<(BroadcastId, u8), quinn::SendStream> = HashMap::new();
    // Newer groups go first on a congested link.
    let mut priority: i32 = 0;
    let mut frame = Vec::new();
    while let Some(msg) = rx.recv().await {
        frame.clear();
        let sent = match &msg {
            Msg::Object {
                broadcast,
                track,
                group,
                payload,
                ..
            } => {
                let key = (broadcast.clone(), *track);
                let current = groups.get(&key).is_some_and(|(g, ..)| g == group);
                if !current {
                    if let Some(mut stale) = finished.remove(&key) {
                        let _ = stale.reset(STALE_GROUP.into());
                    }
                    if let Some((.., mut old)) = groups.remove(&key) {
                        let _ = old.finish();
                        finished.insert(key.clone(), old);
                    }
                    match conn.open_uni().await {
                        Ok(s) => {
                            priority = priority.wrapping_add(1);
                            let _ = s.set_priority(priority);
                            groups.insert(key.clone(), (*group, GroupEncoder::new(), s));
                        }
                        Err(_) => break,
                    }
                }
                let Some((_, encoder, stream)) = groups.get_mut(&key) else {
                    break;
                };
                encoder.encode(&msg, &mut frame);
                let r = stream.write_all(&frame).await;
                inbox.media_out.inc_by(payload.len() as u64);
                let _ = inbox.tx.send(Input::Transmitted {
                    peer: inbox.peer,
                    conn_id: inbox.conn_id,
                    bytes: cambox_mesh::node::media_len(&msg),
                });
                r.is_ok()
            }
            // An update's chunk on a stream of its own, below every live group: it must
            // neither hold up the control stream nor wait for this loop's next message.
            Msg::ChunkData { .. } => {
                wire::encode(&msg, &mut frame);
                let (conn, bytes) = (conn.clone(), frame.clone());
                tokio::spawn(async move {
                    if let Ok(mut s) = conn.open_uni().await {
                        let _ = s.set_priority(i32::MIN);
                        if s.write_all(&bytes).await.is_ok() {
                            let _ = s.finish();
                        }
                    }
                });
                true
            }
            Msg::Goodbye => {
                wire::encode(&msg, &mut frame);
                let ok = control.write_all(&frame).await.is_ok();
                let _ = control.finish();
                ok
            }
            _ => {
                wire::encode(&msg, &mut frame);
                control.write_all(&frame).await.is_ok()
            }
        };
        if !sent {
            break;
        }
        inbox.bytes_out.inc_by(frame.len() as u64);
    }
}
