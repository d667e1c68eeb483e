//! Mesh links over TCP, for networks that drop UDP between sites: the very same QUIC
//! connection, its datagrams carried over a TLS connection on TCP ([`super::tcp_tls`]),
//! each after its 16-bit length (as RFC 4571 frames RTP). Everything above the datagrams is unchanged: the TLS 1.3
//! handshake, the node certificates and the admission, the messages, a stream per group.
//!
//! To quinn this is one more UDP socket ([`quinn::AsyncUdpSocket`]) whose peers are TCP
//! connections, keyed by the connection's remote address. A datagram for a connection
//! whose queue is full is dropped, as a full UDP socket drops it: QUIC sees loss, its
//! congestion control slows down, and the relay above drops whole stale groups. The queue
//! is small, so a slow TCP link behaves like a slow QUIC link (whole groups lost, never a
//! broken group) instead of hiding seconds of video in a kernel buffer.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Datagrams queued towards one TCP connection: about 20 KB, 0.1 s at the 2 Mbit/s of a
/// camera. Queues are measured in time: at a slow link's rate every kilobyte queued is
/// delay, and the group dropping above only starts once this is full.
const QUEUE: usize = 16;
/// The kernel's send buffer for a mesh TCP connection (it doubles what is asked). Left to
/// itself Linux grows it to megabytes, seconds of video at a slow link's rate.
const SEND_BUFFER: usize = 16 * 1024;
/// The most bytes of queued datagrams written at once: TLS's largest record.
const BATCH: usize = 16 * 1024;
/// Datagrams received and not yet taken by quinn, from all connections.
const INBOUND: usize = 1024;
/// A TCP dial that takes longer is given up (then the link is not there, as over QUIC).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that sends nothing for this long is closed (QUIC keeps a live one busy).
const SILENCE: Duration = Duration::from_secs(10);

/// One TCP connection's queue out, and whether it goes through the proxy.
#[derive(Debug, Clone)]
struct Conn {
    out: mpsc::Sender<Vec<u8>>,
    proxied: bool,
}

type Conns = Arc<Mutex<HashMap<SocketAddr, Conn>>>;

/// The longest answer head a proxy may give to CONNECT.
const MAX_PROXY_HEAD: usize = 8192;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The TCP side of a mesh node: connections in and out, as one datagram socket.
pub struct TcpDatagrams {
    /// The listener's address (what quinn calls the socket's local address).
    local: SocketAddr,
    tls: super::tcp_tls::OuterTls,
    /// An HTTP proxy (HOST:PORT) every dial goes through (CONNECT), if the box may only
    /// leave its network that way.
    proxy: Option<String>,
    conns: Conns,
    inbound_tx: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    inbound: Mutex<mpsc::Receiver<(SocketAddr, Vec<u8>)>>,
}

impl fmt::Debug for TcpDatagrams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpDatagrams")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl TcpDatagrams {
    /// Listens on `addr` and takes every connection that comes; dials through `proxy`
    /// (HOST:PORT of an HTTP proxy) if given.
    pub async fn listen(addr: SocketAddr, proxy: Option<String>) -> io::Result<Arc<TcpDatagrams>> {
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen for mesh links over TCP on {addr}: {e}"),
            )
        })?;
        let (inbound_tx, inbound) = mpsc::channel(INBOUND);
        let tls = super::tcp_tls::OuterTls::new().map_err(io::Error::other)?;
        let me = Arc::new(TcpDatagrams {
            local: listener.local_addr()?,
            tls,
            proxy,
            conns: Conns::default(),
            inbound_tx,
            inbound: Mutex::new(inbound),
        });
        let accepting = me.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, remote)) => {
                        tune(&stream);
                        let me = accepting.clone();
                        // Each handshake in a task of its own: a slow one holds up nobody.
                        tokio::spawn(async move {
                            let tls = me.tls.acceptor.accept(stream);
                            if let Ok(Ok(tls)) = tokio::time::timeout(CONNECT_TIMEOUT, tls).await {
                                me.carry(tls, remote, false);
                            }
                        });
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Ok(me)
    }

    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Opens a TCP connection to `addr` (through the proxy, if there is one), over which
    /// quinn may then connect to `addr`.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<()> {
        if lock(&self.conns).contains_key(&addr) {
            return Ok(());
        }
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let stream = match &self.proxy {
                Some(proxy) => through_proxy(proxy, &addr.to_string()).await?,
                None => TcpStream::connect(addr).await?,
            };
            tune(&stream);
            let server = super::tcp_tls::OuterTls::server_name();
            self.tls.connector.connect(server, stream).await
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TCP connect timed out"))??;
        self.carry(stream, addr, self.proxy.is_some());
        Ok(())
    }

    /// Whether a TCP connection to or from `addr` is open.
    pub fn carries(&self, addr: &SocketAddr) -> bool {
        lock(&self.conns).contains_key(addr)
    }

    /// Whether the TCP connection to `addr` goes through the proxy.
    pub fn proxied(&self, addr: &SocketAddr) -> bool {
        lock(&self.conns).get(addr).is_some_and(|c| c.proxied)
    }

    /// Moves datagrams between `stream` and quinn until either side stops.
    fn carry<S>(&self, stream: S, remote: SocketAddr, proxied: bool)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let mut slow = SlowLink::from_env();
        let (mut rd, mut wr) = tokio::io::split(stream);
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(QUEUE);
        lock(&self.conns).insert(
            remote,
            Conn {
                out: out_tx.clone(),
                proxied,
            },
        );
        let writer = tokio::spawn(async move {
            let mut framed = Vec::with_capacity(BATCH);
            while let Some(first) = out_rx.recv().await {
                // Whatever else is queued goes in the same write: one TLS record and as
                // few TCP segments as it takes, not a record and a segment per datagram.
                framed.clear();
                let mut next = Some(first);
                while let Some(d) = next.take() {
                    if let Ok(len) = u16::try_from(d.len()) {
                        framed.extend_from_slice(&len.to_be_bytes());
                        framed.extend_from_slice(&d);
                    }
                    if framed.len() < BATCH {
                        next = out_rx.try_recv().ok();
                    }
                }
                if wr.write_all(&framed).await.is_err() || wr.flush().await.is_err() {
                    return;
                }
            }
        });
        let (inbound, conns) = (self.inbound_tx.clone(), self.conns.clone());
        tokio::spawn(async move {
            loop {
                let frame = async {
                    let len = rd.read_u16().await?;
                    let mut d = vec![0u8; usize::from(len)];
                    rd.read_exact(&mut d).await?;
                    Ok::<_, io::Error>(d)
                };
                match tokio::time::timeout(SILENCE, frame).await {
                    Ok(Ok(d)) => {
                        if let Some(slow) = slow.as_mut() {
                            slow.pace(d.len() + 2).await;
                        }
                        // Full: dropped, as a UDP socket's full buffer drops.
                        let _ = inbound.try_send((remote, d));
                    }
                    _ => break,
                }
            }
            writer.abort();
            let mut c = lock(&conns);
            if c.get(&remote).is_some_and(|c| c.out.same_channel(&out_tx)) {
                c.remove(&remote);
            }
        });
    }
}

/// Socket options for a mesh TCP connection, before TLS wraps it: no Nagle delay, and a
/// small kernel send buffer (see [`SEND_BUFFER`]).
fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let socket = socket2::SockRef::from(stream);
    let _ = socket.set_send_buffer_size(SEND_BUFFER);
    if std::env::var_os(SLOW_TCP_ENV).is_some() {
        // The emulated slow link holds little in flight, as a real one does: the bytes it
        // holds back wait in the sender's buffer, not in this box's.
        let _ = socket.set_recv_buffer_size(4 * 1024);
    }
}

/// A TCP connection to `addr` (HOST:PORT) through the HTTP proxy at `proxy` (HOST:PORT),
/// by `CONNECT` (RFC 9110, 9.3.6): what proxies of company networks let out, to port 443.
pub async fn through_proxy(proxy: &str, addr: &str) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect(proxy)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("the proxy {proxy}: {e}")))?;
    let ask = format!("CONNECT {addr} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(ask.as_bytes()).await?;
    // Byte by byte up to the blank line: nothing of the tunnel may be read past it.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_PROXY_HEAD {
            return Err(io::Error::other(format!(
                "the proxy {proxy} answered no HTTP"
            )));
        }
        head.push(stream.read_u8().await?);
    }
    let status = String::from_utf8_lossy(&head);
    let line = status.lines().next().unwrap_or_default();
    match line.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => Ok(stream),
        _ => Err(io::Error::other(format!(
            "the proxy {proxy} refused CONNECT {addr}: {line}"
        ))),
    }
}

impl quinn::AsyncUdpSocket for TcpDatagrams {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, t: &Transmit) -> io::Result<()> {
        let Some(out) = lock(&self.conns).get(&t.destination).map(|c| c.out.clone()) else {
            // No connection (it closed): lost, as a datagram to a gone peer is.
            return Ok(());
        };
        let size = t.segment_size.unwrap_or(t.contents.len()).max(1);
        for d in t.contents.chunks(size) {
            let _ = out.try_send(d.to_vec());
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(m)) = (bufs.first_mut(), meta.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        match lock(&self.inbound).poll_recv(cx) {
            Poll::Ready(Some((from, d))) => {
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                *m = RecvMeta {
                    addr: from,
                    len: n,
                    stride: n,
                    ecn: None,
                    dst_ip: Some(self.local.ip()),
                };
                Poll::Ready(Ok(1))
            }
            Poll::Ready(None) => Poll::Ready(Err(io::Error::other("the TCP side stopped"))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    /// TCP carries any size up to 64 KiB; QUIC's path MTU discovery finds what the
    /// datagrams may be.
    fn may_fragment(&self) -> bool {
        false
    }
}

/// Sending never waits: a full connection queue drops, as a full UDP socket does.
#[derive(Debug)]
struct AlwaysWritable;

impl quinn::UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A rate in kbit/s at which this box reads its mesh TCP connections, as a slow link
/// would deliver (tests only: there is no `tc netem` on a test machine).
pub const SLOW_TCP_ENV: &str = "CAMBOX_MESH_TEST_TCP_READ_KBPS";

/// Reads no faster than a slow link delivers: TCP's window then fills and the sender's
/// small queue drops, as over a slow path.
#[derive(Debug)]
struct SlowLink {
    bytes_per_sec: f64,
    since: tokio::time::Instant,
    read: f64,
}

impl SlowLink {
    fn from_env() -> Option<SlowLink> {
        let kbps: f64 = std::env::var(SLOW_TCP_ENV).ok()?.parse().ok()?;
        (kbps > 0.0).then(|| SlowLink {
            bytes_per_sec: kbps * 1000.0 / 8.0,
            since: tokio::time::Instant::now(),
            read: 0.0,
        })
    }

    async fn pace(&mut self, bytes: usize) {
        self.read += bytes as f64;
        let due = self.since + Duration::from_secs_f64(self.read / self.bytes_per_sec);
        tokio::time::sleep_until(due).await;
    }
}

/// Names a file; while it exists, the mesh's UDP socket drops every datagram that comes
/// in, as a firewall that drops UDP would (tests only: a test machine without root has no
/// such firewall). Removing the file lets UDP through again.
pub const DROP_UDP_ENV: &str = "CAMBOX_MESH_TEST_DROP_UDP_WHILE";

/// The mesh's UDP socket, dropping what comes in while [`DROP_UDP_ENV`]'s file exists.
#[derive(Debug)]
pub struct FirewalledUdp {
    inner: Arc<dyn quinn::AsyncUdpSocket>,
    flag: std::path::PathBuf,
}

impl FirewalledUdp {
    /// `inner`, or `inner` behind the emulated firewall when the environment asks.
    pub fn wrap(inner: Arc<dyn quinn::AsyncUdpSocket>) -> Arc<dyn quinn::AsyncUdpSocket> {
        match std::env::var_os(DROP_UDP_ENV) {
            Some(flag) => Arc::new(FirewalledUdp {
                inner,
                flag: flag.into(),
            }),
            None => inner,
        }
    }
}

impl quinn::AsyncUdpSocket for FirewalledUdp {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, t: &Transmit) -> io::Result<()> {
        self.inner.try_send(t)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(_)) if self.flag.exists() => continue,
                other => return other,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}
