//! Who is watching this box's streams now, by name, site and protocol: for the page, the
//! status, the LED (which shows "being watched") and the audit log (which keeps who
//! watched what from when to when). Every protocol's viewer holds a [`ViewerGuard`] for as
//! long as it watches.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;

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
        }
    }
}

/// A viewer watching now, for `/api/v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Watching {
    #[serde(flatten)]
    pub viewer: Viewer,
    /// Since when, UTC.
    pub since: String,
}

#[derive(Debug, Default)]
pub struct Watchers {
    next: AtomicU64,
    now: Mutex<BTreeMap<u64, (Viewer, SystemTime)>>,
}

impl Watchers {
    /// Everybody watching now, longest first.
    pub fn list(&self) -> Vec<Watching> {
        self.lock()
            .values()
            .map(|(v, since)| Watching {
                viewer: v.clone(),
                since: cambox_trust::utc(*since),
            })
            .collect()
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
