//! Who is watching this box's streams now, by name, site and protocol: for the page, the
//! status, the LED (which shows "being watched") and the audit log (which keeps who
//! watched what from when to when). Every protocol's viewer holds a [`ViewerGuard`] for as
//! long as it watches.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cambox_mesh::NodeId;
use serde::{Deserialize, Serialize};

use crate::audit::{unix, Record};
use crate::auth::sessions::Person;
use crate::metrics::Metrics;
use crate::station::Station;

/// A viewer as the people filmed see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Viewer {
    /// The person's name, or `anonymous` on a box where nobody logs in.
    pub name: String,
    /// `local`, `sso` or `anonymous`.
    pub via: &'static str,
    /// The site of the box that serves them.
    pub site: String,
    /// mp4, whep or rtsp.
    pub protocol: &'static str,
    pub stream: String,
    /// Kept for the audit log only; not shown.
    #[serde(skip)]
    pub address: Option<IpAddr>,
    /// The box whose camera it is, when another: that box is told who watches.
    #[serde(skip)]
    pub origin: Option<NodeId>,
}

impl Viewer {
    /// The viewer of `stream` over `protocol` at this box, as `person` (if logged in).
    pub fn at(
        st: &Station,
        person: Option<&Person>,
        protocol: &'static str,
        stream: &str,
        address: Option<IpAddr>,
    ) -> Viewer {
        Viewer {
            name: person.map_or_else(|| "anonymous".into(), |p| p.name.clone()),
            via: person.map_or("anonymous", |p| p.via),
            site: st.settings.site.clone(),
            protocol,
            stream: stream.to_owned(),
            address,
            origin: None,
        }
    }

    /// Watching a stream of box `origin` (None: this box's own), which is told.
    pub fn with_origin(mut self, origin: Option<NodeId>) -> Viewer {
        self.origin = origin;
        self
    }
}

/// A viewer watching now, for `/api/v1/status` and for the box whose camera it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watching {
    pub name: String,
    pub via: String,
    pub site: String,
    pub protocol: String,
    pub stream: String,
    /// Since when, UTC.
    pub since: String,
    /// The box serving them, when it is not this one (its short id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<String>,
}

/// Viewers another box tells of are dropped when it has not told again for this long (it
/// tells every [`TELL_EVERY`]).
pub const REMOTE_FOR: Duration = Duration::from_secs(35);
pub const TELL_EVERY: Duration = Duration::from_secs(10);
/// Viewers taken from one other box, at most.
pub const MAX_REMOTE_PER_BOX: usize = 64;

#[derive(Debug, Default)]
pub struct Watchers {
    next: AtomicU64,
    now: Mutex<BTreeMap<u64, (Viewer, SystemTime)>>,
    /// Viewers of this box's stream that other boxes serve, by the box that told.
    remote: Mutex<HashMap<NodeId, (Vec<Watching>, Instant)>>,
}

impl Watchers {
    /// Everybody watching this box's streams now: its own viewers (of its own stream and of
    /// others it relays), then those other boxes told of.
    pub fn list(&self) -> Vec<Watching> {
        let mut out: Vec<Watching> = self
            .lock()
            .values()
            .map(|(v, since)| watching(v, *since))
            .collect();
        let now = Instant::now();
        let mut remote = self.remote.lock().unwrap_or_else(|p| p.into_inner());
        remote.retain(|_, (_, at)| now.duration_since(*at) < REMOTE_FOR);
        out.extend(remote.values().flat_map(|(list, _)| list.iter().cloned()));
        out
    }

    /// This box's viewers of streams from other boxes, by origin: what each is told.
    pub fn served_for_others(&self) -> HashMap<NodeId, Vec<Watching>> {
        let mut by: HashMap<NodeId, Vec<Watching>> = HashMap::new();
        for (v, since) in self.lock().values() {
            if let Some(o) = v.origin {
                by.entry(o).or_default().push(watching(v, *since));
            }
        }
        by
    }

    /// What box `from` (short id `through`) says of who watches this box's stream through
    /// it: replaces what it said before.
    pub fn told_by(&self, from: NodeId, through: String, mut list: Vec<Watching>) {
        list.truncate(MAX_REMOTE_PER_BOX);
        for w in &mut list {
            w.through = Some(through.clone());
        }
        let mut remote = self.remote.lock().unwrap_or_else(|p| p.into_inner());
        if list.is_empty() {
            remote.remove(&from);
        } else {
            remote.insert(from, (list, Instant::now()));
        }
    }

    fn add(&self, v: Viewer) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, (v, SystemTime::now()));
        id
    }

    fn remove(&self, id: u64) -> Option<(Viewer, SystemTime)> {
        self.lock().remove(&id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (Viewer, SystemTime)>> {
        self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn watching(v: &Viewer, since: SystemTime) -> Watching {
    Watching {
        name: v.name.clone(),
        via: v.via.into(),
        site: v.site.clone(),
        protocol: v.protocol.into(),
        stream: v.stream.clone(),
        since: cambox_trust::utc(since),
        through: None,
    }
}

/// A viewer, counted in the metrics and listed as watching for as long as it lives; its
/// end is written to the audit log with when it began.
#[derive(Debug)]
pub struct ViewerGuard {
    metrics: Arc<Metrics>,
    watchers: Arc<Watchers>,
    audit: Option<Arc<crate::audit::AuditLog>>,
    id: u64,
    protocol: &'static str,
}

impl ViewerGuard {
    pub fn new(st: &Station, viewer: Viewer) -> Self {
        let metrics = st.metrics.clone();
        metrics.viewers.inc();
        metrics.viewers_of(viewer.protocol).inc();
        let protocol = viewer.protocol;
        tracing::info!(name = %viewer.name, protocol, stream = %viewer.stream, "watching");
        ViewerGuard {
            metrics,
            watchers: st.watchers.clone(),
            audit: st.audit.get().cloned(),
            id: st.watchers.add(viewer),
            protocol,
        }
    }
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.metrics.viewers.dec();
        self.metrics.viewers_of(self.protocol).dec();
        let Some((v, since)) = self.watchers.remove(self.id) else {
            return;
        };
        tracing::info!(name = %v.name, protocol = v.protocol, stream = %v.stream, "stopped watching");
        if let Some(log) = &self.audit {
            log.record(&Record {
                via: Some(v.via.into()),
                site: Some(v.site),
                protocol: Some(v.protocol.into()),
                stream: Some(v.stream),
                from: Some(unix(since)),
                detail: v.address.map(|a| format!("address {a}")),
                ..Record::new("watch", &v.name)
            });
        }
    }
}
