//! RTSP server (RFC 2326): `rtsp://box:8554/<broadcast>` for VLC, ffmpeg, GStreamer and
//! NVRs. Every broadcast in the mesh can be played, not only this box's own; the box joins
//! a broadcast's tree on the first viewer and leaves after the last, as for the web page.
//!
//! Transports: RTP over UDP unicast and RTP interleaved on the RTSP connection (TCP).
//! Payloads: H.264 per RFC 6184 (packetization mode 1) and Opus per RFC 7587.
//! Message parsing is the `rtsp-types` crate's; everything else is here.

pub mod conn;
pub mod sdp;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::station::Station;

/// The port RTSP clients try when a URL names none.
pub const DEFAULT_PORT: u16 = 8554;
/// Connections served at once; more are closed at once (each costs a task and buffers).
const MAX_CONNECTIONS: usize = 256;

/// Serves RTSP on `listener` until the process ends.
pub async fn serve(listener: TcpListener, station: Arc<Station>) {
    serve_with(listener, station, conn::Limits::default()).await
}

/// As `serve`, with other time limits (tests use short ones).
pub async fn serve_with(listener: TcpListener, station: Arc<Station>, limits: conn::Limits) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!("RTSP accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            tracing::warn!(%peer, "RTSP: {MAX_CONNECTIONS} connections already; refusing");
            continue;
        }
        let _ = stream.set_nodelay(true);
        open.fetch_add(1, Ordering::Relaxed);
        let open = open.clone();
        let station = station.clone();
        tokio::spawn(async move {
            conn::serve(station, stream, peer, limits).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Binds the RTSP address, with a message that says what to do when it is taken.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen for RTSP on {addr}: {e} (in use? try --rtsp 0.0.0.0:8555, or --rtsp off)"),
        )
    })
}
