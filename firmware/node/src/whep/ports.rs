//! The box's WebRTC ports: every viewer's media on one UDP port (one socket per address of
//! the box, all on that port), and ICE over TCP on one TCP port (RFC 6544, the box
//! passive, each packet framed by its length as RFC 4571 says) for viewers whose network
//! lets only TCP out. A firewall then needs two holes, not one per viewer.
//!
//! A packet from an address not seen before must be a STUN connectivity check: its
//! USERNAME names the box's ICE username fragment, which names the session (each has its
//! own, made when the offer is answered). From then on that address's packets go to that
//! session. Anything else is dropped, so a stranger's packets cost a lookup.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use str0m::net::{Protocol, Transmit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

/// The port mediamtx uses for the same purpose; firewall rules written for it fit.
pub const DEFAULT_PORT: u16 = 8189;
/// A TCP connection must bring its first connectivity check within this.
const FIRST_FRAME: Duration = Duration::from_secs(5);
/// TCP connections one address may hold open before their first check; past this the
/// next is closed at once (the bound of WHEP sessions still connecting, for TCP).
const PENDING_TCP_PER_SOURCE: usize = super::MAX_CONNECTING_PER_SOURCE;
/// Packets queued towards one session; past this, UDP packets are dropped (as a full
/// socket would) and a TCP reader waits.
const INBOX: usize = 256;
/// Packets queued towards one TCP viewer. Small: a viewer whose TCP path is slow holds up
/// the session's sending, so its track reader falls behind and drops whole stale groups
/// instead of the kernel buffering seconds of video.
const TCP_OUT: usize = 32;
const RECV_BUF: usize = 2000;
/// Set (to anything): every WebRTC packet that comes over UDP is dropped, as a firewall
/// that lets no UDP through would (tests only: there is no such firewall on a test
/// machine without root).
const DROP_UDP_ENV: &str = "CAMBOX_WEBRTC_TEST_DROP_UDP";

/// A packet for a session, as str0m takes it.
#[derive(Debug)]
pub struct Packet {
    pub proto: Protocol,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub data: Vec<u8>,
}

type Inbox = mpsc::Sender<Packet>;

/// Where packets go: by the box's ufrag for a new path, then by path (remote, local).
#[derive(Debug, Default)]
struct Routes {
    by_ufrag: HashMap<String, Inbox>,
    by_path: HashMap<(Protocol, SocketAddr, SocketAddr), Inbox>,
    tcp_out: HashMap<(SocketAddr, SocketAddr), mpsc::Sender<Vec<u8>>>,
    pending_tcp: HashMap<IpAddr, usize>,
}

/// The shared ports.
#[derive(Debug)]
pub struct Ports {
    udp_port: u16,
    /// The socket on each address offered so far, with its local address (asked of the
    /// kernel once, not per packet).
    udp: Mutex<HashMap<IpAddr, (SocketAddr, Arc<UdpSocket>)>>,
    tcp: Option<SocketAddr>,
    routes: Arc<Mutex<Routes>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Ports {
    /// UDP on `udp_port` (0: one the kernel picks, per address) of each address a viewer
    /// is offered; ICE-TCP on `tcp` unless None.
    pub async fn bind(udp_port: u16, tcp: Option<SocketAddr>) -> io::Result<Arc<Ports>> {
        let routes = Arc::new(Mutex::new(Routes::default()));
        let tcp = match tcp {
            Some(addr) => {
                let listener = TcpListener::bind(addr).await.map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot listen for WebRTC over TCP on {addr}: {e}"),
                    )
                })?;
                let local = listener.local_addr()?;
                tokio::spawn(accept_tcp(listener, routes.clone()));
                Some(local)
            }
            None => None,
        };
        Ok(Arc::new(Ports {
            udp_port,
            udp: Mutex::new(HashMap::new()),
            tcp,
            routes,
        }))
    }

    /// The UDP address on `ip`, bound at its first use.
    pub fn udp_addr(&self, ip: IpAddr) -> io::Result<SocketAddr> {
        let mut udp = lock(&self.udp);
        if let Some((local, _)) = udp.get(&ip) {
            return Ok(*local);
        }
        let want = SocketAddr::new(ip, self.udp_port);
        let std_socket = std::net::UdpSocket::bind(want).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open the WebRTC UDP port {want}: {e}"),
            )
        })?;
        std_socket.set_nonblocking(true)?;
        let socket = Arc::new(UdpSocket::from_std(std_socket)?);
        let local = socket.local_addr()?;
        tokio::spawn(read_udp(socket.clone(), self.routes.clone()));
        udp.insert(ip, (local, socket));
        Ok(local)
    }

    /// The ICE-TCP address a viewer may connect to on `ip`, if TCP is on there.
    pub fn tcp_addr(&self, ip: IpAddr) -> Option<SocketAddr> {
        self.tcp
            .filter(|a| a.ip().is_unspecified() || a.ip() == ip)
            .map(|a| SocketAddr::new(ip, a.port()))
    }

    /// The UDP port asked for (0: one the kernel picks per address).
    pub fn udp_port(&self) -> u16 {
        self.udp_port
    }

    /// The TCP listener's address, if any.
    pub fn tcp_listen(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// UDP sockets open now (one per address offered so far).
    pub fn udp_sockets(&self) -> Vec<SocketAddr> {
        lock(&self.udp).values().map(|(local, _)| *local).collect()
    }

    /// The packets for the session whose ICE username fragment is `ufrag`, and its way out.
    pub fn register(self: &Arc<Self>, ufrag: &str) -> Link {
        let (tx, rx) = mpsc::channel(INBOX);
        lock(&self.routes).by_ufrag.insert(ufrag.to_owned(), tx);
        Link {
            rx,
            ports: self.clone(),
            ufrag: ufrag.to_owned(),
        }
    }

    /// Sends what str0m made: UDP from the socket of its source, TCP on the connection of
    /// its path (waiting while that connection's small queue is full).
    async fn send(&self, t: &Transmit) -> io::Result<()> {
        match t.proto {
            Protocol::Udp => {
                let socket = lock(&self.udp)
                    .get(&t.source.ip())
                    .filter(|(local, _)| *local == t.source)
                    .map(|(_, socket)| socket.clone())
                    .ok_or_else(|| {
                        io::Error::other(format!("no WebRTC UDP socket on {}", t.source))
                    })?;
                socket.send_to(&t.contents, t.destination).await.map(drop)
            }
            _ => {
                let out = lock(&self.routes)
                    .tcp_out
                    .get(&(t.destination, t.source))
                    .cloned()
                    .ok_or_else(|| io::Error::other("the TCP connection closed"))?;
                out.send(t.contents.to_vec())
                    .await
                    .map_err(|_| io::Error::other("the TCP connection closed"))
            }
        }
    }
}

/// One session's packets in, and its way out.
#[derive(Debug)]
pub struct Link {
    rx: mpsc::Receiver<Packet>,
    ports: Arc<Ports>,
    ufrag: String,
}

impl Link {
    pub async fn recv(&mut self) -> Option<Packet> {
        self.rx.recv().await
    }

    pub async fn send(&self, t: &Transmit) -> io::Result<()> {
        self.ports.send(t).await
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.rx.close();
        let mut r = lock(&self.ports.routes);
        r.by_ufrag.remove(&self.ufrag);
        r.by_path.retain(|_, tx| !tx.is_closed());
    }
}

/// The box's ICE username fragment a STUN binding request is for: its USERNAME is
/// `<recipient's ufrag>:<sender's ufrag>` (RFC 8445, 7.2.2).
pub fn stun_recipient(packet: &[u8]) -> Option<&str> {
    let be16 = |at: usize| -> Option<usize> {
        Some(u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]).into())
    };
    if be16(0)? != 0x0001 || packet.get(4..8)? != [0x21, 0x12, 0xa4, 0x42] {
        return None;
    }
    let body = packet.get(20..20 + be16(2)?)?;
    let mut at = 0;
    while at + 4 <= body.len() {
        let kind = u16::from_be_bytes([body[at], body[at + 1]]);
        let len = usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]]));
        let value = body.get(at + 4..at + 4 + len)?;
        if kind == 0x0006 {
            return std::str::from_utf8(value).ok()?.split(':').next();
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

/// The session a packet on a path belongs to: the path's, or, for a connectivity check
/// from a new path, the session its username names (which the path then keeps).
fn route(
    routes: &Mutex<Routes>,
    proto: Protocol,
    remote: SocketAddr,
    local: SocketAddr,
    data: &[u8],
) -> Option<Inbox> {
    let mut r = lock(routes);
    if let Some(tx) = r.by_path.get(&(proto, remote, local)) {
        return Some(tx.clone());
    }
    let tx = r.by_ufrag.get(stun_recipient(data)?)?.clone();
    r.by_path.insert((proto, remote, local), tx.clone());
    Some(tx)
}

async fn read_udp(socket: Arc<UdpSocket>, routes: Arc<Mutex<Routes>>) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let blocked = std::env::var_os(DROP_UDP_ENV).is_some();
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            // An ICMP "unreachable" from a viewer that left shows up here on Linux.
            Err(_) => continue,
        };
        if blocked {
            continue;
        }
        if let Some(tx) = route(&routes, Protocol::Udp, from, local, &buf[..n]) {
            let _ = tx.try_send(Packet {
                proto: Protocol::Udp,
                source: from,
                destination: local,
                data: buf[..n].to_vec(),
            });
        }
    }
}

async fn accept_tcp(listener: TcpListener, routes: Arc<Mutex<Routes>>) {
    loop {
        let Ok((stream, remote)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let source = remote.ip().to_canonical();
        {
            let mut r = lock(&routes);
            let pending = r.pending_tcp.entry(source).or_default();
            if *pending >= PENDING_TCP_PER_SOURCE {
                continue;
            }
            *pending += 1;
        }
        let routes = routes.clone();
        tokio::spawn(async move {
            let _ = serve_tcp(stream, remote, &routes).await;
        });
    }
}

/// Reads one RFC 4571 frame: a 16-bit length, then the packet.
async fn read_frame(rd: &mut (impl AsyncReadExt + Unpin)) -> io::Result<Vec<u8>> {
    let len = rd.read_u16().await?;
    let mut data = vec![0u8; usize::from(len)];
    rd.read_exact(&mut data).await?;
    Ok(data)
}

async fn serve_tcp(
    stream: TcpStream,
    remote: SocketAddr,
    routes: &Mutex<Routes>,
) -> io::Result<()> {
    let local = stream.local_addr()?;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let first = tokio::time::timeout(FIRST_FRAME, read_frame(&mut rd)).await;
    {
        let mut r = lock(routes);
        let source = remote.ip().to_canonical();
        if let Some(n) = r.pending_tcp.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                r.pending_tcp.remove(&source);
            }
        }
    }
    let first = first.map_err(|_| io::Error::other("no connectivity check in time"))??;
    let inbox = route(routes, Protocol::Tcp, remote, local, &first)
        .ok_or_else(|| io::Error::other("not a check for a session of this box"))?;
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(TCP_OUT);
    lock(routes).tcp_out.insert((remote, local), out_tx);
    let writer = tokio::spawn(async move {
        while let Some(data) = out_rx.recv().await {
            let Ok(len) = u16::try_from(data.len()) else {
                continue;
            };
            let mut framed = Vec::with_capacity(2 + data.len());
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&data);
            if wr.write_all(&framed).await.is_err() {
                return;
            }
        }
    });
    let packet = |data| Packet {
        proto: Protocol::Tcp,
        source: remote,
        destination: local,
        data,
    };
    let mut next = Some(first);
    while let Some(data) = next.take() {
        if inbox.send(packet(data)).await.is_err() {
            break;
        }
        next = read_frame(&mut rd).await.ok();
    }
    writer.abort();
    let mut r = lock(routes);
    r.tcp_out.remove(&(remote, local));
    r.by_path.remove(&(Protocol::Tcp, remote, local));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binding request as Chromium sends it, USERNAME "boxfrag:viewfrag".
    fn binding_request(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&0x0006u16.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        // PRIORITY after it, as browsers send more attributes.
        attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        let mut p = vec![0x00, 0x01];
        p.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        p.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        p.extend_from_slice(&[7; 12]);
        p.extend_from_slice(&attrs);
        p
    }

    #[test]
    fn a_connectivity_check_names_the_boxs_ufrag() {
        assert_eq!(
            stun_recipient(&binding_request("boxfrag:viewfrag")),
            Some("boxfrag")
        );
        assert_eq!(stun_recipient(&binding_request("odd")), Some("odd"));
    }

    #[test]
    fn anything_else_names_no_session() {
        let mut response = binding_request("boxfrag:viewfrag");
        response[0] = 0x01; // 0x0101, a binding success response
        assert_eq!(stun_recipient(&response), None);
        let mut wrong_cookie = binding_request("boxfrag:viewfrag");
        wrong_cookie[4] = 0;
        assert_eq!(stun_recipient(&wrong_cookie), None);
        let mut cut = binding_request("boxfrag:viewfrag");
        cut.truncate(26);
        assert_eq!(stun_recipient(&cut), None);
        assert_eq!(stun_recipient(&[0x80, 0x60, 0, 1]), None); // RTP
        assert_eq!(stun_recipient(&[]), None);
    }
}
