//! What neighbours say to each other. The wire form is in `wire`, documented in
//! `docs/protocol.md`.

use bytes::Bytes;

/// A node's identity: its Ed25519 public key. Certificates in the transport prove it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(pub [u8; 32]);

/// The bytes' order, as derived, but compared as four big-endian integers: the ordered
/// maps keyed by ids (peers, routes, broadcasts) then never call `memcmp`, not even for
/// the equal key every lookup ends on (a third of the simulator's time at 1 000 nodes
/// went into such calls).
impl Ord for NodeId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let word = |id: &NodeId, i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&id.0[i * 8..i * 8 + 8]);
            u64::from_be_bytes(w)
        };
        (0..4)
            .map(|i| word(self, i).cmp(&word(other, i)))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    }
}

impl PartialOrd for NodeId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl NodeId {
    /// The first 6 bytes in hex: enough to tell nodes apart in logs and host names.
    pub fn short(&self) -> String {
        crate::hex::to_hex(&self.0[..6])
    }

    /// All 64 hex digits (lowercase).
    pub fn to_hex(&self) -> String {
        crate::hex::to_hex(&self.0)
    }

    /// The first 8 bytes as a number: ids are public keys, so as good as random bits.
    pub fn prefix(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(b)
    }

    /// 64 hex digits, either case.
    pub fn from_hex(s: &str) -> Option<NodeId> {
        crate::hex::from_hex(s).map(NodeId)
    }
}

impl std::fmt::Debug for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.short())
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.short())
    }
}

/// A node as a catalog path names it: the first 4 bytes of its id. A path is told along
/// every link at every change and is most of an entry's bytes: 8 bytes instead of 32 per
/// relay made entries about 40 % smaller, and 4 instead of 8 another fifth at 10 000
/// boxes. A path is only checked for the checking node's own hop (a loop) and its
/// site-mates' (a route back into its site): a route of 16 hops names a given node by
/// mistake by a 2^-28 chance, and then that route looks like a loop and is not taken,
/// never the other way round. A node that grinds a key to share another's prefix (2^32
/// keys) gains only that: routes through it look like loops to the node it copies.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hop(pub [u8; 4]);

impl std::fmt::Debug for Hop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", crate::hex::to_hex(&self.0))
    }
}

impl NodeId {
    /// This node on a catalog path.
    pub fn hop(&self) -> Hop {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.0[..4]);
        Hop(b)
    }
}

/// A broadcast's name at its origin. Held inline up to 24 bytes (every name the box and
/// the bus make): the maps keyed by broadcast, looked up for every object relayed and
/// every route weighed, then compare names in memory they already read, where a
/// `String` sent each comparison to a heap block not in cache (a quarter of the
/// simulator's time while broadcasts go live).
pub type Name = compact_str::CompactString;

/// A broadcast is named by its origin and a name unique at that origin.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BroadcastId {
    pub origin: NodeId,
    pub name: Name,
}

impl BroadcastId {
    /// The overlay's own broadcasts (names starting with '.': `.node`, chat) carry an
    /// object now and then, when something happens, not a steady stream: whether a node
    /// carries one cannot be told from how recently an object arrived.
    pub fn is_sparse(&self) -> bool {
        self.name.starts_with('.')
    }
}

/// Track numbers within a broadcast.
pub const TRACK_VIDEO: u8 = 0;
pub const TRACK_AUDIO: u8 = 1;
/// What a player needs before the first frame (frame rate, Opus pre-skip), as JSON: one
/// group with one object, kept in the group cache like any other (after MoQ's catalog).
pub const TRACK_CATALOG: u8 = 2;

/// Telemetry of a node: one reading per group (late joiners get the latest at once).
pub const TRACK_TELEMETRY: u8 = 3;

/// Chat: each sender's messages in a room are a broadcast of its own (`bus::chat`).
pub const TRACK_CHAT: u8 = 4;

/// The broadcast every node publishes: its capabilities on the catalog track and its
/// readings on the telemetry track. Its catalog entry is also the node's route within its
/// site; it is never told to another site (nodes beyond are reached through `Find`).
/// Names starting with '.' are the overlay's own.
pub const NODE_BROADCAST: &str = ".node";

/// A routed message's kinds.
pub const ROUTED_COMMAND: u8 = 1;
pub const ROUTED_REPLY: u8 = 2;
/// A box tells a stream's origin who watches the stream through it (JSON), so the filmed
/// see every viewer, wherever they watch.
pub const ROUTED_WATCHING: u8 = 3;
/// Largest routed body (a command's arguments or a reply).
pub const MAX_ROUTED_BODY: usize = 16 * 1024;
/// Largest revocation list a box passes on (about 900 revoked nodes).
pub const MAX_REVOCATIONS: usize = 64 * 1024;
/// Largest update offer: a bundle's signed manifest (16 384 chunk hashes, 4 GiB in
/// 256 KiB chunks, take about 1.1 MB).
pub const MAX_OFFER: usize = 2 << 20;
/// Largest chunk of a bundle carried in one frame.
pub const MAX_CHUNK: usize = 1 << 20;
/// Largest have-bitmap (65 536 chunks).
pub const MAX_HAVE: usize = 8 * 1024;

/// A message addressed to one node, passed from neighbour to neighbour: along the route
/// to that node's [`NODE_BROADCAST`] within a site, along routes found by `Find` beyond. Signed by the sender, so relays cannot change it
/// and the target knows who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub to: NodeId,
    pub from: NodeId,
    pub kind: u8,
    /// Unique per sender; a reply carries its command's id.
    pub id: u64,
    /// The sender's wall clock, ms since the Unix epoch: old messages are refused.
    pub sent_ms: u64,
    /// Relays left; not signed (each relay lowers it).
    pub hops: u8,
    pub body: Bytes,
    pub sig: [u8; 64],
}

impl Routed {
    /// Hops a routed message may take: more than any tree the overlay builds.
    pub const MAX_HOPS: u8 = 32;

    /// What the signature covers: everything but the hop count, after a context string
    /// so the signature cannot be taken for one of another protocol.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(96 + self.body.len());
        m.extend_from_slice(b"cambox-routed-v1\n");
        m.extend_from_slice(&self.to.0);
        m.extend_from_slice(&self.from.0);
        m.push(self.kind);
        m.extend_from_slice(&self.id.to_be_bytes());
        m.extend_from_slice(&self.sent_ms.to_be_bytes());
        m.extend_from_slice(&self.body);
        m
    }

    /// A message from `identity`, signed.
    pub fn signed(
        identity: &crate::identity::Identity,
        to: NodeId,
        kind: u8,
        id: u64,
        sent_ms: u64,
        body: Bytes,
    ) -> Routed {
        let mut r = Routed {
            to,
            from: identity.node_id(),
            kind,
            id,
            sent_ms,
            hops: Self::MAX_HOPS,
            body,
            sig: [0; 64],
        };
        r.sig = identity.sign(&r.signed_bytes());
        r
    }

    /// Whether `from` really signed it.
    pub fn verify(&self) -> bool {
        crate::identity::verify(&self.from, &self.signed_bytes(), &self.sig)
    }
}

/// One broadcast as a neighbour knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub broadcast: BroadcastId,
    /// The origin's site.
    pub site: String,
    /// The origin box's name (`cambox run --node`), for people: stream lists show it.
    pub box_name: String,
    /// Who may watch, as the origin says (`group:ops,site:berlin`); empty: the mesh-wide
    /// default. Carried so that the box that serves a viewer, anywhere, checks the
    /// origin's rule.
    pub watch: String,
    pub tracks: Vec<u8>,
    /// The sender's route from the origin: origin first, the sender last. A node never
    /// takes a route that already contains itself, so trees cannot loop.
    pub path: Vec<Hop>,
    /// True when the sender is receiving the broadcast now (it can serve at once).
    pub carrying: bool,
    /// Bumped by the origin each time the broadcast goes live; stale copies lose to newer
    /// ones.
    pub version: u64,
    /// How long a receiver keeps the broadcast's version after the last neighbour that
    /// offered it withdrew it.
    pub ttl_ms: u32,
}

impl CatalogEntry {
    /// Whether the route passes through `node`.
    pub fn passes(&self, node: &NodeId) -> bool {
        self.path.contains(&node.hop())
    }
}

/// Where a subscriber wants a track to continue from after switching parents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePoint {
    pub track: u8,
    pub group: u64,
    /// The next object the subscriber needs in that group.
    pub index: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// First message on a connection.
    Hello {
        node: NodeId,
        site: String,
        /// Upload budget for relaying, kbit/s (0 = unknown).
        uplink_kbps: u32,
        /// The sender dialed this link for a tree (a redirect, or a node followed
        /// directly), not as one of the links the registry, static peers or mDNS make:
        /// lookups do not flood over it.
        tree: bool,
    },
    /// Everything the sender knows of, sent periodically and on change.
    Catalog {
        entries: Vec<CatalogEntry>,
    },
    /// Broadcasts the sender wants, so a site can agree on who pulls each across the WAN.
    Interest {
        broadcasts: Vec<BroadcastId>,
    },
    Subscribe {
        broadcast: BroadcastId,
        resume: Vec<ResumePoint>,
    },
    SubscribeOk {
        broadcast: BroadcastId,
    },
    /// The sender cannot take another child for this broadcast: try these instead.
    Redirect {
        broadcast: BroadcastId,
        to: Vec<NodeId>,
    },
    Unsubscribe {
        broadcast: BroadcastId,
    },
    /// One frame. In the QUIC transport, each group travels on a stream of its own.
    Object {
        broadcast: BroadcastId,
        track: u8,
        group: u64,
        index: u32,
        capture_us: u64,
        payload: Bytes,
    },
    /// Where the sender reaches some nodes ("ip:port" of their QUIC endpoints). Sent by
    /// the transport before a `Redirect`, so the redirected node can dial the nodes it
    /// names; the core ignores it.
    Addresses {
        entries: Vec<(NodeId, String)>,
    },
    /// A command or reply on its way to one node.
    Routed(Box<Routed>),
    /// A node looks for a way to `target`: each node that has not seen this `question`
    /// yet answers if it reaches the target, else passes the question on. Remembering
    /// where it came from gives the answer its way back. The asker is not named: the
    /// messages it then sends learn their way back as they go (`Routed` from), and a
    /// question crosses every gateway of the company, so each byte of it counts.
    Find {
        /// Chosen by the asker, unique with overwhelming odds (`question_id`).
        question: u64,
        target: NodeId,
        /// Relays left; each lowers it.
        hops: u8,
    },
    /// The answer to a `Find`, travelling back the way the question came: the sender
    /// reaches `target`, so routed messages for it go to the sender.
    Found {
        question: u64,
        target: NodeId,
    },
    /// Who the sender reaches in its own site: how many boxes, itself included, and a
    /// digest of their ids, told to site-mates once it has settled after a change. A site
    /// is meant to be a full LAN mesh, where a route needs telling by one box only and all
    /// boxes tell the same; a site-mate that tells another (static peers in one site,
    /// mDNS blocked) may not reach that one box and is told every route.
    /// `beyond`: the sender has links to other sites, so a lookup from another site must
    /// pass through it to go on (in a full mesh any site-mate answers for the site).
    SiteMates {
        count: u32,
        digest: u64,
        beyond: bool,
    },
    /// The link between `a` and `b` is gone (one of them lost the other): every route
    /// over it is dead. Passed on to the neighbours that were told or told a route over
    /// it, so they drop those routes at once instead of trying one doomed route after
    /// another (BGP's path hunting; root cause notification, as in BGP-RCN).
    LinkDown {
        a: Hop,
        b: Hop,
    },
    /// What changed in the sender's interest since the `Interest` or `InterestChange`
    /// it last sent on this link. A box of a site of 100 tells each change to 99
    /// site-mates; the whole list each time was a fifth of control traffic at 1 000
    /// boxes.
    InterestChange {
        added: Vec<BroadcastId>,
        removed: Vec<BroadcastId>,
    },
    /// The company CA's newest list of revoked nodes, as the CA signed it (text, see
    /// `cambox_trust::revocation`). Sent on every new link of a mesh with a CA and passed
    /// on to every neighbour by each box that finds it newer than its own, so a revocation
    /// reaches every box in a few link round trips. The transport checks and keeps it;
    /// the core ignores it.
    Revocations {
        list: Bytes,
    },
    /// An update bundle's head, as the release key signed it (`cambox_update::Bundle`'s
    /// head bytes). Passed on, like revocation lists, by each box that checks it and
    /// finds it new; the transport handles it, the core ignores it.
    UpdateOffer {
        head: Bytes,
    },
    /// Which boxes install an offered bundle, and whether they may start
    /// (`cambox_update::Rollout`, signed by the release key). Passed on like offers.
    UpdateRollout {
        doc: Bytes,
    },
    /// Which chunks of bundle `bundle` (its id: the first 8 bytes of its manifest's
    /// SHA-256) the sender has: bit `i` of `bits` (least significant first) is chunk
    /// `from + i`. Whole on a new link, one chunk at a time after.
    ChunkHave {
        bundle: u64,
        from: u32,
        bits: Bytes,
    },
    /// Asks for one chunk (`cambox_mesh::swarm`).
    ChunkGet {
        bundle: u64,
        chunk: u32,
    },
    /// One chunk, checked by the receiver against the signed manifest.
    ChunkData {
        bundle: u64,
        chunk: u32,
        data: Bytes,
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    Goodbye,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ids_order_as_their_bytes(a: [u8; 32], b: [u8; 32], common in 0usize..32) {
            // Ids sharing a prefix of any length too, so the tail's comparison is tried.
            let mut b = b;
            b[..common].copy_from_slice(&a[..common]);
            prop_assert_eq!(NodeId(a).cmp(&NodeId(b)), a.cmp(&b));
            prop_assert_eq!(NodeId(a).cmp(&NodeId(a)), std::cmp::Ordering::Equal);
        }
    }
}
