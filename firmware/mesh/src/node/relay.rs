//! Relaying: the group cache, whole groups only, and a queue per child so a slow child
//! loses whole old groups while its siblings never wait.

use bytes::Bytes;

use std::collections::VecDeque;

use super::{Event, Node, Peer, Sub};
use crate::msg::{BroadcastId, Msg, NodeId, ResumePoint};

/// An object waiting for room in a neighbour's window (`msg` is a `Msg::Object`; its
/// broadcast is not copied out of it: one copy of the name per object and child less).
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) track: u8,
    pub(super) group: u64,
    pub(super) index: u32,
    pub(super) msg: Msg,
}

impl Queued {
    fn is_of(&self, b: &BroadcastId, track: u8) -> bool {
        self.track == track && matches!(&self.msg, Msg::Object { broadcast, .. } if broadcast == b)
    }
}

#[derive(Debug, Clone)]
pub(super) struct CachedObject {
    pub(super) index: u32,
    pub(super) capture_us: u64,
    pub(super) payload: Bytes,
}

#[derive(Debug)]
pub(super) struct CachedGroup {
    pub(super) group: u64,
    pub(super) objects: Vec<CachedObject>,
}

/// Where a track stands at this node: the group being received and the next index needed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Position {
    pub(super) group: u64,
    pub(super) next: u32,
}

/// A track this node has received an object of: where it stands, and its newest groups.
#[derive(Debug)]
pub(super) struct TrackState {
    pub(super) track: u8,
    pub(super) position: Position,
    pub(super) groups: VecDeque<CachedGroup>,
}

impl Sub {
    /// When the parent counts as lost for sending nothing: `starve` after the last
    /// object, or later while it is waited for (`patience`).
    pub(super) fn starves_at(&self, starve: std::time::Duration) -> Option<std::time::Instant> {
        self.last_object
            .map(|t| self.patience.unwrap_or(t + starve))
    }

    /// The broadcast's bit rate as its cached groups show it (all tracks), in kbit/s; 0
    /// before a group has two objects.
    pub(super) fn rate_kbps(&self) -> u64 {
        let (mut bytes, mut first, mut last) = (0u64, u64::MAX, 0u64);
        for o in self
            .tracks
            .iter()
            .flat_map(|t| &t.groups)
            .flat_map(|g| &g.objects)
        {
            bytes += o.payload.len() as u64;
            first = first.min(o.capture_us);
            last = last.max(o.capture_us);
        }
        match last.checked_sub(first) {
            Some(span) if span > 0 => bytes * 8 * 1000 / span,
            _ => 0,
        }
    }
}

impl Node {
    /// An object of a broadcast originating here.
    pub fn handle_local_object(
        &mut self,
        broadcast: &BroadcastId,
        track: u8,
        group: u64,
        index: u32,
        capture_us: u64,
        payload: Bytes,
    ) {
        if self.origins.contains_key(broadcast) {
            self.ingest(broadcast, track, group, index, capture_us, payload);
            self.flush();
        }
    }

    /// Control first (it is small and steers everything), then media within the window.
    pub(super) fn flush_peer(&mut self, to: NodeId) {
        if let Some(p) = self.peers.get_mut(&to) {
            drain(to, p, self.cfg.window_bytes, &mut self.events);
        }
    }

    /// Sends a new child what the cache holds: from its resume point when we still have
    /// that group, else from the newest group's first object (fast join).
    pub(super) fn serve_cache(&mut self, child: NodeId, b: &BroadcastId, resume: &[ResumePoint]) {
        let Some(s) = self.subs.get(b) else { return };
        let mut out = Vec::new();
        for TrackState { track, groups, .. } in &s.tracks {
            let from = resume
                .iter()
                .find(|r| r.track == *track)
                .filter(|r| groups.iter().any(|g| g.group == r.group))
                .map(|r| (r.group, r.index));
            let (start_group, start_index) = match from {
                Some(p) => p,
                None => match groups.back() {
                    Some(g) => (g.group, 0),
                    None => continue,
                },
            };
            for g in groups.iter().filter(|g| g.group >= start_group) {
                for o in &g.objects {
                    if g.group == start_group && o.index < start_index {
                        continue;
                    }
                    out.push((*track, g.group, o.clone()));
                }
            }
        }
        for (track, group, o) in out {
            self.enqueue_media(child, b, track, group, o.index, o.capture_us, o.payload);
        }
    }

    /// Hands this node's own viewers the newest cached group of each track, whole.
    pub(super) fn deliver_newest_group(&mut self, b: &BroadcastId) {
        let Some(s) = self.subs.get(b) else { return };
        for TrackState { track, groups, .. } in &s.tracks {
            let Some(g) = groups.back() else { continue };
            for o in &g.objects {
                self.events.push_back(Event::Deliver {
                    broadcast: b.clone(),
                    track: *track,
                    group: g.group,
                    index: o.index,
                    capture_us: o.capture_us,
                    payload: o.payload.clone(),
                });
            }
        }
    }

    /// Accepts an object if it continues its group or starts a newer one; caches it,
    /// delivers it to local viewers and forwards it to children.
    pub(super) fn ingest(
        &mut self,
        b: &BroadcastId,
        track: u8,
        group: u64,
        index: u32,
        capture_us: u64,
        payload: Bytes,
    ) {
        let cache_groups = self.cfg.cache_groups.max(1);
        let Some(s) = self.subs.get_mut(b) else {
            return;
        };
        let at = s.tracks.iter().position(|t| t.track >= track);
        let known = at.filter(|&i| s.tracks[i].track == track);
        let accept = match known.map(|i| s.tracks[i].position) {
            None => index == 0,
            Some(p) => (group == p.group && index == p.next) || (group > p.group && index == 0),
        };
        if !accept {
            return;
        }
        let position = Position {
            group,
            next: index + 1,
        };
        let i = match known {
            Some(i) => {
                s.tracks[i].position = position;
                i
            }
            None => {
                // In track order, as the resume points and the cache are sent.
                let i = at.unwrap_or(s.tracks.len());
                let groups = VecDeque::new();
                s.tracks.insert(
                    i,
                    TrackState {
                        track,
                        position,
                        groups,
                    },
                );
                i
            }
        };
        let groups = &mut s.tracks[i].groups;
        if index == 0 {
            // As long as the last group: growing it object by object copied it four
            // times a group.
            let room = groups.back().map_or(0, |g| g.objects.len());
            groups.push_back(CachedGroup {
                group,
                objects: Vec::with_capacity(room),
            });
            while groups.len() > cache_groups {
                groups.pop_front();
            }
        }
        if let Some(g) = groups.back_mut() {
            g.objects.push(CachedObject {
                index,
                capture_us,
                payload: payload.clone(),
            });
        }
        let mut children = std::mem::take(&mut self.fanout);
        children.extend(s.children.iter().copied());
        if self.wants.contains(b) {
            self.events.push_back(Event::Deliver {
                broadcast: b.clone(),
                track,
                group,
                index,
                capture_us,
                payload: payload.clone(),
            });
        }
        for c in children.drain(..) {
            self.enqueue_media(c, b, track, group, index, capture_us, payload.clone());
        }
        self.fanout = children;
    }

    /// Queues an object for one child. A slow child loses whole old groups: when a new
    /// group arrives, queued groups it has not started receiving are dropped; a group it
    /// has started is finished first. Siblings have queues of their own and never wait.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn enqueue_media(
        &mut self,
        to: NodeId,
        b: &BroadcastId,
        track: u8,
        group: u64,
        index: u32,
        capture_us: u64,
        payload: Bytes,
    ) {
        let Some(p) = self.peers.get_mut(&to) else {
            return;
        };
        if index == 0 {
            let started: Option<u64> = p
                .media
                .iter()
                .find(|q| q.is_of(b, track))
                .filter(|q| q.index > 0)
                .map(|q| q.group);
            p.media
                .retain(|q| !q.is_of(b, track) || Some(q.group) == started);
        }
        self.ready.push(to);
        p.media.push_back(Queued {
            track,
            group,
            index,
            msg: Msg::Object {
                broadcast: b.clone(),
                track,
                group,
                index,
                capture_us,
                payload,
            },
        });
    }
}

/// What a queued media message counts against a neighbour's window: the driver reports
/// the same figure to [`Node::handle_transmitted`] once the message has left.
pub fn media_len(msg: &Msg) -> usize {
    match msg {
        Msg::Object { payload, .. } => payload.len() + 64,
        _ => 64,
    }
}

/// Moves a neighbour's control messages, and media up to its window, to the driver.
pub(super) fn drain(to: NodeId, p: &mut Peer, window: usize, events: &mut VecDeque<Event>) {
    while let Some(msg) = p.control.pop_front() {
        events.push_back(Event::Transmit { to, msg });
    }
    while p.in_flight < window {
        let Some(q) = p.media.pop_front() else { break };
        p.in_flight += media_len(&q.msg);
        events.push_back(Event::Transmit { to, msg: q.msg });
    }
}
