//! Prometheus metrics: what an operator graphs to see whether a box keeps up.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
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
    pub live: Gauge,
    pub encode_seconds: Histogram,
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
            live: Gauge::default(),
            // 0.5 ms to ~1 s: a 30 fps encoder must stay under 33 ms.
            encode_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 12)),
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
        registry.register("cambox_live", "1 while the box is live", m.live.clone());
        registry.register(
            "cambox_encode_seconds",
            "Time to encode one video frame",
            m.encode_seconds.clone(),
        );
        Self { registry, ..m }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
