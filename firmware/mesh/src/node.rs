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

use crate::limits::{Limit, Limits, RateBucket};
use crate::msg::{
    BroadcastId, CatalogEntry, Msg, NodeId, ResumePoint, Routed, NODE_BROADCAST, ROUTED_COMMAND,
};
use crate::routed::{CommandAllow, Gate, RoutedStats};

/// A node's catalog as it tells it: one entry per broadcast.
type Entries = BTreeMap<BroadcastId, CatalogEntry>;

/// Catalog news arriving within this long of each other is passed on in one round.
const COALESCE: Duration = Duration::from_millis(5);

/// A node that received an object this recently says it carries the broadcast.
const FRESH: Duration = Duration::from_millis(250);

/// A broadcast in this node's catalog, as a stream list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownBroadcast {
    pub broadcast: BroadcastId,
    /// The origin's site and box name.
    pub site: String,
    pub box_name: String,
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
    /// Children per broadcast in other sites: 1 keeps each stream to one copy per uplink.
    pub wan_children: usize,
    pub gossip_interval: Duration,
    /// A broadcast whose origin stops refreshing disappears after this long.
    pub catalog_ttl: Duration,
    /// How often an origin refreshes its broadcasts (a third of the TTL or less).
    pub refresh_interval: Duration,
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
            wan_children: 1,
            gossip_interval: Duration::from_millis(500),
            catalog_ttl: Duration::from_secs(12),
            refresh_interval: Duration::from_secs(4),
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
    site: String,
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
    /// What we last told this neighbour (versions zeroed), to send only changes between
    /// full refreshes.
    told_catalog: Arc<Entries>,
    told_interest: Option<Msg>,
}

#[derive(Debug)]
struct Queued {
    broadcast: BroadcastId,
    track: u8,
    group: u64,
    index: u32,
    msg: Msg,
}

#[derive(Debug, Clone)]
struct CachedObject {
    index: u32,
    capture_us: u64,
    payload: Bytes,
}

#[derive(Debug)]
struct CachedGroup {
    group: u64,
    objects: Vec<CachedObject>,
}

/// Where a track stands at this node: the group being received and the next index needed.
#[derive(Debug, Clone, Copy)]
struct Position {
    group: u64,
    next: u32,
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
    cache: BTreeMap<u8, VecDeque<CachedGroup>>,
    position: BTreeMap<u8, Position>,
    /// Since when this node wants the broadcast (for the site election delay).
    since: Option<Instant>,
    /// A redirect named a node we are not connected to: subscribe once it is up.
    dialing: Option<(NodeId, Instant)>,
    /// When the parent last sent an object: a parent that went quiet is as good as lost.
    last_object: Option<Instant>,
    /// Until when this node counts as carrying; a wake-up then tells neighbours if not.
    fresh_until: Option<Instant>,
    /// When to try again to find a parent (nobody offered a route yet, or the site is
    /// still electing its puller).
    retry_at: Option<Instant>,
}

#[derive(Debug)]
struct Learned {
    version: u64,
    expires: Instant,
}

#[derive(Debug)]
struct Origin {
    tracks: Vec<u8>,
    version: u64,
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
    wants: BTreeSet<BroadcastId>,
    subs: BTreeMap<BroadcastId, Sub>,
    events: VecDeque<Event>,
    next_gossip: Option<Instant>,
    /// When origins next bump their versions to keep their broadcasts alive.
    next_refresh: Option<Instant>,
    /// The catalog as last gossiped, shared with every neighbour that was told it.
    last_told: Arc<Entries>,
    /// Something the per-broadcast sweep in `handle_timeout` depends on has changed
    /// (neighbours, their catalogs, subscriptions) since it last ran.
    dirty: bool,
    gate: Gate,
    /// The wall clock (ms since the Unix epoch) at an instant, from the driver.
    wall: Option<(Instant, u64)>,
    /// Neighbours disconnected for going past a limit, by limit.
    disconnected: BTreeMap<Limit, u64>,
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
            wants: BTreeSet::new(),
            subs: BTreeMap::new(),
            events: VecDeque::new(),
            next_gossip: None,
            next_refresh: None,
            dirty: true,
            last_told: Arc::default(),
            gate: Gate::new(cfg_allow),
            wall: None,
            disconnected: BTreeMap::new(),
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn site(&self) -> &str {
        &self.cfg.site
    }

    // ----- inputs -------------------------------------------------------------------

    /// A connection to a neighbour is up; `rtt` is the transport's estimate.
    pub fn handle_peer_up(&mut self, now: Instant, peer: NodeId, rtt: Duration) {
        self.dirty = true;
        self.peers.entry(peer).or_insert_with(|| Peer {
            site: String::new(),
            rtt,
            uplink_kbps: 0,
            in_flight: 0,
            control: VecDeque::new(),
            media: VecDeque::new(),
            catalog: BTreeMap::new(),
            catalog_bytes: 0,
            interest: BTreeSet::new(),
            routed_bucket: RateBucket::new(),
            told_catalog: Arc::default(),
            told_interest: None,
        });
        self.send(
            peer,
            Msg::Hello {
                node: self.id,
                site: self.cfg.site.clone(),
                uplink_kbps: self.cfg.uplink_kbps,
            },
        );
        // Everything we know goes out at once: nothing was told to this peer yet.
        self.next_gossip = Some(now);
        let dialed: Vec<BroadcastId> = self
            .subs
            .iter_mut()
            .filter(|(_, s)| s.dialing.is_some_and(|(p, _)| p == peer))
            .map(|(b, s)| {
                s.dialing = None;
                b.clone()
            })
            .collect();
        for b in dialed {
            self.subscribe_to(now, &b, peer);
        }
        self.flush();
    }

    /// The connection is gone (idle timeout, goodbye, reset). Children are forgotten and
    /// broadcasts fed by this neighbour switch to their backup parent at once.
    pub fn handle_peer_down(&mut self, now: Instant, peer: NodeId) {
        self.dirty = true;
        if self.peers.remove(&peer).is_none() {
            return;
        }
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
            let puller = self.site_puller(&b) == self.id;
            let backup = self.subs.get(&b).and_then(|s| s.backup).filter(|p| {
                self.peers.get(p).is_some_and(|peer| {
                    (!puller || peer.site != self.cfg.site)
                        && peer
                            .catalog
                            .get(&b)
                            .is_some_and(|e| e.carrying && !e.path.contains(&self.id))
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
                site, uplink_kbps, ..
            } => {
                if let Some(p) = self.peers.get_mut(&from) {
                    p.site = site;
                    p.uplink_kbps = uplink_kbps;
                }
            }
            Msg::Catalog { entries } => {
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
            Msg::SubscribeOk { broadcast } => {
                if let Some(s) = self.subs.get_mut(&broadcast) {
                    if s.pending.is_some_and(|(p, _)| p == from) {
                        s.pending = None;
                        s.parent = Some(from);
                        // Starvation counts from the first object: a new parent may still
                        // be waiting for its own feed.
                        s.last_object = None;
                        s.tried.clear();
                    }
                }
            }
            Msg::Redirect { broadcast, to } => self.on_redirect(now, from, broadcast, to),
            Msg::Unsubscribe { broadcast } => {
                if let Some(s) = self.subs.get_mut(&broadcast) {
                    s.children.remove(&from);
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
                        s.last_object = Some(now);
                        s.fresh_until = Some(now + FRESH);
                        true
                    }
                    _ => false,
                };
                if from_parent {
                    self.ingest(&broadcast, track, group, index, capture_us, payload);
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
            Msg::Ping { nonce } => self.send(from, Msg::Pong { nonce }),
            // Addresses are the transport's business.
            Msg::Pong { .. } | Msg::Addresses { .. } => {}
            Msg::Goodbye => self.handle_peer_down(now, from),
        }
        self.flush();
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = false;
        if self.next_gossip.is_some_and(|t| now >= t) {
            self.next_gossip = Some(now + self.cfg.gossip_interval);
            due = true;
        }
        // A node that stopped receiving says so within `FRESH`, before its children give up.
        for s in self.subs.values_mut() {
            if s.fresh_until.is_some_and(|t| now >= t) {
                s.fresh_until = None;
                due = true;
            }
        }
        if due {
            self.gossip(now);
        }
        let known = self.learned.len();
        self.learned.retain(|_, l| l.expires > now);
        self.dirty |= self.learned.len() != known;
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
            }
            self.check_parent(now, &b);
            self.attach(now, &b);
            self.update_backup(&b);
        }
        self.flush();
    }

    /// Whether a deadline of the per-broadcast sweep has passed.
    fn sweep_due(&self, now: Instant) -> bool {
        let late = |at: Instant| now >= at + self.cfg.subscribe_timeout;
        self.subs.iter().any(|(b, s)| {
            let needed =
                !self.origins.contains_key(b) && (self.wants.contains(b) || !s.children.is_empty());
            s.pending.is_some_and(|(_, at)| late(at))
                || s.dialing.is_some_and(|(_, at)| late(at))
                || (needed
                    && s.parent.is_none()
                    && s.pending.is_none()
                    && s.dialing.is_none()
                    && s.retry_at.is_none_or(|t| now >= t))
                || (s.parent.is_some()
                    && s.last_object
                        .is_some_and(|t| now >= t + self.cfg.starve_timeout))
        })
    }

    /// Tells each neighbour what changed since it was last told: new or changed entries,
    /// and withdrawals (an entry with an empty path) for routes this node lost. Origins
    /// bump their versions every `refresh_interval`, which keeps their broadcasts alive
    /// everywhere; changes travel at once, so a refresh crosses the mesh in link delays.
    fn gossip(&mut self, now: Instant) {
        if self.next_refresh.is_none_or(|t| now >= t) {
            self.next_refresh = Some(now + self.cfg.refresh_interval);
            for o in self.origins.values_mut() {
                o.version += 1;
            }
        }
        let fresh: Entries = self
            .catalog_entries(now)
            .into_iter()
            .map(|e| (e.broadcast.clone(), e))
            .collect();
        // Usually nothing changed: then every neighbour told last time is up to date, and
        // one comparison replaces one per neighbour.
        if *self.last_told != fresh {
            self.last_told = Arc::new(fresh);
        }
        let entries = self.last_told.clone();
        let interest = self.interest_msg();
        for p in self.peers.values_mut() {
            if Arc::ptr_eq(&p.told_catalog, &entries) {
                if p.told_interest.as_ref() != Some(&interest) {
                    p.control.push_back(interest.clone());
                    p.told_interest = Some(interest.clone());
                }
                continue;
            }
            let mut delta: Vec<CatalogEntry> = entries
                .iter()
                .filter(|(b, e)| p.told_catalog.get(*b) != Some(*e))
                .map(|(_, e)| e.clone())
                .collect();
            delta.extend(
                p.told_catalog
                    .iter()
                    .filter(|(b, _)| !entries.contains_key(*b))
                    .map(|(_, e)| CatalogEntry {
                        path: Vec::new(),
                        carrying: false,
                        ..e.clone()
                    }),
            );
            if !delta.is_empty() {
                p.control.push_back(Msg::Catalog { entries: delta });
            }
            p.told_catalog = entries.clone();
            if p.told_interest.as_ref() != Some(&interest) {
                p.control.push_back(interest.clone());
                p.told_interest = Some(interest.clone());
            }
        }
    }

    // ----- local use ----------------------------------------------------------------

    /// Starts a broadcast originating here.
    pub fn publish(&mut self, now: Instant, name: &str, tracks: Vec<u8>) -> BroadcastId {
        self.dirty = true;
        let b = BroadcastId {
            origin: self.id,
            name: name.into(),
        };
        let version = self
            .retired
            .remove(&b)
            .map_or(self.cfg.first_version, |v| v + 1)
            .max(self.cfg.first_version);
        self.origins.insert(b.clone(), Origin { tracks, version });
        self.subs.entry(b.clone()).or_default();
        self.next_gossip = Some(now);
        b
    }

    /// Ends a broadcast originating here. Neighbours learn at the next gossip (due at
    /// once) that the route is withdrawn; children stop receiving and let go.
    pub fn unpublish(&mut self, now: Instant, broadcast: &BroadcastId) {
        self.dirty = true;
        if let Some(o) = self.origins.remove(broadcast) {
            self.retired.insert(broadcast.clone(), o.version);
            self.subs.remove(broadcast);
            self.learned.remove(broadcast);
            self.next_gossip = Some(now);
        }
    }

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

    /// This node's viewers want `broadcast`.
    pub fn subscribe(&mut self, now: Instant, broadcast: BroadcastId) {
        self.dirty = true;
        self.wants.insert(broadcast.clone());
        self.subs
            .entry(broadcast.clone())
            .or_default()
            .since
            .get_or_insert(now);
        let interest = self.interest_msg();
        for p in self.peers.values_mut() {
            if p.told_interest.as_ref() != Some(&interest) {
                p.control.push_back(interest.clone());
                p.told_interest = Some(interest.clone());
            }
        }
        self.flush();
    }

    pub fn unsubscribe(&mut self, broadcast: &BroadcastId) {
        self.dirty = true;
        self.wants.remove(broadcast);
        self.prune(broadcast);
        self.flush();
    }

    /// Broadcasts known to this node, with the hops of the route it would take.
    pub fn known_broadcasts(&self, now: Instant) -> Vec<KnownBroadcast> {
        self.catalog_entries(now)
            .into_iter()
            .map(|e| KnownBroadcast {
                hops: e.path.len() - 1,
                broadcast: e.broadcast,
                site: e.site,
                box_name: e.box_name,
            })
            .collect()
    }

    /// This node's tree state for `broadcast`, for logs and diagnostics.
    pub fn tree_state(&self, broadcast: &BroadcastId) -> String {
        match self.subs.get(broadcast) {
            Some(s) => format!(
                "parent {:?} pending {:?} dialing {:?} backup {:?} children {:?} tried {:?} puller {:?} routes {:?}",
                s.parent,
                s.pending.map(|p| p.0),
                s.dialing.map(|p| p.0),
                s.backup,
                s.children,
                s.tried,
                self.site_puller(broadcast),
                self.routes(broadcast).map(|(id, p, e)| (id, p.site.clone(), e.path.len(), e.carrying)).collect::<Vec<_>>()
            ),
            None => "not subscribed".into(),
        }
    }

    /// The node this one believes pulls `broadcast` into its site (for diagnostics).
    pub fn puller(&self, broadcast: &BroadcastId) -> NodeId {
        self.site_puller(broadcast)
    }

    pub fn parent(&self, broadcast: &BroadcastId) -> Option<NodeId> {
        self.subs.get(broadcast).and_then(|s| s.parent)
    }

    pub fn children(&self, broadcast: &BroadcastId) -> Vec<NodeId> {
        self.subs
            .get(broadcast)
            .map(|s| s.children.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Tells the node the wall clock (ms since the Unix epoch) at `now`; routed messages
    /// are dated with it. Call at start and now and then.
    pub fn set_wall_clock(&mut self, now: Instant, wall_ms: u64) {
        self.wall = Some((now, wall_ms));
    }

    pub fn wall_ms(&self, now: Instant) -> u64 {
        self.wall.map_or(0, |(at, ms)| {
            ms + now.saturating_duration_since(at).as_millis() as u64
        })
    }

    /// Sends a routed message (signed by the caller) towards its target. A command's
    /// reply is let in when it comes back.
    pub fn send_routed(&mut self, now: Instant, r: Routed) -> Result<(), RouteError> {
        let Some(next) = self.next_hop(&r.to, None) else {
            self.gate.stats.unroutable += 1;
            return Err(RouteError::NoRoute(r.to));
        };
        if r.kind == ROUTED_COMMAND {
            self.gate.expect_reply(r.to, r.id, self.wall_ms(now));
        }
        self.send(next, Msg::Routed(Box::new(r)));
        self.flush_peer(next);
        Ok(())
    }

    /// Changes who may command this node.
    pub fn set_command_allow(&mut self, allow: CommandAllow) {
        self.gate.allow = allow;
    }

    pub fn routed_stats(&self) -> RoutedStats {
        self.gate.stats
    }

    /// Whether this node knows a way to `node`.
    pub fn reaches(&self, node: &NodeId) -> bool {
        self.next_hop(node, None).is_some()
    }

    // ----- outputs ------------------------------------------------------------------

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let pending = self
            .subs
            .values()
            .filter_map(|s| s.pending.map(|(_, at)| at + self.cfg.subscribe_timeout));
        let retry = self
            .subs
            .values()
            .filter(|s| s.parent.is_none() && s.pending.is_none() && s.dialing.is_none())
            .filter_map(|s| s.retry_at);
        let dialing = self
            .subs
            .values()
            .filter_map(|s| s.dialing.map(|(_, at)| at + self.cfg.subscribe_timeout));
        let starve = self
            .subs
            .values()
            .filter(|s| s.parent.is_some())
            .filter_map(|s| s.last_object.map(|t| t + self.cfg.starve_timeout))
            .chain(self.subs.values().filter_map(|s| s.fresh_until));
        self.next_gossip
            .into_iter()
            .chain(pending)
            .chain(retry)
            .chain(dialing)
            .chain(starve)
            .min()
    }

    // ----- internals ----------------------------------------------------------------

    fn send(&mut self, to: NodeId, msg: Msg) {
        if let Some(p) = self.peers.get_mut(&to) {
            p.control.push_back(msg);
        }
    }

    fn flush(&mut self) {
        let peers: Vec<NodeId> = self.peers.keys().copied().collect();
        for p in peers {
            self.flush_peer(p);
        }
    }

    /// Control first (it is small and steers everything), then media within the window.
    fn flush_peer(&mut self, to: NodeId) {
        let Some(p) = self.peers.get_mut(&to) else {
            return;
        };
        while let Some(msg) = p.control.pop_front() {
            self.events.push_back(Event::Transmit { to, msg });
        }
        while p.in_flight < self.cfg.window_bytes {
            let Some(q) = p.media.pop_front() else { break };
            p.in_flight += media_len(&q.msg);
            self.events.push_back(Event::Transmit { to, msg: q.msg });
        }
    }

    fn interest_msg(&self) -> Msg {
        let mut broadcasts: BTreeSet<BroadcastId> = self.wants.clone();
        broadcasts.extend(
            self.subs
                .iter()
                .filter(|(_, s)| !s.children.is_empty())
                .map(|(b, _)| b.clone()),
        );
        Msg::Interest {
            broadcasts: broadcasts.into_iter().collect(),
        }
    }

    /// True while the broadcast's origin keeps refreshing it.
    fn alive(&self, b: &BroadcastId, now: Instant) -> bool {
        self.origins.contains_key(b) || self.learned.get(b).is_some_and(|l| l.expires > now)
    }

    /// Routes offered by neighbours for `b` that do not pass through this node.
    fn routes<'a>(
        &'a self,
        b: &'a BroadcastId,
    ) -> impl Iterator<Item = (NodeId, &'a Peer, &'a CatalogEntry)> + 'a {
        self.peers.iter().filter_map(move |(id, p)| {
            let e = p.catalog.get(b)?;
            (!e.path.contains(&self.id)).then_some((*id, p, e))
        })
    }

    /// The neighbour to hand a message for `target` to: the target itself when it is a
    /// neighbour, else the one with the shortest route to the target's node broadcast
    /// (never back where the message came from).
    fn next_hop(&self, target: &NodeId, came_from: Option<NodeId>) -> Option<NodeId> {
        if self.peers.contains_key(target) {
            return Some(*target);
        }
        let b = BroadcastId {
            origin: *target,
            name: NODE_BROADCAST.into(),
        };
        self.routes(&b)
            .filter(|(id, _, _)| Some(*id) != came_from)
            .min_by_key(|(id, p, e)| (e.path.len(), p.rtt, *id))
            .map(|(id, _, _)| id)
    }

    fn on_routed(&mut self, now: Instant, from: NodeId, mut r: Routed) {
        if r.to == self.id {
            let wall = self.wall_ms(now);
            if self.gate.admit(&r, wall).is_ok() {
                self.events.push_back(Event::Routed(Box::new(r)));
            }
            return;
        }
        let next = if r.hops == 0 {
            None
        } else {
            self.next_hop(&r.to, Some(from))
        };
        match next {
            Some(next) => {
                r.hops -= 1;
                self.gate.stats.forwarded += 1;
                self.send(next, Msg::Routed(Box::new(r)));
            }
            None => self.gate.stats.unroutable += 1,
        }
    }

    fn catalog_entries(&self, now: Instant) -> Vec<CatalogEntry> {
        let mut out = Vec::new();
        for (b, o) in &self.origins {
            out.push(CatalogEntry {
                broadcast: b.clone(),
                site: self.cfg.site.clone(),
                box_name: self.cfg.box_name.clone(),
                tracks: o.tracks.clone(),
                path: vec![self.id],
                carrying: true,
                version: o.version,
                ttl_ms: self.cfg.catalog_ttl.as_millis() as u32,
            });
        }
        let mut learned: Vec<&BroadcastId> = self.learned.keys().collect();
        learned.retain(|b| !self.origins.contains_key(*b) && self.alive(b, now));
        for b in learned {
            let parent = self.subs.get(b).and_then(|s| s.parent);
            let via = parent
                .and_then(|p| self.peers.get(&p).and_then(|peer| peer.catalog.get(b)))
                .or_else(|| self.best_route(b).map(|(_, e)| e));
            let Some(e) = via else { continue };
            let mut path = e.path.clone();
            path.push(self.id);
            // Carrying means receiving right now, not merely having a parent.
            let receiving = self
                .subs
                .get(b)
                .and_then(|s| s.last_object)
                .is_some_and(|t| now < t + FRESH);
            out.push(CatalogEntry {
                path,
                carrying: parent.is_some() && receiving,
                version: self.learned.get(b).map_or(e.version, |l| l.version),
                ..e.clone()
            });
        }
        out
    }

    fn best_route<'a>(&'a self, b: &'a BroadcastId) -> Option<(NodeId, &'a CatalogEntry)> {
        self.routes(b)
            .min_by_key(|(id, p, e)| (e.path.len(), p.rtt, std::cmp::Reverse(p.uplink_kbps), *id))
            .map(|(id, _, e)| (id, e))
    }

    /// Whether taking `entries` from `from` keeps within the limits. Checked before any
    /// of them is taken, so a message past a limit changes nothing.
    fn check_catalog(&self, from: NodeId, entries: &[CatalogEntry]) -> Result<(), Limit> {
        let limits = &self.cfg.limits;
        let Some(p) = self.peers.get(&from) else {
            return Ok(());
        };
        if entries.iter().any(|e| e.path.len() > limits.path_len) {
            return Err(Limit::PathLen);
        }
        // The last entry for a broadcast wins, as when they are taken one by one.
        let mut last: BTreeMap<&BroadcastId, &CatalogEntry> = BTreeMap::new();
        for e in entries {
            last.insert(&e.broadcast, e);
        }
        let (mut count, mut bytes) = (p.catalog.len() as i64, p.catalog_bytes as i64);
        let mut new_broadcasts = 0usize;
        for (b, e) in &last {
            let old = p.catalog.get(*b);
            if let Some(old) = old {
                count -= 1;
                bytes -= crate::wire::entry_len(old) as i64;
            }
            if !e.path.is_empty() {
                count += 1;
                bytes += crate::wire::entry_len(e) as i64;
                if !self.learned.contains_key(*b) && !self.origins.contains_key(*b) {
                    new_broadcasts += 1;
                }
            }
        }
        if count > limits.entries_per_peer as i64 {
            return Err(Limit::EntriesPerPeer);
        }
        if bytes > limits.catalog_bytes_per_peer as i64 {
            return Err(Limit::CatalogBytesPerPeer);
        }
        if self.learned.len() + new_broadcasts > limits.entries_total {
            return Err(Limit::EntriesTotal);
        }
        Ok(())
    }

    /// Broadcasts this node sends `peer` as its child.
    fn subscriptions_of(&self, peer: NodeId) -> usize {
        self.subs
            .values()
            .filter(|s| s.children.contains(&peer))
            .count()
    }

    /// Drops a neighbour that went past a limit: everything it told this node goes (so
    /// none of it is gossiped on), and the driver is asked to close the connection.
    fn disconnect(&mut self, now: Instant, peer: NodeId, limit: Limit) {
        tracing::warn!(node = %self.id, %peer, %limit, "neighbour disconnected");
        *self.disconnected.entry(limit).or_default() += 1;
        self.handle_peer_down(now, peer);
        // Broadcasts that only this neighbour offered are forgotten now, not at expiry.
        let routed: BTreeSet<BroadcastId> = self
            .peers
            .values()
            .flat_map(|p| p.catalog.keys().cloned())
            .collect();
        self.learned.retain(|b, _| routed.contains(b));
        self.events.push_back(Event::Disconnect { peer, limit });
        self.flush();
    }

    /// Neighbours disconnected so far for going past a limit, by limit.
    pub fn disconnected(&self) -> &BTreeMap<Limit, u64> {
        &self.disconnected
    }

    /// Entries in every table this node keeps (neighbours' catalogs and interests, known
    /// broadcasts, subscriptions and their children, cached groups): its state's size.
    pub fn state_entries(&self) -> usize {
        let peers: usize = self
            .peers
            .values()
            .map(|p| 1 + p.catalog.len() + p.interest.len() + p.control.len() + p.media.len())
            .sum();
        let subs: usize = self
            .subs
            .values()
            .map(|s| 1 + s.children.len() + s.cache.values().map(|c| c.len()).sum::<usize>())
            .sum();
        peers
            + subs
            + self.learned.len()
            + self.origins.len()
            + self.retired.len()
            + self.wants.len()
    }

    fn on_catalog(&mut self, now: Instant, from: NodeId, entries: Vec<CatalogEntry>) {
        let mut changed = false;
        for e in &entries {
            let fresh = self
                .learned
                .get(&e.broadcast)
                .is_none_or(|l| e.version > l.version);
            if fresh && !e.path.is_empty() && !self.origins.contains_key(&e.broadcast) {
                changed = true;
                self.learned.insert(
                    e.broadcast.clone(),
                    Learned {
                        version: e.version,
                        expires: now + Duration::from_millis(u64::from(e.ttl_ms.min(600_000))),
                    },
                );
            }
        }
        if let Some(p) = self.peers.get_mut(&from) {
            for e in entries {
                let old = if e.path.is_empty() {
                    p.catalog.remove(&e.broadcast)
                } else {
                    p.catalog_bytes += crate::wire::entry_len(&e);
                    p.catalog.insert(e.broadcast.clone(), e.clone())
                };
                if let Some(old) = &old {
                    p.catalog_bytes -= crate::wire::entry_len(old);
                }
                changed |= old.as_ref() != Some(&e);
            }
        }
        if changed {
            // Pass news on almost at once: news from several neighbours that arrive
            // within `COALESCE` leave in one round, which keeps a refresh from costing
            // one round per neighbour that relays it.
            let soon = now + COALESCE;
            if self.next_gossip.is_none_or(|t| t > soon) {
                self.next_gossip = Some(soon);
            }
        }
    }

    /// The site's puller of `b`: the lowest id among same-site nodes that want it and can
    /// reach it. Every node of the site computes the same answer from the same gossip.
    fn site_puller(&self, b: &BroadcastId) -> NodeId {
        let me = self.wants.contains(b) || self.subs.get(b).is_some_and(|s| !s.children.is_empty());
        self.peers
            .iter()
            .filter(|(_, p)| p.site == self.cfg.site && p.interest.contains(b))
            .map(|(id, _)| *id)
            .chain(me.then_some(self.id))
            .min()
            .unwrap_or(self.id)
    }

    /// Chooses where to get `b` from, or `None` if nowhere (yet).
    fn choose_parent(&self, b: &BroadcastId, exclude: &BTreeSet<NodeId>) -> Option<NodeId> {
        let site = &self.cfg.site;
        let usable = |id: &NodeId| !exclude.contains(id);
        // Nodes receiving the stream now first: during repairs, others may be orphans too.
        let key = |(id, p, e): &(NodeId, &Peer, &CatalogEntry)| {
            (
                !e.carrying,
                e.path.len(),
                p.rtt,
                std::cmp::Reverse(p.uplink_kbps),
                *id,
            )
        };

        let carrying_here = self
            .routes(b)
            .filter(|(id, p, e)| &p.site == site && e.carrying && usable(id))
            .min_by_key(key);
        if let Some((id, _, _)) = carrying_here {
            return Some(id);
        }
        let puller = self.site_puller(b);
        if puller != self.id {
            // Another node of this site pulls it in: attach to it, or (if it sent us away)
            // to any node of the site, never across sites ourselves.
            if self.peers.contains_key(&puller) && usable(&puller) {
                return Some(puller);
            }
            return self
                .peers
                .iter()
                .filter(|(id, p)| &p.site == site && usable(id))
                .filter(|(_, p)| p.catalog.get(b).is_some_and(|e| !e.path.contains(&self.id)))
                .min_by_key(|(id, p)| (p.rtt, **id))
                .map(|(id, _)| *id);
        }
        // This node pulls for its site: the best route from another site. With no route
        // from another site at all (the origin is in this site but not a neighbour, e.g.
        // a chain of static peers), any route toward it: that neighbour pulls in turn.
        let from_elsewhere = self.routes(b).any(|(_, p, _)| &p.site != site);
        self.routes(b)
            .filter(|(id, p, _)| (&p.site != site || !from_elsewhere) && usable(id))
            .min_by_key(key)
            .map(|(id, _, _)| id)
    }

    /// Drops a parent that went quiet or whose route now runs through this node (a loop
    /// formed from stale gossip), and a dial that never connected.
    fn check_parent(&mut self, now: Instant, b: &BroadcastId) {
        let dial_timeout = self.cfg.subscribe_timeout;
        let Some(s) = self.subs.get_mut(b) else {
            return;
        };
        if let Some((p, at)) = s.dialing {
            if now >= at + dial_timeout {
                s.dialing = None;
                s.tried.insert(p);
            }
        }
        let Some(parent) = s.parent else { return };
        let starved = s
            .last_object
            .is_some_and(|t| now >= t + self.cfg.starve_timeout);
        let looped = self
            .peers
            .get(&parent)
            .and_then(|p| p.catalog.get(b))
            .is_some_and(|e| e.path.contains(&self.id));
        if !starved && !looped {
            self.leave_redundant_remote_parent(now, b, parent);
            return;
        }
        {
            tracing::debug!(node = %self.id, broadcast = %b.name, %parent, starved, looped, "leaving parent");
            self.send(
                parent,
                Msg::Unsubscribe {
                    broadcast: b.clone(),
                },
            );
            if let Some(s) = self.subs.get_mut(b) {
                s.parent = None;
                s.tried.insert(parent);
            }
            let backup = self
                .subs
                .get(b)
                .and_then(|s| s.backup)
                .filter(|p| self.peers.contains_key(p) && *p != parent);
            match backup {
                Some(p) => self.subscribe_to(now, b, p),
                None => self.attach(now, b),
            }
        }
    }

    /// Two nodes of a site may both pull a broadcast across sites while the site's gossip
    /// settles. The one that is not the site's puller moves under a node of its own site
    /// that already carries it and is no deeper than itself (so it cannot be one of its own
    /// descendants), and the site's uplink carries one copy again.
    fn leave_redundant_remote_parent(&mut self, now: Instant, b: &BroadcastId, parent: NodeId) {
        let site = &self.cfg.site;
        let remote = self.peers.get(&parent).is_some_and(|p| &p.site != site);
        if !remote || self.site_puller(b) == self.id {
            return;
        }
        let my_depth = self
            .peers
            .get(&parent)
            .and_then(|p| p.catalog.get(b))
            .map_or(usize::MAX, |e| e.path.len() + 1);
        let children = self
            .subs
            .get(b)
            .map(|s| s.children.clone())
            .unwrap_or_default();
        let local = self
            .routes(b)
            .filter(|(id, p, e)| {
                &p.site == site && e.carrying && e.path.len() <= my_depth && !children.contains(id)
            })
            .min_by_key(|(id, p, e)| (e.path.len(), p.rtt, *id))
            .map(|(id, _, _)| id);
        if let Some(p) = local {
            tracing::debug!(node = %self.id, broadcast = %b.name, from = %parent, to = %p, "one copy per site: moving under a local carrier");
            self.subscribe_to(now, b, p);
        }
    }

    /// Makes sure a broadcast this node needs has a parent (or a subscription on the way).
    fn attach(&mut self, now: Instant, b: &BroadcastId) {
        if self.origins.contains_key(b) {
            return;
        }
        let Some(s) = self.subs.get(b) else { return };
        let needed = self.wants.contains(b) || !s.children.is_empty();
        if !needed || s.parent.is_some() || s.pending.is_some() || s.dialing.is_some() {
            if let Some(s) = self.subs.get_mut(b) {
                s.retry_at = None;
            }
            return;
        }
        // Give the site a moment to hear who else wants it before pulling across sites.
        if let Some(t) = s
            .since
            .map(|t| t + self.cfg.election_delay)
            .filter(|t| now < *t)
        {
            if let Some(s) = self.subs.get_mut(b) {
                s.retry_at = Some(t);
            }
            return;
        }
        let tried = s.tried.clone();
        let choice = self.choose_parent(b, &tried).or_else(|| {
            // Everyone failed us once: start over rather than give up.
            if let Some(s) = self.subs.get_mut(b) {
                s.tried.clear();
            }
            self.choose_parent(b, &BTreeSet::new())
        });
        match choice {
            Some(p) => self.subscribe_to(now, b, p),
            None => {
                if let Some(s) = self.subs.get_mut(b) {
                    s.retry_at = Some(now + self.cfg.gossip_interval);
                }
            }
        }
    }

    fn subscribe_to(&mut self, now: Instant, b: &BroadcastId, parent: NodeId) {
        let Some(s) = self.subs.get_mut(b) else {
            return;
        };
        let old = s.parent.take().filter(|p| *p != parent);
        s.pending = Some((parent, now));
        s.retry_at = None;
        if let Some(old) = old {
            self.send(
                old,
                Msg::Unsubscribe {
                    broadcast: b.clone(),
                },
            );
        }
        let Some(s) = self.subs.get(b) else { return };
        let resume = s
            .position
            .iter()
            .map(|(track, pos)| ResumePoint {
                track: *track,
                group: pos.group,
                index: pos.next,
            })
            .collect();
        self.send(
            parent,
            Msg::Subscribe {
                broadcast: b.clone(),
                resume,
            },
        );
    }

    fn update_backup(&mut self, b: &BroadcastId) {
        let Some(s) = self.subs.get(b) else { return };
        let Some(parent) = s.parent else { return };
        // A node that carries the broadcast now, off the parent's own path, so one failure
        // cannot take both. The site's puller keeps a backup in another site: a same-site
        // node would only come back to it for the stream.
        let puller = self.site_puller(b) == self.id;
        let backup = self
            .routes(b)
            .filter(|(id, _, e)| {
                *id != parent && e.carrying && !e.path.contains(&parent) && !s.children.contains(id)
            })
            .filter(|(_, p, _)| !puller || p.site != self.cfg.site)
            .min_by_key(|(id, p, e)| (p.site != self.cfg.site, e.path.len(), p.rtt, *id))
            .map(|(id, _, _)| id);
        if let Some(s) = self.subs.get_mut(b) {
            s.backup = backup;
        }
    }

    fn on_redirect(&mut self, now: Instant, from: NodeId, b: BroadcastId, to: Vec<NodeId>) {
        let Some(s) = self.subs.get_mut(&b) else {
            return;
        };
        if s.parent == Some(from) {
            // Our parent put a node between itself and us: move under it, resuming where
            // we are.
            s.parent = None;
            match to.first().copied().filter(|n| *n != self.id) {
                Some(next) if self.peers.contains_key(&next) => self.subscribe_to(now, &b, next),
                Some(next) => {
                    s.dialing = Some((next, now));
                    self.events.push_back(Event::Connect { peer: next });
                }
                None => self.attach(now, &b),
            }
            return;
        }
        if s.pending.is_none_or(|(p, _)| p != from) {
            return;
        }
        s.pending = None;
        s.tried.insert(from);
        let tried = s.tried.clone();
        let puller = self.site_puller(&b) == self.id;
        let next = to
            .into_iter()
            .filter(|id| *id != self.id && !tried.contains(id))
            // Only the site's puller may follow a redirect to another site.
            .filter(|id| puller || self.peers.get(id).is_some_and(|p| p.site == self.cfg.site))
            .filter(|id| {
                self.peers
                    .get(id)
                    .and_then(|p| p.catalog.get(&b))
                    .is_none_or(|e| !e.path.contains(&self.id))
            })
            .min_by_key(|id| {
                let p = self.peers.get(id);
                (
                    p.is_none(),
                    p.is_some_and(|p| p.site != self.cfg.site),
                    p.map(|p| p.rtt),
                    *id,
                )
            });
        match next {
            Some(p) if self.peers.contains_key(&p) => self.subscribe_to(now, &b, p),
            Some(p) => {
                if let Some(s) = self.subs.get_mut(&b) {
                    s.dialing = Some((p, now));
                }
                self.events.push_back(Event::Connect { peer: p });
            }
            None => self.attach(now, &b),
        }
    }

    fn on_subscribe(
        &mut self,
        now: Instant,
        from: NodeId,
        b: BroadcastId,
        resume: Vec<ResumePoint>,
    ) {
        let is_origin = self.origins.contains_key(&b);
        if !is_origin && !self.alive(&b, now) && self.best_route(&b).is_none() {
            self.refuse(from, b);
            return;
        }
        let from_site = self
            .peers
            .get(&from)
            .map(|p| p.site.clone())
            .unwrap_or_default();
        let wan = from_site != self.cfg.site;
        let s = self.subs.entry(b.clone()).or_default();
        if s.children.contains(&from) {
            self.send(from, Msg::SubscribeOk { broadcast: b });
            return;
        }
        // A child must not be our own parent, nor the node we are asking: that would be
        // a loop (two orphans that each thought the other still carried the broadcast).
        if s.parent == Some(from) || s.pending.is_some_and(|(p, _)| p == from) {
            self.refuse(from, b);
            return;
        }
        let parent = s.parent;
        let (same, other): (Vec<NodeId>, Vec<NodeId>) = s
            .children
            .iter()
            .partition(|c| self.peers.get(c).is_some_and(|p| p.site == self.cfg.site));
        let parent_is_remote = parent.is_some_and(|p| {
            self.peers
                .get(&p)
                .is_some_and(|pp| pp.site != self.cfg.site)
        });
        // Only the node that brings the broadcast into this site serves other sites: send
        // the newcomer to our parent, or, with none (nobody here watches it), to our best
        // route within the site (in the origin's site, the origin), or to the site-mate
        // that pulls it in. With none of them (a box between sites on a chain of static
        // peers, whose site watches nothing), serve it ourselves: we pull it in.
        let toward = if wan && !is_origin && !parent_is_remote {
            parent
                .or_else(|| {
                    self.routes(&b)
                        .filter(|(_, p, _)| p.site == self.cfg.site)
                        .min_by_key(|(id, _, e)| (e.path.len(), *id))
                        .map(|(id, _, _)| id)
                })
                .or_else(|| {
                    let puller = self.site_puller(&b);
                    (puller != self.id && self.peers.contains_key(&puller)).then_some(puller)
                })
        } else {
            None
        };
        let redirect = if let Some(toward) = toward {
            Some(vec![toward])
        } else if wan && other.len() >= self.cfg.wan_children {
            // The site's uplink already carries one copy out: splice the newcomer into the
            // chain between us and our child there, instead of sending it down the chain
            // one redirect at a time. The newcomer has left its old parent, so it cannot
            // be below that child any more.
            let keep = self.cfg.wan_children.max(1) - 1;
            let moved: Vec<NodeId> = other.iter().copied().skip(keep).collect();
            if let Some(s) = self.subs.get_mut(&b) {
                for c in &moved {
                    s.children.remove(c);
                }
            }
            for c in moved {
                self.send(
                    c,
                    Msg::Redirect {
                        broadcast: b.clone(),
                        to: vec![from],
                    },
                );
            }
            None
        } else if !wan && same.len() >= self.cfg.max_children {
            Some(same)
        } else {
            None
        };
        if let Some(to) = redirect {
            self.send(from, Msg::Redirect { broadcast: b, to });
            return;
        }
        if let Some(s) = self.subs.get_mut(&b) {
            s.children.insert(from);
            s.since.get_or_insert(now);
        }
        self.send(
            from,
            Msg::SubscribeOk {
                broadcast: b.clone(),
            },
        );
        self.serve_cache(from, &b, &resume);
        self.attach(now, &b);
    }

    /// A redirect to nowhere: the subscriber must look elsewhere.
    fn refuse(&mut self, to: NodeId, broadcast: BroadcastId) {
        self.send(
            to,
            Msg::Redirect {
                broadcast,
                to: vec![],
            },
        );
    }

    /// Sends a new child what the cache holds: from its resume point when we still have
    /// that group, else from the newest group's first object (fast join).
    fn serve_cache(&mut self, child: NodeId, b: &BroadcastId, resume: &[ResumePoint]) {
        let Some(s) = self.subs.get(b) else { return };
        let mut out = Vec::new();
        for (track, groups) in &s.cache {
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

    /// Accepts an object if it continues its group or starts a newer one; caches it,
    /// delivers it to local viewers and forwards it to children.
    fn ingest(
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
        let accept = match s.position.get(&track) {
            None => index == 0,
            Some(p) => (group == p.group && index == p.next) || (group > p.group && index == 0),
        };
        if !accept {
            return;
        }
        s.position.insert(
            track,
            Position {
                group,
                next: index + 1,
            },
        );
        let groups = s.cache.entry(track).or_default();
        if index == 0 {
            groups.push_back(CachedGroup {
                group,
                objects: Vec::new(),
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
        let children: Vec<NodeId> = s.children.iter().copied().collect();
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
        for c in children {
            self.enqueue_media(c, b, track, group, index, capture_us, payload.clone());
        }
    }

    /// Queues an object for one child. A slow child loses whole old groups: when a new
    /// group arrives, queued groups it has not started receiving are dropped; a group it
    /// has started is finished first. Siblings have queues of their own and never wait.
    #[allow(clippy::too_many_arguments)]
    fn enqueue_media(
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
                .find(|q| &q.broadcast == b && q.track == track)
                .filter(|q| q.index > 0)
                .map(|q| q.group);
            p.media
                .retain(|q| &q.broadcast != b || q.track != track || Some(q.group) == started);
        }
        p.media.push_back(Queued {
            broadcast: b.clone(),
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

    /// Leaves a broadcast nobody here needs any more.
    fn prune(&mut self, b: &BroadcastId) {
        if self.origins.contains_key(b) {
            return;
        }
        let Some(s) = self.subs.get(b) else { return };
        if self.wants.contains(b) || !s.children.is_empty() {
            return;
        }
        let parent = s.parent.or(s.pending.map(|(p, _)| p));
        self.subs.remove(b);
        if let Some(p) = parent {
            self.send(
                p,
                Msg::Unsubscribe {
                    broadcast: b.clone(),
                },
            );
        }
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
