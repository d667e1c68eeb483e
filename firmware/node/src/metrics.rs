//! Prometheus metrics: what an operator graphs to see whether a box keeps up.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub frames_captured: Counter,
    pub frames_encoded: Counter,
    pub frames_dropped: Counter,
    pub audio_frames_encoded: Counter,
    pub bytes_sent: Counter,
    pub viewer_groups_dropped: Counter,
    pub viewers: Gauge,
    /// Viewers connected now, by protocol: mp4, whep, rtsp.
    viewers_by: Family<Vec<(String, String)>, Gauge>,
    /// PLI and FIR received from WebRTC viewers.
    pub whep_keyframe_requests: Counter,
    /// WebRTC offers refused because their address had too many sessions still connecting.
    pub whep_refused_connecting: Counter,
    /// HTTP connections closed at once: their address had too many open.
    pub http_refused_connections: Counter,
    /// RTSP requests refused as unparseable.
    pub rtsp_bad_requests: Counter,
    pub live: Gauge,
    pub encode_seconds: Histogram,
    /// Neighbours connected over the overlay now.
    pub mesh_peers: Gauge,
    mesh_in: Family<Vec<(String, String)>, Counter>,
    mesh_out: Family<Vec<(String, String)>, Counter>,
    /// Object payload bytes sent to each neighbour: what the framing above is measured against.
    mesh_media_out: Family<Vec<(String, String)>, Counter>,
    /// UDP payload bytes sent to each neighbour: the frames with QUIC's packet overhead.
    mesh_datagram_out: Family<Vec<(String, String)>, Counter>,
    /// 1 for each (broadcast, parent) this box receives through.
    pub mesh_parent: Family<Vec<(String, String)>, Gauge>,
    /// Children this box relays each broadcast to.
    pub mesh_children: Family<Vec<(String, String)>, Gauge>,
    /// Commands and replies by what became of them here (the core's counts since start).
    pub mesh_routed: Family<Vec<(String, String)>, Gauge>,
    /// Neighbours disconnected for going past a limit, by limit.
    mesh_disconnected: Family<Vec<(String, String)>, Counter>,
    /// Connections refused because the mesh's CA does not admit the peer, by reason.
    mesh_refused: Family<Vec<(String, String)>, Counter>,
    /// The image this box runs (board, version): 1.
    release: Family<Vec<(String, String)>, Gauge>,
    /// The state of the box's last update: 1 for the current one, 0 for the others.
    update_state: Family<Vec<(String, String)>, Gauge>,
    /// Links this box tried to open, and those that failed, by transport.
    mesh_dials: Family<Vec<(String, String)>, Counter>,
    mesh_dial_failures: Family<Vec<(String, String)>, Counter>,
    /// Connections a peer closed because its CA does not admit this box.
    pub mesh_refused_by_peer: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            frames_captured: Counter::default(),
            frames_encoded: Counter::default(),
            frames_dropped: Counter::default(),
            audio_frames_encoded: Counter::default(),
            bytes_sent: Counter::default(),
            viewer_groups_dropped: Counter::default(),
            viewers: Gauge::default(),
            viewers_by: Family::default(),
            whep_keyframe_requests: Counter::default(),
            whep_refused_connecting: Counter::default(),
            http_refused_connections: Counter::default(),
            rtsp_bad_requests: Counter::default(),
            live: Gauge::default(),
            // 0.5 ms to ~1 s: a 30 fps encoder must stay under 33 ms.
            encode_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 12)),
            mesh_peers: Gauge::default(),
            mesh_in: Family::default(),
            mesh_out: Family::default(),
            mesh_media_out: Family::default(),
            mesh_datagram_out: Family::default(),
            mesh_parent: Family::default(),
            mesh_children: Family::default(),
            mesh_routed: Family::default(),
            mesh_disconnected: Family::default(),
            mesh_refused: Family::default(),
            release: Family::default(),
            update_state: Family::default(),
            mesh_dials: Family::default(),
            mesh_dial_failures: Family::default(),
            mesh_refused_by_peer: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "cambox_frames_captured",
            "Video frames delivered by the source",
            m.frames_captured.clone(),
        );
        registry.register(
            "cambox_frames_encoded",
            "Video frames encoded (or passed through) into the broadcast",
            m.frames_encoded.clone(),
        );
        registry.register(
            "cambox_frames_dropped",
            "Video frames lost before the broadcast: late at the source or skipped by the encoder",
            m.frames_dropped.clone(),
        );
        registry.register(
            "cambox_audio_frames_encoded",
            "Opus packets of 20 ms encoded",
            m.audio_frames_encoded.clone(),
        );
        registry.register(
            "cambox_bytes_sent",
            "Bytes of media sent to viewers",
            m.bytes_sent.clone(),
        );
        registry.register(
            "cambox_viewer_groups_dropped",
            "Whole groups skipped for viewers that fell behind",
            m.viewer_groups_dropped.clone(),
        );
        registry.register("cambox_viewers", "Viewers connected now", m.viewers.clone());
        registry.register(
            "cambox_viewers_by_protocol",
            "Viewers connected now, by protocol (mp4, whep, rtsp)",
            m.viewers_by.clone(),
        );
        registry.register(
            "cambox_whep_keyframe_requests",
            "Keyframe requests (PLI, FIR) from WebRTC viewers",
            m.whep_keyframe_requests.clone(),
        );
        registry.register(
            "cambox_whep_refused_connecting",
            "WebRTC offers refused: their address had too many sessions still connecting",
            m.whep_refused_connecting.clone(),
        );
        registry.register(
            "cambox_http_refused_connections",
            "HTTP connections closed at once: their address had too many open",
            m.http_refused_connections.clone(),
        );
        registry.register(
            "cambox_rtsp_bad_requests",
            "RTSP requests refused because they could not be parsed",
            m.rtsp_bad_requests.clone(),
        );
        registry.register("cambox_live", "1 while the box is live", m.live.clone());
        registry.register(
            "cambox_encode_seconds",
            "Time to encode one video frame",
            m.encode_seconds.clone(),
        );
        registry.register(
            "cambox_mesh_peers",
            "Overlay neighbours connected now",
            m.mesh_peers.clone(),
        );
        registry.register(
            "cambox_mesh_received_bytes",
            "Bytes received from each overlay neighbour",
            m.mesh_in.clone(),
        );
        registry.register(
            "cambox_mesh_sent_bytes",
            "Bytes sent to each overlay neighbour",
            m.mesh_out.clone(),
        );
        registry.register(
            "cambox_mesh_media_sent_bytes",
            "Media payload bytes (H.264 access units, Opus packets) sent to each overlay neighbour",
            m.mesh_media_out.clone(),
        );
        registry.register(
            "cambox_mesh_datagram_sent_bytes",
            "UDP payload bytes sent to each overlay neighbour, QUIC's packet overhead included",
            m.mesh_datagram_out.clone(),
        );
        registry.register(
            "cambox_mesh_parent",
            "1 for the neighbour each broadcast is received from",
            m.mesh_parent.clone(),
        );
        registry.register(
            "cambox_mesh_children",
            "Neighbours this box relays each broadcast to",
            m.mesh_children.clone(),
        );
        registry.register(
            "cambox_mesh_routed",
            "Commands and replies at this box since start, by outcome: delivered, forwarded, \
             forged, replayed, unauthorized, unroutable",
            m.mesh_routed.clone(),
        );
        registry.register(
            "cambox_mesh_peers_disconnected",
            "Overlay neighbours disconnected for going past a limit, by limit",
            m.mesh_disconnected.clone(),
        );
        registry.register(
            "cambox_mesh_refused",
            "Overlay connections refused because the mesh's CA does not admit the peer, by reason",
            m.mesh_refused.clone(),
        );
        registry.register(
            "cambox_mesh_refused_by_peer",
            "Overlay connections a peer closed because its CA does not admit this box",
            m.mesh_refused_by_peer.clone(),
        );
        registry.register(
            "cambox_release",
            "The image this box runs, by board and version (1)",
            m.release.clone(),
        );
        registry.register(
            "cambox_update_state",
            "Where the box's update stands: 1 for its state (an offer fetching, excluded by \
             its rollout, paused, ready; the last install installed, trying, committed, failed)",
            m.update_state.clone(),
        );
        registry.register(
            "cambox_mesh_dials",
            "Overlay links this box tried to open, by transport (quic, tcp)",
            m.mesh_dials.clone(),
        );
        registry.register(
            "cambox_mesh_dial_failures",
            "Overlay links this box tried to open and could not, by transport (quic, tcp)",
            m.mesh_dial_failures.clone(),
        );
        // Every protocol and limit shows from the start, at 0, so a graph has no holes.
        for p in ["mp4", "whep", "rtsp"] {
            m.viewers_of(p);
        }
        for limit in cambox_mesh::limits::Limit::ALL {
            m.mesh_disconnected(limit.label());
        }
        for reason in cambox_trust::Refused::LABELS {
            m.mesh_refused(reason);
        }
        for transport in ["quic", "tcp"] {
            m.mesh_dial(transport, false);
            m.mesh_dial(transport, true);
        }
        Self { registry, ..m }
    }

    /// The counter of connections refused admission for `reason` (`Refused::label`).
    pub fn mesh_refused(&self, reason: &str) -> Counter {
        self.mesh_refused
            .get_or_create(&vec![("reason".into(), reason.into())])
            .clone()
    }

    pub fn set_release(&self, board: &str, version: &str) {
        self.release
            .get_or_create(&vec![
                ("board".into(), board.into()),
                ("version".into(), version.into()),
            ])
            .set(1);
    }

    /// The update's state: that label 1, the others 0.
    pub fn set_update_state(&self, state: Option<&str>) {
        for s in [
            "fetching",
            "excluded",
            "paused",
            "ready",
            "installed",
            "trying",
            "committed",
            "failed",
        ] {
            self.update_state
                .get_or_create(&vec![("state".into(), s.into())])
                .set(i64::from(Some(s) == state));
        }
    }

    /// The counter of dials over `transport` ("quic", "tcp"), or of those that failed.
    pub fn mesh_dial(&self, transport: &str, failed: bool) -> Counter {
        let family = if failed {
            &self.mesh_dial_failures
        } else {
            &self.mesh_dials
        };
        family
            .get_or_create(&vec![("transport".into(), transport.into())])
            .clone()
    }

    /// The counter of neighbours disconnected for going past `limit` (its label).
    pub fn mesh_disconnected(&self, limit: &str) -> Counter {
        self.mesh_disconnected
            .get_or_create(&vec![("limit".into(), limit.into())])
            .clone()
    }

    /// The gauge of viewers speaking `protocol`.
    pub fn viewers_of(&self, protocol: &str) -> Gauge {
        self.viewers_by
            .get_or_create(&vec![("protocol".into(), protocol.into())])
            .clone()
    }

    pub fn mesh_bytes_in(&self, peer: &impl std::fmt::Display) -> Counter {
        of_peer(&self.mesh_in, peer)
    }

    pub fn mesh_bytes_out(&self, peer: &impl std::fmt::Display) -> Counter {
        of_peer(&self.mesh_out, peer)
    }

    pub fn mesh_media_out(&self, peer: &impl std::fmt::Display) -> Counter {
        of_peer(&self.mesh_media_out, peer)
    }

    pub fn mesh_datagram_out(&self, peer: &impl std::fmt::Display) -> Counter {
        of_peer(&self.mesh_datagram_out, peer)
    }

    pub fn set_routed(&self, s: &cambox_mesh::routed::RoutedStats) {
        for (outcome, n) in [
            ("delivered", s.delivered),
            ("forwarded", s.forwarded),
            ("forged", s.forged),
            ("replayed", s.replayed),
            ("unauthorized", s.unauthorized),
            ("unroutable", s.unroutable),
        ] {
            self.mesh_routed
                .get_or_create(&vec![("outcome".into(), outcome.into())])
                .set(n as i64);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The counter of one neighbour in a family labelled by peer.
fn of_peer(
    family: &Family<Vec<(String, String)>, Counter>,
    peer: &impl std::fmt::Display,
) -> Counter {
    family
        .get_or_create(&vec![("peer".into(), peer.to_string())])
        .clone()
}
