//! The binary form of [`Msg`], version 2. `docs/protocol.md` has the byte tables.
//!
//! A frame is a 6-byte header — protocol version (u8), message type (u8), body length
//! (u32) — followed by the body. Integers are big-endian and fixed width: a message's
//! size is then a sum of constants, so [`encoded_len`] is exact without encoding, and a
//! field's position never depends on a value before it. Strings are a u16 byte length and
//! UTF-8, node ids 32 raw bytes, lists a u16 count and the items, payloads a u32 length
//! and the bytes.
//!
//! The version byte comes first so that a later version may change everything after it;
//! a frame of another version is refused before anything else in it is read. The length
//! prefix lets a reader find frame boundaries without understanding the body, and the
//! limit on it bounds what one peer can make us buffer.
//!
//! The encoding is canonical: a frame that decodes re-encodes to the same bytes (booleans
//! must be 0 or 1, nothing may follow the last field).

use bytes::{Buf, Bytes, BytesMut};

use crate::msg::{
    BroadcastId, CatalogEntry, Hop, Msg, NodeId, ResumePoint, Routed, MAX_CHUNK, MAX_HAVE,
    MAX_OFFER, MAX_REVOCATIONS, MAX_ROUTED_BODY,
};

mod group;
pub use group::GroupEncoder;

/// The only version this node speaks. Version 1 had no box name in catalog entries; a
/// version-1 peer's first frame (its Hello) is refused with both versions in the reason.
pub const VERSION: u8 = 2;
/// Version, type and body length.
pub const HEADER_LEN: usize = 6;
/// Largest frame, header included. Bounds the memory one connection can pin; an H.264
/// keyframe from a Pi is far below it.
pub const MAX_FRAME: usize = 4 << 20;
/// Longest string in bytes (broadcast names, site names): they end up in logs, host
/// names and UIs, so they stay short.
pub const MAX_STRING: usize = 1024;
/// Track numbers are a u8, so a broadcast cannot have more distinct tracks.
pub const MAX_TRACKS: usize = 256;
/// One resume point per track.
pub const MAX_RESUME: usize = 256;
/// Hops from an origin; far beyond any tree we expect, small enough to refuse garbage.
pub const MAX_PATH: usize = 1024;
/// Alternatives offered in a redirect.
pub const MAX_REDIRECT: usize = 256;
/// Catalog entries and interest lists: whatever a u16 count holds (the frame limit
/// bounds them further).
pub const MAX_LIST: usize = u16::MAX as usize;

/// Message type codes. 0 is reserved so that a zeroed buffer is never a message.
mod kind {
    pub const HELLO: u8 = 0x01;
    pub const CATALOG: u8 = 0x02;
    pub const INTEREST: u8 = 0x03;
    pub const SUBSCRIBE: u8 = 0x04;
    pub const SUBSCRIBE_OK: u8 = 0x05;
    pub const REDIRECT: u8 = 0x06;
    pub const UNSUBSCRIBE: u8 = 0x07;
    pub const OBJECT: u8 = 0x08;
    pub const PING: u8 = 0x09;
    pub const PONG: u8 = 0x0a;
    pub const GOODBYE: u8 = 0x0b;
    pub const ADDRESSES: u8 = 0x0c;
    pub const ROUTED: u8 = 0x0d;
    pub const FIND: u8 = 0x0e;
    pub const FOUND: u8 = 0x0f;
    pub const OBJECT_NEXT: u8 = 0x10;
    pub const SITE_MATES: u8 = 0x11;
    pub const LINK_DOWN: u8 = 0x12;
    pub const INTEREST_CHANGE: u8 = 0x13;
    pub const REVOCATIONS: u8 = 0x14;
    pub const UPDATE_OFFER: u8 = 0x15;
    pub const CHUNK_HAVE: u8 = 0x16;
    pub const CHUNK_GET: u8 = 0x17;
    pub const CHUNK_DATA: u8 = 0x18;
    pub const UPDATE_ROLLOUT: u8 = 0x19;
}

/// Why bytes from a peer are not a valid frame. Every one of them means the peer is
/// broken or speaks something else: the driver logs it and closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error(
        "peer speaks protocol version {version}, this node speaks version {}",
        VERSION
    )]
    UnknownVersion { version: u8 },
    #[error("unknown message type {kind:#04x}")]
    UnknownType { kind: u8 },
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    FrameTooLarge { len: usize, max: usize },
    #[error("{kind}: field `{field}` is truncated")]
    Truncated {
        kind: &'static str,
        field: &'static str,
    },
    #[error("{kind}: field `{field}` is not valid UTF-8")]
    InvalidUtf8 {
        kind: &'static str,
        field: &'static str,
        #[source]
        source: std::str::Utf8Error,
    },
    #[error("{kind}: field `{field}` is {len} bytes long, limit {max}")]
    StringTooLong {
        kind: &'static str,
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{kind}: field `{field}` holds {count} items, limit {max}")]
    CountOverLimit {
        kind: &'static str,
        field: &'static str,
        count: usize,
        max: usize,
    },
    #[error("{kind}: field `{field}` is {value}, not a boolean (0 or 1)")]
    InvalidBool {
        kind: &'static str,
        field: &'static str,
        value: u8,
    },
    #[error("{kind}: {extra} bytes left in the frame after the last field")]
    TrailingBytes { kind: &'static str, extra: usize },
    #[error("ObjectNext {0}")]
    ObjectNextOutOfPlace(&'static str),
}

fn kind_of(msg: &Msg) -> u8 {
    match msg {
        Msg::Hello { .. } => kind::HELLO,
        Msg::Catalog { .. } => kind::CATALOG,
        Msg::Interest { .. } => kind::INTEREST,
        Msg::Subscribe { .. } => kind::SUBSCRIBE,
        Msg::SubscribeOk { .. } => kind::SUBSCRIBE_OK,
        Msg::Redirect { .. } => kind::REDIRECT,
        Msg::Unsubscribe { .. } => kind::UNSUBSCRIBE,
        Msg::Object { .. } => kind::OBJECT,
        Msg::Ping { .. } => kind::PING,
        Msg::Pong { .. } => kind::PONG,
        Msg::Goodbye => kind::GOODBYE,
        Msg::Addresses { .. } => kind::ADDRESSES,
        Msg::Routed(_) => kind::ROUTED,
        Msg::Find { .. } => kind::FIND,
        Msg::Found { .. } => kind::FOUND,
        Msg::SiteMates { .. } => kind::SITE_MATES,
        Msg::LinkDown { .. } => kind::LINK_DOWN,
        Msg::InterestChange { .. } => kind::INTEREST_CHANGE,
        Msg::Revocations { .. } => kind::REVOCATIONS,
        Msg::UpdateOffer { .. } => kind::UPDATE_OFFER,
        Msg::UpdateRollout { .. } => kind::UPDATE_ROLLOUT,
        Msg::ChunkHave { .. } => kind::CHUNK_HAVE,
        Msg::ChunkGet { .. } => kind::CHUNK_GET,
        Msg::ChunkData { .. } => kind::CHUNK_DATA,
    }
}

/// The message's type by name, for counters and logs.
pub fn msg_name(msg: &Msg) -> &'static str {
    kind_name(kind_of(msg)).unwrap_or("unknown")
}

/// Names for error messages; `None` is how an unknown type is recognised.
fn kind_name(kind: u8) -> Option<&'static str> {
    Some(match kind {
        kind::HELLO => "Hello",
        kind::CATALOG => "Catalog",
        kind::INTEREST => "Interest",
        kind::SUBSCRIBE => "Subscribe",
        kind::SUBSCRIBE_OK => "SubscribeOk",
        kind::REDIRECT => "Redirect",
        kind::UNSUBSCRIBE => "Unsubscribe",
        kind::OBJECT => "Object",
        kind::PING => "Ping",
        kind::PONG => "Pong",
        kind::GOODBYE => "Goodbye",
        kind::ADDRESSES => "Addresses",
        kind::ROUTED => "Routed",
        kind::FIND => "Find",
        kind::FOUND => "Found",
        kind::OBJECT_NEXT => "ObjectNext",
        kind::SITE_MATES => "SiteMates",
        kind::LINK_DOWN => "LinkDown",
        kind::INTEREST_CHANGE => "InterestChange",
        kind::REVOCATIONS => "Revocations",
        kind::UPDATE_OFFER => "UpdateOffer",
        kind::UPDATE_ROLLOUT => "UpdateRollout",
        kind::CHUNK_HAVE => "ChunkHave",
        kind::CHUNK_GET => "ChunkGet",
        kind::CHUNK_DATA => "ChunkData",
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------
// Sizes. Kept next to the writers below: the two must agree byte for byte, and the
// round-trip tests check that they do.

const NODE_LEN: usize = 32;
/// A node on a catalog path (`msg::Hop`).
const HOP_LEN: usize = 4;
const RESUME_LEN: usize = 1 + 8 + 4;
/// Fixed part of a catalog entry after its strings and lists: carrying, version, ttl.
const ENTRY_TAIL_LEN: usize = 1 + 8 + 4;
/// Fixed part of an object after the broadcast: track, group, index, capture time and
/// the payload length.
const OBJECT_FIXED_LEN: usize = 1 + 8 + 4 + 8 + 4;
/// A routed message without its body: to, from, kind, id, sent_ms, hops, body length,
/// signature.
const ROUTED_FIXED_LEN: usize = NODE_LEN + NODE_LEN + 1 + 8 + 8 + 1 + 4 + 64;

fn str_len(s: &str) -> usize {
    2 + s.len()
}

fn broadcast_len(b: &BroadcastId) -> usize {
    NODE_LEN + str_len(&b.name)
}

/// Bytes one catalog entry takes inside a `Catalog` frame.
pub fn entry_len(e: &CatalogEntry) -> usize {
    broadcast_len(&e.broadcast)
        + str_len(&e.site)
        + str_len(&e.box_name)
        + str_len(&e.watch)
        + 2
        + e.tracks.len()
        + 2
        + HOP_LEN * e.path.len()
        + ENTRY_TAIL_LEN
}

fn body_len(msg: &Msg) -> usize {
    match msg {
        Msg::Hello { site, .. } => NODE_LEN + str_len(site) + 4 + 1,
        Msg::Catalog { entries } => 2 + entries.iter().map(entry_len).sum::<usize>(),
        Msg::Interest { broadcasts } => 2 + broadcasts.iter().map(broadcast_len).sum::<usize>(),
        Msg::InterestChange { added, removed } => {
            4 + added
                .iter()
                .chain(removed)
                .map(broadcast_len)
                .sum::<usize>()
        }
        Msg::Subscribe { broadcast, resume } => {
            broadcast_len(broadcast) + 2 + RESUME_LEN * resume.len()
        }
        Msg::Redirect { broadcast, to } => broadcast_len(broadcast) + 2 + NODE_LEN * to.len(),
        Msg::SubscribeOk { broadcast } | Msg::Unsubscribe { broadcast } => broadcast_len(broadcast),
        Msg::Object {
            broadcast, payload, ..
        } => broadcast_len(broadcast) + OBJECT_FIXED_LEN + payload.len(),
        Msg::Ping { .. } | Msg::Pong { .. } => 8,
        Msg::Goodbye => 0,
        Msg::Addresses { entries } => {
            2 + entries
                .iter()
                .map(|(_, a)| NODE_LEN + str_len(a))
                .sum::<usize>()
        }
        Msg::Routed(r) => ROUTED_FIXED_LEN + r.body.len(),
        Msg::Find { .. } => 8 + NODE_LEN + 1,
        Msg::Found { .. } => 8 + NODE_LEN,
        Msg::SiteMates { .. } => 4 + 8 + 1,
        Msg::LinkDown { .. } => HOP_LEN + HOP_LEN,
        Msg::Revocations { list } => 4 + list.len(),
        Msg::UpdateOffer { head } => 4 + head.len(),
        Msg::UpdateRollout { doc } => 4 + doc.len(),
        Msg::ChunkHave { bits, .. } => 8 + 4 + 4 + bits.len(),
        Msg::ChunkGet { .. } => 8 + 4,
        Msg::ChunkData { data, .. } => 8 + 4 + 4 + data.len(),
    }
}

/// Exact size of `msg`'s frame, header included. Costs a walk over the catalog entries
/// of a `Catalog` and nothing more for the other messages, so it can be called per
/// message for byte accounting.
pub fn encoded_len(msg: &Msg) -> usize {
    HEADER_LEN + body_len(msg)
}

// ---------------------------------------------------------------------------------------
// Encoding.

/// Appends `msg`'s frame to `out`.
///
/// `msg` must be within the limits ([`check`]): the peer would refuse it otherwise. That
/// is a bug of ours, not of the peer, so it is asserted in debug builds; names that come
/// from configuration should be checked where they enter.
pub fn encode(msg: &Msg, out: &mut Vec<u8>) {
    debug_assert_eq!(
        check(msg),
        Ok(()),
        "encoding a message over the wire limits"
    );
    let body = body_len(msg);
    out.reserve(HEADER_LEN + body);
    out.push(VERSION);
    out.push(kind_of(msg));
    put_u32(out, body as u32);
    let start = out.len();
    put_body(msg, out);
    debug_assert_eq!(out.len() - start, body, "body_len disagrees with put_body");
}

fn put_body(msg: &Msg, out: &mut Vec<u8>) {
    match msg {
        Msg::Hello {
            node,
            site,
            uplink_kbps,
            tree,
        } => {
            put_node(out, node);
            put_str(out, site);
            put_u32(out, *uplink_kbps);
            out.push(u8::from(*tree));
        }
        Msg::Catalog { entries } => put_list(out, entries, put_entry),
        Msg::Interest { broadcasts } => put_list(out, broadcasts, put_broadcast),
        Msg::InterestChange { added, removed } => {
            put_list(out, added, put_broadcast);
            put_list(out, removed, put_broadcast);
        }
        Msg::Subscribe { broadcast, resume } => {
            put_broadcast(out, broadcast);
            put_list(out, resume, put_resume);
        }
        Msg::Redirect { broadcast, to } => {
            put_broadcast(out, broadcast);
            put_list(out, to, put_node);
        }
        Msg::SubscribeOk { broadcast } | Msg::Unsubscribe { broadcast } => {
            put_broadcast(out, broadcast)
        }
        Msg::Object { .. } => put_object(out, msg),
        Msg::Ping { nonce } | Msg::Pong { nonce } => put_u64(out, *nonce),
        Msg::Goodbye => {}
        Msg::Addresses { entries } => put_list(out, entries, |out, (node, addr)| {
            put_node(out, node);
            put_str(out, addr);
        }),
        Msg::Routed(r) => {
            put_node(out, &r.to);
            put_node(out, &r.from);
            out.push(r.kind);
            put_u64(out, r.id);
            put_u64(out, r.sent_ms);
            out.push(r.hops);
            put_u32(out, r.body.len() as u32);
            out.extend_from_slice(&r.body);
            out.extend_from_slice(&r.sig);
        }
        Msg::Find {
            question,
            target,
            hops,
        } => {
            put_u64(out, *question);
            put_node(out, target);
            out.push(*hops);
        }
        Msg::Found { question, target } => {
            put_u64(out, *question);
            put_node(out, target);
        }
        Msg::SiteMates {
            count,
            digest,
            beyond,
        } => {
            put_u32(out, *count);
            put_u64(out, *digest);
            out.push(u8::from(*beyond));
        }
        Msg::LinkDown { a, b } => {
            out.extend_from_slice(&a.0);
            out.extend_from_slice(&b.0);
        }
        Msg::Revocations { list }
        | Msg::UpdateOffer { head: list }
        | Msg::UpdateRollout { doc: list } => {
            put_u32(out, list.len() as u32);
            out.extend_from_slice(list);
        }
        Msg::ChunkHave { bundle, from, bits } => {
            put_u64(out, *bundle);
            put_u32(out, *from);
            put_u32(out, bits.len() as u32);
            out.extend_from_slice(bits);
        }
        Msg::ChunkGet { bundle, chunk } => {
            put_u64(out, *bundle);
            put_u32(out, *chunk);
        }
        Msg::ChunkData {
            bundle,
            chunk,
            data,
        } => {
            put_u64(out, *bundle);
            put_u32(out, *chunk);
            put_u32(out, data.len() as u32);
            out.extend_from_slice(data);
        }
    }
}

fn put_object(out: &mut Vec<u8>, msg: &Msg) {
    if let Msg::Object {
        broadcast,
        track,
        group,
        index,
        capture_us,
        payload,
    } = msg
    {
        put_broadcast(out, broadcast);
        out.push(*track);
        put_u64(out, *group);
        put_u32(out, *index);
        put_u64(out, *capture_us);
        put_u32(out, payload.len() as u32);
        out.extend_from_slice(payload);
    }
}

fn put_entry(out: &mut Vec<u8>, e: &CatalogEntry) {
    put_broadcast(out, &e.broadcast);
    put_str(out, &e.site);
    put_str(out, &e.box_name);
    put_str(out, &e.watch);
    put_list(out, &e.tracks, |out, t| out.push(*t));
    put_list(out, &e.path, |out, h| out.extend_from_slice(&h.0));
    out.push(u8::from(e.carrying));
    put_u64(out, e.version);
    put_u32(out, e.ttl_ms);
}

fn put_resume(out: &mut Vec<u8>, r: &ResumePoint) {
    out.push(r.track);
    put_u64(out, r.group);
    put_u32(out, r.index);
}

fn put_broadcast(out: &mut Vec<u8>, b: &BroadcastId) {
    put_node(out, &b.origin);
    put_str(out, &b.name);
}

fn put_list<T>(out: &mut Vec<u8>, items: &[T], mut put: impl FnMut(&mut Vec<u8>, &T)) {
    put_u16(out, items.len() as u16);
    for item in items {
        put(out, item);
    }
}

fn put_node(out: &mut Vec<u8>, node: &NodeId) {
    out.extend_from_slice(&node.0);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u16(out, s.len() as u16);
    out.extend_from_slice(s.as_bytes());
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

// ---------------------------------------------------------------------------------------
// Limits, checked on our side before sending.

/// Whether a peer would accept `msg`: the error is the one its decoder would report.
/// Use it where names and lists enter the node, so that [`encode`] never meets a message
/// over the limits.
pub fn check(msg: &Msg) -> Result<(), WireError> {
    let kind = kind_name(kind_of(msg)).unwrap_or("?");
    let c = Checker { kind };
    match msg {
        Msg::Hello { site, .. } => c.string("site", site)?,
        Msg::Catalog { entries } => {
            c.count("entries", entries.len(), MAX_LIST)?;
            entries.iter().try_for_each(|e| c.entry(e))?;
        }
        Msg::Interest { broadcasts } => {
            c.count("broadcasts", broadcasts.len(), MAX_LIST)?;
            broadcasts.iter().try_for_each(|b| c.broadcast(b))?;
        }
        Msg::InterestChange { added, removed } => {
            c.count("added", added.len(), MAX_LIST)?;
            c.count("removed", removed.len(), MAX_LIST)?;
            added
                .iter()
                .chain(removed)
                .try_for_each(|b| c.broadcast(b))?;
        }
        Msg::Subscribe { broadcast, resume } => {
            c.broadcast(broadcast)?;
            c.count("resume", resume.len(), MAX_RESUME)?;
        }
        Msg::Redirect { broadcast, to } => {
            c.broadcast(broadcast)?;
            c.count("to", to.len(), MAX_REDIRECT)?;
        }
        Msg::SubscribeOk { broadcast }
        | Msg::Unsubscribe { broadcast }
        | Msg::Object { broadcast, .. } => c.broadcast(broadcast)?,
        Msg::Ping { .. }
        | Msg::Pong { .. }
        | Msg::Goodbye
        | Msg::Find { .. }
        | Msg::Found { .. }
        | Msg::SiteMates { .. }
        | Msg::LinkDown { .. } => {}
        Msg::Addresses { entries } => {
            c.count("entries", entries.len(), MAX_REDIRECT)?;
            entries.iter().try_for_each(|(_, a)| c.string("addr", a))?;
        }
        Msg::Routed(r) => c.count("body", r.body.len(), MAX_ROUTED_BODY)?,
        Msg::Revocations { list } => c.count("list", list.len(), MAX_REVOCATIONS)?,
        Msg::UpdateOffer { head } => c.count("head", head.len(), MAX_OFFER)?,
        Msg::UpdateRollout { doc } => c.count("doc", doc.len(), MAX_OFFER)?,
        Msg::ChunkHave { bits, .. } => c.count("bits", bits.len(), MAX_HAVE)?,
        Msg::ChunkGet { .. } => {}
        Msg::ChunkData { data, .. } => c.count("data", data.len(), MAX_CHUNK)?,
    }
    check_frame_len(encoded_len(msg))
}

fn check_frame_len(len: usize) -> Result<(), WireError> {
    if len > MAX_FRAME {
        return Err(WireError::FrameTooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    Ok(())
}

struct Checker {
    kind: &'static str,
}

impl Checker {
    fn entry(&self, e: &CatalogEntry) -> Result<(), WireError> {
        self.broadcast(&e.broadcast)?;
        self.string("entry.site", &e.site)?;
        self.string("entry.watch", &e.watch)?;
        self.count("entry.tracks", e.tracks.len(), MAX_TRACKS)?;
        self.count("entry.path", e.path.len(), MAX_PATH)
    }

    fn broadcast(&self, b: &BroadcastId) -> Result<(), WireError> {
        self.string("broadcast.name", &b.name)
    }

    fn string(&self, field: &'static str, s: &str) -> Result<(), WireError> {
        if s.len() > MAX_STRING {
            return Err(WireError::StringTooLong {
                kind: self.kind,
                field,
                len: s.len(),
                max: MAX_STRING,
            });
        }
        Ok(())
    }

    fn count(&self, field: &'static str, count: usize, max: usize) -> Result<(), WireError> {
        if count > max {
            return Err(WireError::CountOverLimit {
                kind: self.kind,
                field,
                count,
                max,
            });
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Decoding.

/// Turns a byte stream into messages, whatever the byte stream's chunking.
///
/// Push bytes as they arrive, then call [`Decoder::next`] until it returns `Ok(None)`.
/// The first error is final: the stream's framing can no longer be trusted, so the
/// decoder keeps returning that error and ignores further bytes; the connection should be
/// closed. A header announcing an oversized frame is refused as soon as it arrives, so
/// the decoder never holds more than one push beyond a frame it refuses.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
    failed: Option<WireError>,
    /// On a group stream, the last object decoded, which an `ObjectNext` continues;
    /// `None` on the control stream, where `ObjectNext` is refused.
    group_stream: Option<Option<group::LastObject>>,
}

/// Buffer kept between frames; enough for typical reads and delta frames.
const KEEP_CAPACITY: usize = 64 << 10;

/// What a header announces: the message type and the body length.
#[derive(Debug, Clone, Copy)]
struct Header {
    kind: u8,
    body_len: usize,
}

impl Decoder {
    /// A decoder for the control stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder for one group stream: it also takes `ObjectNext` frames, each the object
    /// after the one before it on the stream, and returns them as whole [`Msg::Object`]s.
    pub fn group_stream() -> Self {
        Self {
            group_stream: Some(None),
            ..Self::default()
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        self.buf.extend_from_slice(bytes);
        if let Err(e) = parse_header(&self.buf) {
            self.fail(e);
        }
    }

    #[expect(
        clippy::should_implement_trait,
        reason = "not an Iterator: the caller must tell \"need more bytes\" from an error"
    )]
    pub fn next(&mut self) -> Result<Option<Msg>, WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.next_frame() {
            Ok(msg) => Ok(msg),
            Err(e) => {
                self.fail(e.clone());
                Err(e)
            }
        }
    }

    /// Bytes held for frames not yet complete: what a slow or hostile peer costs us.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn next_frame(&mut self) -> Result<Option<Msg>, WireError> {
        let Some(header) = parse_header(&self.buf)? else {
            return Ok(None);
        };
        let frame_len = HEADER_LEN + header.body_len;
        if self.buf.len() < frame_len {
            return Ok(None);
        }
        let body = &self.buf[HEADER_LEN..frame_len];
        let msg = match (&mut self.group_stream, header.kind) {
            (None, kind::OBJECT_NEXT) => {
                Err(WireError::ObjectNextOutOfPlace("on the control stream"))
            }
            (Some(last), kind::OBJECT_NEXT) => group::read_next(last, body),
            (Some(last), _) => decode_body(header.kind, body).inspect(|m| group::remember(last, m)),
            (None, _) => decode_body(header.kind, body),
        };
        self.buf.advance(frame_len);
        if self.buf.is_empty() && self.buf.capacity() > KEEP_CAPACITY {
            // One big keyframe must not pin megabytes for the connection's lifetime.
            self.buf = BytesMut::new();
        }
        msg.map(Some)
    }

    fn fail(&mut self, e: WireError) {
        self.failed = Some(e);
        self.buf = BytesMut::new();
    }
}

/// Checks each header field as soon as its bytes are there: a wrong version is refused
/// from the first byte, before anything after it is interpreted.
fn parse_header(buf: &[u8]) -> Result<Option<Header>, WireError> {
    let Some(&version) = buf.first() else {
        return Ok(None);
    };
    if version != VERSION {
        return Err(WireError::UnknownVersion { version });
    }
    let Some(&kind) = buf.get(1) else {
        return Ok(None);
    };
    if kind_name(kind).is_none() {
        return Err(WireError::UnknownType { kind });
    }
    let Some(len) = buf.get(2..HEADER_LEN) else {
        return Ok(None);
    };
    // Compared before adding the header so that a 32-bit usize cannot overflow.
    let body_len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if body_len > MAX_FRAME - HEADER_LEN {
        return Err(WireError::FrameTooLarge {
            len: body_len.saturating_add(HEADER_LEN),
            max: MAX_FRAME,
        });
    }
    Ok(Some(Header { kind, body_len }))
}

fn decode_body(kind: u8, body: &[u8]) -> Result<Msg, WireError> {
    let name = kind_name(kind).ok_or(WireError::UnknownType { kind })?;
    let mut r = Reader {
        kind: name,
        rest: body,
    };
    let msg = match kind {
        kind::HELLO => read_hello(&mut r)?,
        kind::CATALOG => Msg::Catalog {
            entries: r.list("entries", MAX_LIST, MIN_ENTRY_LEN, read_entry)?,
        },
        kind::INTEREST => Msg::Interest {
            broadcasts: r.list("broadcasts", MAX_LIST, MIN_BROADCAST_LEN, read_broadcast)?,
        },
        kind::INTEREST_CHANGE => Msg::InterestChange {
            added: r.list("added", MAX_LIST, MIN_BROADCAST_LEN, read_broadcast)?,
            removed: r.list("removed", MAX_LIST, MIN_BROADCAST_LEN, read_broadcast)?,
        },
        kind::SUBSCRIBE => read_subscribe(&mut r)?,
        kind::SUBSCRIBE_OK => Msg::SubscribeOk {
            broadcast: read_broadcast(&mut r)?,
        },
        kind::REDIRECT => read_redirect(&mut r)?,
        kind::UNSUBSCRIBE => Msg::Unsubscribe {
            broadcast: read_broadcast(&mut r)?,
        },
        kind::OBJECT => read_object(&mut r)?,
        kind::PING => Msg::Ping {
            nonce: r.u64("nonce")?,
        },
        kind::PONG => Msg::Pong {
            nonce: r.u64("nonce")?,
        },
        kind::ADDRESSES => Msg::Addresses {
            entries: r.list("entries", MAX_REDIRECT, NODE_LEN + 2, |r| {
                Ok((r.node("node")?, r.string("addr")?))
            })?,
        },
        kind::ROUTED => read_routed(&mut r)?,
        kind::FIND => Msg::Find {
            question: r.u64("question")?,
            target: r.node("target")?,
            hops: r.u8("hops")?,
        },
        kind::FOUND => Msg::Found {
            question: r.u64("question")?,
            target: r.node("target")?,
        },
        kind::SITE_MATES => Msg::SiteMates {
            count: r.u32("count")?,
            digest: r.u64("digest")?,
            beyond: r.bool("beyond")?,
        },
        kind::LINK_DOWN => Msg::LinkDown {
            a: r.hop("a")?,
            b: r.hop("b")?,
        },
        kind::REVOCATIONS => Msg::Revocations {
            list: r.bytes("list", MAX_REVOCATIONS)?,
        },
        kind::UPDATE_OFFER => Msg::UpdateOffer {
            head: r.bytes("head", MAX_OFFER)?,
        },
        kind::UPDATE_ROLLOUT => Msg::UpdateRollout {
            doc: r.bytes("doc", MAX_OFFER)?,
        },
        kind::CHUNK_HAVE => Msg::ChunkHave {
            bundle: r.u64("bundle")?,
            from: r.u32("from")?,
            bits: r.bytes("bits", MAX_HAVE)?,
        },
        kind::CHUNK_GET => Msg::ChunkGet {
            bundle: r.u64("bundle")?,
            chunk: r.u32("chunk")?,
        },
        kind::CHUNK_DATA => Msg::ChunkData {
            bundle: r.u64("bundle")?,
            chunk: r.u32("chunk")?,
            data: r.bytes("data", MAX_CHUNK)?,
        },
        _ => Msg::Goodbye,
    };
    r.finish()?;
    Ok(msg)
}

/// Smallest encodings, used to refuse a count the rest of the frame cannot hold before
/// allocating for it.
const MIN_BROADCAST_LEN: usize = NODE_LEN + 2;
const MIN_ENTRY_LEN: usize = MIN_BROADCAST_LEN + 2 + 2 + 2 + ENTRY_TAIL_LEN;

fn read_hello(r: &mut Reader<'_>) -> Result<Msg, WireError> {
    let node = r.node("node")?;
    let site = r.string("site")?;
    let uplink_kbps = r.u32("uplink_kbps")?;
    let tree = r.bool("tree")?;
    Ok(Msg::Hello {
        node,
        site,
        uplink_kbps,
        tree,
    })
}

fn read_subscribe(r: &mut Reader<'_>) -> Result<Msg, WireError> {
    let broadcast = read_broadcast(r)?;
    let resume = r.list("resume", MAX_RESUME, RESUME_LEN, read_resume)?;
    Ok(Msg::Subscribe { broadcast, resume })
}

fn read_redirect(r: &mut Reader<'_>) -> Result<Msg, WireError> {
    let broadcast = read_broadcast(r)?;
    let to = r.list("to", MAX_REDIRECT, NODE_LEN, |r| r.node("to"))?;
    Ok(Msg::Redirect { broadcast, to })
}

fn read_object(r: &mut Reader<'_>) -> Result<Msg, WireError> {
    let broadcast = read_broadcast(r)?;
    let track = r.u8("track")?;
    let group = r.u64("group")?;
    let index = r.u32("index")?;
    let capture_us = r.u64("capture_us")?;
    let len = r.u32("payload")? as usize;
    // A copy of exactly the payload: the group cache keeps it for seconds, and a slice
    // would keep the whole receive buffer alive with it.
    let payload = Bytes::copy_from_slice(r.take(len, "payload")?);
    Ok(Msg::Object {
        broadcast,
        track,
        group,
        index,
        capture_us,
        payload,
    })
}

fn read_routed(r: &mut Reader<'_>) -> Result<Msg, WireError> {
    let to = r.node("to")?;
    let from = r.node("from")?;
    let kind = r.u8("kind")?;
    let id = r.u64("id")?;
    let sent_ms = r.u64("sent_ms")?;
    let hops = r.u8("hops")?;
    let body = r.bytes("body", MAX_ROUTED_BODY)?;
    let sig = r.array("sig")?;
    Ok(Msg::Routed(Box::new(Routed {
        to,
        from,
        kind,
        id,
        sent_ms,
        hops,
        body,
        sig,
    })))
}

fn read_entry(r: &mut Reader<'_>) -> Result<CatalogEntry, WireError> {
    let broadcast = read_broadcast(r)?;
    let site = r.string("entry.site")?;
    let box_name = r.string("entry.box_name")?;
    let watch = r.string("entry.watch")?;
    let tracks = r.list("entry.tracks", MAX_TRACKS, 1, |r| r.u8("entry.tracks"))?;
    let path = r.list("entry.path", MAX_PATH, HOP_LEN, |r| r.hop("entry.path"))?;
    let carrying = r.bool("entry.carrying")?;
    let version = r.u64("entry.version")?;
    let ttl_ms = r.u32("entry.ttl_ms")?;
    Ok(CatalogEntry {
        broadcast,
        site,
        box_name,
        watch,
        tracks,
        path,
        carrying,
        version,
        ttl_ms,
    })
}

fn read_resume(r: &mut Reader<'_>) -> Result<ResumePoint, WireError> {
    let track = r.u8("resume.track")?;
    let group = r.u64("resume.group")?;
    let index = r.u32("resume.index")?;
    Ok(ResumePoint {
        track,
        group,
        index,
    })
}

fn read_broadcast(r: &mut Reader<'_>) -> Result<BroadcastId, WireError> {
    let origin = r.node("broadcast.origin")?;
    let name = r.string("broadcast.name")?;
    Ok(BroadcastId {
        origin,
        name: name.into(),
    })
}

/// A cursor over one frame's body that names the message and field in its errors.
struct Reader<'a> {
    kind: &'static str,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], WireError> {
        if n > self.rest.len() {
            return Err(self.truncated(field));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let bytes = self.take(N, field)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        self.array(field).map(u16::from_be_bytes)
    }

    /// A `u32` length, at most `max`, then that many bytes.
    fn bytes(&mut self, field: &'static str, max: usize) -> Result<Bytes, WireError> {
        let len = self.u32(field)? as usize;
        if len > max {
            return Err(WireError::CountOverLimit {
                kind: self.kind,
                field,
                count: len,
                max,
            });
        }
        Ok(Bytes::copy_from_slice(self.take(len, field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        self.array(field).map(u32::from_be_bytes)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        self.array(field).map(u64::from_be_bytes)
    }

    fn node(&mut self, field: &'static str) -> Result<NodeId, WireError> {
        self.array(field).map(NodeId)
    }

    fn hop(&mut self, field: &'static str) -> Result<Hop, WireError> {
        self.array(field).map(Hop)
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, WireError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(WireError::InvalidBool {
                kind: self.kind,
                field,
                value,
            }),
        }
    }

    fn string(&mut self, field: &'static str) -> Result<String, WireError> {
        let len = self.u16(field)? as usize;
        if len > MAX_STRING {
            return Err(WireError::StringTooLong {
                kind: self.kind,
                field,
                len,
                max: MAX_STRING,
            });
        }
        let bytes = self.take(len, field)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(source) => Err(WireError::InvalidUtf8 {
                kind: self.kind,
                field,
                source,
            }),
        }
    }

    /// Reads a u16 count and the items. The count is checked against the limit and
    /// against what the rest of the frame can hold (`min_item` bytes each) before any
    /// allocation, so a forged count costs nothing.
    fn list<T>(
        &mut self,
        field: &'static str,
        max: usize,
        min_item: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, WireError>,
    ) -> Result<Vec<T>, WireError> {
        let count = self.u16(field)? as usize;
        if count > max {
            return Err(WireError::CountOverLimit {
                kind: self.kind,
                field,
                count,
                max,
            });
        }
        if count * min_item > self.rest.len() {
            return Err(self.truncated(field));
        }
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(item(self)?);
        }
        Ok(items)
    }

    fn finish(&self) -> Result<(), WireError> {
        if !self.rest.is_empty() {
            return Err(WireError::TrailingBytes {
                kind: self.kind,
                extra: self.rest.len(),
            });
        }
        Ok(())
    }

    fn truncated(&self, field: &'static str) -> WireError {
        WireError::Truncated {
            kind: self.kind,
            field,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{TRACK_AUDIO, TRACK_VIDEO};

    fn node(b: u8) -> NodeId {
        NodeId([b; 32])
    }

    fn bid(name: &str) -> BroadcastId {
        BroadcastId {
            origin: node(7),
            name: name.into(),
        }
    }

    fn entry(path: Vec<NodeId>) -> CatalogEntry {
        let path = path.iter().map(NodeId::hop).collect();
        CatalogEntry {
            broadcast: bid("front-door"),
            site: "berlin".to_owned(),
            box_name: "hall".to_owned(),
            watch: String::new(),
            tracks: vec![TRACK_VIDEO, TRACK_AUDIO],
            path,
            carrying: true,
            version: u64::MAX,
            ttl_ms: 30_000,
        }
    }

    fn frame(msg: &Msg) -> Vec<u8> {
        let mut out = Vec::new();
        encode(msg, &mut out);
        out
    }

    /// Decodes a buffer that must hold exactly one frame.
    fn decode_one(bytes: &[u8]) -> Result<Msg, WireError> {
        let mut d = Decoder::new();
        d.push(bytes);
        let msg = d.next()?.expect("a whole frame");
        assert_eq!(d.buffered(), 0);
        Ok(msg)
    }

    fn round_trip(msg: Msg) {
        let bytes = frame(&msg);
        assert_eq!(bytes.len(), encoded_len(&msg), "encoded_len of {msg:?}");
        assert_eq!(decode_one(&bytes), Ok(msg));
    }

    fn every_variant() -> Vec<Msg> {
        let long = "é".repeat(MAX_STRING / 2);
        vec![
            Msg::Hello {
                node: node(1),
                site: "berlin".to_owned(),
                uplink_kbps: 20_000,
                tree: false,
            },
            Msg::Hello {
                node: node(2),
                site: String::new(),
                uplink_kbps: 0,
                tree: true,
            },
            Msg::Hello {
                node: node(3),
                site: long.clone(),
                uplink_kbps: u32::MAX,
                tree: false,
            },
            Msg::Catalog { entries: vec![] },
            Msg::Catalog {
                entries: vec![entry(vec![]), entry(vec![node(7), node(8), node(9)])],
            },
            Msg::Catalog {
                entries: vec![CatalogEntry {
                    broadcast: bid(&long),
                    site: long.clone(),
                    box_name: long.clone(),
                    watch: String::new(),
                    tracks: (0..=255).collect(),
                    path: vec![node(4).hop(); MAX_PATH],
                    carrying: false,
                    version: 0,
                    ttl_ms: 0,
                }],
            },
            Msg::Interest { broadcasts: vec![] },
            Msg::Interest {
                broadcasts: vec![bid("a"), bid(""), bid(&long)],
            },
            Msg::InterestChange {
                added: vec![],
                removed: vec![],
            },
            Msg::InterestChange {
                added: vec![bid("a")],
                removed: vec![bid(""), bid(&long)],
            },
            Msg::Subscribe {
                broadcast: bid("cam"),
                resume: vec![],
            },
            Msg::Subscribe {
                broadcast: bid("cam"),
                resume: vec![
                    ResumePoint {
                        track: TRACK_VIDEO,
                        group: 41,
                        index: 3,
                    },
                    ResumePoint {
                        track: TRACK_AUDIO,
                        group: u64::MAX,
                        index: u32::MAX,
                    },
                ],
            },
            Msg::SubscribeOk {
                broadcast: bid("cam"),
            },
            Msg::Routed(Box::new(Routed {
                to: node(1),
                from: node(2),
                kind: crate::msg::ROUTED_COMMAND,
                id: u64::MAX,
                sent_ms: 1_800_000_000_000,
                hops: 7,
                body: Bytes::from(vec![b'x'; MAX_ROUTED_BODY]),
                sig: [9; 64],
            })),
            Msg::Find {
                question: 7,
                target: node(2),
                hops: 16,
            },
            Msg::Found {
                question: u64::MAX,
                target: node(2),
            },
            Msg::Redirect {
                broadcast: bid("cam"),
                to: vec![],
            },
            Msg::Redirect {
                broadcast: bid("cam"),
                to: vec![node(5); MAX_REDIRECT],
            },
            Msg::Unsubscribe {
                broadcast: bid("cam"),
            },
            Msg::Object {
                broadcast: bid("cam"),
                track: TRACK_VIDEO,
                group: 9,
                index: 0,
                capture_us: 1_700_000_000_000_000,
                payload: Bytes::new(),
            },
            Msg::Object {
                broadcast: bid("cam"),
                track: TRACK_AUDIO,
                group: 9,
                index: 17,
                capture_us: 5,
                payload: Bytes::from((0..=255u8).cycle().take(300_000).collect::<Vec<_>>()),
            },
            Msg::Ping { nonce: 0 },
            Msg::Addresses {
                entries: vec![(NodeId([7; 32]), "192.0.2.1:4433".into())],
            },
            Msg::Pong { nonce: u64::MAX },
            Msg::Goodbye,
        ]
    }

    #[test]
    fn every_variant_round_trips() {
        for msg in every_variant() {
            round_trip(msg);
        }
    }

    fn object(payload: Bytes) -> Msg {
        Msg::Object {
            broadcast: bid("cam"),
            track: TRACK_VIDEO,
            group: 0,
            index: 0,
            capture_us: 0,
            payload,
        }
    }

    #[test]
    fn largest_allowed_object_round_trips() {
        let room = MAX_FRAME - encoded_len(&object(Bytes::new()));
        let full = object(Bytes::from(vec![0xab; room]));
        assert_eq!(encoded_len(&full), MAX_FRAME);
        assert_eq!(check(&full), Ok(()));
        round_trip(full);
        let over = object(Bytes::from(vec![0xab; room + 1]));
        assert!(matches!(check(&over), Err(WireError::FrameTooLarge { .. })));
    }

    #[test]
    fn layout_is_pinned() {
        let ping = frame(&Msg::Ping {
            nonce: 0x0102_0304_0506_0708,
        });
        assert_eq!(ping, [2, 0x09, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(frame(&Msg::Goodbye), [2, 0x0b, 0, 0, 0, 0]);
        let ok = frame(&Msg::SubscribeOk {
            broadcast: BroadcastId {
                origin: node(0xee),
                name: "ab".into(),
            },
        });
        // The size formulas in docs/protocol.md.
        let catalog = Msg::Catalog {
            entries: vec![CatalogEntry {
                broadcast: bid("ab"),
                site: "xyz".to_owned(),
                box_name: "q".to_owned(),
                watch: String::new(),
                tracks: vec![0, 1],
                path: vec![node(1).hop(), node(2).hop()],
                carrying: true,
                version: 1,
                ttl_ms: 1,
            }],
        };
        assert_eq!(encoded_len(&catalog), 8 + 57 + 2 + 3 + 1 + 2 + 4 * 2);
        assert_eq!(encoded_len(&object(Bytes::from_static(b"xyz"))), 65 + 3 + 3);
        let mut want = vec![2, 0x05, 0, 0, 0, 36];
        want.extend([0xee; 32]);
        want.extend([0, 2, b'a', b'b']);
        assert_eq!(ok, want);
        let mates = frame(&Msg::SiteMates {
            count: 3,
            digest: 0x0102_0304_0506_0708,
            beyond: true,
        });
        assert_eq!(
            mates,
            [2, 0x11, 0, 0, 0, 13, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6, 7, 8, 1]
        );
    }

    #[test]
    fn frames_fed_one_byte_at_a_time() {
        let msgs = every_variant();
        let stream: Vec<u8> = msgs.iter().flat_map(frame).collect();
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for b in &stream {
            d.push(std::slice::from_ref(b));
            while let Some(msg) = d.next().unwrap() {
                got.push(msg);
            }
        }
        assert_eq!(got, msgs);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn several_frames_in_one_push() {
        let msgs = every_variant();
        let stream: Vec<u8> = msgs.iter().flat_map(frame).collect();
        let mut d = Decoder::new();
        d.push(&stream);
        let got: Vec<Msg> = std::iter::from_fn(|| d.next().unwrap()).collect();
        assert_eq!(got, msgs);
    }

    /// A header with the given type and body, the length taken from the body.
    fn raw(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![VERSION, kind];
        out.extend((body.len() as u32).to_be_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn a_routed_body_over_the_limit_is_refused_from_its_length() {
        let mut body = Vec::new();
        body.extend_from_slice(&[1; 32]);
        body.extend_from_slice(&[2; 32]);
        body.push(1);
        body.extend_from_slice(&7u64.to_be_bytes());
        body.extend_from_slice(&0u64.to_be_bytes());
        body.push(3);
        body.extend_from_slice(&(MAX_ROUTED_BODY as u32 + 1).to_be_bytes());
        assert!(matches!(
            decode_one(&raw(kind::ROUTED, &body)),
            Err(WireError::CountOverLimit { field: "body", .. })
        ));
    }

    #[test]
    fn unknown_version() {
        for version in [1, 3] {
            let mut d = Decoder::new();
            d.push(&[version]);
            let err = d.next().unwrap_err();
            assert_eq!(err, WireError::UnknownVersion { version });
            assert_eq!(
                err.to_string(),
                format!("peer speaks protocol version {version}, this node speaks version 2")
            );
        }
    }

    #[test]
    fn unknown_type() {
        for kind in [0, 0x1a, 0xff] {
            assert_eq!(
                decode_one(&raw(kind, &[])),
                Err(WireError::UnknownType { kind })
            );
        }
    }

    #[test]
    fn oversized_frame_refused_from_its_header() {
        let mut d = Decoder::new();
        let body_len = (MAX_FRAME - HEADER_LEN + 1) as u32;
        let mut header = vec![VERSION, kind::OBJECT];
        header.extend(body_len.to_be_bytes());
        d.push(&header);
        assert_eq!(d.buffered(), 0, "refused in push, nothing kept");
        assert_eq!(
            d.next(),
            Err(WireError::FrameTooLarge {
                len: MAX_FRAME + 1,
                max: MAX_FRAME
            })
        );
        let mut huge = vec![VERSION, kind::PING];
        huge.extend(u32::MAX.to_be_bytes());
        assert!(matches!(
            decode_one(&huge),
            Err(WireError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn errors_are_final() {
        let mut d = Decoder::new();
        d.push(&[9, 9, 9]);
        let first = d.next().unwrap_err();
        d.push(&frame(&Msg::Goodbye));
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.next(), Err(first));
    }

    #[test]
    fn truncated_field() {
        let mut body = frame(&Msg::Hello {
            node: node(1),
            site: "berlin".to_owned(),
            uplink_kbps: 5,
            tree: false,
        })[HEADER_LEN..]
            .to_vec();
        assert_eq!(
            decode_one(&raw(kind::HELLO, &body[..body.len() - 1])),
            Err(WireError::Truncated {
                kind: "Hello",
                field: "tree"
            })
        );
        body.truncate(body.len() - 2);
        assert_eq!(
            decode_one(&raw(kind::HELLO, &body)),
            Err(WireError::Truncated {
                kind: "Hello",
                field: "uplink_kbps"
            })
        );
        assert_eq!(
            decode_one(&raw(kind::HELLO, &body[..38])),
            Err(WireError::Truncated {
                kind: "Hello",
                field: "site"
            })
        );
    }

    #[test]
    fn count_the_frame_cannot_hold_is_truncated_before_allocating() {
        let body = [0xff, 0xff, 0, 0, 0];
        assert_eq!(
            decode_one(&raw(kind::CATALOG, &body)),
            Err(WireError::Truncated {
                kind: "Catalog",
                field: "entries"
            })
        );
    }

    #[test]
    fn invalid_utf8() {
        let mut body = vec![0; 32];
        body.extend([0, 2, 0xc3, 0x28]);
        body.extend(0u32.to_be_bytes());
        let err = decode_one(&raw(kind::HELLO, &body)).unwrap_err();
        assert!(
            matches!(
                err,
                WireError::InvalidUtf8 {
                    kind: "Hello",
                    field: "site",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn string_too_long() {
        let mut body = vec![0; 32];
        body.extend(((MAX_STRING + 1) as u16).to_be_bytes());
        body.extend(vec![b'a'; MAX_STRING + 1]);
        assert_eq!(
            decode_one(&raw(kind::SUBSCRIBE_OK, &body)),
            Err(WireError::StringTooLong {
                kind: "SubscribeOk",
                field: "broadcast.name",
                len: MAX_STRING + 1,
                max: MAX_STRING
            })
        );
    }

    #[test]
    fn count_over_limit() {
        let mut body = frame(&Msg::Unsubscribe {
            broadcast: bid("cam"),
        })[HEADER_LEN..]
            .to_vec();
        body.extend(((MAX_REDIRECT + 1) as u16).to_be_bytes());
        body.extend(vec![0; NODE_LEN * (MAX_REDIRECT + 1)]);
        assert_eq!(
            decode_one(&raw(kind::REDIRECT, &body)),
            Err(WireError::CountOverLimit {
                kind: "Redirect",
                field: "to",
                count: MAX_REDIRECT + 1,
                max: MAX_REDIRECT
            })
        );
    }

    #[test]
    fn invalid_bool() {
        let mut bytes = frame(&Msg::Catalog {
            entries: vec![entry(vec![])],
        });
        let carrying = bytes.len() - 4 - 8 - 1;
        bytes[carrying] = 2;
        assert_eq!(
            decode_one(&bytes),
            Err(WireError::InvalidBool {
                kind: "Catalog",
                field: "entry.carrying",
                value: 2
            })
        );
    }

    #[test]
    fn trailing_bytes() {
        assert_eq!(
            decode_one(&raw(kind::PING, &[0; 9])),
            Err(WireError::TrailingBytes {
                kind: "Ping",
                extra: 1
            })
        );
        assert_eq!(
            decode_one(&raw(kind::GOODBYE, &[0])),
            Err(WireError::TrailingBytes {
                kind: "Goodbye",
                extra: 1
            })
        );
    }

    #[test]
    fn check_reports_what_the_peer_would() {
        assert_eq!(
            check(&Msg::Hello {
                node: node(1),
                site: "x".repeat(MAX_STRING + 1),
                uplink_kbps: 0,
                tree: false,
            }),
            Err(WireError::StringTooLong {
                kind: "Hello",
                field: "site",
                len: MAX_STRING + 1,
                max: MAX_STRING
            })
        );
        assert!(matches!(
            check(&Msg::Catalog {
                entries: vec![entry(vec![node(1); MAX_PATH + 1])]
            }),
            Err(WireError::CountOverLimit {
                field: "entry.path",
                ..
            })
        ));
        for msg in every_variant() {
            assert_eq!(check(&msg), Ok(()), "{msg:?}");
        }
    }
}
