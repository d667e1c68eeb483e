//! The codec against arbitrary input: what peers send is not ours to choose, so the
//! decoder must survive any bytes in any chunking, and everything we can send must come
//! back unchanged.

use bytes::Bytes;
use cambox_mesh::msg::Hop;
use cambox_mesh::wire::{self, Decoder, GroupEncoder, WireError, HEADER_LEN, MAX_STRING, VERSION};
use cambox_mesh::{BroadcastId, CatalogEntry, Msg, NodeId, ResumePoint};
use proptest::collection::vec;
use proptest::prelude::*;

fn node_id() -> impl Strategy<Value = NodeId> {
    prop_oneof![
        // Few distinct ids, so paths repeat nodes as they do in real catalogs.
        (0u8..4).prop_map(|b| NodeId([b; 32])),
        any::<[u8; 32]>().prop_map(NodeId),
    ]
}

/// Short strings of any characters (multi-byte included) and strings exactly at the
/// byte limit.
fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => vec(any::<char>(), 0..12).prop_map(String::from_iter),
        1 => Just("é".repeat(MAX_STRING / 2)),
        1 => Just("x".repeat(MAX_STRING)),
    ]
}

fn broadcast() -> impl Strategy<Value = BroadcastId> {
    (node_id(), string()).prop_map(|(origin, name)| BroadcastId {
        origin,
        name: name.into(),
    })
}

fn entry() -> impl Strategy<Value = CatalogEntry> {
    (
        broadcast(),
        (string(), string(), string()),
        vec(any::<u8>(), 0..4),
        vec(node_id().prop_map(|n| n.hop()), 0..8),
        any::<bool>(),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(
            |(broadcast, (site, box_name, watch), tracks, path, carrying, version, ttl_ms)| {
                CatalogEntry {
                    broadcast,
                    site,
                    box_name,
                    watch,
                    tracks,
                    path,
                    carrying,
                    version,
                    ttl_ms,
                }
            },
        )
}

fn resume() -> impl Strategy<Value = ResumePoint> {
    (any::<u8>(), any::<u64>(), any::<u32>()).prop_map(|(track, group, index)| ResumePoint {
        track,
        group,
        index,
    })
}

fn payload() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..64),
        1 => vec(any::<u8>(), 0..100_000),
    ]
    .prop_map(Bytes::from)
}

fn object() -> impl Strategy<Value = Msg> {
    (
        broadcast(),
        any::<u8>(),
        any::<u64>(),
        any::<u32>(),
        any::<u64>(),
        payload(),
    )
        .prop_map(
            |(broadcast, track, group, index, capture_us, payload)| Msg::Object {
                broadcast,
                track,
                group,
                index,
                capture_us,
                payload,
            },
        )
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        (node_id(), string(), any::<u32>(), any::<bool>()).prop_map(
            |(node, site, uplink_kbps, tree)| Msg::Hello {
                node,
                site,
                uplink_kbps,
                tree,
            }
        ),
        vec(entry(), 0..4).prop_map(|entries| Msg::Catalog { entries }),
        vec(broadcast(), 0..6).prop_map(|broadcasts| Msg::Interest { broadcasts }),
        (vec(broadcast(), 0..4), vec(broadcast(), 0..4))
            .prop_map(|(added, removed)| Msg::InterestChange { added, removed }),
        (broadcast(), vec(resume(), 0..4))
            .prop_map(|(broadcast, resume)| Msg::Subscribe { broadcast, resume }),
        broadcast().prop_map(|broadcast| Msg::SubscribeOk { broadcast }),
        (broadcast(), vec(node_id(), 0..6))
            .prop_map(|(broadcast, to)| Msg::Redirect { broadcast, to }),
        broadcast().prop_map(|broadcast| Msg::Unsubscribe { broadcast }),
        object(),
        any::<u64>().prop_map(|nonce| Msg::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Msg::Pong { nonce }),
        Just(Msg::Goodbye),
        vec((node_id(), string()), 0..4).prop_map(|entries| Msg::Addresses { entries }),
        (any::<u64>(), node_id(), any::<u8>()).prop_map(|(question, target, hops)| Msg::Find {
            question,
            target,
            hops
        }),
        (any::<u64>(), node_id()).prop_map(|(question, target)| Msg::Found { question, target }),
        (any::<u32>(), any::<u64>(), any::<bool>()).prop_map(|(count, digest, beyond)| {
            Msg::SiteMates {
                count,
                digest,
                beyond,
            }
        }),
        (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(a, b)| Msg::LinkDown {
            a: Hop(a),
            b: Hop(b)
        }),
        vec(any::<u8>(), 0..200).prop_map(|list| Msg::Revocations { list: list.into() }),
        vec(any::<u8>(), 0..200).prop_map(|head| Msg::UpdateOffer { head: head.into() }),
        vec(any::<u8>(), 0..200).prop_map(|doc| Msg::UpdateRollout { doc: doc.into() }),
        (any::<u64>(), any::<u32>(), vec(any::<u8>(), 0..64)).prop_map(|(bundle, from, bits)| {
            Msg::ChunkHave {
                bundle,
                from,
                bits: bits.into(),
            }
        }),
        (any::<u64>(), any::<u32>()).prop_map(|(bundle, chunk)| Msg::ChunkGet { bundle, chunk }),
        (any::<u64>(), any::<u32>(), payload()).prop_map(|(bundle, chunk, data)| {
            Msg::ChunkData {
                bundle,
                chunk,
                data,
            }
        }),
    ]
}

/// Chunk sizes, used in turn until the input is consumed.
fn chunking() -> impl Strategy<Value = Vec<usize>> {
    vec(1usize..300, 1..16)
}

/// Feeds `bytes` in chunks and drains after each one, stopping at the first error as a
/// driver would.
fn feed(bytes: &[u8], chunks: &[usize]) -> Result<Vec<Msg>, WireError> {
    feed_to(Decoder::new(), bytes, chunks)
}

fn feed_to(mut d: Decoder, bytes: &[u8], chunks: &[usize]) -> Result<Vec<Msg>, WireError> {
    let mut out = Vec::new();
    let mut rest = bytes;
    for &size in chunks.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        d.push(chunk);
        while let Some(msg) = d.next()? {
            out.push(msg);
        }
    }
    Ok(out)
}

fn encode(msg: &Msg) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode(msg, &mut out);
    out
}

/// Bytes that get past the header now and then: random ones almost never do.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let framed =
        (0u8..19, vec(any::<u8>(), 0..600), any::<bool>()).prop_map(|(kind, body, honest_len)| {
            let mut out = vec![VERSION, kind];
            let len = if honest_len {
                body.len() as u32
            } else {
                u32::from_be_bytes([body.first().copied().unwrap_or(0), 0, 1, 0])
            };
            out.extend(len.to_be_bytes());
            out.extend(body);
            out
        });
    prop_oneof![vec(any::<u8>(), 0..2048), framed]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..Default::default() })]

    #[test]
    fn any_message_round_trips(msgs in vec(msg(), 1..4), chunks in chunking()) {
        let mut stream = Vec::new();
        for m in &msgs {
            let bytes = encode(m);
            prop_assert_eq!(bytes.len(), wire::encoded_len(m));
            prop_assert_eq!(wire::check(m), Ok(()));
            stream.extend(bytes);
        }
        prop_assert_eq!(feed(&stream, &chunks), Ok(msgs));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in hostile_bytes(), chunks in chunking()) {
        let _ = feed(&bytes, &chunks);
        let _ = feed_to(Decoder::group_stream(), &bytes, &chunks);
    }

    /// A group stream: runs of consecutive objects (which go as `ObjectNext`) mixed with
    /// ones that do not continue the last (which go whole), in one track's stream.
    #[test]
    fn a_group_stream_round_trips(
        first in object(),
        steps in vec((0u32..3, 0u64..100_000, payload()), 0..12),
        chunks in chunking(),
    ) {
        let mut msgs = vec![first];
        for (skip, dt, payload) in steps {
            let Msg::Object { broadcast, track, group, index, capture_us, .. } = msgs.last().unwrap().clone() else {
                unreachable!()
            };
            msgs.push(Msg::Object {
                broadcast,
                track,
                group,
                index: index.wrapping_add(skip),
                capture_us: capture_us.wrapping_add(dt),
                payload,
            });
        }
        let mut encoder = GroupEncoder::new();
        let mut sizer = GroupEncoder::new();
        let mut stream = Vec::new();
        for m in &msgs {
            let before = stream.len();
            encoder.encode(m, &mut stream);
            prop_assert_eq!(stream.len() - before, sizer.frame_len(m));
        }
        prop_assert_eq!(feed_to(Decoder::group_stream(), &stream, &chunks), Ok(msgs));
    }

    #[test]
    fn flipped_frames_never_panic(
        m in msg(),
        flips in vec((any::<prop::sample::Index>(), 1u8..=255), 1..6),
        chunks in chunking(),
    ) {
        let mut bytes = encode(&m);
        for (at, mask) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
        }
        // The encoding is canonical: whatever still decodes as one whole frame
        // re-encodes to the very same bytes.
        if let Ok(decoded) = feed(&bytes, &chunks) {
            let declared = u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]);
            if decoded.len() == 1 && HEADER_LEN + declared as usize == bytes.len() {
                prop_assert_eq!(encode(&decoded[0]), bytes);
            }
        }
    }
}
