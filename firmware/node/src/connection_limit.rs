//! A bound on the HTTP connections one address holds open. Each costs a file descriptor
//! and a task, and a connection costs nothing to open: one machine opening thousands of
//! idle ones would take the descriptors every viewer, the mesh and the camera need. Past
//! the bound, a new connection from that address is closed as soon as it is accepted and
//! counted; other addresses are served as before.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Open HTTP connections one address may hold. A browser keeps up to six per host; a page
/// playing a grid of live MP4 streams holds one per stream, and an office behind one NAT
/// adds its people's. Sixty-four leave room for all of that.
pub const MAX_PER_SOURCE: usize = 64;

type OpenBySource = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// A listener that refuses an address's connections past `max` open ones.
#[derive(Debug)]
pub struct PerSourceListener {
    inner: TcpListener,
    open: OpenBySource,
    max: usize,
    refused: Counter,
}

impl PerSourceListener {
    pub fn new(inner: TcpListener, max: usize) -> Self {
        Self {
            inner,
            open: OpenBySource::default(),
            max,
            refused: Counter::default(),
        }
    }

    /// Counts the connections closed for being over the bound in `refused` (a metric).
    pub fn counting_in(mut self, refused: Counter) -> Self {
        self.refused = refused;
        self
    }
}

fn lock(open: &OpenBySource) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
    open.lock().unwrap_or_else(|e| e.into_inner())
}

impl axum::serve::Listener for PerSourceListener {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Counted, SocketAddr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, or the peer gave up during the handshake: wait
                    // a moment rather than spin, as axum's own listener does.
                    tracing::warn!("HTTP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let source = addr.ip().to_canonical();
            {
                let mut open = lock(&self.open);
                let n = open.entry(source).or_default();
                if *n < self.max {
                    *n += 1;
                    let open = self.open.clone();
                    return (
                        Counted {
                            stream,
                            source,
                            open,
                        },
                        addr,
                    );
                }
            }
            self.refused.inc();
            tracing::debug!(%source, max = self.max, "HTTP connection refused: too many open from this address");
            drop(stream);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted connection, counted against its address until it is dropped.
#[derive(Debug)]
pub struct Counted {
    stream: TcpStream,
    source: IpAddr,
    open: OpenBySource,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        if let Some(n) = open.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.source);
            }
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
