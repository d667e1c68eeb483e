//! One overlay node: catalog gossip, parent choice, subscriptions, group cache, relaying.
//!
//! Sans IO: every input carries `now`; outputs are [`Event`]s drained with
//! [`Node::poll_event`]; [`Node::poll_timeout`] says when to call [`Node::handle_timeout`].
//! The driver (QUIC in `node`, or `sim::Net`) owns connections and reports peers coming
//! and going, messages, and bytes that left the socket.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use smallvec::SmallVec;

use crate::limits::{Limit, Limits, RateBucket};
use crate::msg::{BroadcastId, CatalogEntry, Hop, Msg, NodeId, Routed, NODE_BROADCAST};
use crate::routed::{CommandAllow, Gate};

mod bounds;
mod catalog;
mod link_down;
mod lookup;
mod relay;
mod routing;
mod tree;

pub use lookup::LookupStats;
pub use relay::media_len;
use relay::{Queued, TrackState};

/// A node's catalog as it tells it: one entry per broadcast. Entries are shared between
/// the catalog as told before and after a change: copying the map when one entry changes
/// then copies no entry, and finding what changed for a neighbour compares pointers for
/// all the entries that did not (`Arc`'s equality does so first).
type Entries = BTreeMap<BroadcastId, Arc<CatalogEntry>>;

/// Catalog news arriving within this long of each other is passed on in one round.
const COALESCE: Duration = Duration::from_millis(5);

/// A node that received an object this recently says it carries the broadcast.
const FRESH: Duration = Duration::from_millis(250);

/// How long after its last object a subscription waits for a parent that says it starves
/// too, while no other neighbour carries the broadcast (`Sub::patience`).
const PATIENCE: Duration = Duration::from_millis(900);

/// A broadcast in this node's catalog, as a stream list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownBroadcast {
    pub broadcast: BroadcastId,
    /// The origin's site and box name.
    pub site: String,
    pub box_name: String,
    /// Who may watch, as the origin says (empty: the mesh-wide default).
    pub watch: String,
    /// Links on the route this node would take (0 for its own broadcasts).
    pub hops: usize,
}

/// Tunables; defaults suit a LAN of Pis joined to other sites over the internet.
#[derive(Debug, Clone)]
pub struct Config {
    pub site: String,
    /// This box's name for people, carried in the catalog entries of its broadcasts.
    pub box_name: String,
    /// Upload budget for relaying, kbit/s; announced to neighbours as spare capacity.
    pub uplink_kbps: u32,
    /// Children per broadcast on the same site before new ones are redirected below.
    pub max_children: usize,
    /// Most children per broadcast in other sites (fewer when the uplink budget has no room
    /// for more copies): the fan-out of the tree of sites.
    pub wan_children: usize,
    pub gossip_interval: Duration,
    /// How long a broadcast that no neighbour offers any more stays known (its version
    /// kept, so that a stale copy still arriving loses).
    pub catalog_ttl: Duration,
    /// How long a node waits for its site to agree on who pulls a broadcast across sites.
    pub election_delay: Duration,
    /// An unanswered subscription is retried elsewhere after this long.
    pub subscribe_timeout: Duration,
    /// A parent that sends nothing for this long is replaced (its own feed broke).
    pub starve_timeout: Duration,
    /// Media bytes in flight per neighbour before the rest waits in its queue.
    pub window_bytes: usize,
    /// Groups per track kept for fast join and for children that switch parents.
    pub cache_groups: usize,
    /// The catalog version a new broadcast starts at. Neighbours keep the highest version
    /// they saw for up to `catalog_ttl`, so a restarted node must not start lower than it
    /// ended: a driver with a clock passes the wall time in milliseconds.
    pub first_version: u64,
    /// Who may send this node commands over the overlay.
    pub command_allow: CommandAllow,
    /// What neighbours may make this node hold.
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            site: "local".into(),
            box_name: String::new(),
            uplink_kbps: 20_000,
            max_children: 4,
            wan_children: 4,
            gossip_interval: Duration::from_millis(500),
            catalog_ttl: Duration::from_secs(12),
            election_delay: Duration::from_millis(100),
            subscribe_timeout: Duration::from_millis(250),
            starve_timeout: Duration::from_millis(450),
            window_bytes: 64 * 1024,
            cache_groups: 2,
            first_version: 1,
            command_allow: CommandAllow::Nobody,
            limits: Limits::default(),
        }
    }
}

/// What the node asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Send this message to that neighbour.
    Transmit { to: NodeId, msg: Msg },
    /// Open a connection to this node (learned from a redirect); `handle_peer_up` follows.
    Connect { peer: NodeId },
    /// An object for this node's own viewers: always in order, every group from its first
    /// object (a keyframe) without holes.
    Deliver {
        broadcast: BroadcastId,
        track: u8,
        group: u64,
        index: u32,
        capture_us: u64,
        payload: Bytes,
    },
    /// A command or reply addressed to this node that passed every check.
    Routed(Box<Routed>),
    /// Close the connection to this neighbour: it went past a limit. The node has already
    /// forgotten it (as after `handle_peer_down`) and ignores what else it sends.
    Disconnect { peer: NodeId, limit: Limit },
}

/// A routed message cannot leave this node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no route to node {0}: it is not in this box's view of the mesh")]
    NoRoute(NodeId),
}

#[derive(Debug)]
struct Peer {
    /// Its `Hello` arrived: until then its site is unknown.
    greeted: bool,
    /// One side dialed the link for a tree (`Hello` tree): lookups do not flood over it.
    tree: bool,
    site: String,
    /// `site` is this node's: kept from its `Hello`, as the routes, the tree and gossip
    /// ask it of every neighbour they look at.
    site_mate: bool,
    rtt: Duration,
    uplink_kbps: u32,
    /// Media bytes handed to the driver and not yet reported sent.
    in_flight: usize,
    control: VecDeque<Msg>,
    media: VecDeque<Queued>,
    catalog: BTreeMap<BroadcastId, CatalogEntry>,
    /// Encoded bytes of `catalog`, against `Limits::catalog_bytes_per_peer`.
    catalog_bytes: usize,
    interest: BTreeSet<BroadcastId>,
    routed_bucket: RateBucket,
    find_bucket: RateBucket,
    /// Whom it reaches in its site, once it said (`SiteMates`: count and digest).
    reaches: Option<(u32, u64)>,
    /// Whether it has links to other sites, as it said (`SiteMates`); until it says, it
    /// is taken to have.
    beyond: bool,
    /// Since when that differs from whom this node reaches.
    differs_since: Option<Instant>,
    /// What we last told this neighbour, to send only what changed.
    told_catalog: Arc<Entries>,
    told_interest: Option<Arc<Msg>>,
    told_reaches: Option<(u32, u64, bool)>,
}

impl Peer {
    /// A link to another site that a tree dialed (`Hello` tree): told only part of the
    /// catalog, and its routes told on last.
    fn tree_link(&self) -> bool {
        self.tree && !self.site_mate
    }
}

#[derive(Debug, Default)]
struct Sub {
    parent: Option<NodeId>,
    /// Subscription sent, answer awaited.
    pending: Option<(NodeId, Instant)>,
    backup: Option<NodeId>,
    children: BTreeSet<NodeId>,
    /// Parents that redirected or failed us since our last successful subscription.
    tried: BTreeSet<NodeId>,
    /// Where each track stands and its cached groups, by track, inline: an object
    /// reaching a node found them through two maps of their own, a cache miss each.
    tracks: SmallVec<[TrackState; 2]>,
    /// Since when this node wants the broadcast (for the site election delay).
    since: Option<Instant>,
    /// A redirect named a node we are not connected to: subscribe once it is up.
    dialing: Option<(NodeId, Instant)>,
    /// When the parent last sent an object: a parent that went quiet is as good as lost
    /// (not kept for sparse broadcasts, which go quiet between events).
    last_object: Option<Instant>,
    /// A parent that tells it no longer carries the broadcast starves as well and is
    /// finding a feed of its own: while no other neighbour carries it, it is waited for
    /// until then (`PATIENCE` after the last object), instead of hopping through
    /// neighbours that do not carry it either, each one asked in turn.
    patience: Option<Instant>,
    /// Until when this node counts as carrying; a wake-up then tells neighbours if not.
    fresh_until: Option<Instant>,
    /// When to try again to find a parent (nobody offered a route yet, or the site is
    /// still electing its puller).
    retry_at: Option<Instant>,
    /// Newcomers from other sites sent down to our children there, to take them in turn.
    redirects: usize,
}

#[derive(Debug)]
struct Learned {
    /// When this version was first heard of: news waits a moment from then before it is
    /// told (`NEWS_HOLD` to other sites, `TELL_SITE_HOLD` to site-mates).
    heard: Instant,
    version: u64,
    ttl: Duration,
    /// Until when it stays known: none while a neighbour offers it, `ttl` from when the
    /// last one stopped, or from its end.
    expires: Option<Instant>,
    /// The broadcast ended at `version`: what this node tells of it until `expires`,
    /// and whether it tells its site-mates.
    ended: Option<(CatalogEntry, bool)>,
}

#[derive(Debug)]
struct Origin {
    tracks: Vec<u8>,
    version: u64,
    watch: String,
}

/// One node of the overlay.
#[derive(Debug)]
pub struct Node {
    id: NodeId,
    cfg: Config,
    peers: BTreeMap<NodeId, Peer>,
    origins: BTreeMap<BroadcastId, Origin>,
    /// Last versions of broadcasts that ended here, so that going live again is news.
    retired: BTreeMap<BroadcastId, u64>,
    learned: BTreeMap<BroadcastId, Learned>,
    /// The learned broadcasts whose time runs (`Learned::expires` set): a round looks at
    /// these, not at every broadcast known (thousands in a big site, each looked up in
    /// `offers` twice a second was a third of the simulator's steady state).
    expiring: BTreeSet<BroadcastId>,
    /// Which neighbours offer a route to each broadcast: a route choice looks at those,
    /// not at every neighbour's catalog.
    offers: BTreeMap<BroadcastId, BTreeSet<NodeId>>,
    wants: BTreeSet<BroadcastId>,
    subs: BTreeMap<BroadcastId, Sub>,
    events: VecDeque<Event>,
    next_gossip: Option<Instant>,
    /// The catalog as last gossiped, shared with every neighbour that was told it: in
    /// full to site-mates, without the site's `.node` entries to other sites.
    last_told: Arc<Entries>,
    last_told_beyond: Arc<Entries>,
    /// `last_told` and the routes it leaves to better tellers among site-mates: for a
    /// site-mate that does not reach the same boxes as this node.
    last_told_all: Arc<Entries>,
    /// What this node wants or relays (`Interest`), as last made.
    interest: Arc<Msg>,
    /// Whom this node reaches in its site, and whether it has links beyond it that are
    /// not a tree's, until a neighbour comes, goes or says its site.
    site_reach: Option<((u32, u64), bool)>,
    /// Whom this node reaches in its site (count and digest) and since when: told once it
    /// has settled.
    reaches: ((u32, u64), Option<Instant>),
    /// Something the per-broadcast sweep in `handle_timeout` depends on has changed
    /// (neighbours, their catalogs, subscriptions) since it last ran.
    dirty: bool,
    /// Something every entry of this node's catalog is made from may have changed since
    /// it was last made (neighbours came or went, news held back may now be told).
    catalog_stale: bool,
    /// Broadcasts whose entries may have changed since the catalog was last made: their
    /// routes, version, parent or freshness. A remake weighs the routes of these only;
    /// weighing every route of every broadcast at every change was half the simulator's
    /// time.
    stale: BTreeSet<BroadcastId>,
    /// When the earliest news held back (`NEWS_HOLD`, `TELL_SITE_HOLD`) may be told.
    hold_until: Option<Instant>,
    gate: Gate,
    /// The wall clock (ms since the Unix epoch) at an instant, from the driver.
    wall: Option<(Instant, u64)>,
    /// Neighbours disconnected for going past a limit, by limit.
    disconnected: BTreeMap<Limit, u64>,
    lookups: lookup::Lookups,
    /// Links lost moments ago (`LinkDown`), until when routes over them are refused.
    dead_links: BTreeMap<(Hop, Hop), Instant>,
    /// Neighbours something was queued for since the last flush. A flush after each
    /// object then looks at the children it went to, not at every neighbour: in a site
    /// of 150 boxes, walking them all per object was most of a relay's work.
    ready: Vec<NodeId>,
    /// Something was queued for neighbours without naming them (a gossip round): the next
    /// flush walks them all.
    ready_all: bool,
    /// The children an object goes to, reused from object to object.
    fanout: Vec<NodeId>,
    /// The last gossip round, when it had nothing to tell; cleared when a neighbour
    /// comes, goes, or says its site or whom it reaches.
    quiet_round: Option<catalog::QuietRound>,
}

impl Node {
    pub fn new(id: NodeId, cfg: Config) -> Self {
        let cfg_allow = cfg.command_allow.clone();
        Self {
            id,
            cfg,
            peers: BTreeMap::new(),
            origins: BTreeMap::new(),
            retired: BTreeMap::new(),
            learned: BTreeMap::new(),
            expiring: BTreeSet::new(),
            offers: BTreeMap::new(),
            wants: BTreeSet::new(),
            subs: BTreeMap::new(),
            events: VecDeque::new(),
            next_gossip: None,
            dirty: true,
            catalog_stale: true,
            stale: BTreeSet::new(),
            hold_until: None,
            last_told: Arc::default(),
            last_told_beyond: Arc::default(),
            last_told_all: Arc::default(),
            reaches: ((1, 0), None),
            interest: Arc::new(Msg::Interest {
                broadcasts: Vec::new(),
            }),
            site_reach: None,
            gate: Gate::new(cfg_allow),
            wall: None,
            disconnected: BTreeMap::new(),
            lookups: lookup::Lookups::default(),
            dead_links: BTreeMap::new(),
            ready: Vec::new(),
            ready_all: false,
            fanout: Vec::new(),
            quiet_round: None,
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// A neighbour of this node's site (known, and said its site in `Hello`).
    pub fn is_site_mate(&self, id: &NodeId) -> bool {
        self.peers.get(id).is_some_and(|p| p.site_mate)
    }

    /// A neighbour of another site (known, and not a site-mate).
    fn is_other_site(&self, id: &NodeId) -> bool {
        self.peers.get(id).is_some_and(|p| !p.site_mate)
    }

    /// The tunables, for a simulation that varies them; changes apply from the next
    /// decision on (the site only to neighbours that say `Hello` after).
    pub fn config_mut(&mut self) -> &mut Config {
        // The own entries carry the site, box name and time to live.
        self.catalog_stale = true;
        &mut self.cfg
    }

    pub fn site(&self) -> &str {
        &self.cfg.site
    }

    /// A connection to a neighbour is up; `rtt` is the transport's estimate.
    pub fn handle_peer_up(&mut self, now: Instant, peer: NodeId, rtt: Duration) {
        self.dirty = true;
        self.quiet_round = None;
        // Which site-mates rank below this node decides who tells news to the site.
        self.catalog_stale = true;
        self.site_reach = None;
        // Subscriptions that dialed this neighbour: the link is a tree's, not the mesh's.
        let dialed: Vec<BroadcastId> = self
            .subs
            .iter_mut()
            .filter(|(_, s)| s.dialing.is_some_and(|(p, _)| p == peer))
            .map(|(b, s)| {
                s.dialing = None;
                b.clone()
            })
            .collect();
        let tree = !dialed.is_empty();
        self.peers.entry(peer).or_insert_with(|| Peer {
            greeted: false,
            tree,
            site: String::new(),
            site_mate: false,
            rtt,
            uplink_kbps: 0,
            in_flight: 0,
            control: VecDeque::new(),
            media: VecDeque::new(),
            catalog: BTreeMap::new(),
            catalog_bytes: 0,
            interest: BTreeSet::new(),
            routed_bucket: RateBucket::new(),
            find_bucket: RateBucket::new(),
            reaches: None,
            beyond: true,
            differs_since: None,
            told_catalog: Arc::default(),
            told_interest: None,
            told_reaches: None,
        });
        self.send(
            peer,
            Msg::Hello {
                node: self.id,
                site: self.cfg.site.clone(),
                uplink_kbps: self.cfg.uplink_kbps,
                tree,
            },
        );
        // Everything we know goes out at once: nothing was told to this peer yet.
        self.next_gossip = Some(now);
        for b in dialed {
            self.subscribe_to(now, &b, peer);
        }
        self.flush();
    }

    /// The connection is gone (idle timeout, goodbye, reset). Children are forgotten and
    /// broadcasts fed by this neighbour switch to their backup parent at once.
    pub fn handle_peer_down(&mut self, now: Instant, peer: NodeId) {
        self.dirty = true;
        self.quiet_round = None;
        let Some(gone) = self.peers.remove(&peer) else {
            return;
        };
        self.site_reach = None;
        self.catalog_stale = true;
        for b in gone.catalog.keys() {
            self.forget_offer(now, b, peer);
        }
        self.link_lost(now, peer);
        let orphaned: Vec<BroadcastId> = self
            .subs
            .iter_mut()
            .filter_map(|(b, s)| {
                s.children.remove(&peer);
                if s.pending.is_some_and(|(p, _)| p == peer) {
                    s.pending = None;
                }
                (s.parent == Some(peer)).then(|| {
                    s.parent = None;
                    b.clone()
                })
            })
            .collect();
        if !orphaned.is_empty() {
            // Tell the neighbours at once that we no longer carry these.
            self.next_gossip = Some(now);
        }
        for b in orphaned {
            tracing::debug!(node = %self.id, broadcast = %b.name, lost = %peer, "parent lost");
            // The backup only if it still carries the broadcast and this node is not now
            // its site's puller (the lost parent may have been the puller).
            let puller = self.pulls_into_site(&b);
            let backup = self.subs.get(&b).and_then(|s| s.backup).filter(|p| {
                self.peers.get(p).is_some_and(|peer| {
                    (!puller || !peer.site_mate)
                        && peer
                            .catalog
                            .get(&b)
                            .is_some_and(|e| e.carrying && !e.passes(&self.id))
                })
            });
            match backup {
                Some(p) => self.subscribe_to(now, &b, p),
                None => self.attach(now, &b),
            }
        }
        self.flush();
    }

    /// The driver finished sending `bytes` of media to `peer`: room for more.
    pub fn handle_transmitted(&mut self, peer: NodeId, bytes: usize) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.in_flight = p.in_flight.saturating_sub(bytes);
        }
        self.flush_peer(peer);
    }

    pub fn handle_message(&mut self, now: Instant, from: NodeId, msg: Msg) {
        if !self.peers.contains_key(&from) {
            return;
        }
        // Objects change positions and caches, not what the sweep looks at.
        self.dirty |= !matches!(msg, Msg::Object { .. });
        match msg {
            Msg::Hello {
                site,
                uplink_kbps,
                tree,
                ..
            } => {
                self.quiet_round = None;
                if let Some(p) = self.peers.get_mut(&from) {
                    p.greeted = true;
                    p.tree |= tree;
                    p.site_mate = site == self.cfg.site;
                    p.site = site;
                    p.uplink_kbps = uplink_kbps;
                }
                self.site_reach = None;
                self.catalog_stale = true;
                // Nothing was told to it before its Hello (`gossip`).
                self.next_gossip = Some(now);
            }
            Msg::Catalog { mut entries } => {
                // Another site's nodes are not ours to route to (they are found by lookup).
                let site_mate = self.is_site_mate(&from);
                if !site_mate {
                    entries.retain(|e| e.broadcast.name != NODE_BROADCAST);
                }
                if let Err(limit) = self.check_catalog(from, &entries) {
                    return self.disconnect(now, from, limit);
                }
                self.on_catalog(now, from, entries)
            }
            Msg::Interest { broadcasts } => {
                if broadcasts.len() > self.cfg.limits.interest_per_peer {
                    return self.disconnect(now, from, Limit::InterestPerPeer);
                }
                if let Some(p) = self.peers.get_mut(&from) {
                    p.interest = broadcasts.into_iter().collect();
                }
            }
            Msg::InterestChange { added, removed } => {
                let limit = self.cfg.limits.interest_per_peer;
                // Checked before any of it is taken, as a whole `Interest` is.
                if added.len() > limit {
                    return self.disconnect(now, from, Limit::InterestPerPeer);
                }
                let over = self.peers.get_mut(&from).is_some_and(|p| {
                    for b in &removed {
                        p.interest.remove(b);
                    }
                    p.interest.extend(added);
                    p.interest.len() > limit
                });
                if over {
                    return self.disconnect(now, from, Limit::InterestPerPeer);
                }
            }
            Msg::Subscribe { broadcast, resume } => {
                let already = self
                    .subs
                    .get(&broadcast)
                    .is_some_and(|s| s.children.contains(&from));
                if !already && self.subscriptions_of(from) >= self.cfg.limits.subscriptions_per_peer
                {
                    return self.disconnect(now, from, Limit::SubscriptionsPerPeer);
                }
                self.on_subscribe(now, from, broadcast, resume)
            }
            Msg::SubscribeOk { broadcast } => match self.subs.get_mut(&broadcast) {
                Some(s) if s.pending.is_some_and(|(p, _)| p == from) => {
                    s.pending = None;
                    s.parent = Some(from);
                    // Starvation counts from the first object: a new parent may still
                    // be waiting for its own feed.
                    s.last_object = None;
                    s.patience = None;
                    s.tried.clear();
                    self.stale.insert(broadcast);
                }
                Some(s) if s.parent == Some(from) => {}
                // An answer this node stopped waiting for (it went elsewhere): left at
                // that, the answering node would send its copy on as well for good.
                _ => self.send(from, Msg::Unsubscribe { broadcast }),
            },
            Msg::Redirect { broadcast, to } => self.on_redirect(now, from, broadcast, to),
            Msg::Unsubscribe { broadcast } => {
                if let Some(s) = self.subs.get_mut(&broadcast) {
                    // A link a tree dialed is told the entries of its children's
                    // broadcasts (`gossip`).
                    if s.children.remove(&from) {
                        self.quiet_round = None;
                    }
                }
                self.prune(&broadcast);
            }
            Msg::Object {
                broadcast,
                track,
                group,
                index,
                capture_us,
                payload,
            } => {
                let from_parent = match self.subs.get_mut(&broadcast) {
                    // Objects from the node we asked may overtake its SubscribeOk (they
                    // travel on other streams): take them, but adopt the parent only on
                    // its answer, which may yet be a redirect.
                    Some(s) if s.pending.is_some_and(|(p, _)| p == from) => true,
                    Some(s) if s.parent == Some(from) => {
                        // Receiving again makes this node a carrier in its catalog. A
                        // sparse broadcast is carried while it has a parent, and its
                        // silence is no sign of a dead parent (the link's is).
                        if !broadcast.is_sparse() {
                            if s.last_object.is_none_or(|t| now >= t + FRESH) {
                                self.stale.insert(broadcast.clone());
                            }
                            s.last_object = Some(now);
                            s.patience = None;
                            s.fresh_until = Some(now + FRESH);
                        }
                        true
                    }
                    _ => false,
                };
                if from_parent {
                    self.ingest(&broadcast, track, group, index, capture_us, payload);
                } else if index == 0 {
                    // A node this node no longer takes it from still sends (its leave
                    // was lost, or crossed a late answer): once a group, leave again.
                    self.send(from, Msg::Unsubscribe { broadcast });
                }
            }
            Msg::Routed(r) => {
                let rate = self.cfg.limits.routed_per_second;
                let ok = self
                    .peers
                    .get_mut(&from)
                    .is_some_and(|p| p.routed_bucket.take(now, rate));
                if !ok {
                    return self.disconnect(now, from, Limit::RoutedRate);
                }
                self.on_routed(now, from, *r)
            }
            Msg::Find {
                question,
                target,
                hops,
            } => self.on_find(now, from, (question, target, hops)),
            Msg::Found { question, target } => self.on_found(now, from, (question, target)),
            Msg::SiteMates {
                count,
                digest,
                beyond,
            } => {
                self.quiet_round = None;
                if let Some(p) = self.peers.get_mut(&from) {
                    p.reaches = Some((count, digest));
                    p.beyond = beyond;
                }
            }
            Msg::LinkDown { a, b } => self.on_link_down(now, from, a, b),
            Msg::Ping { nonce } => self.send(from, Msg::Pong { nonce }),
            // Addresses, revocations and updates are the transport's business.
            Msg::Pong { .. }
            | Msg::Addresses { .. }
            | Msg::Revocations { .. }
            | Msg::UpdateOffer { .. }
            | Msg::UpdateRollout { .. }
            | Msg::ChunkHave { .. }
            | Msg::ChunkGet { .. }
            | Msg::ChunkData { .. } => {}
            Msg::Goodbye => self.handle_peer_down(now, from),
        }
        self.flush();
    }

    /// The transport cannot dial `peer` (it knows no address of it that a dial from here
    /// could reach): trees waiting on that dial try elsewhere now, not after
    /// `subscribe_timeout`, which may cost a viewer a picture.
    pub fn handle_unreachable(&mut self, now: Instant, peer: NodeId) {
        let mut waited = false;
        for s in self.subs.values_mut() {
            if s.dialing.is_some_and(|(p, _)| p == peer) {
                s.dialing = None;
                s.tried.insert(peer);
                waited = true;
            }
        }
        if waited {
            self.dirty = true;
            self.handle_timeout(now);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.lookups.deadline().is_some_and(|t| now >= t) {
            self.expire_lookups(now);
        }
        let mut due = false;
        if self.next_gossip.is_some_and(|t| now >= t) {
            self.next_gossip = Some(now + self.cfg.gossip_interval);
            due = true;
        }
        if self.hold_until.is_some_and(|t| now >= t) {
            self.hold_until = None;
            self.catalog_stale = true;
            due = true;
        }
        self.forget_expired(now);
        // A node that stopped receiving says so within `FRESH`, before its children give up.
        for (b, s) in self.subs.iter_mut() {
            if s.fresh_until.is_some_and(|t| now >= t) {
                s.fresh_until = None;
                due = true;
                self.stale.insert(b.clone());
            }
        }
        if due {
            self.gossip(now);
        }
        // The sweep below looks at every broadcast and neighbour; most wake-ups (a moving
        // freshness deadline) need none of it.
        if !self.dirty && !self.sweep_due(now) {
            self.flush();
            return;
        }
        self.dirty = false;
        let broadcasts: Vec<BroadcastId> = self.subs.keys().cloned().collect();
        for b in broadcasts {
            let timed_out = self
                .subs
                .get(&b)
                .and_then(|s| s.pending)
                .filter(|(_, at)| now >= *at + self.cfg.subscribe_timeout);
            if let Some((p, _)) = timed_out {
                if let Some(s) = self.subs.get_mut(&b) {
                    s.pending = None;
                    s.tried.insert(p);
                }
                // Its answer may still come: it must not then serve this node as well.
                self.send(
                    p,
                    Msg::Unsubscribe {
                        broadcast: b.clone(),
                    },
                );
            }
            self.check_parent(now, &b);
            self.attach(now, &b);
            self.update_backup(&b);
        }
        self.flush();
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest deadline: the next gossip round, held news, a lookup, and per
    /// broadcast an unanswered subscription or dial, a retry, a quiet parent, the end of
    /// freshness. One pass over the broadcasts: the driver asks after every input.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self
            .next_gossip
            .into_iter()
            .chain(self.lookups.deadline())
            .chain(self.hold_until)
            .min();
        let mut at = |t: Instant| {
            if next.is_none_or(|n| t < n) {
                next = Some(t);
            }
        };
        let (wait, starve) = (self.cfg.subscribe_timeout, self.cfg.starve_timeout);
        for s in self.subs.values() {
            if let Some((_, t)) = s.pending {
                at(t + wait);
            }
            if let Some((_, t)) = s.dialing {
                at(t + wait);
            }
            if s.parent.is_some() {
                if let Some(t) = s.starves_at(starve) {
                    at(t);
                }
            } else if let (None, None, Some(t)) = (s.pending, s.dialing, s.retry_at) {
                at(t);
            }
            if let Some(t) = s.fresh_until {
                at(t);
            }
        }
        next
    }

    fn send(&mut self, to: NodeId, msg: Msg) {
        if let Some(p) = self.peers.get_mut(&to) {
            p.control.push_back(msg);
            self.ready.push(to);
        }
    }

    /// Hands the driver what the neighbours' queues may send now: those something was
    /// queued for since the last flush, or all of them after a round that queued for
    /// many. Runs after every input.
    fn flush(&mut self) {
        let window = self.cfg.window_bytes;
        if std::mem::take(&mut self.ready_all) {
            self.ready.clear();
            for (to, p) in self.peers.iter_mut() {
                relay::drain(*to, p, window, &mut self.events);
            }
            return;
        }
        // Queued for in this order: a neighbour named twice is drained at its first
        // mention, its queues are empty (or its window full) at the second.
        for to in self.ready.drain(..) {
            if let Some(p) = self.peers.get_mut(&to) {
                relay::drain(to, p, window, &mut self.events);
            }
        }
    }
}
