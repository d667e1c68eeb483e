//! Finding the broadcast a viewer asked for, whatever protocol it speaks (MP4 over HTTP,
//! WHEP, RTSP): this box's own stream, or any broadcast in the mesh, which the box joins
//! on the first viewer and leaves after the last (the guard).

use std::time::Duration;

use cambox_media::broadcast::{ReadObject, TrackReader};
use cambox_media::Broadcast;

use crate::mesh::{MeshError, WatchGuard};
use crate::station::Station;

/// How long a viewer waits for a broadcast from elsewhere in the mesh to start arriving.
const MESH_JOIN_WAIT: Duration = Duration::from_secs(5);

/// A broadcast being watched; dropping it lets the box leave the broadcast's tree.
#[derive(Debug)]
pub struct Viewing {
    pub broadcast: Broadcast,
    _guard: Option<WatchGuard>,
}

#[derive(Debug, thiserror::Error)]
pub enum ViewingError {
    /// No such stream here or in the mesh (HTTP 404, RTSP 404).
    #[error("{0}")]
    NotFound(String),
    /// The stream exists but cannot be served now (HTTP 503, RTSP 503).
    #[error("{0}")]
    Unavailable(String),
}

/// Opens `name`: `stream` for this box's own, `stream@origin` (a node id prefix) for one
/// from anywhere in the mesh.
pub async fn open(st: &Station, name: &str) -> Result<Viewing, ViewingError> {
    let own = name == st.settings.stream
        || st.mesh.get().is_some_and(|m| {
            name.split_once('@')
                .is_some_and(|(n, o)| n == st.settings.stream && m.id.short().starts_with(o))
        });
    if own {
        return match st.broadcast() {
            Some(broadcast) => Ok(Viewing {
                broadcast,
                _guard: None,
            }),
            None => Err(ViewingError::NotFound(format!(
                "stream '{name}' is not live; press the button or POST /api/v1/live"
            ))),
        };
    }
    let Some(mesh) = st.mesh.get() else {
        return Err(ViewingError::NotFound(format!(
            "unknown stream '{name}'; this box streams '{}'",
            st.settings.stream
        )));
    };
    match mesh.watch(name, MESH_JOIN_WAIT).await {
        Ok(w) => Ok(Viewing {
            broadcast: w.broadcast,
            _guard: Some(w.guard),
        }),
        Err(e @ MeshError::Unknown(_)) => Err(ViewingError::NotFound(format!(
            "{e}; this box streams '{}'",
            st.settings.stream
        ))),
        Err(e) => Err(ViewingError::Unavailable(e.to_string())),
    }
}

/// Readers at the newest keyframe, the sound from the same instant: where every new
/// viewer starts.
pub fn readers_from_newest_keyframe(b: &Broadcast) -> (TrackReader, Option<TrackReader>) {
    let from = b.video.latest_group_head().map_or(0, |o| o.capture_us);
    (
        b.video.subscribe(),
        b.audio.as_ref().map(|a| a.subscribe_from(from)),
    )
}

/// `bytes` random bytes in hex: session ids a viewer cannot guess. Falls back to the clock
/// if the OS has no randomness to give.
pub fn random_id(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_le_bytes();
        for (x, y) in b.iter_mut().zip(t.iter().cycle()) {
            *x = *y;
        }
    }
    cambox_mesh::hex::to_hex(&b)
}

/// The next object of a track, or never when there is no reader: lets one `select!` wait
/// on tracks a viewer may or may not have (no sound, not playing yet).
pub async fn next_or_pending(r: Option<&mut TrackReader>) -> Option<ReadObject> {
    match r {
        Some(r) => r.next().await,
        None => std::future::pending().await,
    }
}

/// Tasks that serve one viewer (socket readers) and must not outlive it.
#[derive(Debug)]
pub struct AbortOnDrop(pub Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}
