//! The broadcast model, after Media over QUIC: a broadcast has tracks, a track is a
//! sequence of groups, a group is a sequence of objects.
//!
//! A video group is one GOP, starting at a keyframe; an audio group is a run of Opus
//! packets. A track keeps its newest groups, so a viewer who joins starts at the last
//! keyframe at once. A reader that falls behind finishes the group it is in and then jumps
//! to the newest group: whole stale groups are dropped, never frames in the middle of a
//! group, so a decoder never sees a broken reference chain and latency stays bounded.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::watch;

/// One frame of a track, with the capture time of its first sample.
#[derive(Debug, Clone)]
pub struct GroupObject {
    pub capture_us: u64,
    pub payload: Bytes,
}

#[derive(Debug)]
struct Group {
    seq: u64,
    objects: Mutex<Vec<GroupObject>>,
}

#[derive(Debug, Default)]
struct TrackState {
    /// Newest last. The last group is the one being written (unless the track is closed).
    groups: VecDeque<Arc<Group>>,
    next_seq: u64,
    closed: bool,
}

#[derive(Debug)]
struct TrackShared {
    name: String,
    cache_groups: usize,
    state: Mutex<TrackState>,
    /// Bumped on every write, so readers wake without polling.
    changed: watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a track half-updated (every update is a
    // single push), so a poisoned lock is safe to keep using.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TrackShared {
    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// Creates a track: the writer for the producer and a handle readers subscribe through.
/// `cache_groups` is how many of the newest groups stay available to new readers (>= 1).
pub fn track(name: &str, cache_groups: usize) -> (TrackWriter, Track) {
    let (changed, _) = watch::channel(0);
    let shared = Arc::new(TrackShared {
        name: name.into(),
        cache_groups: cache_groups.max(1),
        state: Mutex::new(TrackState::default()),
        changed,
    });
    (
        TrackWriter {
            shared: shared.clone(),
        },
        Track { shared },
    )
}

/// The producing end of a track. Dropping it closes the track.
#[derive(Debug)]
pub struct TrackWriter {
    shared: Arc<TrackShared>,
}

impl TrackWriter {
    /// Starts a new group (a keyframe for video) and returns its sequence number.
    pub fn start_group(&mut self) -> u64 {
        let mut st = lock(&self.shared.state);
        let seq = st.next_seq;
        st.next_seq += 1;
        st.groups.push_back(Arc::new(Group {
            seq,
            objects: Mutex::new(Vec::new()),
        }));
        while st.groups.len() > self.shared.cache_groups {
            st.groups.pop_front();
        }
        drop(st);
        self.shared.bump();
        seq
    }

    /// Appends an object to the current group; starts the first group if there is none.
    pub fn write(&mut self, object: GroupObject) {
        let group = {
            let st = lock(&self.shared.state);
            st.groups.back().cloned()
        };
        let group = match group {
            Some(g) => g,
            None => {
                self.start_group();
                match lock(&self.shared.state).groups.back().cloned() {
                    Some(g) => g,
                    None => return,
                }
            }
        };
        lock(&group.objects).push(object);
        self.shared.bump();
    }

    pub fn close(self) {}
}

impl Drop for TrackWriter {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.bump();
    }
}

/// A handle on a track from which any number of readers subscribe.
#[derive(Debug, Clone)]
pub struct Track {
    shared: Arc<TrackShared>,
}

impl Track {
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// A reader that starts at the newest group (fast join).
    pub fn subscribe(&self) -> TrackReader {
        TrackReader {
            shared: self.shared.clone(),
            changed: self.shared.changed.subscribe(),
            group: None,
            index: 0,
            start_at_us: None,
            dropped_groups: 0,
            dropped_reported: 0,
        }
    }

    /// A reader that starts at the newest cached group holding `capture_us`, skipping
    /// objects captured before it: used to start audio where the video's keyframe starts.
    pub fn subscribe_from(&self, capture_us: u64) -> TrackReader {
        let mut r = self.subscribe();
        r.start_at_us = Some(capture_us);
        r
    }

    /// First object of the newest group, if any: the keyframe a new viewer starts with.
    pub fn latest_group_head(&self) -> Option<GroupObject> {
        let st = lock(&self.shared.state);
        let g = st.groups.back()?;
        let head = lock(&g.objects).first().cloned();
        head
    }

    /// Sequence number of the newest group, if any.
    pub fn newest_group_seq(&self) -> Option<u64> {
        lock(&self.shared.state).groups.back().map(|g| g.seq)
    }

    pub fn is_closed(&self) -> bool {
        lock(&self.shared.state).closed
    }
}

/// One reader's position in a track.
#[derive(Debug)]
pub struct TrackReader {
    shared: Arc<TrackShared>,
    changed: watch::Receiver<u64>,
    /// Held by the reader, so eviction from the cache never cuts a group it is reading.
    group: Option<Arc<Group>>,
    index: usize,
    start_at_us: Option<u64>,
    dropped_groups: u64,
    /// What `take_dropped` has already handed out.
    dropped_reported: u64,
}

/// What a reader gets: an object and the group it belongs to.
#[derive(Debug, Clone)]
pub struct ReadObject {
    pub group: u64,
    /// Index within the group; 0 is the group's first object (a keyframe for video).
    pub index: usize,
    pub object: GroupObject,
}

impl TrackReader {
    /// Whole groups this reader skipped because it fell behind.
    pub fn dropped_groups(&self) -> u64 {
        self.dropped_groups
    }

    /// Groups skipped since the last call: a viewer counts its drops (and restarts its
    /// sound after a skip) without keeping its own copy of the total.
    pub fn take_dropped(&mut self) -> u64 {
        let new = self.dropped_groups - self.dropped_reported;
        self.dropped_reported = self.dropped_groups;
        new
    }

    /// Sequence number of the group being read, once reading has started.
    pub fn current_group_seq(&self) -> Option<u64> {
        self.group.as_ref().map(|g| g.seq)
    }

    /// Returns the next object without waiting, or `None` if there is none yet.
    pub fn try_next(&mut self) -> Option<ReadObject> {
        loop {
            let st = lock(&self.shared.state);
            let group = match &self.group {
                Some(g) => g.clone(),
                None => {
                    let start = match self.start_at_us {
                        // The newest group whose first object is at or before the start time.
                        Some(t) => st
                            .groups
                            .iter()
                            .rev()
                            .find(|g| lock(&g.objects).first().is_some_and(|o| o.capture_us <= t))
                            .or(st.groups.front())
                            .cloned(),
                        None => st.groups.back().cloned(),
                    };
                    let g = start?;
                    self.group = Some(g.clone());
                    self.index = 0;
                    g
                }
            };
            let newest = st.groups.back().map(|g| g.seq);
            drop(st);
            let objects = lock(&group.objects);
            if let Some(object) = objects.get(self.index).cloned() {
                drop(objects);
                let index = self.index;
                self.index += 1;
                if let Some(t) = self.start_at_us {
                    if object.capture_us < t {
                        continue;
                    }
                    self.start_at_us = None;
                }
                return Some(ReadObject {
                    group: group.seq,
                    index,
                    object,
                });
            }
            drop(objects);
            // This group is finished once a newer one exists.
            let newest = newest?;
            if newest <= group.seq {
                return None;
            }
            let st = lock(&self.shared.state);
            let next = if newest > group.seq + 1 {
                // Behind by more than a group: skip straight to the newest.
                self.dropped_groups += newest - group.seq - 1;
                st.groups.back().cloned()
            } else {
                st.groups.iter().find(|g| g.seq == group.seq + 1).cloned()
            };
            drop(st);
            self.group = next;
            self.index = 0;
            self.group.as_ref()?;
        }
    }

    /// Waits for the next object; `None` once the track is closed and fully read.
    pub async fn next(&mut self) -> Option<ReadObject> {
        loop {
            self.changed.borrow_and_update();
            if let Some(o) = self.try_next() {
                return Some(o);
            }
            if lock(&self.shared.state).closed {
                return self.try_next();
            }
            if self.changed.changed().await.is_err() {
                return self.try_next();
            }
        }
    }
}

/// A live broadcast: a name, its tracks, and what a player must know to decode them.
#[derive(Debug, Clone)]
pub struct Broadcast {
    pub name: String,
    pub video: Track,
    pub audio: Option<Track>,
    /// The video's nominal frame rate (sample durations in MP4, RTP clock steps).
    pub rate: crate::frame::FrameRate,
    /// Opus pre-skip in samples, when there is an audio track.
    pub audio_pre_skip: Option<u16>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(t: u64) -> GroupObject {
        GroupObject {
            capture_us: t,
            payload: Bytes::from(t.to_be_bytes().to_vec()),
        }
    }

    /// Writes `groups` groups of `per` objects, object time = g * 100 + i.
    fn fill(w: &mut TrackWriter, groups: std::ops::Range<u64>, per: u64) {
        for g in groups {
            w.start_group();
            for i in 0..per {
                w.write(obj(g * 100 + i));
            }
        }
    }

    #[test]
    fn new_reader_starts_at_the_newest_group() {
        let (mut w, t) = track("video", 2);
        fill(&mut w, 0..3, 5);
        let mut r = t.subscribe();
        let first = r.try_next().unwrap();
        assert_eq!(
            (first.group, first.index, first.object.capture_us),
            (2, 0, 200)
        );
        assert_eq!(t.latest_group_head().unwrap().capture_us, 200);
    }

    #[test]
    fn reader_follows_group_to_group_in_order() {
        let (mut w, t) = track("video", 2);
        w.start_group();
        let mut r = t.subscribe();
        let mut seen = Vec::new();
        for g in 0..4u64 {
            if g > 0 {
                w.start_group();
            }
            for i in 0..3 {
                w.write(obj(g * 100 + i));
                while let Some(o) = r.try_next() {
                    seen.push(o.object.capture_us);
                }
            }
        }
        assert_eq!(
            seen,
            vec![0, 1, 2, 100, 101, 102, 200, 201, 202, 300, 301, 302]
        );
        assert_eq!(r.dropped_groups(), 0);
    }

    #[test]
    fn slow_reader_finishes_its_group_then_drops_whole_groups() {
        let (mut w, t) = track("video", 1);
        w.start_group();
        w.write(obj(0));
        let mut r = t.subscribe();
        assert_eq!(r.try_next().unwrap().object.capture_us, 0);
        w.write(obj(1));
        // The reader stalls while four more groups are written; the cache holds only one.
        fill(&mut w, 1..5, 3);
        let rest: Vec<u64> = std::iter::from_fn(|| r.try_next())
            .map(|o| o.object.capture_us)
            .collect();
        // Its own group to the end, then the newest group from its keyframe: never a partial group.
        assert_eq!(rest, vec![1, 400, 401, 402]);
        assert_eq!(r.dropped_groups(), 3);
        assert_eq!(r.take_dropped(), 3);
        assert_eq!(r.take_dropped(), 0, "each skip is handed out once");
    }

    #[test]
    fn subscribe_from_skips_earlier_objects() {
        let (mut w, t) = track("audio", 3);
        fill(&mut w, 0..3, 50);
        let mut r = t.subscribe_from(125);
        assert_eq!(r.try_next().unwrap().object.capture_us, 125);
    }

    #[tokio::test]
    async fn closing_ends_readers_after_the_last_object() {
        let (mut w, t) = track("video", 2);
        let mut r = t.subscribe();
        let h = tokio::spawn(async move {
            let mut n = 0;
            while r.next().await.is_some() {
                n += 1;
            }
            n
        });
        tokio::task::yield_now().await;
        fill(&mut w, 0..1, 4);
        drop(w);
        assert_eq!(h.await.unwrap(), 4);
    }
}
