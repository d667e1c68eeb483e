//! Finding the broadcast a viewer asked for, whatever protocol it speaks (MP4 over HTTP,
//! WHEP, RTSP): this box's own stream, or any broadcast in the mesh, which the box joins
//! on the first viewer and leaves after the last (the guard).

use std::time::Duration;

use cambox_media::broadcast::{ReadObject, TrackReader};
use cambox_media::Broadcast;

use crate::auth::sessions::Person;
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

impl Viewing {
    /// The box whose camera this is, when it is not this one.
    pub fn origin(&self) -> Option<cambox_mesh::NodeId> {
        self._guard.as_ref().and_then(WatchGuard::origin)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ViewingError {
    /// No such stream here or in the mesh (HTTP 404, RTSP 404).
    #[error("{0}")]
    NotFound(String),
    /// The stream exists but cannot be served now (HTTP 503, RTSP 503).
    #[error("{0}")]
    Unavailable(String),
    /// The stream's rule does not let this person watch (HTTP 403, RTSP 403).
    #[error("{0}")]
    Forbidden(String),
}

/// Whether `person` may watch the stream called `name` (this box's own, or one the mesh
/// lists with its origin's rule); on a box where nobody logs in, everybody may.
pub async fn may_watch(
    st: &Station,
    name: &str,
    person: Option<&Person>,
) -> Result<(), ViewingError> {
    if !st.auth.get().is_some_and(|a| a.required()) {
        return Ok(());
    }
    let Some(person) = person else {
        return Err(ViewingError::Forbidden("log in first".into()));
    };
    let rule = match rule_of(st, name).await {
        Some(r) => r,
        // Unknown here: `open` says so with a 404.
        None => return Ok(()),
    };
    let s = &st.settings;
    if crate::auth::rules::allows(&rule, &s.watch_default, person, &s.site) {
        Ok(())
    } else {
        Err(ViewingError::Forbidden(format!(
            "{} may not watch '{name}' (it is for {})",
            person.name,
            if rule.is_empty() {
                &s.watch_default
            } else {
                &rule
            }
        )))
    }
}

/// The rule of the stream `name` names: this box's own setting, or its origin's as the
/// mesh lists it.
async fn rule_of(st: &Station, name: &str) -> Option<String> {
    if is_own(st, name) {
        return Some(st.settings.watch.clone());
    }
    let (want, origin) = match name.split_once('@') {
        Some((n, o)) => (n, Some(o)),
        None => (name, None),
    };
    let list = st.mesh.get()?.list().await.ok()?;
    list.into_iter()
        .find(|b| b.name == want && origin.is_none_or(|o| b.origin_id.starts_with(o)))
        .map(|b| b.watch)
}

fn is_own(st: &Station, name: &str) -> bool {
    name == st.settings.stream
        || st.mesh.get().is_some_and(|m| {
            name.split_once('@')
                .is_some_and(|(n, o)| n == st.settings.stream && m.id.short().starts_with(o))
        })
}

/// Opens `name`: `stream` for this box's own, `stream@origin` (a node id prefix) for one
/// from anywhere in the mesh.
/// `person` must be let in by the stream's rule (see [`may_watch`]).
pub async fn open(
    st: &Station,
    name: &str,
    person: Option<&Person>,
) -> Result<Viewing, ViewingError> {
    may_watch(st, name, person).await?;
    if is_own(st, name) {
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
