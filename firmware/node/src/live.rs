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
use cambox_media::{Broadcast, GroupObject};
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// Fragments queued per viewer before its reader stops and, later, skips groups.
const VIEWER_QUEUE: usize = 16;
/// Opus packets (20 ms each) held for a video frame before they are sent without one.
const AUDIO_ALONE_AFTER: usize = 10;
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
    tokio::spawn(async move {
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
        // Opus packets wait here for the next video frame, so each fragment carries both
        // tracks (what MSE expects of a muxed stream) at a cost of at most one frame.
        let mut pending: Vec<GroupObject> = Vec::new();
        loop {
            let fragment = tokio::select! {
                v = video.next() => {
                    let Some(o) = v else { break };
                    let skipped = video.take_dropped();
                    if skipped > 0 {
                        // The picture skipped ahead to a newer group: the sound follows it,
                        // so both tracks resume at the same instant.
                        metrics.viewer_groups_dropped.inc_by(skipped);
                        pending.clear();
                        audio = broadcast.audio.as_ref().map(|a| a.subscribe_from(o.object.capture_us));
                    }
                    let packets: Vec<(u64, &[u8])> =
                        pending.iter().map(|p| (p.capture_us, &p.payload[..])).collect();
                    let f = frag.av(Some((o.object.capture_us, o.index == 0, &o.object.payload)), &packets);
                    pending.clear();
                    f
                },
                a = async { match audio.as_mut() { Some(r) => r.next().await, None => std::future::pending().await } } => match a {
                    Some(o) if o.object.capture_us >= base => {
                        pending.push(o.object);
                        if pending.len() < AUDIO_ALONE_AFTER {
                            continue;
                        }
                        // No picture for a while (a stalled camera): sound goes on alone.
                        let packets: Vec<(u64, &[u8])> =
                            pending.iter().map(|p| (p.capture_us, &p.payload[..])).collect();
                        let f = frag.av(None, &packets);
                        pending.clear();
                        f
                    }
                    Some(_) => continue,
                    None => { audio = None; continue }
                },
                _ = tx.closed() => break,
            };
            let Ok(fragment) = fragment else { break };
            if !send(fragment).await {
                break;
            }
        }
    });
    Ok((mime, rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cambox_media::broadcast::{track, GroupObject, TrackWriter};
    use cambox_media::encode::openh264::OpenH264Encoder;
    use cambox_media::encode::{VideoEncoder, VideoEncoderSettings};
    use cambox_media::fmp4::{Mp4Event, Mp4Reader};
    use cambox_media::{FrameRate, RawFrame, VideoFormat};

    const PER_GROUP: u8 = 10;

    /// A real keyframe (the viewer reads its SPS), then fake slices that name their place.
    fn write_group(w: &mut TrackWriter, g: u8, keyframe: &Bytes) {
        w.start_group();
        for i in 0..PER_GROUP {
            let payload = if g == 0 && i == 0 {
                keyframe.clone()
            } else {
                let nal = if i == 0 { 0x65 } else { 0x41 };
                // A trailing non-zero byte: Annex-B parsing trims trailing zeros.
                Bytes::from(vec![0, 0, 0, 1, nal, g, i, 0xFF])
            };
            w.write(GroupObject {
                capture_us: 1_000_000 + (g as u64 * PER_GROUP as u64 + i as u64) * 33_333,
                payload,
            });
        }
    }

    #[tokio::test]
    async fn a_viewer_that_stops_reading_resumes_at_a_whole_newer_group() {
        let format = VideoFormat {
            width: 160,
            height: 96,
            rate: FrameRate::per_second(30),
        };
        let mut enc = OpenH264Encoder::new(VideoEncoderSettings {
            format,
            bitrate: 100_000,
            keyframe_interval: 30,
        })
        .unwrap();
        let raw = RawFrame {
            number: 0,
            capture_us: 0,
            width: 160,
            height: 96,
            data: vec![90; RawFrame::i420_len(160, 96)],
        };
        let keyframe = enc.encode(&raw, true).unwrap().unwrap().data;

        let (mut w, video) = track("video", 2);
        let metrics = Arc::new(Metrics::new());
        let broadcast = Broadcast {
            name: "t".into(),
            video,
            audio: None,
            rate: format.rate,
            audio_pre_skip: None,
        };
        write_group(&mut w, 0, &keyframe);
        let (_, mut rx) = start_viewer(broadcast, metrics.clone()).await.unwrap();
        // The viewer does not read while five more groups are produced.
        for g in 1..=5 {
            write_group(&mut w, g, &keyframe);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(w);
        let mut reader = Mp4Reader::new();
        let mut seen = Vec::new();
        while let Some(bytes) = rx.recv().await {
            for e in reader.push(&bytes).unwrap() {
                if let Mp4Event::Fragment { samples, .. } = e {
                    for s in samples {
                        // Length prefix (4) + NAL header, then our (group, index) bytes.
                        let id = if s.data.len() == 8 {
                            (s.data[5], s.data[6])
                        } else {
                            (0, 0)
                        };
                        seen.push((id, s.keyframe));
                    }
                }
            }
        }
        let groups: Vec<u8> = seen
            .iter()
            .filter(|(_, k)| *k)
            .map(|((g, _), _)| *g)
            .collect();
        assert_eq!(groups.first(), Some(&0));
        assert_eq!(groups.last(), Some(&5), "it ends at the newest group");
        assert!(groups.len() < 6, "stale groups were dropped: {groups:?}");
        // Every group it got, it got whole and in order, starting at its keyframe.
        for g in &groups {
            let frames: Vec<u8> = seen
                .iter()
                .filter(|((sg, _), _)| sg == g)
                .map(|((_, i), _)| *i)
                .collect();
            assert_eq!(frames, (0..PER_GROUP).collect::<Vec<_>>(), "group {g}");
        }
        assert_eq!(metrics.viewer_groups_dropped.get(), 6 - groups.len() as u64);
        assert_eq!(
            metrics.viewers.get(),
            0,
            "the viewer is gone once its stream ended"
        );
    }
}
