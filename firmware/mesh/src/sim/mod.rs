//! A deterministic network of [`Node`]s on a fake clock: per-link delay and bandwidth,
//! nodes that die, and byte counters on every site's WAN link.
//!
//! It plays the driver's part (the QUIC transport in the real box): it carries messages,
//! reports bytes that left a link, tells neighbours when a peer went silent (after
//! `idle_timeout`, like a QUIC idle timeout) and dials nodes a redirect names.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::bus::Bus;
use crate::identity::Identity;
use crate::msg::{BroadcastId, CatalogEntry, Msg, NodeId, Routed, ROUTED_COMMAND};
use crate::node::{Config, Event, Node, RouteError};
use crate::site_graph::GatewayDuty;
use crate::wire::GroupEncoder;

mod agenda;
mod bus;
pub use bus::{Answered, ChatSeen};

/// How a link behaves, in each direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkSpec {
    pub delay: Duration,
    pub bits_per_second: u64,
    /// Up to this much more delay, drawn anew for each message. Messages of one stream
    /// (the control stream, or one group's stream) keep their order, as on a QUIC stream;
    /// messages of different streams overtake each other.
    pub jitter: Duration,
    /// Share of messages whose packet is lost once. QUIC sends it again, so it arrives a
    /// retransmission timeout later (the round trip and 25 ms), behind it its stream.
    pub loss: f64,
}

impl LinkSpec {
    pub const LAN: LinkSpec = LinkSpec {
        delay: Duration::from_millis(1),
        bits_per_second: 100_000_000,
        jitter: Duration::ZERO,
        loss: 0.0,
    };
    pub const WAN: LinkSpec = LinkSpec {
        delay: Duration::from_millis(20),
        bits_per_second: 50_000_000,
        jitter: Duration::ZERO,
        loss: 0.0,
    };

    /// A WAN link with this one-way delay, jitter and loss.
    pub fn wan(delay: Duration, jitter: Duration, loss: f64) -> LinkSpec {
        LinkSpec {
            delay,
            jitter,
            loss,
            ..LinkSpec::WAN
        }
    }

    /// How long a lost packet takes to be sent again.
    fn retransmit_after(&self) -> Duration {
        2 * self.delay + Duration::from_millis(25)
    }
}

/// Which QUIC stream a message travels on: the control stream (0), or its group's.
fn stream_of(msg: &Msg) -> u64 {
    match msg {
        Msg::Object {
            broadcast,
            track,
            group,
            ..
        } => hash_of((broadcast, track, group)) | 1,
        _ => 0,
    }
}

/// A 64-bit key for a tuple, to index per-stream and per-track state without cloning it.
fn hash_of(v: impl std::hash::Hash) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(v)
}

/// An object a node handed to its own viewers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub at: Instant,
    pub broadcast: BroadcastId,
    pub track: u8,
    pub group: u64,
    pub index: u32,
    pub capture_us: u64,
}

#[derive(Debug)]
struct SimNode {
    node: Node,
    identity: Identity,
    /// Commands and replies that reached this node, in arrival order.
    routed: Vec<(Instant, Routed)>,
    site: usize,
    timer: Option<Instant>,
    delivered: Vec<Delivered>,
    /// In a world built as the registry links it: whom this node dials across sites, kept
    /// up as its site-mates' links go down (as the box's driver keeps it).
    duty: Option<GatewayDuty<(NodeId, usize)>>,
    /// The bus's state machines, as the box runs them; a command waits with its send time.
    bus: Bus<Instant>,
    /// Whether the bus is ticked (from its first use until it follows nothing).
    bus_ticking: bool,
    /// What the bus gave this node's user.
    bus_seen: bus::Seen,
    /// Its side of each connection, by the neighbour's id: what the node hands the driver
    /// names the neighbour by id, and one small table per node is found in one step (a
    /// table of every link of the world, and one of every node's index, each missed the
    /// cache per message).
    links: FxHashMap<NodeId, Link>,
}

#[derive(Debug)]
enum Action {
    Arrive {
        to: usize,
        from: usize,
        msg: Msg,
    },
    Sent {
        at: usize,
        peer: usize,
        bytes: usize,
    },
    Down {
        at: usize,
        peer: usize,
    },
    Up {
        a: usize,
        b: usize,
    },
    Timer {
        at: usize,
    },
    Produce {
        origin: usize,
        broadcast: usize,
        n: u64,
    },
    BusTick {
        at: usize,
    },
}

/// A live broadcast the simulation produces: 30 objects a second, a group a second.
#[derive(Debug, Clone)]
pub struct SimBroadcast {
    pub id: BroadcastId,
    pub origin: usize,
    pub keyframe_bytes: usize,
    pub frame_bytes: usize,
    pub fps: u32,
    /// Ended by `Net::unpublish`: produced no more.
    pub ended: bool,
}

/// Media bytes into each site by broadcast, and by link (sender, receiver).
pub type MediaInByLink = BTreeMap<(usize, BroadcastId), BTreeMap<(usize, usize), u64>>;

/// Bytes over one site's WAN link, by direction and kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WanBytes {
    pub media_in: u64,
    pub media_out: u64,
    pub control_in: u64,
    pub control_out: u64,
}

/// One direction of a connection, with what a message on it needs: one lookup per
/// message (the streams and framings were maps of their own, two more lookups each).
/// Streams and framings are held inline: a link carries few at a time.
#[derive(Debug)]
struct Link {
    /// The node at the other end.
    to: usize,
    spec: LinkSpec,
    /// When the last message handed to it has left.
    busy_until: Instant,
    /// When the last message on each stream (`stream_of`) arrives: the next one on the
    /// same stream never arrives before it. Streams whose last message has arrived go.
    tails: SmallVec<[(u64, Instant); 4]>,
    /// The group-stream framing of each track of a broadcast (by `hash_of`), so that
    /// objects are counted at the size the driver sends them (`ObjectNext` after a
    /// group's first).
    encoders: SmallVec<[(u64, GroupEncoder); 2]>,
    /// A node dialed it for a tree (its `Connect` event), not the world as built.
    dialed: bool,
}

impl Link {
    fn new(to: usize, spec: LinkSpec, now: Instant, dialed: bool) -> Link {
        Link {
            to,
            spec,
            busy_until: now,
            tails: SmallVec::new(),
            encoders: SmallVec::new(),
            dialed,
        }
    }
}

/// Deterministic pseudo-random numbers (SplitMix64) from a state of 64 bits: the
/// simulator's draws, and a benchmark's own choices beside them.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug)]
pub struct Net {
    epoch: Instant,
    now: Instant,
    nodes: Vec<SimNode>,
    /// Each node's id and whether it lives, beside the nodes: every message looks both up
    /// for its sender, whose node is seldom in the cache.
    ids: Vec<NodeId>,
    alive: Vec<bool>,
    index: FxHashMap<NodeId, usize>,
    /// What happens when, in order (equal instants in the order scheduled).
    agenda: agenda::Agenda<Action>,
    rng: SplitMix,
    pub idle_timeout: Duration,
    pub broadcasts: Vec<SimBroadcast>,
    /// Counting starts when `measure` is set, so start-up can be left out.
    pub measuring: bool,
    pub wan: Vec<WanBytes>,
    /// Media bytes each broadcast's origin produced while measuring.
    pub produced: Vec<u64>,
    /// When set, media bytes into each site while measuring, by broadcast and by link
    /// (sender, receiver): which link brought a site more than one copy.
    pub media_in_by_link: Option<MediaInByLink>,
    last_timer: Option<(usize, Instant)>,
    spins: u32,
    /// Messages that were lost once and sent again (links with `loss`).
    pub retransmitted: u64,
    /// Bytes of everything but media sent over every link, LAN and WAN, while measuring.
    pub control_sent: u64,
    /// Bytes of everything but media sent over every link since the start.
    pub control_total: u64,
    /// `control_total` by message type.
    pub control_by_type: BTreeMap<&'static str, u64>,
    /// `control_by_type` over the links nodes dialed for trees alone (`dialed_links`).
    pub control_over_dialed: BTreeMap<&'static str, u64>,
    /// Catalog entries sent, in a site or across sites, told or withdrawn.
    pub catalog_entries: BTreeMap<&'static str, u64>,
    /// Nodes answer every command they accept with a reply echoing its body.
    pub auto_reply: bool,
    /// The link a node that stands in as its site's gateway dials across sites with.
    standin_wan: Option<fn(&mut Net) -> LinkSpec>,
}

/// Catalog entries of made-up broadcasts (numbered `range`, each of its own made-up origin)
/// that `sender` claims to relay, as a lying neighbour would announce them.
pub fn made_up_entries(range: std::ops::Range<usize>, sender: NodeId) -> Vec<CatalogEntry> {
    range
        .map(|i| {
            let mut origin = [0u8; 32];
            origin[..8].copy_from_slice(&(i as u64).to_be_bytes());
            origin[31] = 0xee;
            CatalogEntry {
                broadcast: BroadcastId {
                    origin: NodeId(origin),
                    name: format!("fake{i}").into(),
                },
                site: "nowhere".into(),
                box_name: "liar".into(),
                watch: String::new(),
                tracks: vec![crate::msg::TRACK_VIDEO],
                path: vec![NodeId(origin).hop(), sender.hop()],
                carrying: true,
                version: 1,
                ttl_ms: 600_000,
            }
        })
        .collect()
}

/// The wall clock of the simulation at its start (ms since the Unix epoch).
pub const WALL_AT_START_MS: u64 = 1_800_000_000_000;

impl Net {
    pub fn new(seed: u64) -> Self {
        let epoch = Instant::now();
        Self {
            epoch,
            now: epoch,
            nodes: Vec::new(),
            ids: Vec::new(),
            alive: Vec::new(),
            index: FxHashMap::default(),
            agenda: agenda::Agenda::new(epoch),
            rng: SplitMix(seed ^ 0x9E37_79B9_7F4A_7C15),
            idle_timeout: Duration::from_millis(300),
            broadcasts: Vec::new(),
            measuring: false,
            wan: Vec::new(),
            produced: Vec::new(),
            media_in_by_link: None,
            last_timer: None,
            spins: 0,
            retransmitted: 0,
            control_sent: 0,
            control_total: 0,
            control_by_type: BTreeMap::new(),
            control_over_dialed: BTreeMap::new(),
            catalog_entries: BTreeMap::new(),
            auto_reply: true,
            standin_wan: None,
        }
    }

    /// `sites` sites of `per_site` nodes: a full LAN mesh inside each site (mDNS finds
    /// everyone), and `wan_links` connections from each node to random nodes of other
    /// sites (static peers or the registry), each over the link `wan` makes.
    pub fn sites(
        seed: u64,
        sites: usize,
        per_site: usize,
        wan_links: usize,
        wan: impl FnMut(&mut Net) -> LinkSpec,
    ) -> Net {
        Net::sites_of(seed, &vec![per_site; sites], wan_links, wan)
    }

    /// As [`Net::sites`], with a size for each site.
    pub fn sites_of(
        seed: u64,
        sizes: &[usize],
        wan_links: usize,
        mut wan: impl FnMut(&mut Net) -> LinkSpec,
    ) -> Net {
        let mut net = Net::new(seed);
        let mut ends = Vec::new();
        for (site, &size) in sizes.iter().enumerate() {
            for _ in 0..size {
                net.add_node(site, Config::default());
            }
            ends.push(net.len());
        }
        for a in 0..net.len() {
            // Nodes were added site by site: a's site-mates after it end here.
            for b in a + 1..ends[net.site_of(a)] {
                net.connect(a, b, LinkSpec::LAN);
            }
            if sizes.len() < 2 {
                continue;
            }
            for _ in 0..wan_links {
                let other = loop {
                    let c = (net.random() % net.len() as u64) as usize;
                    if net.site_of(c) != net.site_of(a) {
                        break c;
                    }
                };
                let spec = wan(&mut net);
                net.connect(a, other, spec);
            }
        }
        net
    }

    /// Sites of the given sizes, a full LAN mesh inside each, linked across sites as boxes
    /// that find each other through a registry are: each node holds the registry's answer
    /// in a `GatewayDuty`, so each site's gateways (its lowest ids) dial the gateway of the
    /// same rank in each site `site_graph` links it to, over the link `wan` makes, and the
    /// lowest living site-mates stand in when gateways die.
    pub fn sites_by_registry(seed: u64, sizes: &[usize], wan: fn(&mut Net) -> LinkSpec) -> Net {
        let mut net = Net::sites_of(seed, sizes, 0, |_| LinkSpec::LAN);
        net.standin_wan = Some(wan);
        let mut by_site: Vec<Vec<(NodeId, usize)>> = vec![Vec::new(); sizes.len()];
        for i in 0..net.len() {
            by_site[net.site_of(i)].push((net.id(i), i));
        }
        for ids in &mut by_site {
            ids.sort_unstable();
        }
        let names: Vec<String> = (0..sizes.len()).map(|s| format!("site{s}")).collect();
        let all: Vec<&str> = names.iter().map(String::as_str).collect();
        let index: BTreeMap<&str, usize> = all.iter().enumerate().map(|(i, s)| (*s, i)).collect();
        for (site, name) in all.iter().enumerate() {
            // What the registry answers each box of this site: its site, and the gateways
            // of the sites this site links to.
            let linked: Vec<Vec<(NodeId, usize)>> = crate::site_graph::linked_sites(name, &all)
                .iter()
                .map(|other| {
                    let there = &by_site[index[other]];
                    there[..there.len().min(crate::site_graph::GATEWAYS)].to_vec()
                })
                .collect();
            for &me in &by_site[site] {
                let mut duty = GatewayDuty::new(me);
                duty.answer(by_site[site].clone(), linked.clone());
                net.nodes[me.1].duty = Some(duty);
                net.dial_across(me.1);
            }
        }
        net
    }

    /// Dials what node `i`'s gateway duty asks for and is not linked yet.
    fn dial_across(&mut self, i: usize) {
        let (Some(duty), Some(wan)) = (&self.nodes[i].duty, self.standin_wan) else {
            return;
        };
        for (_, j) in duty.across() {
            if !self.linked(i, j) {
                let spec = wan(self);
                self.connect(i, j, spec);
            }
        }
    }

    /// A deterministic pseudo-random number in [0, 1).
    pub fn random_unit(&mut self) -> f64 {
        self.rng.unit()
    }

    /// Deterministic pseudo-random numbers (SplitMix64).
    pub fn random(&mut self) -> u64 {
        self.rng.next_u64()
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// Adds a node in `site` (sites are numbered from 0) with an id made from the seed.
    pub fn add_node(&mut self, site: usize, mut cfg: Config) -> usize {
        let mut seed = [0u8; 32];
        for chunk in seed.chunks_mut(8) {
            chunk.copy_from_slice(&self.random().to_be_bytes());
        }
        // Real keys, so routed messages are signed and checked as on a box.
        let identity = Identity::from_seed(seed);
        let id = identity.node_id();
        cfg.site = format!("site{site}");
        let i = self.nodes.len();
        self.index.insert(id, i);
        self.ids.push(id);
        self.alive.push(true);
        let mut node = Node::new(id, cfg);
        node.set_wall_clock(self.now, self.wall_ms());
        self.nodes.push(SimNode {
            node,
            identity,
            routed: Vec::new(),
            site,
            timer: None,
            delivered: Vec::new(),
            duty: None,
            bus: Bus::new(id, 0),
            bus_ticking: false,
            bus_seen: bus::Seen::default(),
            links: FxHashMap::default(),
        });
        if self.wan.len() <= site {
            self.wan.resize(site + 1, WanBytes::default());
        }
        i
    }

    /// The simulated wall clock, ms since the Unix epoch.
    pub fn wall_ms(&self) -> u64 {
        WALL_AT_START_MS + (self.now - self.epoch).as_millis() as u64
    }

    pub fn identity(&self, i: usize) -> &Identity {
        &self.nodes[i].identity
    }

    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i].node
    }

    /// Publishes node `i`'s own broadcast (capabilities and telemetry), which is also its
    /// route for commands. Its objects are sent with [`Net::local_object`].
    pub fn announce(&mut self, i: usize) -> BroadcastId {
        let now = self.now;
        let n = &mut self.nodes[i];
        let id = n.bus.publish_own_node(&mut n.node, now);
        self.pump(i);
        id
    }

    /// Publishes a broadcast at `i` whose objects the test sends itself.
    pub fn publish_quiet(&mut self, i: usize, name: &str, tracks: Vec<u8>) -> BroadcastId {
        let now = self.now;
        let id = self.nodes[i].node.publish(now, name, tracks);
        self.pump(i);
        id
    }

    /// An object of a broadcast originating at `i`.
    pub fn local_object(
        &mut self,
        i: usize,
        b: &BroadcastId,
        track: u8,
        group: u64,
        index: u32,
        payload: Bytes,
    ) {
        let capture_us = (self.now - self.epoch).as_micros() as u64;
        self.nodes[i]
            .node
            .handle_local_object(b, track, group, index, capture_us, payload);
        self.pump(i);
    }

    pub fn subscribe_to(&mut self, i: usize, b: BroadcastId) {
        let now = self.now;
        self.nodes[i].node.subscribe(now, b);
        self.pump(i);
    }

    /// Sends a command signed by `from` to node `to`.
    pub fn command(
        &mut self,
        from: usize,
        to: usize,
        id: u64,
        body: Bytes,
    ) -> Result<(), RouteError> {
        let r = Routed::signed(
            &self.nodes[from].identity,
            self.id(to),
            ROUTED_COMMAND,
            id,
            self.wall_ms(),
            body,
        );
        self.send_routed(from, r)
    }

    /// Sends any routed message from node `from` (forged and replayed ones included).
    pub fn send_routed(&mut self, from: usize, r: Routed) -> Result<(), RouteError> {
        let now = self.now;
        let sent = self.nodes[from].node.send_routed(now, r);
        self.pump(from);
        sent
    }

    /// Commands and replies that reached node `i`.
    pub fn routed(&self, i: usize) -> &[(Instant, Routed)] {
        &self.nodes[i].routed
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i].node
    }

    pub fn id(&self, i: usize) -> NodeId {
        self.ids[i]
    }

    pub fn site_of(&self, i: usize) -> usize {
        self.nodes[i].site
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn is_alive(&self, i: usize) -> bool {
        self.alive[i]
    }

    pub fn delivered(&self, i: usize) -> &[Delivered] {
        &self.nodes[i].delivered
    }

    /// Connects two nodes; both see the other come up after one round trip.
    pub fn connect(&mut self, a: usize, b: usize, spec: LinkSpec) {
        self.link_up(a, b, spec, false);
    }

    /// Links `a` and `b` unless they are; `dialed`: for a tree, by a node's `Connect`.
    fn link_up(&mut self, a: usize, b: usize, spec: LinkSpec, dialed: bool) {
        if a == b || self.linked(a, b) {
            return;
        }
        let (ida, idb) = (self.id(a), self.id(b));
        self.nodes[a]
            .links
            .insert(idb, Link::new(b, spec, self.now, dialed));
        self.nodes[b]
            .links
            .insert(ida, Link::new(a, spec, self.now, dialed));
        self.schedule(self.now + 2 * spec.delay, Action::Up { a, b });
    }

    /// The links nodes dialed for trees (`Connect` events), each once: (lower, higher).
    pub fn dialed_links(&self) -> Vec<(usize, usize)> {
        (0..self.nodes.len())
            .flat_map(|a| {
                self.nodes[a]
                    .links
                    .values()
                    .filter(move |l| l.dialed && a < l.to)
                    .map(move |l| (a, l.to))
            })
            .collect()
    }

    fn link_between(&self, a: usize, b: usize) -> LinkSpec {
        if self.nodes[a].site == self.nodes[b].site {
            LinkSpec::LAN
        } else {
            LinkSpec::WAN
        }
    }

    /// Starts a broadcast at `origin`, produced from now on.
    pub fn publish(&mut self, origin: usize, name: &str) -> usize {
        let now = self.now;
        let id = self.nodes[origin]
            .node
            .publish(now, name, vec![crate::msg::TRACK_VIDEO]);
        self.broadcasts.push(SimBroadcast {
            id,
            origin,
            keyframe_bytes: 6_000,
            frame_bytes: 1_500,
            fps: 30,
            ended: false,
        });
        self.produced.push(0);
        let k = self.broadcasts.len() - 1;
        self.schedule(
            now,
            Action::Produce {
                origin,
                broadcast: k,
                n: 0,
            },
        );
        self.pump(origin);
        k
    }

    /// Ends broadcast `k` at its origin.
    pub fn unpublish(&mut self, k: usize) {
        let (origin, id) = (self.broadcasts[k].origin, self.broadcasts[k].id.clone());
        self.broadcasts[k].ended = true;
        let now = self.now;
        self.nodes[origin].node.unpublish(now, &id);
        self.pump(origin);
    }

    pub fn subscribe(&mut self, node: usize, broadcast: usize) {
        let id = self.broadcasts[broadcast].id.clone();
        let now = self.now;
        self.nodes[node].node.subscribe(now, id);
        self.pump(node);
    }

    /// Node `node`'s viewers of broadcast `broadcast` leave.
    pub fn unsubscribe(&mut self, node: usize, broadcast: usize) {
        let id = self.broadcasts[broadcast].id.clone();
        self.nodes[node].node.unsubscribe(&id);
        self.pump(node);
    }

    /// The simulation's index of the node with this id.
    pub fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// How many sites a broadcast crosses to reach node `n` along its tree (0 in the
    /// origin's site), or `None` while `n` has no parent chain up to the origin.
    pub fn site_depth(&self, n: usize, broadcast: usize) -> Option<usize> {
        let b = &self.broadcasts[broadcast];
        let (mut at, mut depth) = (n, 0);
        for _ in 0..self.nodes.len() {
            if at == b.origin {
                return Some(depth);
            }
            let parent = self.index_of(&self.nodes[at].node.parent(&b.id)?)?;
            depth += usize::from(self.site_of(parent) != self.site_of(at));
            at = parent;
        }
        None
    }

    /// Kills a node: it stops at once; its neighbours notice after `idle_timeout`.
    pub fn kill(&mut self, i: usize) {
        self.alive[i] = false;
        let mut peers: Vec<usize> = self.nodes[i].links.values().map(|l| l.to).collect();
        // In the order of the nodes, whatever the map's.
        peers.sort_unstable();
        for p in peers {
            self.schedule(
                self.now + self.idle_timeout,
                Action::Down { at: p, peer: i },
            );
        }
    }

    /// Hands node `to` a message as if node `from` had sent it over their link (a peer
    /// that says what no node of ours would), after the link's delay.
    pub fn inject(&mut self, from: usize, to: usize, msg: Msg) {
        if let Some(delay) = self.link(from, to).map(|l| l.spec.delay) {
            self.schedule(self.now + delay, Action::Arrive { to, from, msg });
        }
    }

    /// Whether `a` and `b` have a link (it closes when either disconnects the other).
    pub fn linked(&self, a: usize, b: usize) -> bool {
        self.link(a, b).is_some()
    }

    /// Node `from`'s side of its link to node `to`.
    fn link(&self, from: usize, to: usize) -> Option<&Link> {
        self.nodes[from].links.get(&self.id(to))
    }

    /// Limits one direction of a link (`from` to `to`), e.g. to make a slow child.
    pub fn set_bandwidth(&mut self, from: usize, to: usize, bits_per_second: u64) {
        let to = self.id(to);
        if let Some(link) = self.nodes[from].links.get_mut(&to) {
            link.spec.bits_per_second = bits_per_second;
        }
    }

    fn schedule(&mut self, at: Instant, action: Action) {
        self.agenda.schedule(at, action);
    }

    /// Runs until `duration` of simulated time has passed.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while let Some((at, action)) = self.agenda.pop_until(end) {
            self.now = at;
            self.apply(action);
        }
        self.now = end;
    }

    fn apply(&mut self, action: Action) {
        let now = self.now;
        match action {
            Action::Up { a, b } => {
                if !(self.alive[a] && self.alive[b]) {
                    return;
                }
                let delay = self.link(a, b).map_or(Duration::ZERO, |l| l.spec.delay);
                let rtt = 2 * delay;
                let (ida, idb) = (self.id(a), self.id(b));
                self.nodes[a].node.handle_peer_up(now, idb, rtt);
                self.nodes[b].node.handle_peer_up(now, ida, rtt);
                for (x, y) in [(a, (idb, b)), (b, (ida, a))] {
                    if let Some(duty) = &mut self.nodes[x].duty {
                        duty.found(&y);
                    }
                }
                self.pump(a);
                self.pump(b);
            }
            Action::Down { at, peer } => {
                if self.alive[at] {
                    let id = self.id(peer);
                    self.nodes[at].node.handle_peer_down(now, id);
                    self.pump(at);
                    let duty = self.nodes[at].duty.as_mut();
                    if duty.is_some_and(|d| d.lost(&(id, peer))) {
                        self.dial_across(at);
                    }
                }
            }
            Action::Arrive { to, from, msg } => {
                if self.alive[to] && self.alive[from] {
                    let id = self.id(from);
                    self.nodes[to].node.handle_message(now, id, msg);
                    self.pump(to);
                }
            }
            Action::Sent { at, peer, bytes } => {
                if self.alive[at] {
                    let id = self.id(peer);
                    self.nodes[at].node.handle_transmitted(id, bytes);
                    // Room in a window moves no deadline: the timer stands.
                    self.pass_on(at);
                }
            }
            Action::Timer { at } => {
                self.spins = if self.last_timer == Some((at, now)) {
                    self.spins + 1
                } else {
                    0
                };
                self.last_timer = Some((at, now));
                assert!(
                    self.spins < 10_000,
                    "node {at} asks for a timer at {now:?} again and again without progress"
                );
                if self.nodes[at].timer == Some(now) {
                    self.nodes[at].timer = None;
                }
                if self.alive[at] {
                    self.nodes[at].node.handle_timeout(now);
                    self.pump(at);
                }
            }
            Action::Produce {
                origin,
                broadcast,
                n,
            } => self.produce(origin, broadcast, n),
            Action::BusTick { at } => self.bus_tick(at),
        }
    }

    fn produce(&mut self, origin: usize, k: usize, n: u64) {
        if !self.alive[origin] || self.broadcasts[k].ended {
            return;
        }
        let b = self.broadcasts[k].clone();
        let fps = u64::from(b.fps.max(1));
        let (group, index) = (n / fps, (n % fps) as u32);
        let size = if index == 0 {
            b.keyframe_bytes
        } else {
            b.frame_bytes
        };
        // The first bytes say which frame it is, for tests that look inside.
        let mut payload = vec![0u8; size.max(16)];
        payload[..8].copy_from_slice(&group.to_be_bytes());
        payload[8..12].copy_from_slice(&index.to_be_bytes());
        let capture_us = (self.now - self.epoch).as_micros() as u64;
        if self.measuring {
            self.produced[k] += payload.len() as u64;
        }
        self.nodes[origin].node.handle_local_object(
            &b.id,
            crate::msg::TRACK_VIDEO,
            group,
            index,
            capture_us,
            Bytes::from(payload),
        );
        self.pump(origin);
        let next = self.epoch + Duration::from_micros((n + 1) * 1_000_000 / fps);
        let next = next.max(self.now);
        self.schedule(
            next,
            Action::Produce {
                origin,
                broadcast: k,
                n: n + 1,
            },
        );
    }

    /// Drains a node's events into the network and re-arms its timer.
    fn pump(&mut self, i: usize) {
        self.pass_on(i);
        self.rearm(i);
    }

    /// Re-arms node `i`'s timer for its earliest deadline, when that is sooner.
    fn rearm(&mut self, i: usize) {
        let now = self.now;
        if let Some(t) = self.nodes[i].node.poll_timeout() {
            let t = t.max(now);
            if self.nodes[i].timer.is_none_or(|cur| t < cur) {
                self.nodes[i].timer = Some(t);
                self.schedule(t, Action::Timer { at: i });
            }
        }
    }

    /// Drains node `i`'s events into the network.
    fn pass_on(&mut self, i: usize) {
        let now = self.now;
        while let Some(event) = self.nodes[i].node.poll_event() {
            match event {
                Event::Transmit { to, msg } => self.transmit(i, to, msg),
                Event::Deliver {
                    broadcast,
                    track,
                    group,
                    index,
                    capture_us,
                    payload,
                } => {
                    let n = &mut self.nodes[i];
                    n.bus.handle_object(&broadcast, track, &payload);
                    n.delivered.push(Delivered {
                        at: now,
                        broadcast,
                        track,
                        group,
                        index,
                        capture_us,
                    });
                    self.drain_bus(i);
                }
                Event::Routed(r) => {
                    self.nodes[i].routed.push((now, (*r).clone()));
                    self.nodes[i].bus.handle_routed(*r);
                    self.drain_bus(i);
                }
                Event::Connect { peer } => {
                    if let Some(&j) = self.index.get(&peer) {
                        if self.alive[j] {
                            let spec = self.link_between(i, j);
                            self.link_up(i, j, spec, true);
                        }
                    }
                }
                Event::Disconnect { peer, .. } => {
                    // The connection closes: the other end hears of it one delay later.
                    if let Some(link) = self.nodes[i].links.remove(&peer) {
                        let j = link.to;
                        let id = self.id(i);
                        self.nodes[j].links.remove(&id);
                        let at = now + link.spec.delay;
                        self.schedule(at, Action::Down { at: j, peer: i });
                    }
                }
            }
        }
    }

    fn transmit(&mut self, from: usize, to: NodeId, msg: Msg) {
        let now = self.now;
        let Some(link) = self.nodes[from].links.get_mut(&to) else {
            return;
        };
        let (to, spec) = (link.to, link.spec);
        let bytes = match &msg {
            Msg::Object {
                broadcast, track, ..
            } => {
                let key = hash_of((broadcast, track));
                let at = match link.encoders.iter().position(|(k, _)| *k == key) {
                    Some(at) => at,
                    None => {
                        link.encoders.push((key, GroupEncoder::default()));
                        link.encoders.len() - 1
                    }
                };
                link.encoders[at].1.frame_len(&msg)
            }
            _ => crate::wire_len(&msg),
        };
        let media = matches!(msg, Msg::Object { .. });
        let start = link.busy_until.max(now);
        let serialise =
            Duration::from_nanos(bytes as u64 * 8 * 1_000_000_000 / spec.bits_per_second.max(1));
        let done = start + serialise;
        link.busy_until = done;
        let mut arrive = done + spec.delay;
        if !spec.jitter.is_zero() {
            arrive += spec.jitter.mul_f64(self.rng.unit());
        }
        if spec.loss > 0.0 && self.rng.unit() < spec.loss {
            arrive += spec.retransmit_after();
            self.retransmitted += 1;
        }
        // Equal instants leave in the order they were scheduled: the stream's order.
        let stream = stream_of(&msg);
        let dialed = link.dialed;
        link.tails.retain(|(_, t)| *t > now);
        match link.tails.iter_mut().find(|(s, _)| *s == stream) {
            Some((_, tail)) => {
                arrive = arrive.max(*tail);
                *tail = arrive;
            }
            None => link.tails.push((stream, arrive)),
        }
        let (sa, sb) = (self.nodes[from].site, self.nodes[to].site);
        if !media && dialed {
            *self
                .control_over_dialed
                .entry(crate::wire::msg_name(&msg))
                .or_default() += bytes as u64;
        }
        if !media {
            self.control_total += bytes as u64;
            *self
                .control_by_type
                .entry(crate::wire::msg_name(&msg))
                .or_default() += bytes as u64;
        }
        if let Msg::Catalog { entries } = &msg {
            for e in entries {
                let kind = match (sa == sb, e.path.is_empty()) {
                    (true, false) => "in site, told",
                    (true, true) => "in site, withdrawn",
                    (false, false) => "across sites, told",
                    (false, true) => "across sites, withdrawn",
                };
                *self.catalog_entries.entry(kind).or_default() += 1;
            }
        }
        if self.measuring && !media {
            self.control_sent += bytes as u64;
        }
        if self.measuring && sa != sb {
            let n = bytes as u64;
            if media {
                self.wan[sa].media_out += n;
                self.wan[sb].media_in += n;
                if let (Some(by), Msg::Object { broadcast, .. }) =
                    (&mut self.media_in_by_link, &msg)
                {
                    *by.entry((sb, broadcast.clone()))
                        .or_default()
                        .entry((from, to))
                        .or_default() += n;
                }
            } else {
                self.wan[sa].control_out += n;
                self.wan[sb].control_in += n;
            }
        }
        if let Msg::Object { payload, .. } = &msg {
            let counted = payload.len() + 64;
            self.schedule(
                done,
                Action::Sent {
                    at: from,
                    peer: to,
                    bytes: counted,
                },
            );
        }
        self.schedule(arrive, Action::Arrive { to, from, msg });
    }
}
