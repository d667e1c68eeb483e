//! `/live/<stream>.mp4`: the broadcast as one endless fragmented MP4.
//!
//! Every viewer gets its own readers on the broadcast's tracks: it starts at the last
//! keyframe at once, and when it cannot keep up, its reader drops whole groups without
//! slowing the others (see `cambox_media::broadcast`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cambox_media::annexb::AvcConfig;
use cambox_media::fmp4::{init_segment, Fragmenter, StreamInfo};
use cambox_media::Broadcast;
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// Fragments queued per viewer before its reader stops and, later, skips groups.
const VIEWER_QUEUE: usize = 16;
/// How long a new viewer waits for the first keyframe of a broadcast that just started.
const FIRST_KEYFRAME_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("the stream has produced no keyframe within {0:?}")]
    NoKeyframe(Duration),
    #[error("the stream ended")]
    Ended,
    #[error("cannot package the stream: {0}")]
    Package(String),
}

/// Counts a viewer for as long as it is connected.
struct ViewerGuard(Arc<Metrics>);

impl ViewerGuard {
    fn new(m: Arc<Metrics>) -> Self {
        m.viewers.inc();
        Self(m)
    }
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.0.viewers.dec();
    }
}

/// Starts a viewer: waits for its first keyframe, then returns the MIME type and a channel
/// of MP4 bytes (init segment first) fed by a task that ends when the viewer goes away.
pub async fn start_viewer(
    broadcast: Broadcast,
    metrics: Arc<Metrics>,
) -> Result<(String, mpsc::Receiver<Bytes>), LiveError> {
    let mut video = broadcast.video.subscribe();
    let first = tokio::time::timeout(FIRST_KEYFRAME_WAIT, video.next())
        .await
        .map_err(|_| LiveError::NoKeyframe(FIRST_KEYFRAME_WAIT))?
        .ok_or(LiveError::Ended)?;
    let avc = AvcConfig::from_keyframe(&first.object.payload)
        .map_err(|e| LiveError::Package(e.to_string()))?;
    let info = StreamInfo {
        video: avc,
        rate: broadcast.rate,
        audio_pre_skip: broadcast.audio_pre_skip,
    };
    let mime = info.mime();
    let init = init_segment(&info).map_err(|e| LiveError::Package(e.to_string()))?;
    let base = first.object.capture_us;
    let mut frag = Fragmenter::new(base, broadcast.rate);
    let first_frag = frag
        .video(base, true, &first.object.payload)
        .map_err(|e| LiveError::Package(e.to_string()))?;
    let mut audio = broadcast.audio.as_ref().map(|a| a.subscribe_from(base));

    let (tx, rx) = mpsc::channel::<Bytes>(VIEWER_QUEUE);
    let guard = ViewerGuard::new(metrics.clone());
    tokio::spawn(async move {
        let _guard = guard;
        let send = |b: Bytes| {
            let tx = tx.clone();
            let metrics = metrics.clone();
            async move {
                let n = b.len() as u64;
                let ok = tx.send(b).await.is_ok();
                if ok {
                    metrics.bytes_sent.inc_by(n);
                }
                ok
            }
        };
        if !send(init).await || !send(first_frag).await {
            return;
        }
        let mut dropped = video.dropped_groups();
        loop {
            let fragment = tokio::select! {
                v = video.next() => match v {
                    Some(o) => frag.video(o.object.capture_us, o.index == 0, &o.object.payload),
                    None => break,
                },
                a = async { match audio.as_mut() { Some(r) => r.next().await, None => std::future::pending().await } } => match a {
                    Some(o) if o.object.capture_us >= base => frag.audio(o.object.capture_us, &o.object.payload),
                    Some(_) => continue,
                    None => { audio = None; continue }
                },
                _ = tx.closed() => break,
            };
            let Ok(fragment) = fragment else { break };
            if !send(fragment).await {
                break;
            }
            let now = video.dropped_groups();
            metrics.viewer_groups_dropped.inc_by(now - dropped);
            dropped = now;
        }
    });
    Ok((mime, rx))
}
