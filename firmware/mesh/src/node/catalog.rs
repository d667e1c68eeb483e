//! The catalog: what this node tells its neighbours about broadcasts (its own and the
//! routes it knows), and what it takes from theirs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Entries, KnownBroadcast, Learned, Node, Origin, Peer, COALESCE, FRESH};
use crate::msg::{BroadcastId, CatalogEntry, Msg, NodeId, NODE_BROADCAST};

/// One broadcast's entry as told to some neighbours, or none.
type Told = Option<Arc<CatalogEntry>>;

/// What site-mates, other sites and a site-mate reaching other boxes are told.
type ToldMaps = (Arc<Entries>, Arc<Entries>, Arc<Entries>);

/// How long news of a broadcast from another site waits, per lower-ranked site-mate,
/// before this node tells its site (`Node::site_hold`): about the spread of WAN delays.
const TELL_SITE_HOLD: Duration = Duration::from_millis(40);
/// How long news of a broadcast waits before this node tells other sites: the spread of
/// WAN delays, so that the shortest path has usually arrived.
const NEWS_HOLD: Duration = Duration::from_millis(30);
/// How long whom a node reaches in its site must stay the same before it tells.
const REACH_SETTLE: Duration = Duration::from_secs(1);
/// How long a site-mate must reach other boxes than this node (after both settled)
/// before it is told every route: longer than a change takes to be told both ways.
const REACH_DIFFERS: Duration = Duration::from_secs(2);

impl Node {
    /// Whom this node reaches in its site, itself included: how many, and the XOR of the
    /// first 8 bytes of their ids. Node ids are public keys, so two different sets have
    /// the same digest only by a 2^-64 chance; a node that forged one only makes itself
    /// be told fewer or more routes.
    /// Kept until a neighbour comes, goes or says its site: every gossip round asks.
    pub(super) fn site_reach(&mut self) -> (u32, u64) {
        self.site_view().0
    }

    /// Whether this node has links to other sites that lookups cross (`SiteMates`
    /// beyond): a neighbour counts once its `Hello` said its site (a site-mate that just
    /// connected would otherwise make this node a gateway for a moment), and a link a
    /// tree dialed does not count.
    fn links_beyond(&mut self) -> bool {
        self.site_view().1
    }

    /// `site_reach` and `links_beyond`, made in one walk of the neighbours and kept
    /// together: the same comings, goings and `Hello`s change both.
    fn site_view(&mut self) -> ((u32, u64), bool) {
        if let Some(view) = self.site_reach {
            return view;
        }
        let mut view = ((1, self.id.prefix()), false);
        for (id, p) in &self.peers {
            if p.site_mate {
                let (n, d) = view.0;
                view.0 = (n + 1, d ^ id.prefix());
            } else if p.greeted && !p.tree {
                view.1 = true;
            }
        }
        self.site_reach = Some(view);
        view
    }

    /// Tells each neighbour what changed since it was last told: new or changed entries,
    /// and withdrawals (an entry with an empty path) for routes this node lost. Nothing
    /// is told again while it holds: links are reliable streams, so, as in BGP, a route
    /// lasts until it is withdrawn or its link goes, and a mesh at rest sends no catalog.
    /// A periodic refresh of every broadcast along every link would cost each node
    /// broadcasts x links x an entry's size, some 200 kbit/s for 100 broadcasts.
    pub(super) fn gossip(&mut self, now: Instant) {
        #[cfg(debug_assertions)]
        let before = self.told_maps();
        if self.catalog_stale || !self.stale.is_empty() {
            self.remake_catalog(now);
        }
        #[cfg(debug_assertions)]
        self.assert_catalog_complete(now, before);
        let interest = self.current_interest();
        let reaches = self.site_reach();
        if reaches != self.reaches.0 {
            self.reaches = (reaches, Some(now));
        }
        // A site's links come up one by one: telling each change would cost every box
        // its site's size squared in messages while the site forms.
        let settled = self.reaches.1.is_none_or(|t| now >= t + REACH_SETTLE);
        let beyond = self.links_beyond();
        let round = QuietRound {
            told: self.last_told.clone(),
            beyond: self.last_told_beyond.clone(),
            all: self.last_told_all.clone(),
            interest: interest.clone(),
            reaches,
            gateway: beyond,
            settled,
        };
        if self.quiet_round.as_ref().is_some_and(|q| q.same(&round)) {
            return;
        }
        self.ready_all = true;
        let mut quiet = true;
        let subs = &self.subs;
        for (id, p) in self.peers.iter_mut() {
            // Until its `Hello` says its site, which catalog a neighbour gets is unknown:
            // a site-mate told the catalog for other sites first was told most entries
            // twice. The `Hello` calls the next round at once.
            if !p.greeted {
                continue;
            }
            let queued = p.control.len();
            // Nodes are reached within their site; beyond it, through lookups.
            let entries = if p.site_mate {
                // Whom this node reaches is told once it settled; whether it has links
                // beyond at once (with the reach told last), so lookups find the way.
                let told = p.told_reaches;
                let reach_news = settled && told.map(|(c, d, _)| (c, d)) != Some(reaches);
                let beyond_news = told.is_some_and(|(_, _, b)| b != beyond);
                if reach_news || beyond_news {
                    let (count, digest) = match told {
                        Some((c, d, _)) if !reach_news => (c, d),
                        _ => reaches,
                    };
                    p.control.push_back(Msg::SiteMates {
                        count,
                        digest,
                        beyond,
                    });
                    p.told_reaches = Some((count, digest, beyond));
                }
                // Differing for a moment is a site changing (a box came or went, and
                // the news is on its way); only a lasting difference is a site that is
                // not a full mesh.
                let differs = p.reaches.is_some_and(|r| r != reaches);
                quiet &= !differs;
                let since = if differs {
                    *p.differs_since.get_or_insert(now)
                } else {
                    p.differs_since = None;
                    now
                };
                if differs && now >= since + REACH_DIFFERS {
                    self.last_told_all.clone()
                } else {
                    self.last_told.clone()
                }
            } else if p.tree_link() {
                // A link dialed for a tree is told what flows over it (the entries of the
                // broadcasts the neighbour takes from this node: it sees a loop or a
                // starving parent) and what this node carries (a neighbour that lost its
                // parent finds a feed, and sees who hangs below it). Every other route
                // reaches it over the links the mesh made; told them all, a box repeated
                // its whole catalog to each node a redirect sent its way, and the paths
                // through such links were a third of the catalog bytes at 1 000 boxes.
                let flows: Entries = self
                    .last_told_beyond
                    .iter()
                    .filter(|(b, e)| {
                        e.carrying || subs.get(*b).is_some_and(|s| s.children.contains(id))
                    })
                    .map(|(b, e)| (b.clone(), e.clone()))
                    .collect();
                if *p.told_catalog == flows {
                    p.told_catalog.clone()
                } else {
                    Arc::new(flows)
                }
            } else {
                self.last_told_beyond.clone()
            };
            if !Arc::ptr_eq(&p.told_catalog, &entries) {
                quiet = false;
                let delta = catalog_delta(&p.told_catalog, &entries);
                if !delta.is_empty() {
                    p.control.push_back(Msg::Catalog { entries: delta });
                }
                p.told_catalog = entries.clone();
            }
            // Only site-mates use it: who pulls for the site is decided on it.
            if p.site_mate {
                tell_interest(p, &interest);
            }
            quiet &= p.control.len() == queued;
        }
        self.quiet_round = quiet.then_some(round);
    }

    /// Makes what site-mates and other sites are told from the current routes: every
    /// entry when `catalog_stale`, else those of the broadcasts in `stale`.
    fn remake_catalog(&mut self, now: Instant) {
        let keys: BTreeSet<BroadcastId> = if std::mem::take(&mut self.catalog_stale) {
            self.stale.clear();
            self.catalog_keys()
        } else {
            std::mem::take(&mut self.stale)
        };
        // A map that did not change stays the one every neighbour told last holds: then
        // one pointer comparison replaces one map comparison per neighbour.
        let told = self.told_maps();
        (self.last_told, self.last_told_beyond, self.last_told_all) =
            self.made_told(now, &keys, told);
    }

    /// The catalogs as told last: to site-mates, to other sites, and whole.
    fn told_maps(&self) -> ToldMaps {
        (
            self.last_told.clone(),
            self.last_told_beyond.clone(),
            self.last_told_all.clone(),
        )
    }

    /// `told` with the entries of `keys` made again from the current routes.
    fn made_told(
        &mut self,
        now: Instant,
        keys: &BTreeSet<BroadcastId>,
        mut told: ToldMaps,
    ) -> ToldMaps {
        for b in keys {
            let (fresh, beyond, all) = self.told_of(now, b);
            patch(&mut told.0, b, fresh);
            patch(&mut told.1, b, beyond);
            patch(&mut told.2, b, all);
        }
        told
    }

    /// Every broadcast an entry may be told of, or withdrawn (what site-mates and other
    /// sites are told is a part of the whole catalog).
    fn catalog_keys(&self) -> BTreeSet<BroadcastId> {
        let learned = self
            .learned
            .keys()
            .filter(|b| b.name != NODE_BROADCAST || b.origin == self.id);
        self.origins
            .keys()
            .chain(learned)
            .chain(self.last_told_all.keys())
            .cloned()
            .collect()
    }

    /// What this node tells of `b`: to site-mates (`None` where a better teller among
    /// them does), to other sites, and to a site-mate that does not reach the same boxes.
    fn told_of(&mut self, now: Instant, b: &BroadcastId) -> (Told, Told, Told) {
        let Some(e) = self.catalog_entry(now, b, false).map(Arc::new) else {
            return (None, None, None);
        };
        // News waits a moment before it goes to other sites: the shortest path often
        // arrives after the first, and each later shorter one was told on again.
        let beyond = if b.name == NODE_BROADCAST {
            None
        } else {
            let heard = self.learned.get(b).map(|l| l.heard);
            match heard.map(|t| t + NEWS_HOLD).filter(|t| now < *t) {
                Some(until) => {
                    self.wake_for_held_news(until);
                    self.last_told_beyond.get(b).cloned()
                }
                None => Some(e.clone()),
            }
        };
        let fresh = self.tells_site(now, &e).then(|| e.clone());
        (fresh, beyond, Some(e))
    }

    /// Checks, in debug builds (every test), at every gossip round, that the entries made
    /// again only where something was marked stale (or not at all) equal a catalog made
    /// whole from `before`: a change that forgot to mark its broadcast would leave
    /// neighbours told an old route.
    #[cfg(debug_assertions)]
    fn assert_catalog_complete(&mut self, now: Instant, before: ToldMaps) {
        let made = self.told_maps();
        (self.last_told, self.last_told_beyond, self.last_told_all) = before;
        let hold = self.hold_until;
        let keys = self.catalog_keys();
        let whole = self.made_told(now, &keys, ToldMaps::default());
        self.hold_until = hold;
        (self.last_told, self.last_told_beyond, self.last_told_all) = made;
        assert_eq!(
            *self.last_told, *whole.0,
            "{}: site catalog made in part",
            self.id
        );
        assert_eq!(
            *self.last_told_beyond, *whole.1,
            "{}: catalog beyond made in part",
            self.id
        );
        assert_eq!(
            *self.last_told_all, *whole.2,
            "{}: whole catalog made in part",
            self.id
        );
    }

    /// Whether site-mates hear this entry from this node. A site is a full LAN mesh, so
    /// a route needs telling there by one node only, as routes learned over iBGP are not
    /// passed on to iBGP peers: by the one with the shortest route (the lowest id among
    /// equals), and by every node on the broadcast's tree, which its site-mates attach
    /// to. Without it a node of a site of 100 hears every broadcast from 99 site-mates
    /// and weighs 99 routes for each whenever anything changes.
    fn tells_site(&mut self, now: Instant, e: &CatalogEntry) -> bool {
        let b = &e.broadcast;
        // A node's `.node` entry is told by the node itself only: its site-mates hear it
        // from it, and one relayed would cost every pair of site-mates a copy of every
        // other's. A node it does not reach directly is found by lookup, as beyond the
        // site.
        if b.name == NODE_BROADCAST || b.origin == self.id {
            return b.origin == self.id;
        }
        // An end is told in a site by whoever heard it from beyond first (no site-mate
        // had told it yet): every box of the site has a link to them. Decided once, when
        // the end arrived (`on_catalog`), so that it is never told and then taken back.
        if let Some((_, tell)) = self.learned.get(b).and_then(|l| l.ended.as_ref()) {
            return *tell;
        }
        if self.subs.get(b).is_some_and(|s| s.parent.is_some()) {
            return true;
        }
        if let Some(until) = self.site_hold(now, b) {
            self.wake_for_held_news(until);
            return false;
        }
        let mine = (e.path.len(), self.id);
        !self
            .routes(b)
            .any(|(id, p, o)| p.site_mate && (o.path.len(), id) < mine)
    }

    /// Until when news of `b` from another site still waits (`None` once it need not)
    /// before this node tells its site-mates: `TELL_SITE_HOLD` for each site-mate with a
    /// lower id (three at most).
    /// A site's gateways, its lowest ids, hear a new broadcast from other sites within
    /// the spread of their WAN delays; without the hold each told the whole site and all
    /// but one withdrew (at 1 000 nodes, 135 000 withdrawals beside 226 000 entries
    /// told in sites for 100 broadcasts going live). With it the first gateway tells and
    /// the others, having heard it, stay quiet unless their route is shorter.
    fn site_hold(&self, now: Instant, b: &BroadcastId) -> Option<Instant> {
        // Every remake asks this of every route: the deadline first, the routes only
        // while it is ahead.
        let heard = self.learned.get(b)?.heard;
        if now >= heard + TELL_SITE_HOLD * 3 {
            return None;
        }
        // Peers are ordered by id: the lower ones come first.
        let below = self
            .peers
            .range(..self.id)
            .filter(|(_, p)| p.site_mate)
            .take(3)
            .count() as u32;
        let until = Some(heard + TELL_SITE_HOLD * below).filter(|t| now < *t)?;
        let (_, best) = self.best_route(b)?;
        let via_site = self
            .routes(b)
            .any(|(_, p, o)| p.site_mate && o.path.len() <= best.path.len());
        (!via_site).then_some(until)
    }

    /// Makes sure a gossip round runs when news held back until `until` may be told.
    fn wake_for_held_news(&mut self, until: Instant) {
        self.hold_until = Some(self.hold_until.map_or(until, |t| t.min(until)));
    }

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
        self.learned.remove(&b);
        self.expiring.remove(&b);
        self.origins.insert(
            b.clone(),
            Origin {
                tracks,
                version,
                watch: String::new(),
            },
        );
        self.stale.insert(b.clone());
        self.subs.entry(b.clone()).or_default();
        self.next_gossip = Some(now);
        b
    }

    /// Sets who may watch a broadcast originating here (`group:ops,site:berlin`; empty:
    /// the mesh-wide default); neighbours learn it with the next gossip, due at once.
    pub fn set_watch(&mut self, now: Instant, broadcast: &BroadcastId, watch: &str) {
        if let Some(o) = self.origins.get_mut(broadcast) {
            if o.watch != watch {
                o.watch = watch.to_owned();
                self.dirty = true;
                self.stale.insert(broadcast.clone());
                self.next_gossip = Some(now);
            }
        }
    }

    /// Ends a broadcast originating here. Neighbours learn at the next gossip (due at
    /// once) that the route is withdrawn; children stop receiving and let go.
    pub fn unpublish(&mut self, now: Instant, broadcast: &BroadcastId) {
        self.dirty = true;
        if let Some(o) = self.origins.remove(broadcast) {
            // The end is news of its own, a version above the last: it replaces every
            // route to the broadcast wherever it arrives. A plain withdrawal made each
            // box that still heard an older route from a neighbour tell that one on, and
            // the next, until every path had been tried (at 300 nodes, ten broadcasts
            // ending cost 1.9 MB of control per box).
            let version = o.version + 1;
            self.retired.insert(broadcast.clone(), version);
            self.subs.remove(broadcast);
            self.stale.insert(broadcast.clone());
            let ttl = self.cfg.catalog_ttl;
            let end = self.own_entry(broadcast, o.tracks, o.watch, version, false);
            self.learn(
                broadcast.clone(),
                Learned {
                    heard: now,
                    version,
                    ttl,
                    expires: Some(now + ttl),
                    ended: Some((end, true)),
                },
            );
            self.next_gossip = Some(now);
        }
    }

    /// The entry of a broadcast of this node's own: live, or (`live` false) its end, an
    /// entry with no time to live.
    fn own_entry(
        &self,
        b: &BroadcastId,
        tracks: Vec<u8>,
        watch: String,
        version: u64,
        live: bool,
    ) -> CatalogEntry {
        CatalogEntry {
            broadcast: b.clone(),
            site: self.cfg.site.clone(),
            box_name: self.cfg.box_name.clone(),
            watch,
            tracks,
            path: vec![self.id.hop()],
            carrying: live,
            version,
            ttl_ms: if live {
                self.cfg.catalog_ttl.as_millis() as u32
            } else {
                0
            },
        }
    }

    /// The path this node last told its neighbours for `b` (for diagnostics and tests).
    pub fn told_path(&self, b: &BroadcastId) -> Option<Vec<crate::msg::Hop>> {
        self.last_told_all.get(b).map(|e| e.path.clone())
    }

    /// Broadcasts known to this node, with the hops of the route it would take.
    pub fn known_broadcasts(&self, now: Instant) -> Vec<KnownBroadcast> {
        self.catalog_entries(now, true)
            .into_iter()
            .filter(|e| e.ttl_ms > 0)
            .map(|e| KnownBroadcast {
                hops: e.path.len() - 1,
                broadcast: e.broadcast,
                site: e.site,
                box_name: e.box_name,
                watch: e.watch,
            })
            .collect()
    }

    /// What this node wants or relays, as it tells its site-mates (who pulls for the
    /// site is decided on it). The same `Arc` while it stays the same: a round then
    /// tells a neighbour only if it was told another, by comparing pointers.
    pub(super) fn current_interest(&mut self) -> Arc<Msg> {
        let mut now: Vec<&BroadcastId> = self
            .wants
            .iter()
            .chain(
                self.subs
                    .iter()
                    .filter(|(_, s)| !s.children.is_empty())
                    .map(|(b, _)| b),
            )
            .collect();
        now.sort_unstable();
        now.dedup();
        let same = matches!(&*self.interest, Msg::Interest { broadcasts }
            if broadcasts.len() == now.len() && broadcasts.iter().zip(&now).all(|(a, b)| a == *b));
        if !same {
            let broadcasts = now.into_iter().cloned().collect();
            self.interest = Arc::new(Msg::Interest { broadcasts });
        }
        self.interest.clone()
    }

    /// True while the broadcast is offered by a neighbour (or was, within its TTL).
    pub(super) fn alive(&self, b: &BroadcastId, now: Instant) -> bool {
        self.origins.contains_key(b)
            || self
                .learned
                .get(b)
                .is_some_and(|l| l.ended.is_none() && l.expires.is_none_or(|t| t > now))
    }

    /// Routes offered by neighbours for `b` that do not pass through this node.
    pub(super) fn routes<'a>(
        &'a self,
        b: &'a BroadcastId,
    ) -> impl Iterator<Item = (NodeId, &'a Peer, &'a CatalogEntry)> + 'a {
        // Routes older than the newest version heard are stale (an end replaced them).
        let newest = self.learned.get(b).map_or(0, |l| l.version);
        self.offers
            .get(b)
            .into_iter()
            .flatten()
            .filter_map(move |id| {
                let p = self.peers.get(id)?;
                let e = p.catalog.get(b)?;
                (e.ttl_ms > 0 && e.version >= newest && !e.passes(&self.id)).then_some((*id, p, e))
            })
    }

    pub(super) fn forget_offer(&mut self, now: Instant, b: &BroadcastId, peer: NodeId) {
        forget_offer(&mut self.offers, b, peer);
        self.offers_changed(now, b);
    }

    /// Keeps `b` known as `l` says, and `expiring` the set of those whose time runs.
    fn learn(&mut self, b: BroadcastId, l: Learned) {
        if l.expires.is_some() {
            self.expiring.insert(b.clone());
        } else {
            self.expiring.remove(&b);
        }
        self.learned.insert(b, l);
    }

    /// A broadcast stays known while a neighbour offers it, and for its TTL after the
    /// last one withdrew it (a version to beat if it comes back); an end for its TTL
    /// whoever offers it.
    fn offers_changed(&mut self, now: Instant, b: &BroadcastId) {
        let offered = self.offers.contains_key(b);
        let Some(l) = self.learned.get_mut(b).filter(|l| l.ended.is_none()) else {
            return;
        };
        match (offered, l.expires) {
            (true, Some(_)) => {
                l.expires = None;
                self.expiring.remove(b);
            }
            (false, None) => {
                l.expires = Some(now + l.ttl);
                self.expiring.insert(b.clone());
            }
            _ => {}
        }
    }

    /// Forgets the broadcasts whose time ran out; neighbours told of them are told the
    /// withdrawal at the next round.
    pub(super) fn forget_expired(&mut self, now: Instant) {
        let expired: Vec<BroadcastId> = self
            .expiring
            .iter()
            .filter(|b| {
                self.learned
                    .get(*b)
                    .is_none_or(|l| l.expires.is_some_and(|t| t <= now))
            })
            .cloned()
            .collect();
        for b in expired {
            self.expiring.remove(&b);
            self.learned.remove(&b);
            self.stale.insert(b);
            self.dirty = true;
        }
    }

    /// This node's route to every broadcast it knows. Another node's `.node` entry is
    /// told by that node alone, even in a site that is not a full mesh (a node not
    /// reached directly is found by lookup), so what this node tells leaves them out
    /// (`with_nodes` false): in a site of 150 they were three in five of the routes
    /// weighed at every change, and thrown away.
    pub(super) fn catalog_entries(&self, now: Instant, with_nodes: bool) -> Vec<CatalogEntry> {
        self.origins
            .keys()
            .chain(
                self.learned
                    .keys()
                    .filter(|b| !self.origins.contains_key(*b)),
            )
            .filter_map(|b| self.catalog_entry(now, b, with_nodes))
            .collect()
    }

    /// This node's route to `b`, as `catalog_entries` lists it.
    fn catalog_entry(
        &self,
        now: Instant,
        b: &BroadcastId,
        with_nodes: bool,
    ) -> Option<CatalogEntry> {
        if let Some(o) = self.origins.get(b) {
            return Some(self.own_entry(b, o.tracks.clone(), o.watch.clone(), o.version, true));
        }
        if !with_nodes && b.name == NODE_BROADCAST {
            return None;
        }
        let l = self.learned.get(b)?;
        if let Some((end, _)) = &l.ended {
            let mut path = end.path.clone();
            if end.broadcast.origin != self.id {
                path.push(self.id.hop());
            }
            return Some(CatalogEntry {
                path,
                ..end.clone()
            });
        }
        // `alive`, with the entry in hand.
        if l.expires.is_some_and(|t| t <= now) {
            return None;
        }
        let sub = self.subs.get(b);
        let parent = sub.and_then(|s| s.parent);
        let e = parent
            .and_then(|p| self.peers.get(&p).and_then(|peer| peer.catalog.get(b)))
            .or_else(|| self.told_route(b))?;
        let mut path = e.path.clone();
        path.push(self.id.hop());
        // Carrying means receiving right now, not merely having a parent; a sparse
        // broadcast is carried while it has one (judged by arrivals, it would be told
        // carried and not carried again with every message).
        let receiving = b.is_sparse()
            || sub
                .and_then(|s| s.last_object)
                .is_some_and(|t| now < t + FRESH);
        Some(CatalogEntry {
            path,
            carrying: parent.is_some() && receiving,
            version: l.version,
            ..e.clone()
        })
    }

    /// The route this node tells for `b` while it has no parent: the shortest, and among
    /// the shortest the one it told before. A new neighbour with a route as short (a link
    /// a redirect dialed) then changes nothing; switching to it would make this node tell
    /// every neighbour a new path, and them theirs. Measured at 300 nodes, paths that
    /// changed without getting shorter were a third of all catalog entries sent.
    fn told_route<'a>(&'a self, b: &'a BroadcastId) -> Option<&'a CatalogEntry> {
        let told_via = self
            .last_told_all
            .get(b)
            .and_then(|e| e.path.len().checked_sub(2).map(|i| e.path[i]));
        // One pass over the routes (this runs for every broadcast at every remake).
        // A route over a link a tree dialed comes last: such a link is told what its far
        // end carries, for repair, and a path through it told on is a shortcut every box
        // beyond would hear of and tell again whenever a tree changes.
        let mut best = None;
        let mut kept = None;
        for (id, p, e) in self.routes(b) {
            let tree = p.tree_link();
            if told_via == Some(id.hop()) {
                kept = Some((tree, e));
            }
            let key = (tree, route_rank(id, p, e));
            if best.as_ref().is_none_or(|(k, _)| key < *k) {
                best = Some((key, e));
            }
        }
        let ((best_tree, _), best) = best?;
        Some(
            kept.filter(|(tree, e)| *tree == best_tree && e.path.len() == best.path.len())
                .map_or(best, |(_, e)| e),
        )
    }

    pub(super) fn best_route<'a>(
        &'a self,
        b: &'a BroadcastId,
    ) -> Option<(NodeId, &'a CatalogEntry)> {
        self.routes(b)
            .min_by_key(|(id, p, e)| route_rank(*id, p, e))
            .map(|(id, _, e)| (id, e))
    }

    pub(super) fn on_catalog(
        &mut self,
        now: Instant,
        from: NodeId,
        mut entries: Vec<CatalogEntry>,
    ) {
        // A route over a link lost moments ago is a withdrawal that has not caught up.
        for e in entries.iter_mut().filter(|e| self.over_dead_link(now, e)) {
            e.path.clear();
        }
        let mut changed = false;
        for e in &entries {
            self.stale.insert(e.broadcast.clone());
            let fresh = self
                .learned
                .get(&e.broadcast)
                .is_none_or(|l| e.version > l.version);
            if fresh && !e.path.is_empty() && !self.origins.contains_key(&e.broadcast) {
                changed = true;
                // An entry with no time to live says the broadcast ended at its version.
                let ended = (e.ttl_ms == 0).then(|| {
                    let beyond = self.peers.get(&from).is_none_or(|p| !p.site_mate);
                    let told_here = self.peers.values().any(|p| {
                        p.site_mate && p.catalog.get(&e.broadcast).is_some_and(|o| o.ttl_ms == 0)
                    });
                    (e.clone(), beyond && !told_here)
                });
                let ttl = if ended.is_some() {
                    self.cfg.catalog_ttl
                } else {
                    Duration::from_millis(u64::from(e.ttl_ms.min(600_000)))
                };
                // An end's time runs at once; a route's once nobody offers it.
                let expires = ended.is_some().then_some(now + ttl);
                self.learn(
                    e.broadcast.clone(),
                    Learned {
                        heard: now,
                        version: e.version,
                        ttl,
                        expires,
                        ended,
                    },
                );
            }
        }
        if let Some(p) = self.peers.get_mut(&from) {
            for e in &entries {
                let old = if e.path.is_empty() {
                    forget_offer(&mut self.offers, &e.broadcast, from);
                    p.catalog.remove(&e.broadcast)
                } else {
                    p.catalog_bytes += crate::wire::entry_len(e);
                    self.offers
                        .entry(e.broadcast.clone())
                        .or_default()
                        .insert(from);
                    p.catalog.insert(e.broadcast.clone(), e.clone())
                };
                if let Some(old) = &old {
                    p.catalog_bytes -= crate::wire::entry_len(old);
                }
                changed |= old.as_ref() != Some(e);
            }
        }
        for e in &entries {
            self.offers_changed(now, &e.broadcast);
        }
        if changed {
            self.gossip_soon(now);
        }
    }

    /// Calls a gossip round almost at once: news from several neighbours that arrive
    /// within `COALESCE` leave in one round, which keeps a change from costing one round
    /// per neighbour that relays it.
    pub(super) fn gossip_soon(&mut self, now: Instant) {
        let soon = now + COALESCE;
        if self.next_gossip.is_none_or(|t| t > soon) {
            self.next_gossip = Some(soon);
        }
    }
}

/// What a gossip round told from: when a round found every neighbour told all of it
/// already, the next round made of the same (and no neighbour come, gone or changed
/// since) has nothing to tell either and skips the walk. Two walks of every neighbour
/// per round, in a site of 150 boxes, were a fifth of the simulator's steady state.
/// The maps themselves are held, not their addresses, so a new map can never pass for one
/// freed since.
#[derive(Debug)]
pub(super) struct QuietRound {
    told: Arc<Entries>,
    beyond: Arc<Entries>,
    all: Arc<Entries>,
    interest: Arc<Msg>,
    reaches: (u32, u64),
    gateway: bool,
    settled: bool,
}

impl QuietRound {
    fn same(&self, other: &QuietRound) -> bool {
        Arc::ptr_eq(&self.told, &other.told)
            && Arc::ptr_eq(&self.beyond, &other.beyond)
            && Arc::ptr_eq(&self.all, &other.all)
            && Arc::ptr_eq(&self.interest, &other.interest)
            && self.reaches == other.reaches
            && self.gateway == other.gateway
            && self.settled == other.settled
    }
}

/// Tells a neighbour this node's interest unless it was told the same already: what
/// changed since it was last told, or the whole list where that is no longer.
pub(super) fn tell_interest(p: &mut Peer, interest: &Arc<Msg>) {
    let told = p
        .told_interest
        .as_ref()
        .is_some_and(|t| Arc::ptr_eq(t, interest) || **t == **interest);
    if !told {
        let change = match (p.told_interest.as_deref(), &**interest) {
            (Some(Msg::Interest { broadcasts: old }), Msg::Interest { broadcasts: new }) => {
                Some(interest_change(old, new))
            }
            _ => None,
        };
        let smaller =
            change.filter(|c| crate::wire::encoded_len(c) < crate::wire::encoded_len(interest));
        p.control
            .push_back(smaller.unwrap_or_else(|| (**interest).clone()));
    }
    p.told_interest = Some(interest.clone());
}

/// The `InterestChange` from `old` to `new`, both sorted (`current_interest`).
fn interest_change(old: &[BroadcastId], new: &[BroadcastId]) -> Msg {
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (o.peek(), n.peek()) {
            (Some(a), Some(b)) if a == b => {
                o.next();
                n.next();
            }
            (Some(a), Some(b)) if a < b => removed.extend(o.next().cloned()),
            (Some(_), Some(_)) | (None, Some(_)) => added.extend(n.next().cloned()),
            (Some(_), None) => removed.extend(o.next().cloned()),
            (None, None) => break,
        }
    }
    Msg::InterestChange { added, removed }
}

/// How routes rank, best first: the shortest, then the nearest neighbour, the one with
/// the most uplink, the lowest id.
fn route_rank(
    id: NodeId,
    p: &Peer,
    e: &CatalogEntry,
) -> (usize, Duration, std::cmp::Reverse<u32>, NodeId) {
    (e.path.len(), p.rtt, std::cmp::Reverse(p.uplink_kbps), id)
}

/// `peer` no longer offers `b`; a broadcast nobody offers leaves the index.
fn forget_offer(
    offers: &mut BTreeMap<BroadcastId, BTreeSet<NodeId>>,
    b: &BroadcastId,
    peer: NodeId,
) {
    if let Some(set) = offers.get_mut(b) {
        set.remove(&peer);
        if set.is_empty() {
            offers.remove(b);
        }
    }
}

/// Sets what `told` holds for `b`, copying the map (shared with neighbours told it) only
/// when that changes.
fn patch(told: &mut Arc<Entries>, b: &BroadcastId, e: Told) {
    if told.get(b) == e.as_ref() {
        return;
    }
    let told = Arc::make_mut(told);
    match e {
        Some(e) => told.insert(b.clone(), e),
        None => told.remove(b),
    };
}

/// What a neighbour told `told` must hear to know `now`: new and changed entries, then
/// withdrawals (an entry with an empty path) for those gone. Both maps are walked side by
/// side in their common order, without a lookup per entry (that was a third of the
/// simulator's time once the catalog was made in part).
fn catalog_delta(told: &Entries, now: &Entries) -> Vec<CatalogEntry> {
    use std::cmp::Ordering;
    let withdrawn = |e: &CatalogEntry| CatalogEntry {
        path: Vec::new(),
        carrying: false,
        ..e.clone()
    };
    let (mut changed, mut gone) = (Vec::new(), Vec::new());
    let (mut a, mut b) = (told.iter().peekable(), now.iter().peekable());
    loop {
        let order = match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
        };
        match order {
            Ordering::Less => gone.extend(a.next().map(|(_, e)| withdrawn(e))),
            Ordering::Greater => changed.extend(b.next().map(|(_, e)| CatalogEntry::clone(e))),
            Ordering::Equal => {
                let (Some((_, old)), Some((_, new))) = (a.next(), b.next()) else {
                    break;
                };
                if old != new {
                    changed.push(CatalogEntry::clone(new));
                }
            }
        }
    }
    changed.append(&mut gone);
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(name: &str) -> BroadcastId {
        BroadcastId {
            origin: NodeId([7; 32]),
            name: name.into(),
        }
    }

    #[test]
    fn an_interest_change_names_what_came_and_went() {
        let old = [b("a"), b("c"), b("d"), b("f")];
        let new = [b("b"), b("c"), b("e"), b("f"), b("g")];
        assert_eq!(
            interest_change(&old, &new),
            Msg::InterestChange {
                added: vec![b("b"), b("e"), b("g")],
                removed: vec![b("a"), b("d")],
            }
        );
        assert_eq!(
            interest_change(&new, &new),
            Msg::InterestChange {
                added: vec![],
                removed: vec![],
            }
        );
    }
}
