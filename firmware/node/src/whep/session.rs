//! One WebRTC viewer: str0m's sans-IO peer fed from the broadcast's tracks, driven by the
//! packets the box's WebRTC ports route to it and by this task's timers.
//!
//! The viewer starts at the newest keyframe once DTLS is up. A keyframe request (PLI or
//! FIR) is answered with the next group start: the reader jumps to the newest group, or,
//! already in it, sends nothing until the next one begins, so the decoder never gets a
//! frame whose references it lacks. NACKs are answered by str0m from its send buffer.
//! A viewer whose sockets cannot take the packets falls behind in the track, and the track
//! reader then drops whole stale groups (the rule of `cambox_media::broadcast`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cambox_media::broadcast::TrackReader;
use cambox_media::Broadcast;
use str0m::format::Codec;
use str0m::media::{MediaKind, MediaTime, Mid};
use str0m::net::Receive;
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::viewing::{next_or_pending, readers_from_newest_keyframe, Viewing};
use crate::whep::ports::Link;

/// A peer that has not finished ICE and DTLS by then is given up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A connected viewer sends RTCP every second and ICE consent checks every few seconds;
/// silence this long means it is gone (closed tab, lost network) without a DELETE.
const PEER_SILENCE: Duration = Duration::from_secs(10);
/// Percent of datagrams to a connected viewer thrown away, to test NACK and keyframe
/// requests over a lossy link where `tc netem` is not at hand (tests only; unset: none).
const LOSS_ENV: &str = "CAMBOX_WHEP_TEST_LOSS_PERCENT";

/// Drops datagrams at random, as a lossy link would.
#[derive(Debug)]
struct LossyLink {
    percent: u32,
    state: u64,
}

impl LossyLink {
    fn from_env() -> Option<Self> {
        let percent: u32 = std::env::var(LOSS_ENV).ok()?.parse().ok()?;
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        (percent > 0).then(|| Self {
            percent: percent.min(100),
            state: u64::from_le_bytes(seed) | 1,
        })
    }

    /// xorshift64: good enough to spread losses, and no dependency.
    fn drop_next(&mut self) -> bool {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state % 100 < u64::from(self.percent)
    }
}

/// What the HTTP side hands to a new session's task.
pub struct Setup {
    pub id: String,
    pub rtc: Rtc,
    pub link: Link,
    pub viewing: Viewing,
    pub metrics: Arc<Metrics>,
    pub stop: watch::Receiver<bool>,
    /// Set once ICE and DTLS are up: the session no longer counts against its address's
    /// share of connecting sessions.
    pub connected: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup").field("id", &self.id).finish()
    }
}

/// The send side of one negotiated m-line.
#[derive(Debug, Clone, Copy)]
struct Lane {
    mid: Mid,
    pt: str0m::format::PayloadParams,
}

/// Runs the session until the peer leaves, DELETE stops it, or the broadcast ends.
pub async fn run(setup: Setup) {
    let id = setup.id.clone();
    match drive(setup).await {
        Ok(why) => tracing::info!(session = %id, "WHEP viewer ended: {why}"),
        Err(e) => tracing::warn!(session = %id, "WHEP viewer failed: {e}"),
    }
}

async fn drive(setup: Setup) -> Result<&'static str, String> {
    let Setup {
        mut rtc,
        mut link,
        viewing,
        metrics,
        mut stop,
        connected: connected_flag,
        ..
    } = setup;
    let broadcast: Broadcast = viewing.broadcast.clone();

    let started = Instant::now();
    let mut last_heard = Instant::now();
    let mut video_lane: Option<Lane> = None;
    let mut audio_lane: Option<Lane> = None;
    let mut video: Option<TrackReader> = None;
    let mut audio: Option<TrackReader> = None;
    // Frames are held back until a group starts (after a PLI in the newest group).
    let mut wait_group_start = false;
    let mut connected = false;
    let mut lossy = LossyLink::from_env();

    loop {
        // Everything str0m wants done now: datagrams out, events; then when to wake.
        let deadline = loop {
            match rtc.poll_output().map_err(|e| format!("WebRTC: {e}"))? {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    if connected && lossy.as_mut().is_some_and(LossyLink::drop_next) {
                        continue;
                    }
                    let n = t.contents.len() as u64;
                    // Awaiting a full socket buffer (or a TCP viewer's full queue) is the
                    // back pressure that lets the track reader fall behind and drop whole
                    // groups.
                    if link.send(&t).await.is_ok() {
                        metrics.bytes_sent.inc_by(n);
                    }
                }
                Output::Event(e) => match e {
                    Event::MediaAdded(m) => {
                        let lane = lane_for(&mut rtc, m.mid, m.kind);
                        tracing::debug!(mid = %m.mid, kind = ?m.kind, ?lane, "WHEP media");
                        match m.kind {
                            MediaKind::Video => video_lane = lane,
                            MediaKind::Audio => audio_lane = lane,
                        }
                    }
                    Event::Connected => {
                        connected = true;
                        connected_flag.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    Event::KeyframeRequest(_) => {
                        metrics.whep_keyframe_requests.inc();
                        if let Some(v) = video.as_mut() {
                            wait_group_start = answer_keyframe_request(&broadcast, v);
                        }
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        return Ok("the peer disconnected");
                    }
                    _ => {}
                },
            }
        };
        // str0m tells of the m-lines only once DTLS is up: start reading when both are known,
        // at the newest keyframe, and the sound at the same instant.
        if connected && video.is_none() {
            if let Some(lane) = video_lane {
                tracing::debug!(mid = %lane.mid, "WHEP viewer starts");
                let (v, a) = readers_from_newest_keyframe(&broadcast);
                video = Some(v);
                audio = audio_lane.and(a);
            }
        }
        if connected && last_heard.elapsed() > PEER_SILENCE {
            return Ok("the viewer went silent");
        }
        if !connected && started.elapsed() > CONNECT_TIMEOUT {
            return Err(format!(
                "ICE/DTLS did not complete within {CONNECT_TIMEOUT:?} (the WebRTC ports blocked between viewer and box?)"
            ));
        }
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(
            deadline.min(Instant::now() + Duration::from_secs(1)),
        ));
        tokio::select! {
            biased;
            _ = stop.changed() => {
                rtc.disconnect();
                return Ok("stopped (DELETE or shutdown)");
            }
            p = link.recv() => {
                let Some(p) = p else { return Err("the WebRTC ports closed".into()) };
                last_heard = Instant::now();
                let Ok(contents) = p.data.as_slice().try_into() else { continue };
                let input = Input::Receive(Instant::now(), Receive {
                    proto: p.proto,
                    source: p.source,
                    destination: p.destination,
                    contents,
                });
                if rtc.accepts(&input) {
                    rtc.handle_input(input).map_err(|e| format!("WebRTC: {e}"))?;
                }
            }
            o = next_or_pending(video.as_mut()) => {
                let Some(o) = o else { return Ok("the broadcast ended") };
                let lane = video_lane.expect("video reader only with a video lane");
                if let Some(v) = video.as_mut() {
                    let skipped = v.take_dropped();
                    if skipped > 0 {
                        metrics.viewer_groups_dropped.inc_by(skipped);
                        wait_group_start = false;
                    }
                }
                if wait_group_start {
                    if o.index != 0 {
                        continue;
                    }
                    wait_group_start = false;
                }
                write(&mut rtc, lane, MediaTime::from_90khz(o.object.capture_us * 9 / 100), o.object.payload)?;
            }
            o = next_or_pending(audio.as_mut()) => {
                match o {
                    Some(o) => {
                        let lane = audio_lane.expect("audio reader only with an audio lane");
                        let t = MediaTime::new(o.object.capture_us * 48 / 1000, str0m::media::Frequency::FORTY_EIGHT_KHZ);
                        write(&mut rtc, lane, t, o.object.payload)?;
                    }
                    None => audio = None,
                }
            }
            _ = sleep => {}
        }
        rtc.handle_input(Input::Timeout(Instant::now()))
            .map_err(|e| format!("WebRTC: {e}"))?;
    }
}

/// The payload type this box sends on an m-line: H.264 in packetization mode 1 for video
/// (constrained baseline preferred, as our encoders produce), Opus for audio.
fn lane_for(rtc: &mut Rtc, mid: Mid, kind: MediaKind) -> Option<Lane> {
    let writer = rtc.writer(mid)?;
    let mut best: Option<(u8, str0m::format::PayloadParams)> = None;
    for p in writer.payload_params() {
        let spec = p.spec();
        let score = match (kind, spec.codec) {
            (MediaKind::Audio, Codec::Opus) => 1,
            (MediaKind::Video, Codec::H264) if spec.format.packetization_mode == Some(1) => {
                match spec.format.profile_level_id.map(|p| p >> 8) {
                    Some(0x42e0) => 3,
                    Some(0x4200) => 2,
                    _ => 1,
                }
            }
            _ => 0,
        };
        if score > best.as_ref().map_or(0, |b| b.0) {
            best = Some((score, *p));
        }
    }
    best.map(|(_, pt)| Lane { mid, pt })
}

fn write(rtc: &mut Rtc, lane: Lane, t: MediaTime, payload: bytes::Bytes) -> Result<(), String> {
    let Some(w) = rtc.writer(lane.mid) else {
        return Ok(());
    };
    w.write(lane.pt.pt(), Instant::now(), t, payload.to_vec())
        .map_err(|e| format!("WebRTC write: {e}"))
}

/// PLI/FIR: jump to the newest group if one started since the reader's; otherwise hold
/// frames back until the next group begins. Returns whether to hold them back.
fn answer_keyframe_request(broadcast: &Broadcast, reader: &mut TrackReader) -> bool {
    let behind = matches!(
        (broadcast.video.newest_group_seq(), reader.current_group_seq()),
        (Some(newest), Some(current)) if newest > current
    );
    if behind {
        *reader = broadcast.video.subscribe();
    }
    !behind
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use cambox_media::broadcast::{track, GroupObject};
    use cambox_media::FrameRate;

    fn obj(t: u64) -> GroupObject {
        GroupObject {
            capture_us: t,
            payload: Bytes::from_static(&[0, 0, 0, 1, 0x65, 1]),
        }
    }

    #[test]
    fn a_keyframe_request_is_answered_with_the_next_group_start() {
        let (mut w, video) = track("video", 4);
        let b = Broadcast {
            name: "t".into(),
            video,
            audio: None,
            rate: FrameRate::per_second(30),
            audio_pre_skip: None,
        };
        w.start_group();
        w.write(obj(0));
        w.write(obj(1));
        let mut r = b.video.subscribe();
        assert_eq!(r.try_next().map(|o| (o.group, o.index)), Some((0, 0)));
        // In the newest group already: hold frames until the next group begins.
        assert!(answer_keyframe_request(&b, &mut r));
        // A newer group exists: jump straight to its keyframe.
        w.start_group();
        w.write(obj(2));
        w.write(obj(3));
        assert!(!answer_keyframe_request(&b, &mut r));
        assert_eq!(r.try_next().map(|o| (o.group, o.index)), Some((1, 0)));
    }
}
