//! The overlay's thin async driver: owns the QUIC endpoint, connections, discovery and
//! timers, feeds the sans-IO core (`cambox_mesh::node::Node`) and carries out what it asks.
//!
//! One task owns the core; connections, dials and discovery run in tasks of their own and
//! report to it through one channel of [`Input`]s. Broadcasts received from the mesh are
//! rebuilt as local [`Broadcast`]s, so every viewer endpoint serves a remote stream exactly
//! like the box's own.

pub mod bus;
pub mod conn;
pub mod discovery;
pub mod probe;
pub mod tcp;
pub mod tcp_tls;
pub mod tls;
pub mod trust;
pub mod updates;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cambox_media::broadcast::track;
use cambox_media::{Broadcast, FrameRate, GroupObject, TrackWriter};
use cambox_mesh::bus::Bus;
use cambox_mesh::identity::Identity;
use cambox_mesh::msg::{TRACK_AUDIO, TRACK_CATALOG, TRACK_VIDEO};
use cambox_mesh::node::{Config as CoreConfig, Event, Node};
use cambox_mesh::routed::CommandAllow;
use cambox_mesh::site_graph::GatewayDuty;
use cambox_mesh::{BroadcastId, Msg, NodeId};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use self::bus::{Incoming, Waiter};
use self::conn::{Established, Inbox, Me, Refusal, CLOSE_DUPLICATE, CLOSE_LIMIT, CLOSE_NORMAL};
use self::trust::Trust;
use crate::bus::chat::Message as ChatMessage;
use crate::bus::NodeView;
use crate::metrics::Metrics;

/// Groups of a received broadcast kept for this box's own viewers.
const REMOTE_CACHE_GROUPS: usize = 2;
/// A remote broadcast nobody watches stays subscribed this long, so a reload of the page
/// does not rebuild the tree.
const LINGER: Duration = Duration::from_secs(5);
/// Objects held for a broadcast whose catalog (frame rate, pre-skip) has not arrived yet.
const MAX_PENDING: usize = 600;
/// How often static peers are redialled and idle broadcasts let go.
const TICK: Duration = Duration::from_millis(500);
/// Address hints taken from one `Addresses` message (a redirect names at most this many),
/// and nodes whose addresses are kept in all.
const MAX_ADDRESS_HINTS: usize = 256;
const MAX_ADDRESSES: usize = 8192;
/// A box found to hold this box's own key, or refused admission at either end, is dialed
/// again after this long (it may have been given a key or a certificate meanwhile).
const HOLD_REDIAL: Duration = Duration::from_secs(30);
/// How often a node linked over TCP tries QUIC again (a firewall may let UDP through
/// again; QUIC then takes the link over).
const RETRY_QUIC: Duration = Duration::from_secs(10);
/// How long a failed TCP dial holds that address.
const RETRY_TCP: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error(
        "cannot open the mesh socket on UDP {addr}: {source} (in use? try --listen 0.0.0.0:0)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("mesh transport: {0}")]
    Transport(String),
    #[error("unknown stream '{0}': no box of the mesh broadcasts it")]
    Unknown(String),
    #[error("broadcast '{0}' did not start arriving within {1:?}")]
    Timeout(String, Duration),
    #[error("the mesh driver stopped")]
    Stopped,
    #[error("{0}")]
    Route(String),
    #[error("no reply from node {0} within {1:?}")]
    NoReply(String, Duration),
}

/// How this box joins the overlay.
#[derive(Debug, Clone)]
pub struct MeshSettings {
    /// UDP address of the QUIC endpoint.
    pub listen: SocketAddr,
    /// Static peers, `HOST:PORT`, dialled and redialled until connected.
    pub peers: Vec<String>,
    pub site: String,
    /// Human name of the box, for mDNS.
    pub node_name: String,
    /// Advertise and browse `_cambox._udp` on the LAN.
    pub mdns: bool,
    /// Upload budget for relaying, kbit/s.
    pub uplink_kbps: u32,
    /// Who may command this box over the overlay.
    pub command_allow: CommandAllow,
    /// The RTSP server's port, for mDNS `_rtsp._tcp` (None: RTSP is off).
    pub rtsp_port: Option<u16>,
    /// The company CA's admission rule and this box's node certificate (None: a lab mesh,
    /// which any box that speaks the protocol joins).
    pub trust: Option<Arc<Trust>>,
    /// Who may watch this box's stream, carried with it through the mesh (empty: the
    /// mesh-wide default).
    pub watch: String,
    /// Who watches: the origins of the streams this box serves are told who watches
    /// them here, and this box learns who watches its own stream elsewhere.
    pub watchers: Arc<crate::watchers::Watchers>,
    /// Where links over TCP are taken (for networks that drop UDP); None: none.
    pub tcp_listen: Option<SocketAddr>,
    /// An HTTP proxy (HOST:PORT) that links over TCP are dialed through.
    pub proxy: Option<String>,
    /// Updates over the mesh (None: offers are neither kept nor passed on).
    pub updates: Option<updates::UpdateSettings>,
}

/// A broadcast as `cambox list` and the page show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MeshBroadcast {
    pub name: String,
    /// Short id of the origin node.
    pub origin: String,
    /// Full id (hex) of the origin node.
    pub origin_id: String,
    pub site: String,
    /// The origin box's name (`--node`).
    pub box_name: String,
    /// Links between the origin and this box (1 = the origin is a neighbour).
    pub hops: usize,
    /// True for this box's own broadcast.
    pub local: bool,
    /// Who may watch it, as its origin says (empty: the mesh-wide default).
    #[serde(default)]
    pub watch: String,
}

/// A neighbour, for status and diagnostics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerInfo {
    pub id: String,
    pub addr: String,
    pub rtt_ms: f64,
    /// "quic", "tcp", or "tcp via proxy".
    pub transport: String,
    /// This box opened the link (else the other end did).
    pub dialed: bool,
}

/// What the network and the box's own media tell the driver task: links, messages,
/// discovery, the box's own objects. Everything here ends up in the core.
#[derive(Debug)]
pub enum Input {
    Up(Box<Established>),
    DialFailed {
        addr: SocketAddr,
        reason: Refusal,
        /// The dial was over TCP.
        tcp: bool,
        /// The node the dial was for, if known.
        expect: Option<NodeId>,
    },
    Message {
        peer: NodeId,
        conn_id: usize,
        msg: Msg,
    },
    Down {
        peer: NodeId,
        conn_id: usize,
        reason: String,
    },
    Transmitted {
        peer: NodeId,
        conn_id: usize,
        bytes: usize,
    },
    /// Where a static peer (`--peer HOST:PORT`) resolves to now.
    StaticPeer {
        peer: String,
        addrs: Vec<SocketAddr>,
    },
    /// A node seen by discovery (mDNS) at this address.
    Discovered {
        node: NodeId,
        addr: SocketAddr,
    },
    /// A registry's answer: this site's boxes and those of the sites it links to.
    SiteAnswer(SiteAnswer),
    LocalObject {
        track: u8,
        group: u64,
        index: u32,
        capture_us: u64,
        payload: Bytes,
    },
}

/// The boxes a registry told this box about, with their addresses (`registry_client`).
#[derive(Debug, Clone, Default)]
pub struct SiteAnswer {
    /// This site's other boxes.
    pub mates: Vec<(NodeId, SocketAddr)>,
    /// The boxes listed of each site this site links to (`site_graph::linked_sites`).
    pub linked: Vec<Vec<(NodeId, SocketAddr)>>,
    /// Where the boxes listed take links over TCP.
    pub tcp: Vec<(NodeId, SocketAddr)>,
    /// This box can be reached from its own site only (behind NAT or a proxy).
    pub closed: bool,
}

impl SiteAnswer {
    /// The ids alone, as `GatewayDuty::answer` takes them: site-mates, then linked sites.
    pub fn ids(&self) -> (Vec<NodeId>, Vec<Vec<NodeId>>) {
        let ids = |list: &[(NodeId, SocketAddr)]| list.iter().map(|(id, _)| *id).collect();
        (
            ids(&self.mates),
            self.linked.iter().map(|l| ids(l)).collect(),
        )
    }
}

/// What the rest of the box asks of the mesh (the API, viewers, the bus), on a channel of
/// its own so that requests and network events are told apart by type, not by variant.
#[derive(Debug)]
pub enum Request {
    List(oneshot::Sender<Vec<MeshBroadcast>>),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    Watch {
        name: String,
        reply: oneshot::Sender<Result<Watched, MeshError>>,
    },
    Unwatch(BroadcastId),
    /// This box's announcement or telemetry (JSON) changed.
    Own {
        track: u8,
        json: Bytes,
    },
    Command {
        to: NodeId,
        body: Bytes,
        reply: oneshot::Sender<Result<Bytes, MeshError>>,
    },
    Reply {
        to: NodeId,
        id: u64,
        body: Bytes,
    },
    Nodes(oneshot::Sender<Vec<NodeView>>),
    ChatFollow {
        room: String,
        reply: oneshot::Sender<(
            Vec<ChatMessage>,
            tokio::sync::broadcast::Receiver<ChatMessage>,
        )>,
    },
    ChatSend {
        room: String,
        name: String,
        text: String,
        reply: oneshot::Sender<ChatMessage>,
    },
    /// A revocation list from the API or a registry, to check, keep and pass on.
    Revocations {
        list: Bytes,
        reply: oneshot::Sender<Result<bool, String>>,
    },
    /// A bundle file to keep and offer to the mesh; the answer is its id.
    PublishUpdate {
        file: std::path::PathBuf,
        reply: oneshot::Sender<Result<String, String>>,
    },
    PublishRollout {
        rollout: cambox_update::Rollout,
        reply: oneshot::Sender<Result<bool, String>>,
    },
    Shutdown(oneshot::Sender<()>),
}

/// A broadcast being watched through the mesh; watching stops when this is dropped.
#[derive(Debug)]
pub struct Watched {
    pub broadcast: Broadcast,
    pub guard: WatchGuard,
}

#[derive(Debug)]
pub struct WatchGuard {
    id: Option<BroadcastId>,
    tx: mpsc::UnboundedSender<Request>,
}

impl WatchGuard {
    /// The origin of a broadcast from elsewhere in the mesh (None for this box's own).
    pub fn origin(&self) -> Option<NodeId> {
        self.id.as_ref().map(|b| b.origin)
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let _ = self.tx.send(Request::Unwatch(id));
        }
    }
}

/// What a player needs before the first frame; travels as the broadcast's catalog track.
#[derive(Debug, Serialize, Deserialize)]
struct Catalog {
    fps_num: u32,
    fps_den: u32,
    audio: bool,
    audio_pre_skip: Option<u16>,
}

/// The handle the rest of the box uses.
#[derive(Debug, Clone)]
pub struct Mesh {
    tx: mpsc::UnboundedSender<Input>,
    requests: mpsc::UnboundedSender<Request>,
    pub id: NodeId,
    /// The endpoint's bound address (with the port the OS chose for port 0).
    pub local_addr: SocketAddr,
    /// Where links over TCP are taken, if they are.
    pub tcp_addr: Option<SocketAddr>,
    /// Commands for this box from the overlay, for whoever carries them out.
    incoming: Arc<Mutex<Option<mpsc::UnboundedReceiver<Incoming>>>>,
    /// The mesh's admission rule (None: a lab mesh).
    pub trust: Option<Arc<Trust>>,
    /// Whether this box keeps release keys, and so checks, keeps and passes on updates.
    pub takes_updates: bool,
}

impl Mesh {
    /// Binds the endpoint and starts the driver, discovery and static peers.
    /// `on_air` carries the box's own broadcast while it is live.
    pub async fn start(
        settings: MeshSettings,
        identity: Identity,
        on_air: watch::Receiver<Option<Broadcast>>,
        metrics: Arc<Metrics>,
    ) -> Result<Mesh, MeshError> {
        // A dead neighbour must be noticed well under a second; keep-alives keep a quiet
        // link from looking dead.
        let transport = transport_config(Duration::from_millis(900), Duration::from_millis(300))?;
        let tls::QuicConfigs {
            server,
            client,
            certificate,
        } = tls::quic_configs(
            &identity,
            settings.trust.as_ref().map_or(&[][..], |t| t.chain()),
            Arc::new(transport),
        )?;
        let socket = bind_udp(settings.listen).map_err(|source| MeshError::Bind {
            addr: settings.listen,
            source,
        })?;
        let runtime = Arc::new(quinn::TokioRuntime);
        let socket = quinn::Runtime::wrap_udp_socket(&*runtime, socket)
            .map_err(|e| MeshError::Transport(e.to_string()))?;
        let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(server.clone()),
            tcp::FirewalledUdp::wrap(socket),
            runtime,
        )
        .map_err(|e| MeshError::Transport(e.to_string()))?;
        endpoint.set_default_client_config(client.clone());
        let local_addr = endpoint
            .local_addr()
            .map_err(|e| MeshError::Transport(e.to_string()))?;
        let tcp = match settings.tcp_listen {
            Some(addr) => {
                let datagrams = tcp::TcpDatagrams::listen(addr, settings.proxy.clone())
                    .await
                    .map_err(|source| MeshError::Bind { addr, source })?;
                // Over TCP a congested path delays every packet, keep-alives too, by what
                // its buffers hold: a link is given three seconds of silence, not 0.9.
                let tcp_transport = Arc::new(transport_config(
                    Duration::from_secs(3),
                    Duration::from_secs(1),
                )?);
                let (mut tcp_server, mut tcp_client) = (server.clone(), client.clone());
                tcp_server.transport_config(tcp_transport.clone());
                tcp_client.transport_config(tcp_transport);
                let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
                    quinn::EndpointConfig::default(),
                    Some(tcp_server),
                    datagrams.clone(),
                    Arc::new(quinn::TokioRuntime),
                )
                .map_err(|e| MeshError::Transport(e.to_string()))?;
                endpoint.set_default_client_config(tcp_client);
                Some(TcpSide {
                    datagrams,
                    endpoint,
                })
            }
            None => None,
        };
        let id = identity.node_id();
        let me = Me {
            id,
            certificate,
            trust: settings.trust.clone(),
        };
        let first_version = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        let mut core = Node::new(
            id,
            CoreConfig {
                site: settings.site.clone(),
                box_name: settings.node_name.clone(),
                uplink_kbps: settings.uplink_kbps,
                first_version,
                command_allow: settings.command_allow.clone(),
                ..CoreConfig::default()
            },
        );
        core.set_wall_clock(Instant::now(), crate::bus::wall_ms());
        let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
        let (tx, rx) = mpsc::unbounded_channel();
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let hello = hello(&core, &settings);
        tokio::spawn(accept_loop(
            endpoint.clone(),
            tx.clone(),
            me.clone(),
            hello.clone(),
            metrics.clone(),
        ));
        let tcp_addr = tcp.as_ref().map(|t| t.datagrams.local());
        if let Some(t) = &tcp {
            tokio::spawn(accept_loop(
                t.endpoint.clone(),
                tx.clone(),
                me.clone(),
                hello.clone(),
                metrics.clone(),
            ));
        }
        for peer in &settings.peers {
            tokio::spawn(resolve_static_peer(peer.clone(), tx.clone()));
        }
        let discovery = if settings.mdns {
            match discovery::Mdns::start(&settings, id, local_addr.port(), tx.clone()) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::warn!("mDNS discovery is off: {e}");
                    None
                }
            }
        } else {
            None
        };
        let driver = Driver {
            hello,
            core,
            id,
            me,
            endpoint,
            tx: tx.clone(),
            requests: requests.clone(),
            links: HashMap::new(),
            next_conn: 0,
            addrs: HashMap::new(),
            tcp_addrs: HashMap::new(),
            site_mates: HashSet::new(),
            closed: false,
            dialing: HashSet::new(),
            dialing_tcp: HashSet::new(),
            tcp,
            own_addrs: HashSet::new(),
            hold_until: HashMap::new(),
            static_peers: HashMap::new(),
            static_tcp_peers: HashMap::new(),
            local: None,
            remotes: HashMap::new(),
            metrics,
            discovery,
            identity,
            bus: Bus::new(id, first_version << 8),
            incoming: incoming_tx,
            rooms: HashMap::new(),
            gateway: GatewayDuty::new(id),
            watch_rule: settings.watch.clone(),
            watchers: settings.watchers.clone(),
            told: HashMap::new(),
            updates: settings
                .updates
                .clone()
                .map(|u| updates::Updates::new(id, u)),
        };
        let takes_updates = driver.updates.is_some();
        tokio::spawn(driver.run(rx, requests_rx, on_air));
        Ok(Mesh {
            tx,
            requests,
            id,
            local_addr,
            tcp_addr,
            incoming: Arc::new(Mutex::new(Some(incoming_rx))),
            trust: settings.trust,
            takes_updates,
        })
    }

    /// Checks a revocation list from the CA and, if newer, keeps it and passes it through
    /// the mesh. `Ok(false)`: this box already has it or a newer one.
    pub async fn revocations(&self, list: Bytes) -> Result<Result<bool, String>, MeshError> {
        self.ask(|reply| Request::Revocations { list, reply }).await
    }

    /// Keeps the bundle at `file` and offers it to the mesh: every box of its board that
    /// runs an older version fetches and installs it. The answer is the bundle's id.
    pub async fn publish_update(
        &self,
        file: std::path::PathBuf,
    ) -> Result<Result<String, String>, MeshError> {
        self.ask(|reply| Request::PublishUpdate { file, reply })
            .await
    }

    /// Checks a signed rollout of a bundle this box keeps an offer of, and passes it
    /// through the mesh. `Ok(false)`: this box has it or a newer one already.
    pub async fn publish_rollout(
        &self,
        rollout: cambox_update::Rollout,
    ) -> Result<Result<bool, String>, MeshError> {
        self.ask(|reply| Request::PublishRollout { rollout, reply })
            .await
    }

    /// The commands other nodes send this box; the first caller gets them.
    pub fn take_incoming(&self) -> Option<mpsc::UnboundedReceiver<Incoming>> {
        self.incoming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// What this box offers, announced to every node.
    pub fn set_announcement(&self, a: &crate::bus::Announcement) {
        let json = Bytes::from(serde_json::to_vec(a).unwrap_or_default());
        let _ = self.requests.send(Request::Own {
            track: TRACK_CATALOG,
            json,
        });
    }

    /// This box's readings, published on its telemetry track.
    pub fn set_telemetry(&self, t: &crate::bus::Telemetry) {
        let json = Bytes::from(serde_json::to_vec(t).unwrap_or_default());
        let _ = self.requests.send(Request::Own {
            track: cambox_mesh::msg::TRACK_TELEMETRY,
            json,
        });
    }

    /// Sends a command to `to` and waits for its reply.
    pub async fn command(
        &self,
        to: NodeId,
        req: &crate::bus::commands::Request,
        wait: Duration,
    ) -> Result<crate::bus::commands::Reply, MeshError> {
        let body = Bytes::from(serde_json::to_vec(req).unwrap_or_default());
        let answer =
            tokio::time::timeout(wait, self.ask(|reply| Request::Command { to, body, reply }))
                .await
                .map_err(|_| MeshError::NoReply(to.short(), wait))???;
        serde_json::from_slice(&answer)
            .map_err(|e| MeshError::Route(format!("unreadable reply from {}: {e}", to.short())))
    }

    /// Answers a command that came in through [`Mesh::take_incoming`].
    pub fn reply(&self, to: NodeId, id: u64, reply: &crate::bus::commands::Reply) {
        let body = Bytes::from(serde_json::to_vec(reply).unwrap_or_default());
        let _ = self.requests.send(Request::Reply { to, id, body });
    }

    /// Every node of the mesh with its announcement and latest readings. The first ask
    /// starts following them all (for a minute after the last ask), so it waits `wait`
    /// for their answers to arrive.
    pub async fn nodes(&self, wait: Duration) -> Result<Vec<NodeView>, MeshError> {
        let first = self.ask(Request::Nodes).await?;
        if first.iter().all(|n| n.local || n.announcement.is_some()) {
            return Ok(first);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.ask(Request::Nodes).await?;
            if tokio::time::Instant::now() >= deadline
                || now.iter().all(|n| n.local || n.announcement.is_some())
            {
                return Ok(now);
            }
        }
    }

    /// The room's recent messages and a receiver of the ones that follow.
    pub async fn chat_follow(
        &self,
        room: &str,
    ) -> Result<
        (
            Vec<ChatMessage>,
            tokio::sync::broadcast::Receiver<ChatMessage>,
        ),
        MeshError,
    > {
        let room = room.to_string();
        self.ask(|reply| Request::ChatFollow { room, reply }).await
    }

    pub async fn chat_send(
        &self,
        room: &str,
        name: &str,
        text: &str,
    ) -> Result<ChatMessage, MeshError> {
        let (room, name, text) = (room.to_string(), name.to_string(), text.to_string());
        self.ask(|reply| Request::ChatSend {
            room,
            name,
            text,
            reply,
        })
        .await
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, MeshError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(make(reply))
            .map_err(|_| MeshError::Stopped)?;
        rx.await.map_err(|_| MeshError::Stopped)
    }

    /// Every broadcast the mesh knows, this box's own included.
    pub async fn list(&self) -> Result<Vec<MeshBroadcast>, MeshError> {
        self.ask(Request::List).await
    }

    pub async fn peers(&self) -> Result<Vec<PeerInfo>, MeshError> {
        self.ask(Request::Peers).await
    }

    /// Joins the tree of the broadcast called `name` (`name@origin` picks one origin when
    /// several boxes use the name) and returns it once its first group can be played.
    pub async fn watch(&self, name: &str, wait: Duration) -> Result<Watched, MeshError> {
        let name = name.to_string();
        let r = tokio::time::timeout(
            wait,
            self.ask(|reply| Request::Watch {
                name: name.clone(),
                reply,
            }),
        )
        .await
        .map_err(|_| MeshError::Timeout(name, wait))?;
        r?
    }

    /// What a registry answered: the mesh links to the site-mates and, while this box is
    /// one of its site's gateways, to the linked sites.
    pub fn site_answer(&self, answer: SiteAnswer) {
        let _ = self.tx.send(Input::SiteAnswer(answer));
    }

    /// Says goodbye to every neighbour, so they switch parents at once.
    pub async fn shutdown(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ask(Request::Shutdown)).await;
    }
}

fn hello(core: &Node, settings: &MeshSettings) -> Msg {
    Msg::Hello {
        node: core.id(),
        site: settings.site.clone(),
        uplink_kbps: settings.uplink_kbps,
        tree: false,
    }
}

/// The UDP socket, made with socket2 for the options std lacks: dual-stack for `[::]`
/// and buffers big enough for a few frames of several streams.
fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    // Best effort: the kernel caps these at net.core.[rw]mem_max.
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    tx: mpsc::UnboundedSender<Input>,
    me: Me,
    hello: Msg,
    metrics: Arc<Metrics>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let tx = tx.clone();
        let hello = hello.clone();
        let me = me.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::info!(%remote, "refused a mesh connection: {e}");
                    return;
                }
            };
            match conn::establish(conn, false, &me, &hello).await {
                Ok(est) => {
                    let _ = tx.send(Input::Up(Box::new(est)));
                }
                Err(Refusal::Itself) => tracing::debug!(%remote, "this box dialed itself"),
                Err(reason @ Refusal::SameKey) => {
                    tracing::warn!(%remote, node = %me.id, "refused a mesh connection: {reason}")
                }
                Err(reason @ (Refusal::NotAdmitted(_) | Refusal::RefusedByPeer(_))) => {
                    count_refusal(&metrics, &reason);
                    tracing::warn!(%remote, "refused a mesh connection: {reason}")
                }
                Err(reason) => tracing::info!(%remote, %reason, "refused a mesh connection"),
            }
        });
    }
}

/// Counts a connection refused for admission, by either end.
fn count_refusal(metrics: &Metrics, refusal: &Refusal) {
    match refusal {
        Refusal::NotAdmitted(why) => metrics.mesh_refused(why.label()).inc(),
        Refusal::RefusedByPeer(_) => metrics.mesh_refused_by_peer.inc(),
        _ => 0,
    };
}

struct Link {
    conn: quinn::Connection,
    conn_id: usize,
    dialed: bool,
    /// Carried over TCP ([`tcp`]), not UDP.
    over_tcp: bool,
    out: mpsc::UnboundedSender<Msg>,
    /// quinn's count of UDP bytes sent on this connection, as last added to `datagrams_out`.
    datagrams_seen: u64,
    datagrams_out: prometheus_client::metrics::counter::Counter,
}

/// A broadcast received from the mesh, rebuilt for this box's viewers.
struct Remote {
    name: String,
    video: Option<TrackWriter>,
    audio: Option<TrackWriter>,
    broadcast: Option<Broadcast>,
    pending: Vec<(u8, u32, u64, Bytes)>,
    waiters: Vec<oneshot::Sender<Result<Watched, MeshError>>>,
    watchers: usize,
    idle_since: Option<Instant>,
}

struct Local {
    id: BroadcastId,
    broadcast: Broadcast,
    readers: Vec<JoinHandle<()>>,
}

struct Driver {
    core: Node,
    id: NodeId,
    me: Me,
    hello: Msg,
    endpoint: quinn::Endpoint,
    tx: mpsc::UnboundedSender<Input>,
    /// For the guards of watched broadcasts, which ask to stop when dropped.
    requests: mpsc::UnboundedSender<Request>,
    links: HashMap<NodeId, Link>,
    next_conn: usize,
    /// Where each known node's endpoint is: from connections, discovery and peers' hints.
    addrs: HashMap<NodeId, SocketAddr>,
    /// Where nodes take links over TCP, as registries list them.
    tcp_addrs: HashMap<NodeId, SocketAddr>,
    /// Boxes of this site (mDNS, registries): their addresses are this site's.
    site_mates: HashSet<NodeId>,
    /// A registry found this box reached from its own site only: so are its site-mates,
    /// and their addresses are of no use to boxes of other sites.
    closed: bool,
    dialing: HashSet<SocketAddr>,
    dialing_tcp: HashSet<SocketAddr>,
    /// Links over TCP, when on.
    tcp: Option<TcpSide>,
    /// Addresses that turned out to be this very box: never dialed again.
    own_addrs: HashSet<SocketAddr>,
    /// Addresses of a box that holds this box's key, or that one end's CA does not admit:
    /// not dialed again before the instant (the warning says what to do; redialing every
    /// tick would only repeat it).
    hold_until: HashMap<SocketAddr, Instant>,
    /// Static peers and what each resolved to last.
    static_peers: HashMap<String, Vec<SocketAddr>>,
    /// Static peers to reach over TCP (`--peer tcp://HOST:PORT`).
    static_tcp_peers: HashMap<String, Vec<SocketAddr>>,
    local: Option<Local>,
    remotes: HashMap<BroadcastId, Remote>,
    metrics: Arc<Metrics>,
    discovery: Option<discovery::Mdns>,
    identity: Identity,
    /// Own `.node` broadcast, followed nodes and rooms, commands awaiting replies.
    bus: Bus<Waiter>,
    incoming: mpsc::UnboundedSender<Incoming>,
    /// Followers of each room this box follows.
    rooms: HashMap<String, tokio::sync::broadcast::Sender<ChatMessage>>,
    /// Whether this box links across sites, and to whom, from the registry's answer and
    /// which site-mates' links are down.
    gateway: GatewayDuty<NodeId>,
    /// Who may watch this box's stream (its catalog entry carries it).
    watch_rule: String,
    watchers: Arc<crate::watchers::Watchers>,
    /// What each origin was last told of who watches its stream here, and when.
    told: HashMap<NodeId, (Vec<crate::watchers::Watching>, Instant)>,
    /// Update bundles on their way through this box.
    updates: Option<updates::Updates>,
}

impl Driver {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Input>,
        mut requests: mpsc::UnboundedReceiver<Request>,
        mut on_air: watch::Receiver<Option<Broadcast>>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let initial = on_air.borrow_and_update().clone();
        self.set_local(initial);
        self.bus.publish_own_node(&mut self.core, Instant::now());
        loop {
            let wake = self
                .core
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + TICK);
            tokio::select! {
                input = rx.recv() => match input {
                    Some(input) => self.handle(input),
                    None => return,
                },
                request = requests.recv() => {
                    let Some(request) = request else { return };
                    // What reached the driver before the request is handled first, as
                    // one channel would: a watch must see the catalog already in.
                    for _ in 0..rx.len() {
                        match rx.try_recv() {
                            Ok(input) => self.handle(input),
                            Err(_) => break,
                        }
                    }
                    if let Request::Shutdown(done) = request {
                        self.goodbye().await;
                        let _ = done.send(());
                        return;
                    }
                    self.serve(request)
                }
                _ = tokio::time::sleep_until(wake) => self.core.handle_timeout(Instant::now()),
                _ = tick.tick() => self.tick(),
                changed = on_air.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let b = on_air.borrow_and_update().clone();
                    self.set_local(b);
                }
            }
            self.drain();
        }
    }

    fn handle(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::Up(est) => self.link_up(now, *est),
            Input::DialFailed {
                addr,
                reason,
                tcp,
                expect,
            } => {
                let transport = if tcp { "tcp" } else { "quic" };
                self.metrics.mesh_dial(transport, true).inc();
                if tcp {
                    self.dialing_tcp.remove(&addr);
                    // A TCP dial that failed is not tried again at once (it may take the
                    // whole connect timeout each time).
                    if let Refusal::Other(_) = reason {
                        self.hold_until.insert(addr, now + RETRY_TCP);
                    }
                } else {
                    self.dialing.remove(&addr);
                    if let Refusal::Other(_) = reason {
                        self.fall_back_to_tcp(addr, expect);
                    }
                }
                match reason {
                    Refusal::Itself => {
                        tracing::debug!(%addr, "this address is this box; not dialed again");
                        self.own_addrs.insert(addr);
                    }
                    Refusal::SameKey => {
                        tracing::warn!(%addr, node = %self.id, "cannot link to the box at this address: {reason}");
                        self.hold_until.insert(addr, now + HOLD_REDIAL);
                    }
                    Refusal::NotAdmitted(_) | Refusal::RefusedByPeer(_) => {
                        count_refusal(&self.metrics, &reason);
                        tracing::warn!(%addr, "cannot link to the box at this address: {reason}");
                        self.hold_until.insert(addr, now + HOLD_REDIAL);
                    }
                    Refusal::Other(reason) => tracing::debug!(%addr, %reason, "mesh dial failed"),
                }
            }
            Input::Message { peer, conn_id, msg } => {
                if !self.current(peer, conn_id) {
                    return;
                }
                if let Msg::Revocations { list } = msg {
                    if let Err(e) = self.revocations(list, Some(peer)) {
                        tracing::warn!(%peer, "a neighbour's revocation list is not taken: {e}");
                    }
                    return;
                }
                if matches!(
                    msg,
                    Msg::UpdateOffer { .. }
                        | Msg::UpdateRollout { .. }
                        | Msg::ChunkHave { .. }
                        | Msg::ChunkGet { .. }
                        | Msg::ChunkData { .. }
                ) {
                    self.update_message(now, peer, msg);
                    return;
                }
                if let Msg::Addresses { entries } = &msg {
                    // Hints from a neighbour: bounded like every table peers feed.
                    for (node, addr) in entries.iter().take(MAX_ADDRESS_HINTS) {
                        if self.addrs.len() >= MAX_ADDRESSES {
                            break;
                        }
                        if let Ok(a) = addr.parse() {
                            self.addrs.entry(*node).or_insert(a);
                        }
                    }
                }
                self.core.handle_message(now, peer, msg);
            }
            Input::Down {
                peer,
                conn_id,
                reason,
            } => {
                if self.current(peer, conn_id) {
                    self.links.remove(&peer);
                    self.metrics.mesh_peers.set(self.links.len() as i64);
                    tracing::info!(%peer, %reason, "mesh neighbour gone");
                    self.core.handle_peer_down(now, peer);
                    if let Some(u) = self.updates.as_mut() {
                        u.link_down(now, peer);
                    }
                    self.send_updates();
                    if self.gateway.lost(&peer) {
                        tracing::info!(rank = ?self.gateway.rank(), "standing in as one of this site's gateways");
                        self.dial_across();
                    }
                }
            }
            Input::Transmitted {
                peer,
                conn_id,
                bytes,
            } => {
                if self.current(peer, conn_id) {
                    self.core.handle_transmitted(peer, bytes);
                }
            }
            Input::StaticPeer { peer, addrs } => match peer.strip_prefix("tcp://") {
                Some(_) => {
                    self.static_tcp_peers.insert(peer, addrs);
                }
                None => {
                    self.static_peers.insert(peer, addrs);
                }
            },
            Input::Discovered { node, addr } => self.discovered(node, addr),
            Input::SiteAnswer(answer) => {
                let (mates, linked) = answer.ids();
                self.closed = answer.closed;
                self.gateway.answer(mates, linked);
                for &(node, addr) in answer.linked.iter().flatten() {
                    self.addrs.insert(node, addr);
                }
                for (node, addr) in answer.tcp {
                    if self.tcp_addrs.len() < MAX_ADDRESSES || self.tcp_addrs.contains_key(&node) {
                        self.tcp_addrs.insert(node, addr);
                    }
                }
                for (node, addr) in answer.mates {
                    self.discovered(node, addr);
                }
                self.dial_across();
            }
            Input::LocalObject {
                track,
                group,
                index,
                capture_us,
                payload,
            } => {
                if let Some(l) = &self.local {
                    let id = l.id.clone();
                    self.core
                        .handle_local_object(&id, track, group, index, capture_us, payload);
                }
            }
        }
    }

    /// Answers what the box asked of the mesh.
    fn serve(&mut self, request: Request) {
        let now = Instant::now();
        match request {
            Request::List(reply) => {
                let _ = reply.send(self.list(now));
            }
            Request::Peers(reply) => {
                let peers = self
                    .links
                    .iter()
                    .map(|(id, l)| PeerInfo {
                        id: id.short(),
                        addr: l.conn.remote_address().to_string(),
                        rtt_ms: l.conn.rtt().as_secs_f64() * 1000.0,
                        transport: self.transport(l).into(),
                        dialed: l.dialed,
                    })
                    .collect();
                let _ = reply.send(peers);
            }
            Request::Watch { name, reply } => self.watch(now, &name, reply),
            Request::Unwatch(id) => {
                if let Some(r) = self.remotes.get_mut(&id) {
                    r.watchers = r.watchers.saturating_sub(1);
                    if r.watchers == 0 {
                        r.idle_since = Some(now);
                    }
                }
            }
            Request::Own { track, json } => self.set_own(now, track, json),
            Request::Command { to, body, reply } => self.send_command(now, to, body, reply),
            Request::Reply { to, id, body } => self.send_reply(now, to, id, body),
            Request::Nodes(reply) => {
                let _ = reply.send(self.nodes(now));
            }
            Request::ChatFollow { room, reply } => {
                let _ = reply.send(self.chat_follow(now, &room));
            }
            Request::ChatSend {
                room,
                name,
                text,
                reply,
            } => {
                let _ = reply.send(self.chat_send(now, &room, &name, &text));
            }
            Request::Revocations { list, reply } => {
                let _ = reply.send(self.revocations(list, None));
            }
            Request::PublishUpdate { file, reply } => {
                let result = match self.updates.as_mut() {
                    Some(u) => u.publish(now, &file),
                    None => Err("this box keeps no release keys: it cannot check a bundle".into()),
                };
                self.send_updates();
                let _ = reply.send(result);
            }
            Request::PublishRollout { rollout, reply } => {
                let result = match self.updates.as_mut() {
                    Some(u) => u.rollout(now, rollout, None),
                    None => Err("this box keeps no release keys: it cannot check a rollout".into()),
                };
                self.send_updates();
                let _ = reply.send(result);
            }
            // Answered by the run loop, which says goodbye and stops.
            Request::Shutdown(_) => {}
        }
    }

    fn current(&self, peer: NodeId, conn_id: usize) -> bool {
        self.links.get(&peer).is_some_and(|l| l.conn_id == conn_id)
    }

    fn link_up(&mut self, now: Instant, est: Established) {
        let peer = est.peer;
        let remote = est.conn.remote_address();
        self.dialing.remove(&remote);
        self.dialing_tcp.remove(&remote);
        let over_tcp = self
            .tcp
            .as_ref()
            .is_some_and(|t| t.datagrams.carries(&remote));
        if !over_tcp {
            self.hold_until.remove(&remote);
        }
        if let Some(old) = self.links.get(&peer) {
            // Two connections between the same nodes: QUIC over UDP before QUIC over TCP
            // (UDP works again); else keep the one the lower id opened (both ends decide
            // the same), or the newer when one node opened both (the old one is a dead
            // link not yet timed out).
            let opener = |dialed: bool| if dialed { self.id } else { peer };
            let keep_new = match (old.over_tcp, over_tcp) {
                (true, false) => true,
                (false, true) => false,
                _ => {
                    opener(old.dialed) == opener(est.dialed)
                        || opener(est.dialed) == self.id.min(peer)
                }
            };
            if !keep_new {
                est.conn
                    .close(CLOSE_DUPLICATE.into(), b"duplicate connection");
                return;
            }
            old.conn
                .close(CLOSE_DUPLICATE.into(), b"replaced by a newer connection");
            self.links.remove(&peer);
            self.core.handle_peer_down(now, peer);
        }
        self.next_conn += 1;
        let conn_id = self.next_conn;
        let inbox = Inbox {
            peer,
            conn_id,
            tx: self.tx.clone(),
            bytes_in: self.metrics.mesh_bytes_in(&peer),
            bytes_out: self.metrics.mesh_bytes_out(&peer),
            media_out: self.metrics.mesh_media_out(&peer),
        };
        let (out, out_rx) = mpsc::unbounded_channel();
        tokio::spawn(conn::read_control(
            inbox.clone(),
            est.conn.clone(),
            est.recv,
            est.decoder,
        ));
        tokio::spawn(conn::accept_groups(inbox.clone(), est.conn.clone()));
        tokio::spawn(conn::write_loop(inbox, est.conn.clone(), est.send, out_rx));
        // A TCP link's address is no QUIC address to pass on or redial.
        if !over_tcp {
            self.addrs.insert(peer, remote);
        }
        self.gateway.found(&peer);
        let transport = if over_tcp { "tcp" } else { "quic" };
        tracing::info!(%peer, %remote, dialed = est.dialed, transport, "mesh neighbour up");
        let rtt = est.conn.rtt();
        self.links.insert(
            peer,
            Link {
                conn: est.conn,
                conn_id,
                dialed: est.dialed,
                over_tcp,
                out,
                datagrams_seen: 0,
                datagrams_out: self.metrics.mesh_datagram_out(&peer),
            },
        );
        self.metrics.mesh_peers.set(self.links.len() as i64);
        if let Some(list) = self.me.trust.as_ref().and_then(|t| t.list()) {
            self.send_direct(peer, Msg::Revocations { list });
        }
        self.core.handle_peer_up(now, peer, rtt);
        self.core.handle_message(now, peer, est.hello);
        let site_mate = self.core.is_site_mate(&peer);
        if let Some(u) = self.updates.as_mut() {
            for msg in u.link_up(now, peer, site_mate) {
                self.send_direct(peer, msg);
            }
        }
        self.send_updates();
    }

    /// A box seen on the LAN or listed by a registry. The lower id dials, so two boxes that
    /// see each other open one connection; discovery repeats itself (heartbeats, mDNS),
    /// which redials a lost link.
    fn discovered(&mut self, node: NodeId, addr: SocketAddr) {
        self.addrs.insert(node, addr);
        if self.site_mates.len() < MAX_ADDRESSES {
            self.site_mates.insert(node);
        }
        if !self.links.contains_key(&node) && self.id < node {
            self.dial(addr, Some(node));
        }
    }

    /// Dials the gateways of linked sites this box should reach as one of its site's
    /// gateways, whichever id is lower: the box there did not pick this site, so it would
    /// not dial (a duplicate, when both did, is closed by `link_up`).
    fn dial_across(&mut self) {
        for node in self.gateway.across() {
            if let (false, Some(&addr)) = (self.links.contains_key(&node), self.addrs.get(&node)) {
                self.dial(addr, Some(node));
            }
        }
    }

    fn dial(&mut self, addr: SocketAddr, expect: Option<NodeId>) {
        let held = self.hold_until.get(&addr);
        if self.own_addrs.contains(&addr) || held.is_some_and(|t| Instant::now() < *t) {
            return;
        }
        if !self.dialing.insert(addr) {
            return;
        }
        self.metrics.mesh_dial("quic", false).inc();
        let name = tls::server_name_for(expect);
        let tx = self.tx.clone();
        let me = self.me.clone();
        let hello = self.hello.clone();
        let connecting = self.endpoint.connect(addr, &name);
        tokio::spawn(async move {
            let result = match connecting {
                Ok(c) => match c.await {
                    Ok(conn) => conn::establish(conn, true, &me, &hello).await,
                    Err(e) => Err(Refusal::Other(e.to_string())),
                },
                Err(e) => Err(Refusal::Other(e.to_string())),
            };
            let _ = tx.send(match result {
                Ok(est) => Input::Up(Box::new(est)),
                Err(reason) => Input::DialFailed {
                    addr,
                    reason,
                    tcp: false,
                    expect,
                },
            });
        });
    }

    /// How a link is carried, for people: "quic", "tcp" or "tcp via proxy".
    fn transport(&self, link: &Link) -> &'static str {
        let proxied = || {
            self.tcp
                .as_ref()
                .is_some_and(|t| t.datagrams.proxied(&link.conn.remote_address()))
        };
        match (link.over_tcp, link.over_tcp && proxied()) {
            (false, _) => "quic",
            (true, false) => "tcp",
            (true, true) => "tcp via proxy",
        }
    }

    /// QUIC got no answer at `addr`: the box there is dialed over TCP, where a registry
    /// said it takes TCP links, else at its address and the mesh's TCP port (the one this
    /// box listens on; one port for the whole company, 443 by default). Not when a link
    /// over TCP to that box is up already: the failed dial was a try to move it back to
    /// QUIC, tried again in [`RETRY_QUIC`].
    fn fall_back_to_tcp(&mut self, addr: SocketAddr, expect: Option<NodeId>) {
        let Some(port) = self.tcp.as_ref().map(|t| t.datagrams.local().port()) else {
            return;
        };
        let listed = expect.and_then(|node| self.tcp_addrs.get(&node)).copied();
        let over_tcp_there = self.links.iter().any(|(peer, l)| {
            l.over_tcp && (Some(*peer) == expect || l.conn.remote_address().ip() == addr.ip())
        });
        if over_tcp_there {
            self.hold_until.insert(addr, Instant::now() + RETRY_QUIC);
            return;
        }
        self.dial_tcp(listed.unwrap_or(SocketAddr::new(addr.ip(), port)));
    }

    /// Dials `addr` over TCP: a TCP connection first, then QUIC through it.
    fn dial_tcp(&mut self, addr: SocketAddr) {
        let Some(tcp) = self.tcp.clone() else {
            return;
        };
        let held = self.hold_until.get(&addr);
        if held.is_some_and(|t| Instant::now() < *t) || !self.dialing_tcp.insert(addr) {
            return;
        }
        self.metrics.mesh_dial("tcp", false).inc();
        let name = tls::server_name_for(None);
        let tx = self.tx.clone();
        let me = self.me.clone();
        let hello = self.hello.clone();
        tokio::spawn(async move {
            let result = async {
                tcp.datagrams
                    .connect(addr)
                    .await
                    .map_err(|e| Refusal::Other(format!("TCP: {e}")))?;
                let conn = tcp
                    .endpoint
                    .connect(addr, &name)
                    .map_err(|e| Refusal::Other(e.to_string()))?
                    .await
                    .map_err(|e| Refusal::Other(e.to_string()))?;
                conn::establish(conn, true, &me, &hello).await
            }
            .await;
            let _ = tx.send(match result {
                Ok(est) => Input::Up(Box::new(est)),
                Err(reason) => Input::DialFailed {
                    addr,
                    reason,
                    tcp: true,
                    expect: None,
                },
            });
        });
    }

    /// An update message from a neighbour.
    fn update_message(&mut self, now: Instant, peer: NodeId, msg: Msg) {
        let Some(u) = self.updates.as_mut() else {
            return;
        };
        u.message(now, peer, msg);
        self.send_updates();
    }

    /// Sends what the update swarms decided.
    fn send_updates(&mut self) {
        let Some(u) = self.updates.as_mut() else {
            return;
        };
        for out in u.poll() {
            match out {
                updates::Out::To(peer, msg) => {
                    if let Some(link) = self.links.get(&peer) {
                        let _ = link.out.send(msg);
                    }
                }
                updates::Out::All(msg, except) => {
                    for (peer, link) in &self.links {
                        if Some(*peer) != except {
                            let _ = link.out.send(msg.clone());
                        }
                    }
                }
            }
        }
    }

    /// A message of the transport's own to one neighbour, beside the core's.
    fn send_direct(&self, peer: NodeId, msg: Msg) {
        if let Some(link) = self.links.get(&peer) {
            let _ = link.out.send(msg);
        }
    }

    /// Takes a revocation list that is newer than the one in force: keeps it, passes it
    /// to every neighbour but the one it came from, and closes the links of the nodes it
    /// revokes. `Ok(false)`: not newer, nothing done.
    fn revocations(&mut self, list: Bytes, from: Option<NodeId>) -> Result<bool, String> {
        let trust = self
            .me
            .trust
            .clone()
            .ok_or("this box's mesh has no CA, so nothing is revoked in it")?;
        if !trust.adopt(&list)? {
            return Ok(false);
        }
        tracing::info!(
            number = trust.list_number(),
            from = ?from.map(|p| p.short()),
            "took a newer revocation list from the CA"
        );
        if trust.is_revoked(&self.id) {
            tracing::error!(node = %self.id, "the CA has revoked this box: no enrolled box will link to it");
        }
        for (peer, link) in &self.links {
            if trust.is_revoked(peer) {
                let why = format!("not admitted: node {} is revoked by the CA", peer.short());
                tracing::warn!(%peer, "disconnecting a revoked neighbour");
                self.metrics.mesh_refused("revoked").inc();
                link.conn
                    .close(conn::CLOSE_NOT_ADMITTED.into(), why.as_bytes());
            } else if Some(*peer) != from {
                let _ = link.out.send(Msg::Revocations { list: list.clone() });
            }
        }
        Ok(true)
    }

    /// Carries out what the core asked for.
    fn drain(&mut self) {
        let now = Instant::now();
        while let Some(event) = self.core.poll_event() {
            match event {
                Event::Transmit { to, msg } => {
                    let Some(link) = self.links.get(&to) else {
                        continue;
                    };
                    // Tell a redirected node where the nodes it is sent to listen, and
                    // an asker (and each hop back to it) where the node it looked up does.
                    // Behind a NAT, this site's addresses stay in it: a box elsewhere could
                    // only dial them in vain.
                    let named: &[NodeId] = match &msg {
                        Msg::Redirect { to: targets, .. } => targets,
                        Msg::Found { target, .. } => std::slice::from_ref(target),
                        _ => &[],
                    };
                    let private = self.closed && !self.core.is_site_mate(&to);
                    if !named.is_empty() {
                        let entries: Vec<(NodeId, String)> = named
                            .iter()
                            .filter(|n| !(private && self.site_mates.contains(n)))
                            .filter_map(|n| self.addrs.get(n).map(|a| (*n, a.to_string())))
                            .collect();
                        if !entries.is_empty() {
                            let _ = link.out.send(Msg::Addresses { entries });
                        }
                    }
                    let _ = link.out.send(msg);
                }
                Event::Connect { peer } => {
                    if self.links.contains_key(&peer) {
                        continue;
                    }
                    match self.addrs.get(&peer).copied() {
                        Some(addr) => self.dial(addr, Some(peer)),
                        None => {
                            tracing::debug!(%peer, "redirected to a node with no known address");
                            self.core.handle_unreachable(now, peer);
                        }
                    }
                }
                Event::Deliver {
                    broadcast,
                    track,
                    group: _,
                    index,
                    capture_us,
                    payload,
                } => {
                    if !self.deliver_bus(&broadcast, track, &payload) {
                        self.deliver(now, &broadcast, track, index, capture_us, payload)
                    }
                }
                Event::Routed(r) => self.routed(*r),
                Event::Disconnect { peer, limit } => {
                    tracing::warn!(%peer, %limit, "mesh neighbour disconnected");
                    self.metrics.mesh_disconnected(limit.label()).inc();
                    if let Some(link) = self.links.remove(&peer) {
                        let reason = format!("limit {}: {limit}", limit.label());
                        link.conn.close(CLOSE_LIMIT.into(), reason.as_bytes());
                        self.metrics.mesh_peers.set(self.links.len() as i64);
                    }
                }
            }
        }
    }

    fn deliver(
        &mut self,
        _now: Instant,
        id: &BroadcastId,
        track_no: u8,
        index: u32,
        capture_us: u64,
        payload: Bytes,
    ) {
        let Some(r) = self.remotes.get_mut(id) else {
            return;
        };
        if track_no == TRACK_CATALOG {
            if r.broadcast.is_some() {
                return;
            }
            let Ok(cat) = serde_json::from_slice::<Catalog>(&payload) else {
                tracing::warn!(broadcast = %r.name, "unreadable broadcast catalog");
                return;
            };
            let (video_w, video) = track("video", REMOTE_CACHE_GROUPS);
            let (audio_w, audio) = if cat.audio {
                let (w, t) = track("audio", REMOTE_CACHE_GROUPS);
                (Some(w), Some(t))
            } else {
                (None, None)
            };
            let b = Broadcast {
                name: r.name.clone(),
                video,
                audio,
                rate: FrameRate {
                    num: cat.fps_num.max(1),
                    den: cat.fps_den.max(1),
                },
                audio_pre_skip: cat.audio_pre_skip,
            };
            r.video = Some(video_w);
            r.audio = audio_w;
            r.broadcast = Some(b.clone());
            for (t, i, c, p) in std::mem::take(&mut r.pending) {
                write_object(r, t, i, c, p);
            }
            for w in r.waiters.drain(..) {
                r.watchers += 1;
                let _ = w.send(Ok(Watched {
                    broadcast: b.clone(),
                    guard: WatchGuard {
                        id: Some(id.clone()),
                        tx: self.requests.clone(),
                    },
                }));
            }
            return;
        }
        if r.broadcast.is_none() {
            if r.pending.len() < MAX_PENDING {
                r.pending.push((track_no, index, capture_us, payload));
            }
            return;
        }
        write_object(r, track_no, index, capture_us, payload);
    }

    fn list(&self, now: Instant) -> Vec<MeshBroadcast> {
        self.core
            .known_broadcasts(now)
            .into_iter()
            // Names starting with '.' are the overlay's own (nodes, chat), not streams.
            .filter(|k| !k.broadcast.name.starts_with('.'))
            .map(|k| MeshBroadcast {
                local: k.broadcast.origin == self.id,
                origin: k.broadcast.origin.short(),
                origin_id: k.broadcast.origin.to_hex(),
                name: k.broadcast.name.to_string(),
                site: k.site,
                box_name: k.box_name,
                hops: k.hops,
                watch: k.watch,
            })
            .collect()
    }

    fn watch(
        &mut self,
        now: Instant,
        name: &str,
        reply: oneshot::Sender<Result<Watched, MeshError>>,
    ) {
        let (want, origin) = match name.split_once('@') {
            Some((n, o)) => (n, Some(o)),
            None => (name, None),
        };
        let found = self
            .core
            .known_broadcasts(now)
            .into_iter()
            .map(|k| k.broadcast)
            .find(|b| b.name == want && origin.is_none_or(|o| b.origin.short().starts_with(o)));
        let Some(id) = found else {
            let _ = reply.send(Err(MeshError::Unknown(name.into())));
            return;
        };
        if let Some(l) = self.local.as_ref().filter(|l| l.id == id) {
            let _ = reply.send(Ok(Watched {
                broadcast: l.broadcast.clone(),
                guard: WatchGuard {
                    id: None,
                    tx: self.requests.clone(),
                },
            }));
            return;
        }
        let r = self.remotes.entry(id.clone()).or_insert_with(|| Remote {
            name: id.name.to_string(),
            video: None,
            audio: None,
            broadcast: None,
            pending: Vec::new(),
            waiters: Vec::new(),
            watchers: 0,
            idle_since: None,
        });
        r.idle_since = None;
        match &r.broadcast {
            Some(b) => {
                r.watchers += 1;
                let _ = reply.send(Ok(Watched {
                    broadcast: b.clone(),
                    guard: WatchGuard {
                        id: Some(id.clone()),
                        tx: self.requests.clone(),
                    },
                }));
            }
            None => r.waiters.push(reply),
        }
        self.core.subscribe(now, id);
    }

    /// The box went live (Some) or stopped (None).
    fn set_local(&mut self, b: Option<Broadcast>) {
        let now = Instant::now();
        if let Some(old) = self.local.take() {
            for r in old.readers {
                r.abort();
            }
            self.core.unpublish(now, &old.id);
            if let Some(d) = &self.discovery {
                d.set_live(&[]);
            }
        }
        let Some(b) = b else { return };
        let id = self
            .core
            .publish(now, &b.name, vec![TRACK_VIDEO, TRACK_AUDIO, TRACK_CATALOG]);
        self.core.set_watch(now, &id, &self.watch_rule);
        let catalog = Catalog {
            fps_num: b.rate.num,
            fps_den: b.rate.den,
            audio: b.audio.is_some(),
            audio_pre_skip: b.audio_pre_skip,
        };
        let json = serde_json::to_vec(&catalog).unwrap_or_default();
        // Group numbers must keep growing when the box goes live again (neighbours may
        // still hold the old position): start from the wall clock, 2^16 groups per ms.
        let base = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| (d.as_millis() as u64) << 16);
        self.core
            .handle_local_object(&id, TRACK_CATALOG, base, 0, 0, Bytes::from(json));
        let mut readers = vec![tokio::spawn(forward(
            b.video.clone(),
            TRACK_VIDEO,
            base,
            self.tx.clone(),
        ))];
        if let Some(a) = &b.audio {
            readers.push(tokio::spawn(forward(
                a.clone(),
                TRACK_AUDIO,
                base,
                self.tx.clone(),
            )));
        }
        if let Some(d) = &self.discovery {
            d.set_live(std::slice::from_ref(&b.name));
        }
        self.local = Some(Local {
            id,
            broadcast: b,
            readers,
        });
    }

    fn tick(&mut self) {
        let now = Instant::now();
        if let Some(u) = self.updates.as_mut() {
            u.tick(now);
        }
        self.send_updates();
        self.core.set_wall_clock(now, crate::bus::wall_ms());
        // The catalog as it stands, once for everything below that follows it.
        let catalog = self.core.known_broadcasts(now);
        self.bus_tick(now, &catalog);
        let known: HashSet<BroadcastId> = catalog.into_iter().map(|k| k.broadcast).collect();
        self.metrics.set_routed(&self.core.routed_stats());
        for l in self.links.values_mut() {
            let sent = l.conn.stats().udp_tx.bytes;
            l.datagrams_out
                .inc_by(sent.saturating_sub(l.datagrams_seen));
            l.datagrams_seen = sent;
        }
        // Static peers: dial the ones not connected (their ids are learned on connect).
        let connected: HashSet<SocketAddr> = self
            .links
            .values()
            .map(|l| l.conn.remote_address())
            .collect();
        let own = self.endpoint.local_addr().ok();
        let wanted: Vec<SocketAddr> = self
            .static_peers
            .values()
            .flatten()
            .copied()
            .filter(|a| Some(*a) != own && !connected.contains(a))
            .collect();
        for addr in wanted {
            self.dial(addr, None);
        }
        // Links over TCP this box opened try QUIC again where the other box's QUIC address
        // is known (each failed try holds that address for RETRY_QUIC). The end that took
        // the link may have been dialed from behind a NAT: it waits.
        let quic_again: Vec<(SocketAddr, NodeId)> = self
            .links
            .iter()
            .filter(|(_, l)| l.over_tcp && l.dialed)
            .filter_map(|(peer, _)| self.addrs.get(peer).map(|a| (*a, *peer)))
            .collect();
        for (addr, peer) in quic_again {
            self.dial(addr, Some(peer));
        }
        let wanted_tcp: Vec<SocketAddr> = self
            .static_tcp_peers
            .values()
            .flatten()
            .copied()
            .filter(|a| !connected.contains(a))
            .collect();
        for addr in wanted_tcp {
            self.dial_tcp(addr);
        }
        // Broadcasts nobody watches any more, or that left the mesh, are let go; their
        // writers close, which ends any viewer still attached.
        let gone: Vec<BroadcastId> = self
            .remotes
            .iter()
            .filter(|(id, r)| {
                !known.contains(*id) || r.idle_since.is_some_and(|t| now >= t + LINGER)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remotes.remove(&id);
            self.core.unsubscribe(&id);
        }
        self.update_tree_metrics(&known);
        self.tell_origins(now);
    }

    /// Tells the box of each stream this box serves who watches it here: on a change, and
    /// every few seconds while anybody does (so a box that vanishes is forgotten there),
    /// and once more with nobody when the last one stops.
    fn tell_origins(&mut self, now: Instant) {
        let mut current = self.watchers.served_for_others();
        let origins: HashSet<NodeId> = current.keys().chain(self.told.keys()).copied().collect();
        for origin in origins {
            let list = current.remove(&origin).unwrap_or_default();
            let due = self.told.get(&origin).is_none_or(|(last, at)| {
                *last != list || now.duration_since(*at) >= crate::watchers::TELL_EVERY
            });
            if !due {
                continue;
            }
            let body = serde_json::json!({ "viewers": list }).to_string();
            if let Err(e) =
                self.bus
                    .send_watching(&mut self.core, &self.identity, now, origin, body.into())
            {
                tracing::debug!(%origin, "cannot tell who watches its stream here: {e}");
            }
            if list.is_empty() {
                self.told.remove(&origin);
            } else {
                self.told.insert(origin, (list, now));
            }
        }
    }

    fn update_tree_metrics(&self, known: &HashSet<BroadcastId>) {
        self.metrics.mesh_parent.clear();
        self.metrics.mesh_children.clear();
        for b in known.iter().filter(|b| !b.name.starts_with('.')) {
            let label = format!("{}@{}", b.name, b.origin.short());
            if let Some(p) = self.core.parent(b) {
                self.metrics
                    .mesh_parent
                    .get_or_create(&vec![
                        ("broadcast".into(), label.clone()),
                        ("parent".into(), p.short()),
                    ])
                    .set(1);
            }
            let children = self.core.children(b).len();
            if children > 0 {
                self.metrics
                    .mesh_children
                    .get_or_create(&vec![("broadcast".into(), label)])
                    .set(children as i64);
            }
        }
    }

    async fn goodbye(&mut self) {
        for l in self.links.values() {
            let _ = l.out.send(Msg::Goodbye);
        }
        // Let the writers flush the goodbyes before the endpoint closes.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for l in self.links.values() {
            l.conn.close(CLOSE_NORMAL.into(), b"shutting down");
        }
        if let Some(d) = self.discovery.take() {
            d.stop();
        }
        self.endpoint.close(CLOSE_NORMAL.into(), b"shutting down");
    }
}

fn write_object(r: &mut Remote, track_no: u8, index: u32, capture_us: u64, payload: Bytes) {
    let writer = match track_no {
        TRACK_VIDEO => r.video.as_mut(),
        TRACK_AUDIO => r.audio.as_mut(),
        _ => None,
    };
    if let Some(w) = writer {
        if index == 0 {
            w.start_group();
        }
        w.write(GroupObject {
            capture_us,
            payload,
        });
    }
}

/// How often a static peer's name is resolved again (its address rarely changes).
const RESOLVE_EVERY: Duration = Duration::from_secs(10);

/// Resolves a static peer's `HOST:PORT` off the driver's loop, so a slow DNS server never
/// holds up the core; the driver redials what it resolved to while not connected.
/// The mesh's QUIC transport: a link silent for `idle` is dead; `keep_alive` keeps a
/// quiet one from looking so.
fn transport_config(
    idle: Duration,
    keep_alive: Duration,
) -> Result<quinn::TransportConfig, MeshError> {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(
            idle.try_into()
                .map_err(|e| MeshError::Transport(format!("{e}")))?,
        ))
        .keep_alive_interval(Some(keep_alive))
        .max_concurrent_uni_streams(1024u32.into());
    Ok(transport)
}

/// The TCP side of the mesh: the connections, and the QUIC endpoint that runs over them.
#[derive(Debug, Clone)]
struct TcpSide {
    datagrams: Arc<tcp::TcpDatagrams>,
    endpoint: quinn::Endpoint,
}

async fn resolve_static_peer(peer: String, tx: mpsc::UnboundedSender<Input>) {
    let host = peer.strip_prefix("tcp://").unwrap_or(&peer).to_owned();
    loop {
        match tokio::net::lookup_host(host.as_str()).await {
            Ok(addrs) => {
                let addrs = addrs.collect();
                if tx
                    .send(Input::StaticPeer {
                        peer: peer.clone(),
                        addrs,
                    })
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => tracing::debug!(%peer, "cannot resolve static peer: {e}"),
        }
        tokio::time::sleep(RESOLVE_EVERY).await;
    }
}

/// Feeds one track of the box's own broadcast into the core.
async fn forward(
    t: cambox_media::Track,
    track_no: u8,
    base: u64,
    tx: mpsc::UnboundedSender<Input>,
) {
    let mut reader = t.subscribe();
    while let Some(o) = reader.next().await {
        let sent = tx.send(Input::LocalObject {
            track: track_no,
            group: base + o.group,
            index: o.index as u32,
            capture_us: o.object.capture_us,
            payload: o.object.payload,
        });
        if sent.is_err() {
            return;
        }
    }
}
