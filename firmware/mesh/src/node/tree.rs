//! The tree of each broadcast: whom this node takes it from (one copy per site, a backup
//! off the parent's path), whom it serves, and whom it redirects.

use std::collections::BTreeSet;
use std::time::Instant;

use super::{Event, Node, Peer, Sub};
use crate::msg::{BroadcastId, CatalogEntry, Hop, Msg, NodeId, ResumePoint, NODE_BROADCAST};

impl Node {
    /// Whether a deadline of the per-broadcast sweep has passed.
    pub(super) fn sweep_due(&self, now: Instant) -> bool {
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
                    && s.starves_at(self.cfg.starve_timeout)
                        .is_some_and(|t| now >= t))
        })
    }

    /// This node's viewers want `broadcast`.
    pub fn subscribe(&mut self, now: Instant, broadcast: BroadcastId) {
        self.dirty = true;
        if self.wants.insert(broadcast.clone()) {
            // Already relaying it for others: this node's viewers join at once, from the
            // newest cached group's start.
            self.deliver_newest_group(&broadcast);
        }
        self.subs
            .entry(broadcast.clone())
            .or_default()
            .since
            .get_or_insert(now);
        let interest = self.current_interest();
        self.ready_all = true;
        for p in self.peers.values_mut() {
            super::catalog::tell_interest(p, &interest);
        }
        self.flush();
    }

    pub fn unsubscribe(&mut self, broadcast: &BroadcastId) {
        self.dirty = true;
        self.wants.remove(broadcast);
        self.prune(broadcast);
        self.flush();
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

    /// The node a subscription to `broadcast` awaits an answer from.
    pub fn pending(&self, broadcast: &BroadcastId) -> Option<NodeId> {
        self.subs
            .get(broadcast)
            .and_then(|s| s.pending.map(|(p, _)| p))
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

    /// The site's puller of `b`: the lowest id among same-site nodes that want it and can
    /// reach it. Every node of the site computes the same answer from the same gossip.
    pub(super) fn site_puller(&self, b: &BroadcastId) -> NodeId {
        let me = self.wants.contains(b) || self.subs.get(b).is_some_and(|s| !s.children.is_empty());
        self.peers
            .iter()
            .filter(|(_, p)| p.site_mate && p.interest.contains(b))
            .map(|(id, _)| *id)
            .chain(me.then_some(self.id))
            .min()
            .unwrap_or(self.id)
    }

    /// Whether this node brings `b` into its site: it is the site's puller, or the puller
    /// took it from this node. A puller need not have a link beyond the site (a box told
    /// no other site's address takes it from a site-mate that has one); that site-mate
    /// then pulls in its stead, or each would wait for the other.
    pub(super) fn pulls_into_site(&self, b: &BroadcastId) -> bool {
        self.leaves_pulling_to(b).is_none()
    }

    /// The site-mate that brings `b` into the site for this node, or `None` when this
    /// node does (`pulls_into_site`).
    pub(super) fn leaves_pulling_to(&self, b: &BroadcastId) -> Option<NodeId> {
        let puller = self.site_puller(b);
        let mine = puller == self.id
            || self
                .subs
                .get(b)
                .is_some_and(|s| s.children.contains(&puller));
        (!mine).then_some(puller)
    }

    /// Chooses where to get `b` from, or `None` if nowhere (yet).
    pub(super) fn choose_parent(
        &self,
        b: &BroadcastId,
        exclude: &BTreeSet<NodeId>,
    ) -> Option<NodeId> {
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
            .filter(|(id, p, e)| p.site_mate && e.carrying && usable(id))
            .min_by_key(key);
        if let Some((id, _, _)) = carrying_here {
            return Some(id);
        }
        if let Some(puller) = self.leaves_pulling_to(b) {
            // Another node of this site pulls it in: attach to it, or (if it sent us away)
            // to any node of the site, never across sites ourselves.
            if self.peers.contains_key(&puller) && usable(&puller) {
                return Some(puller);
            }
            return self
                .peers
                .iter()
                .filter(|(id, p)| p.site_mate && usable(id))
                .filter(|(_, p)| p.catalog.get(b).is_some_and(|e| !e.passes(&self.id)))
                .min_by_key(|(id, p)| (p.rtt, **id))
                .map(|(id, _)| *id);
        }
        // This node pulls for its site: the best route from another site. With no route
        // from another site at all (the origin is in this site but not a neighbour, e.g.
        // a chain of static peers), any route toward it: that neighbour pulls in turn.
        let from_elsewhere = self.routes(b).any(|(_, p, _)| !p.site_mate);
        // A route from another site that comes back through this one is a loop of sites:
        // that site's puller would pull from ours, which pulls from it, and neither ever
        // receives. Such a route is the last resort.
        let mates: BTreeSet<Hop> = self
            .peers
            .iter()
            .filter(|(_, p)| p.site_mate)
            .map(|(id, _)| id.hop())
            .collect();
        let reenters = |e: &CatalogEntry| e.path.iter().any(|h| mates.contains(h));
        // Across sites the shortest route first, carrying or not (a neighbour that does
        // not carry it yet pulls it in for us): the tree of sites then follows shortest
        // paths from the origin, and a site does not hang below whichever deep branch
        // happened to carry it first.
        let shortest = |(id, p, e): &(NodeId, &Peer, &CatalogEntry)| {
            (reenters(e), e.path.len(), !e.carrying, p.rtt, *id)
        };
        self.routes(b)
            .filter(|(id, p, _)| (!p.site_mate || !from_elsewhere) && usable(id))
            .min_by_key(shortest)
            .map(|(id, _, _)| id)
    }

    /// Drops a parent that went quiet or whose route now runs through this node (a loop
    /// formed from stale gossip), and a dial that never connected.
    pub(super) fn check_parent(&mut self, now: Instant, b: &BroadcastId) {
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
            .starves_at(self.cfg.starve_timeout)
            .is_some_and(|t| now >= t);
        let (last_object, patient) = (s.last_object, s.patience.is_some());
        let told = self.peers.get(&parent).and_then(|p| p.catalog.get(b));
        let looped = told.is_some_and(|e| e.passes(&self.id));
        let parent_starves = told.is_some_and(|e| !e.carrying);
        // Starving needs a last object, which sparse broadcasts never keep.
        if starved
            && !looped
            && !patient
            && parent_starves
            && !self.routes(b).any(|(id, _, e)| id != parent && e.carrying)
        {
            if let Some(s) = self.subs.get_mut(b) {
                s.patience = last_object.map(|t| t + super::PATIENCE);
            }
            return;
        }
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
            self.stale.insert(b.clone());
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
    /// that already carries it on a route that does not pass through itself (so it is not
    /// one of its own descendants), and the site's uplink carries one copy again.
    pub(super) fn leave_redundant_remote_parent(
        &mut self,
        now: Instant,
        b: &BroadcastId,
        parent: NodeId,
    ) {
        let remote = self.is_other_site(&parent);
        if !remote || self.pulls_into_site(b) {
            return;
        }
        let children = self
            .subs
            .get(b)
            .map(|s| s.children.clone())
            .unwrap_or_default();
        let local = self
            .routes(b)
            .filter(|(id, p, e)| p.site_mate && e.carrying && !children.contains(id))
            .min_by_key(|(id, p, e)| (e.path.len(), p.rtt, *id))
            .map(|(id, _, _)| id);
        if let Some(p) = local {
            tracing::debug!(node = %self.id, broadcast = %b.name, from = %parent, to = %p, "one copy per site: moving under a local carrier");
            self.subscribe_to(now, b, p);
        }
    }

    /// Makes sure a broadcast this node needs has a parent (or a subscription on the way).
    pub(super) fn attach(&mut self, now: Instant, b: &BroadcastId) {
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
        // Give the site a moment to hear who else wants it before pulling across sites,
        // unless a child already came to this node for it: a site-mate has waited that
        // moment, and on a new path (a repair, a redirect) a child of another site would
        // otherwise wait it again at every relay in turn (`tests/behaviour/
        // relay_election.rs`). Two gateways that both take such children pull at once
        // until `leave_redundant_remote_parent` moves one under the other.
        let asked = !s.children.is_empty();
        if let Some(t) = s
            .since
            .map(|t| t + self.cfg.election_delay)
            .filter(|t| now < *t && !asked)
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
        // A node broadcast of another site is in no catalog here: ask for the way to its
        // node, then talk to it directly, as any neighbour would (it redirects below its
        // other followers when it has no room).
        let beyond_site = b.name == NODE_BROADCAST && self.routes(b).next().is_none();
        let choice = choice
            .or_else(|| (beyond_site && self.peers.contains_key(&b.origin)).then_some(b.origin));
        match choice {
            Some(p) => self.subscribe_to(now, b, p),
            None if beyond_site && self.next_hop(now, &b.origin, None).is_some() => {
                if let Some(s) = self.subs.get_mut(b) {
                    s.dialing = Some((b.origin, now));
                }
                self.events.push_back(Event::Connect { peer: b.origin });
            }
            None => {
                if beyond_site {
                    self.find(now, b.origin);
                }
                if let Some(s) = self.subs.get_mut(b) {
                    s.retry_at = Some(now + self.cfg.gossip_interval);
                }
            }
        }
    }

    pub(super) fn subscribe_to(&mut self, now: Instant, b: &BroadcastId, parent: NodeId) {
        let Some(s) = self.subs.get_mut(b) else {
            return;
        };
        let had_parent = s.parent.is_some();
        let old = s.parent.take().filter(|p| *p != parent);
        s.pending = Some((parent, now));
        s.retry_at = None;
        if had_parent {
            self.stale.insert(b.clone());
        }
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
            .tracks
            .iter()
            .map(|t| ResumePoint {
                track: t.track,
                group: t.position.group,
                index: t.position.next,
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

    pub(super) fn update_backup(&mut self, b: &BroadcastId) {
        let Some(s) = self.subs.get(b) else { return };
        let Some(parent) = s.parent else { return };
        // A node that carries the broadcast now, off the parent's own path, so one failure
        // cannot take both. The site's puller keeps a backup in another site: a same-site
        // node would only come back to it for the stream.
        let puller = self.pulls_into_site(b);
        let backup = self
            .routes(b)
            .filter(|(id, _, e)| {
                *id != parent && e.carrying && !e.passes(&parent) && !s.children.contains(id)
            })
            .filter(|(_, p, _)| !puller || !p.site_mate)
            .min_by_key(|(id, p, e)| (!p.site_mate, e.path.len(), p.rtt, *id))
            .map(|(id, _, _)| id);
        if let Some(s) = self.subs.get_mut(b) {
            s.backup = backup;
        }
    }

    pub(super) fn on_redirect(
        &mut self,
        now: Instant,
        from: NodeId,
        b: BroadcastId,
        to: Vec<NodeId>,
    ) {
        let Some(s) = self.subs.get_mut(&b) else {
            return;
        };
        if s.parent == Some(from) {
            // Our parent put a node between itself and us: move under it, resuming where
            // we are.
            s.parent = None;
            self.stale.insert(b.clone());
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
        let puller = self.pulls_into_site(&b);
        let next = to
            .into_iter()
            .filter(|id| *id != self.id && !tried.contains(id))
            // Only the site's puller may follow a redirect to another site.
            .filter(|id| puller || self.is_site_mate(id))
            .filter(|id| {
                self.peers
                    .get(id)
                    .and_then(|p| p.catalog.get(&b))
                    .is_none_or(|e| !e.passes(&self.id))
            })
            .min_by_key(|id| {
                let p = self.peers.get(id);
                (
                    p.is_none(),
                    p.is_some_and(|p| !p.site_mate),
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

    pub(super) fn on_subscribe(
        &mut self,
        now: Instant,
        from: NodeId,
        b: BroadcastId,
        resume: Vec<ResumePoint>,
    ) {
        let is_origin = self.origins.contains_key(&b);
        // A node that receives it serves it, catalog or not (a node broadcast followed
        // from beyond its site is in no catalog).
        let receiving = self.subs.get(&b).is_some_and(|s| s.parent.is_some());
        if !is_origin && !receiving && !self.alive(&b, now) && self.best_route(&b).is_none() {
            self.refuse(from, b);
            return;
        }
        let wan = !self.is_site_mate(&from);
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
            .partition(|c| self.peers.get(c).is_some_and(|p| p.site_mate));
        let parent_is_remote = parent.is_some_and(|p| self.is_other_site(&p));
        // Only the node that brings the broadcast into this site serves other sites: send
        // the newcomer to our parent, or, with none (nobody here watches it), to our best
        // route within the site (in the origin's site, the origin), or to the site-mate
        // that pulls it in. With none of them (a box between sites on a chain of static
        // peers, whose site watches nothing), serve it ourselves: we pull it in.
        let toward = if wan && !is_origin && !parent_is_remote {
            parent
                .or_else(|| {
                    self.routes(&b)
                        .filter(|(_, p, _)| p.site_mate)
                        .min_by_key(|(id, _, e)| (e.path.len(), *id))
                        .map(|(id, _, _)| id)
                })
                .or_else(|| {
                    self.leaves_pulling_to(&b)
                        .filter(|puller| self.peers.contains_key(puller))
                })
        } else {
            None
        };
        let redirect = if let Some(toward) = toward {
            Some(vec![toward])
        } else if wan && other.len() >= self.wan_fanout(&b) {
            // This site sends as many copies out as its uplink budget allows: the newcomer
            // goes one level down, to our children in other sites in turn, so the tree of
            // sites fills level by level and its depth grows as log(sites), not a chain.
            let s = self.subs.get_mut(&b).expect("entry made above");
            s.redirects += 1;
            Some(vec![other[(s.redirects - 1) % other.len()]])
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
        // A link a tree dialed is told the entries of its children's broadcasts.
        if self.peers.get(&from).is_some_and(Peer::tree_link) {
            self.quiet_round = None;
            self.gossip_soon(now);
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
    pub(super) fn refuse(&mut self, to: NodeId, broadcast: BroadcastId) {
        self.send(
            to,
            Msg::Redirect {
                broadcast,
                to: vec![],
            },
        );
    }

    /// Leaves a broadcast nobody here needs any more.
    pub(super) fn prune(&mut self, b: &BroadcastId) {
        if self.origins.contains_key(b) {
            return;
        }
        let Some(s) = self.subs.get(b) else { return };
        if self.wants.contains(b) || !s.children.is_empty() {
            return;
        }
        let parent = s.parent.or(s.pending.map(|(p, _)| p));
        self.subs.remove(b);
        self.stale.insert(b.clone());
        if let Some(p) = parent {
            self.send(
                p,
                Msg::Unsubscribe {
                    broadcast: b.clone(),
                },
            );
        }
    }

    /// How many children in other sites this node may serve `b` to: as many copies as the
    /// uplink budget has room for beside what it already sends other sites of every
    /// broadcast, at least one (so a chain of sites still forms) and at most `wan_children`.
    pub(super) fn wan_fanout(&self, b: &BroadcastId) -> usize {
        let rate = |s: &Sub| s.rate_kbps().max(1);
        let wan_children =
            |s: &Sub| s.children.iter().filter(|c| self.is_other_site(c)).count() as u64;
        let used: u64 = self.subs.values().map(|s| wan_children(s) * rate(s)).sum();
        let Some(s) = self.subs.get(b) else { return 1 };
        let spare = u64::from(self.cfg.uplink_kbps).saturating_sub(used);
        let more = (spare / rate(s)) as usize;
        (wan_children(s) as usize + more).clamp(1, self.cfg.wan_children.max(1))
    }
}
