//! The box's live state: one place that the button, the web page and the API all change.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use cambox_media::source::pacer::Pacing;
use cambox_media::Broadcast;
use serde::Serialize;
use tokio::sync::watch;

use crate::board::led::{Fault, Inputs, LedView, Overlay};
use crate::board::sim::VirtualButton;
use crate::mesh::trust::TrustView;
use crate::mesh::Mesh;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineError};
use crate::settings::BoxSettings;

/// What `/api/v1/status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub node: String,
    pub stream: String,
    pub site: String,
    pub live: bool,
    pub source: String,
    pub encoder: String,
    /// Target video bitrate, bits per second.
    pub bitrate: u32,
    pub fps: f64,
    pub width: u32,
    pub height: u32,
    /// Seconds since the box started.
    pub uptime: f64,
    pub viewers: i64,
    /// Why the box last stopped being live, if it was not asked to.
    pub error: Option<String>,
    pub version: &'static str,
    /// The node's overlay id (hex of its public key), when it is in a mesh.
    pub node_id: Option<String>,
    /// UDP address of the node's QUIC endpoint, when it is in a mesh.
    pub mesh_listen: Option<String>,
    /// TCP address of the RTSP server, when it serves.
    pub rtsp_listen: Option<String>,
    /// The WebRTC ports every viewer shares: the UDP sockets open so far (one per address
    /// offered), and the ICE-TCP listener.
    pub webrtc_udp: Vec<String>,
    pub webrtc_tcp: Option<String>,
    /// "simulated", "gpio", or "none" (no board attached).
    pub board: &'static str,
    /// What the status LED shows.
    pub led: LedView,
    /// Who may join the mesh: the company CA and this box's certificate, or a lab.
    pub admission: TrustView,
    /// Whether the box's live stream carries sound (its microphone is on).
    pub sound: bool,
    /// Who watches this box's streams now: name, site, protocol, since when.
    pub watching: Vec<crate::watchers::Watching>,
    /// From where other sites can dial this box, as a registry last saw it: "anywhere",
    /// or "site" (behind NAT or a proxy: it dials out); null before any registry answered.
    pub reachable: Option<&'static str>,
    /// The address that registry saw this box's registration come from.
    pub seen_from: Option<String>,
    /// The last update: its version, slot and state (trying, committed, failed, why).
    pub update: Option<crate::update::Record>,
    /// Bundles the mesh offered, and where each stands on this box.
    pub offers: Vec<crate::mesh::updates::OfferView>,
}

/// The board as the rest of the box sees it.
#[derive(Debug)]
struct Attached {
    kind: &'static str,
    button: Option<VirtualButton>,
}

#[derive(Debug)]
pub struct Station {
    pub settings: BoxSettings,
    pub metrics: Arc<Metrics>,
    started: Instant,
    pacing: Pacing,
    pipeline: Mutex<Option<Pipeline>>,
    last_error: Mutex<Option<String>>,
    /// The live broadcast for the mesh driver (None while not live).
    on_air: watch::Sender<Option<Broadcast>>,
    /// The overlay, once joined.
    pub mesh: OnceLock<Mesh>,
    /// What carries out commands (sensors, actuators, live, LED), once set up.
    pub bus: OnceLock<Arc<crate::bus::commands::Executor>>,
    /// Start-up has finished (the LED leaves "booting").
    start_done: AtomicBool,
    /// A camera and encoder are being opened.
    going_live: AtomicBool,
    board: OnceLock<Attached>,
    led: watch::Sender<LedView>,
    /// An LED overlay asked for by a command, for the board runner to show.
    led_request: Mutex<Option<Overlay>>,
    /// WebRTC viewers being served.
    pub whep: crate::whep::Sessions,
    rtsp_addr: OnceLock<std::net::SocketAddr>,
    /// The WebRTC ports every WHEP session shares (set at start; else made at the first
    /// offer, on ports the kernel picks).
    pub webrtc: tokio::sync::OnceCell<Arc<crate::whep::ports::Ports>>,
    /// Who watches now.
    pub watchers: Arc<crate::watchers::Watchers>,
    /// Where who watched and who pressed what is kept (set once by `cambox run`).
    pub audit: OnceLock<Arc<crate::audit::AuditLog>>,
    /// Who may watch and act (set once by `cambox run`; unset: nobody logs in).
    pub auth: OnceLock<Arc<crate::auth::Auth>>,
    /// From where a registry last said this box can be reached, and the address it saw.
    reach: Mutex<Option<(cambox_registry::model::Reach, String)>>,
    update: Mutex<Option<crate::update::Record>>,
    offers: Mutex<Vec<crate::mesh::updates::OfferView>>,
    /// Where updates are kept: the record and bundles on their way (the data partition).
    pub update_dir: OnceLock<std::path::PathBuf>,
    /// An update from the mesh waits for the box to stop being live; an operator may
    /// install it at once ([`Self::install_now`]).
    update_waits: std::sync::atomic::AtomicBool,
    update_now: tokio::sync::Notify,
    /// The image this box runs (board, release version), read once; None off an image.
    release: OnceLock<Option<crate::update::Release>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Station {
    pub fn new(settings: BoxSettings, metrics: Arc<Metrics>) -> Self {
        Self {
            settings,
            metrics,
            started: Instant::now(),
            pacing: Pacing::RealTime,
            pipeline: Mutex::new(None),
            last_error: Mutex::new(None),
            on_air: watch::Sender::new(None),
            mesh: OnceLock::new(),
            bus: OnceLock::new(),
            start_done: AtomicBool::new(false),
            going_live: AtomicBool::new(false),
            board: OnceLock::new(),
            led: watch::Sender::new(
                crate::board::led::Led::new(Instant::now()).view(Instant::now()),
            ),
            led_request: Mutex::new(None),
            whep: Default::default(),
            webrtc: tokio::sync::OnceCell::new(),
            rtsp_addr: OnceLock::new(),
            auth: OnceLock::new(),
            reach: Mutex::new(None),
            update: Mutex::new(None),
            offers: Mutex::new(Vec::new()),
            update_dir: OnceLock::new(),
            update_waits: std::sync::atomic::AtomicBool::new(false),
            update_now: tokio::sync::Notify::new(),
            release: OnceLock::new(),
            watchers: Default::default(),
            audit: OnceLock::new(),
        }
    }

    /// Where the RTSP server listens (set once by `cambox run`).
    pub fn set_rtsp_addr(&self, addr: std::net::SocketAddr) {
        let _ = self.rtsp_addr.set(addr);
    }

    /// The WebRTC ports: those set at start, or ports the kernel picks, made now.
    pub async fn webrtc_ports(&self) -> std::io::Result<Arc<crate::whep::ports::Ports>> {
        self.webrtc
            .get_or_try_init(|| {
                crate::whep::ports::Ports::bind(
                    0,
                    Some(std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
                )
            })
            .await
            .cloned()
    }

    /// Start-up is over: the LED shows the network and peers from now on.
    pub fn mark_started(&self) {
        self.start_done.store(true, Ordering::Relaxed);
    }

    /// Called once by the board runner.
    pub fn attach_board(&self, kind: &'static str, button: Option<VirtualButton>) {
        let _ = self.board.set(Attached { kind, button });
    }

    /// The button a person presses through the API (simulated boards only).
    pub fn virtual_button(&self) -> Option<VirtualButton> {
        self.board.get().and_then(|b| b.button.clone())
    }

    /// Writes `record` to the audit log, if the box keeps one.
    pub fn audit(&self, record: crate::audit::Record) {
        if let Some(log) = self.audit.get() {
            log.record(&record);
        }
    }

    /// What the LED needs to know, sampled by the board runner.
    pub fn led_inputs(&self, network: bool) -> Inputs {
        Inputs {
            started: self.start_done.load(Ordering::Relaxed),
            network,
            peers: self.metrics.mesh_peers.get().max(0) as usize,
            live: self.live_without_waiting(),
            going_live: self.going_live.load(Ordering::Relaxed),
            watched: self.metrics.viewers.get() > 0,
            fault: lock(&self.last_error).as_deref().map(Fault::classify),
        }
    }

    /// The board runner reports what the LED shows; the page follows it.
    pub fn show_led(&self, view: LedView) {
        self.led.send_if_modified(|v| {
            let changed = *v != view;
            *v = view;
            changed
        });
    }

    /// Follows the LED: every change of state or level.
    pub fn led(&self) -> watch::Receiver<LedView> {
        self.led.subscribe()
    }

    /// Asks the board runner to show `o` on the LED (e.g. "identify" from a command).
    pub fn request_led(&self, o: Overlay) {
        *lock(&self.led_request) = Some(o);
    }

    pub fn take_led_request(&self) -> Option<Overlay> {
        lock(&self.led_request).take()
    }

    /// Forgets a pipeline whose source ended or failed, keeping its error for the status.
    fn reap(&self, slot: &mut Option<Pipeline>) {
        if slot.as_ref().is_some_and(|p| !p.is_running()) {
            if let Some(p) = slot.take() {
                if let Some(e) = lock(&p.state.error).take() {
                    *lock(&self.last_error) = Some(e);
                }
            }
            self.metrics.live.set(0);
            self.on_air.send_replace(None);
        }
    }

    /// Follows the live broadcast: `Some` while live, `None` otherwise.
    pub fn on_air(&self) -> watch::Receiver<Option<Broadcast>> {
        self.on_air.subscribe()
    }

    /// Like [`Station::is_live`], but never waits for a camera being opened (which holds
    /// the pipeline for up to seconds): the LED must keep blinking meanwhile.
    fn live_without_waiting(&self) -> bool {
        match self.pipeline.try_lock() {
            Ok(mut slot) => {
                self.reap(&mut slot);
                slot.is_some()
            }
            Err(_) => self.metrics.live.get() == 1,
        }
    }

    pub fn is_live(&self) -> bool {
        let mut slot = lock(&self.pipeline);
        self.reap(&mut slot);
        slot.is_some()
    }

    /// Goes live or stops; going live opens the camera and encoder, which can fail.
    /// Blocking: call from a blocking context.
    pub fn set_live(&self, live: bool) -> Result<(), PipelineError> {
        let mut slot = lock(&self.pipeline);
        self.reap(&mut slot);
        match (live, slot.is_some()) {
            (true, false) => {
                self.going_live.store(true, Ordering::Relaxed);
                let started = Pipeline::start(&self.settings, self.metrics.clone(), self.pacing);
                self.going_live.store(false, Ordering::Relaxed);
                match started {
                    Ok(p) => {
                        tracing::info!(stream = %self.settings.stream, source = %p.source, encoder = %p.encoder, "live");
                        self.on_air.send_replace(Some(p.broadcast.clone()));
                        *slot = Some(p);
                        *lock(&self.last_error) = None;
                        self.metrics.live.set(1);
                    }
                    Err(e) => {
                        *lock(&self.last_error) = Some(e.to_string());
                        return Err(e);
                    }
                }
            }
            (false, true) => {
                // Dropping the pipeline stops its threads and closes the broadcast, which
                // ends every viewer's stream cleanly.
                *slot = None;
                self.on_air.send_replace(None);
                self.metrics.live.set(0);
                tracing::info!(stream = %self.settings.stream, "stopped");
            }
            _ => {}
        }
        Ok(())
    }

    /// The live broadcast, if the box is live.
    pub fn broadcast(&self) -> Option<Broadcast> {
        let mut slot = lock(&self.pipeline);
        self.reap(&mut slot);
        slot.as_ref().map(|p| p.broadcast.clone())
    }

    pub fn status(&self) -> Status {
        let reach = self.reach();
        let mut slot = lock(&self.pipeline);
        self.reap(&mut slot);
        let s = &self.settings;
        let (source, encoder, format) = match slot.as_ref() {
            Some(p) => (p.source.clone(), p.encoder.clone(), p.format),
            None => (s.source.to_string(), s.encoder_name(), s.format),
        };
        Status {
            node: s.node.clone(),
            stream: s.stream.clone(),
            site: s.site.clone(),
            live: slot.is_some(),
            source,
            encoder,
            bitrate: s.bitrate,
            fps: format.rate.as_f64(),
            width: format.width,
            height: format.height,
            uptime: self.started.elapsed().as_secs_f64(),
            viewers: self.metrics.viewers.get(),
            error: lock(&self.last_error).clone(),
            version: env!("CARGO_PKG_VERSION"),
            node_id: self.mesh.get().map(|m| m.id.to_hex()),
            mesh_listen: self.mesh.get().map(|m| m.local_addr.to_string()),
            rtsp_listen: self.rtsp_addr.get().map(|a| a.to_string()),
            webrtc_udp: self.webrtc.get().map_or_else(Vec::new, |p| {
                p.udp_sockets().iter().map(ToString::to_string).collect()
            }),
            webrtc_tcp: self
                .webrtc
                .get()
                .and_then(|p| p.tcp_listen())
                .map(|a| a.to_string()),
            board: self.board.get().map_or("none", |b| b.kind),
            led: self.led.borrow().clone(),
            admission: self
                .mesh
                .get()
                .and_then(|m| m.trust.as_ref())
                .map_or_else(TrustView::lab, |t| t.view()),
            sound: slot.as_ref().is_some_and(|p| p.broadcast.audio.is_some()),
            watching: self.watchers.list(),
            reachable: reach.as_ref().map(|r| r.0.as_str()),
            seen_from: reach.map(|r| r.1),
            update: lock(&self.update).clone(),
            offers: self.offers(),
        }
    }

    /// What the last registry answer said of this box's reach.
    pub fn reach(&self) -> Option<(cambox_registry::model::Reach, String)> {
        lock(&self.reach).clone()
    }

    /// Reads what this box runs from `path` (instead of the image's file); before anyone
    /// asks.
    pub fn load_release(&self, path: &std::path::Path) {
        let _ = self.release.set(crate::update::Release::load(path).ok());
    }

    /// Returns once the box is not live (at once when it is not); false when the box is
    /// shutting down. A box that films finishes first: updates wait here.
    pub async fn until_not_live(&self) -> bool {
        let mut on_air = self.on_air();
        while on_air.borrow_and_update().is_some() {
            if on_air.changed().await.is_err() {
                return false;
            }
        }
        true
    }

    /// Returns once the box is not live, or an operator asks for the waiting update now
    /// (true); false when the box is shutting down.
    pub async fn until_update_may_start(&self) -> bool {
        use std::sync::atomic::{AtomicBool, Ordering};
        /// Clears the flag however the wait ends (the caller may drop it midway).
        struct Waiting<'a>(&'a AtomicBool);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::SeqCst);
            }
        }
        // Listening before the flag says so, so that no ask falls between the two.
        let now = self.update_now.notified();
        tokio::pin!(now);
        now.as_mut().enable();
        self.update_waits.store(true, Ordering::SeqCst);
        let _waiting = Waiting(&self.update_waits);
        tokio::select! {
            idle = self.until_not_live() => idle,
            () = now => true,
        }
    }

    /// An operator installs the update that waits for the box to stop being live. False
    /// when none waits.
    pub fn install_now(&self) -> bool {
        let waits = self.update_waits.load(std::sync::atomic::Ordering::SeqCst);
        if waits {
            self.update_now.notify_waiters();
        }
        waits
    }

    /// The image's release file (`/etc/cambox/release`), read at the first ask.
    pub fn release(&self) -> Option<&crate::update::Release> {
        self.release
            .get_or_init(|| {
                crate::update::Release::load(std::path::Path::new(crate::update::RELEASE_FILE)).ok()
            })
            .as_ref()
    }

    pub fn set_update(&self, record: Option<crate::update::Record>) {
        *lock(&self.update) = record;
        self.metrics
            .set_update_state(self.update_line().as_ref().map(|(s, _)| s.as_str()));
    }

    /// Bundles the mesh offered, and where each stands on this box.
    pub fn offers(&self) -> Vec<crate::mesh::updates::OfferView> {
        lock(&self.offers).clone()
    }

    pub fn set_offers(&self, offers: Vec<crate::mesh::updates::OfferView>) {
        *lock(&self.offers) = offers;
        self.metrics
            .set_update_state(self.update_line().as_ref().map(|(s, _)| s.as_str()));
    }

    /// Where this box's update stands, as (state, version): an offer for this box on its
    /// way (fetching, excluded, paused, ready) before the last install's record.
    pub fn update_line(&self) -> Option<(String, String)> {
        let offered = lock(&self.offers)
            .iter()
            .find(|o| o.state != "relaying")
            .map(|o| (o.state.to_string(), o.version.clone()));
        offered.or_else(|| {
            lock(&self.update)
                .as_ref()
                .map(|r| (r.state.clone(), r.version.clone()))
        })
    }

    pub fn set_reach(&self, reach: cambox_registry::model::Reach, seen_from: String) {
        *lock(&self.reach) = Some((reach, seen_from));
    }
}
