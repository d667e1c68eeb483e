//! The framing of a group stream: the first object in full, the rest as `ObjectNext`.
//!
//! A group stream carries the objects of one group of one track, in order. Repeating the
//! broadcast (32-byte origin and name), track, group and index in every object cost 65
//! bytes and the name per frame: at 250 kbit/s with sound that was about 16 % on top of
//! the media, most of it on 20 ms Opus packets of 80-160 bytes. So only a stream's first
//! object is a whole `Object`; each object after it that continues it (same group, next
//! index, capture time not earlier) is an `ObjectNext` of 10 bytes and the payload: a
//! `u32` capture time delta in microseconds, then the payload to the end of the frame.
//! Anything else (a resume that skips, a clock that went backwards) is sent whole, so the
//! encoder never has to refuse an object.

use bytes::Bytes;

use super::{encode, put_u32, WireError, HEADER_LEN, VERSION};
use crate::msg::{BroadcastId, Msg};

/// What an `ObjectNext` continues: the previous object of the stream, without its payload.
#[derive(Debug, Clone)]
pub(super) struct LastObject {
    broadcast: BroadcastId,
    track: u8,
    group: u64,
    index: u32,
    capture_us: u64,
}

/// Writes the objects of one track's group streams. Keep one per (broadcast, track) and
/// link; a new group starts with a whole `Object`, which the receiver needs on a new stream.
#[derive(Debug, Default, Clone)]
pub struct GroupEncoder {
    /// Group, index and capture time of the last object written.
    last: Option<(u64, u32, u64)>,
}

/// Frame size of an `ObjectNext`, header included, without the payload.
pub const OBJECT_NEXT_FIXED_LEN: usize = HEADER_LEN + 4;

impl GroupEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `msg`'s frame to `out`; returns whether it was a whole `Object` (one that
    /// may start a stream). Messages other than objects are encoded as they are.
    pub fn encode(&mut self, msg: &Msg, out: &mut Vec<u8>) -> bool {
        match self.delta(msg) {
            Some(delta) => {
                let Msg::Object { payload, .. } = msg else {
                    unreachable!("delta is only for objects")
                };
                out.reserve(OBJECT_NEXT_FIXED_LEN + payload.len());
                out.push(VERSION);
                out.push(super::kind::OBJECT_NEXT);
                put_u32(out, (4 + payload.len()) as u32);
                put_u32(out, delta);
                out.extend_from_slice(payload);
                false
            }
            None => {
                encode(msg, out);
                true
            }
        }
    }

    /// The size `encode` would write for `msg`, moving on as `encode` does: the
    /// simulator's byte count without the bytes.
    pub fn frame_len(&mut self, msg: &Msg) -> usize {
        match (self.delta(msg), msg) {
            (Some(_), Msg::Object { payload, .. }) => OBJECT_NEXT_FIXED_LEN + payload.len(),
            _ => super::encoded_len(msg),
        }
    }

    /// The capture time delta when `msg` continues the last object, and moves on to it.
    fn delta(&mut self, msg: &Msg) -> Option<u32> {
        let Msg::Object {
            group,
            index,
            capture_us,
            ..
        } = msg
        else {
            return None;
        };
        let previous = self.last.replace((*group, *index, *capture_us));
        let (g, i, t) = previous?;
        if g != *group || i.checked_add(1) != Some(*index) {
            return None;
        }
        capture_us.checked_sub(t)?.try_into().ok()
    }
}

/// Remembers the object an `ObjectNext` may continue.
pub(super) fn remember(last: &mut Option<LastObject>, msg: &Msg) {
    if let Msg::Object {
        broadcast,
        track,
        group,
        index,
        capture_us,
        ..
    } = msg
    {
        *last = Some(LastObject {
            broadcast: broadcast.clone(),
            track: *track,
            group: *group,
            index: *index,
            capture_us: *capture_us,
        });
    }
}

/// Decodes an `ObjectNext` body into the whole object it stands for.
pub(super) fn read_next(last: &mut Option<LastObject>, body: &[u8]) -> Result<Msg, WireError> {
    let Some(prev) = last.as_mut() else {
        return Err(WireError::ObjectNextOutOfPlace(
            "before any Object on its group stream",
        ));
    };
    let Some((delta, payload)) = body.split_first_chunk::<4>() else {
        return Err(WireError::Truncated {
            kind: "ObjectNext",
            field: "capture_delta_us",
        });
    };
    let (Some(index), Some(capture_us)) = (
        prev.index.checked_add(1),
        prev.capture_us
            .checked_add(u32::from_be_bytes(*delta).into()),
    ) else {
        return Err(WireError::ObjectNextOutOfPlace(
            "past the largest index or capture time",
        ));
    };
    prev.index = index;
    prev.capture_us = capture_us;
    Ok(Msg::Object {
        broadcast: prev.broadcast.clone(),
        track: prev.track,
        group: prev.group,
        index,
        capture_us,
        // A copy of exactly the payload, as for a whole Object: the cache keeps it.
        payload: Bytes::copy_from_slice(payload),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::NodeId;
    use crate::wire::Decoder;

    fn object(group: u64, index: u32, capture_us: u64, len: usize) -> Msg {
        Msg::Object {
            broadcast: BroadcastId {
                origin: NodeId([9; 32]),
                name: "front-door".into(),
            },
            track: 1,
            group,
            index,
            capture_us,
            payload: Bytes::from(vec![index as u8; len]),
        }
    }

    fn decode_all(bytes: &[u8], chunk: usize) -> Result<Vec<Msg>, WireError> {
        let mut d = Decoder::group_stream();
        let mut out = Vec::new();
        for c in bytes.chunks(chunk) {
            d.push(c);
            while let Some(m) = d.next()? {
                out.push(m);
            }
        }
        Ok(out)
    }

    #[test]
    fn a_group_round_trips_with_only_its_first_object_whole() {
        let msgs: Vec<Msg> = (0..50)
            .map(|i| object(7, i, 1_000 + 20_000 * i as u64, 120))
            .collect();
        let mut enc = GroupEncoder::new();
        let mut sizer = GroupEncoder::new();
        let mut bytes = Vec::new();
        let whole: Vec<bool> = msgs
            .iter()
            .map(|m| {
                let before = bytes.len();
                let w = enc.encode(m, &mut bytes);
                assert_eq!(sizer.frame_len(m), bytes.len() - before, "frame_len agrees");
                w
            })
            .collect();
        assert_eq!(whole.iter().filter(|w| **w).count(), 1);
        assert!(whole[0]);
        // 49 objects at 10 bytes of framing each instead of 65 + the name.
        let payload = 50 * 120;
        let first = crate::wire::encoded_len(&msgs[0]);
        assert_eq!(bytes.len(), first + 49 * (OBJECT_NEXT_FIXED_LEN + 120));
        assert!(bytes.len() < payload + payload / 10 + first);
        for chunk in [1, 7, 4096] {
            assert_eq!(
                decode_all(&bytes, chunk).unwrap(),
                msgs,
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn what_does_not_continue_the_last_object_is_sent_whole() {
        let msgs = [
            object(7, 3, 5_000, 10), // a resume: the stream starts mid-group
            object(7, 4, 4_000, 10), // capture time went backwards
            object(7, 6, 6_000, 10), // an index skipped
            object(8, 0, 7_000, 10), // another group
            object(8, 1, 7_000 + u32::MAX as u64 + 1, 10), // a delta too large
            object(8, 2, 7_000 + u32::MAX as u64 + 2, 10),
        ];
        let mut enc = GroupEncoder::new();
        let mut bytes = Vec::new();
        let whole: Vec<bool> = msgs.iter().map(|m| enc.encode(m, &mut bytes)).collect();
        assert_eq!(whole, [true, true, true, true, true, false]);
        assert_eq!(decode_all(&bytes, 3).unwrap(), msgs);
    }

    #[test]
    fn object_next_out_of_place_is_refused() {
        let mut enc = GroupEncoder::new();
        let mut bytes = Vec::new();
        enc.encode(&object(1, 0, 0, 4), &mut bytes);
        let first = bytes.len();
        enc.encode(&object(1, 1, 10, 4), &mut bytes);
        let next = bytes[first..].to_vec();

        let mut d = Decoder::group_stream();
        d.push(&next);
        assert_eq!(
            d.next().unwrap_err().to_string(),
            "ObjectNext before any Object on its group stream"
        );
        let mut d = Decoder::new();
        d.push(&bytes);
        assert!(matches!(d.next(), Ok(Some(Msg::Object { index: 0, .. }))));
        assert_eq!(
            d.next().unwrap_err().to_string(),
            "ObjectNext on the control stream"
        );
        // Shorter than its delta.
        let mut d = Decoder::group_stream();
        d.push(&bytes[..first]);
        d.push(&[VERSION, super::super::kind::OBJECT_NEXT, 0, 0, 0, 2, 0, 0]);
        d.next().unwrap();
        assert!(matches!(d.next(), Err(WireError::Truncated { .. })));
    }
}
