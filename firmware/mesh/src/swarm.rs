//! Spreading a file of fixed-size chunks (an update bundle) through the mesh so that each
//! chunk crosses each site's uplink once. Sans IO like the rest of the core: the driver
//! tells a [`Swarm`] what its neighbours have, ask and send, and carries out the
//! [`Action`]s it returns; checking a chunk's hash is the caller's (the signed manifest
//! names them).
//!
//! The rule that keeps uplinks to one copy: a box asks a site-mate that has the chunk;
//! when none has it, it asks its site's *fetcher*, the site-mate of the lowest id; only
//! the fetcher itself (no site-mate below it) asks beyond: a box of another site that has
//! the chunk, else the neighbour on the way to the publisher. A box asked for a chunk it
//! lacks fetches it once, however many ask, and serves every asker when it arrives, and
//! never asks one of those askers for it. A site's lowest id is its first gateway (it
//! links beyond), so its boxes ask it, and only it fetches across the uplink, even when
//! the site's other gateways link beyond too.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::msg::NodeId;

/// Chunks asked of one neighbour at a time.
pub const PER_NEIGHBOUR: usize = 8;
/// Chunks a box that wants the whole file has asked for at a time.
pub const WINDOW: usize = 16;
/// An asked chunk that has not come by then is asked elsewhere.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask `peer` for chunk `chunk`.
    Ask { peer: NodeId, chunk: usize },
    /// Send chunk `chunk` (which this box has) to `peer`.
    Send { peer: NodeId, chunk: usize },
    /// Tell every neighbour that this box has `chunk` now.
    Have { chunk: usize },
    /// Every chunk is here.
    Complete,
}

#[derive(Debug, Clone)]
struct Neighbour {
    site_mate: bool,
    has: Vec<bool>,
    asked: usize,
}

#[derive(Debug, Clone)]
pub struct Swarm {
    me: NodeId,
    have: Vec<bool>,
    missing: usize,
    /// This box wants the whole file (to install it), not just what it is asked for.
    wants_all: bool,
    neighbours: BTreeMap<NodeId, Neighbour>,
    /// The neighbour on the way to the publisher, from the mesh's routes.
    toward_origin: Option<NodeId>,
    /// Chunks asked for: of whom, and when.
    pending: BTreeMap<usize, (NodeId, Instant)>,
    /// Neighbours waiting for chunks this box has not got yet.
    askers: BTreeMap<usize, BTreeSet<NodeId>>,
    /// Neighbours a chunk came wrong from, per chunk: not asked for it again.
    failed: BTreeMap<usize, BTreeSet<NodeId>>,
    actions: Vec<Action>,
}

impl Swarm {
    /// A swarm for a file of `chunks` chunks, of which this box has those in `have`
    /// (all of them at the publisher; what a broken transfer left elsewhere).
    pub fn new(me: NodeId, chunks: usize, have: Vec<bool>) -> Swarm {
        let mut have = have;
        have.resize(chunks, false);
        let missing = have.iter().filter(|h| !**h).count();
        Swarm {
            me,
            have,
            missing,
            wants_all: false,
            neighbours: BTreeMap::new(),
            toward_origin: None,
            pending: BTreeMap::new(),
            askers: BTreeMap::new(),
            failed: BTreeMap::new(),
            actions: Vec::new(),
        }
    }

    pub fn has(&self, chunk: usize) -> bool {
        self.have.get(chunk).copied().unwrap_or(false)
    }

    pub fn missing(&self) -> usize {
        self.missing
    }

    /// What this box has, to tell a neighbour that just came up.
    pub fn have(&self) -> &[bool] {
        &self.have
    }

    pub fn want_all(&mut self, now: Instant) {
        self.set_wants_all(now, true);
    }

    /// Whether this box wants the whole file; when it stops (its rollout no longer names
    /// it), what it asked for still comes, and it asks only for what others ask of it.
    pub fn set_wants_all(&mut self, now: Instant, wants: bool) {
        self.wants_all = wants;
        self.ask_more(now);
    }

    pub fn set_toward_origin(&mut self, now: Instant, peer: Option<NodeId>) {
        self.toward_origin = peer;
        self.ask_more(now);
    }

    pub fn neighbour_up(&mut self, now: Instant, peer: NodeId, site_mate: bool) {
        self.neighbours.insert(
            peer,
            Neighbour {
                site_mate,
                has: vec![false; self.have.len()],
                asked: 0,
            },
        );
        self.ask_more(now);
    }

    /// A neighbour left: what was asked of it is asked elsewhere, and it waits for
    /// nothing any more.
    pub fn neighbour_down(&mut self, now: Instant, peer: NodeId) {
        self.neighbours.remove(&peer);
        self.pending.retain(|_, (p, _)| *p != peer);
        for waiting in self.askers.values_mut() {
            waiting.remove(&peer);
        }
        self.askers.retain(|_, w| !w.is_empty());
        if self.toward_origin == Some(peer) {
            self.toward_origin = None;
        }
        self.ask_more(now);
    }

    /// `peer` has these chunks (all of them, or one more). One it asked this box for, and
    /// got elsewhere after waiting too long, no longer waits here, and may be asked.
    pub fn neighbour_has(&mut self, now: Instant, peer: NodeId, chunks: &[usize]) {
        if let Some(n) = self.neighbours.get_mut(&peer) {
            for &c in chunks {
                if let Some(h) = n.has.get_mut(c) {
                    *h = true;
                }
                if let Some(waiting) = self.askers.get_mut(&c) {
                    waiting.remove(&peer);
                }
            }
            self.askers.retain(|_, w| !w.is_empty());
        }
        self.ask_more(now);
    }

    /// `peer` asks for `chunk`: sent at once when here, else fetched (once) and sent when
    /// it comes.
    pub fn asked(&mut self, now: Instant, peer: NodeId, chunk: usize) {
        if chunk >= self.have.len() {
            return;
        }
        if self.have[chunk] {
            self.actions.push(Action::Send { peer, chunk });
            return;
        }
        self.askers.entry(chunk).or_default().insert(peer);
        if !self.pending.contains_key(&chunk) {
            self.ask_for(now, chunk);
        }
    }

    /// Chunk `chunk` came from `peer`; `ok` is whether it matched its hash.
    pub fn received(&mut self, now: Instant, peer: NodeId, chunk: usize, ok: bool) {
        if chunk >= self.have.len() {
            return;
        }
        if self.pending.get(&chunk).is_some_and(|(p, _)| *p == peer) {
            self.pending.remove(&chunk);
        }
        if let Some(n) = self.neighbours.get_mut(&peer) {
            n.asked = n.asked.saturating_sub(1);
        }
        if !ok {
            self.failed.entry(chunk).or_default().insert(peer);
            self.ask_for(now, chunk);
            return;
        }
        if !self.have[chunk] {
            self.have[chunk] = true;
            self.missing -= 1;
            self.actions.push(Action::Have { chunk });
            for waiting in self.askers.remove(&chunk).unwrap_or_default() {
                self.actions.push(Action::Send {
                    peer: waiting,
                    chunk,
                });
            }
            if self.missing == 0 {
                self.actions.push(Action::Complete);
            }
        }
        self.ask_more(now);
    }

    /// Asks again, elsewhere, what has not come within [`ASK_TIMEOUT`].
    pub fn tick(&mut self, now: Instant) {
        let late: Vec<(usize, NodeId)> = self
            .pending
            .iter()
            .filter(|(_, (_, at))| now >= *at + ASK_TIMEOUT)
            .map(|(c, (p, _))| (*c, *p))
            .collect();
        for (chunk, peer) in late {
            self.pending.remove(&chunk);
            if let Some(n) = self.neighbours.get_mut(&peer) {
                n.asked = n.asked.saturating_sub(1);
            }
            self.failed.entry(chunk).or_default().insert(peer);
            self.ask_for(now, chunk);
        }
        self.ask_more(now);
    }

    pub fn poll_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// Keeps [`WINDOW`] chunks asked for while this box wants the whole file, lowest
    /// missing first (so a transfer resumes where it stopped).
    fn ask_more(&mut self, now: Instant) {
        if !self.wants_all {
            // Chunks only others asked for, whose source has appeared since.
            let waiting: Vec<usize> = self
                .askers
                .keys()
                .copied()
                .filter(|c| !self.pending.contains_key(c))
                .collect();
            for chunk in waiting {
                self.ask_for(now, chunk);
            }
            return;
        }
        let mut chunk = 0;
        while self.pending.len() < WINDOW && chunk < self.have.len() {
            if !self.have[chunk] && !self.pending.contains_key(&chunk) {
                // Nobody to ask now is no reason to stop: a later chunk may have a source.
                self.ask_for(now, chunk);
            }
            chunk += 1;
        }
    }

    /// Asks one neighbour for `chunk`, by the rule in the module's comment. False when
    /// there is nobody to ask (now).
    fn ask_for(&mut self, now: Instant, chunk: usize) -> bool {
        if self.try_ask(now, chunk) {
            return true;
        }
        // Everyone failed once (a slow link, a bad copy): start over rather than give up.
        self.failed.remove(&chunk).is_some() && self.try_ask(now, chunk)
    }

    fn try_ask(&mut self, now: Instant, chunk: usize) -> bool {
        let tried = self.failed.get(&chunk);
        let askers = self.askers.get(&chunk);
        // May be asked for this chunk at all (it did not fail us, it does not wait on us).
        let eligible = |id: &NodeId| {
            !tried.is_some_and(|t| t.contains(id)) && !askers.is_some_and(|a| a.contains(id))
        };
        let free = |n: &Neighbour| n.asked < PER_NEIGHBOUR;
        let mates_having: Vec<(NodeId, usize)> = self
            .neighbours
            .iter()
            .filter(|(id, n)| n.site_mate && n.has[chunk] && eligible(id))
            .map(|(id, n)| (*id, n.asked))
            .collect();
        // The site's fetcher: the lowest site-mate, when it is below this box.
        let fetcher = self
            .neighbours
            .iter()
            .find(|(id, n)| n.site_mate && **id < self.me)
            .map(|(id, _)| *id)
            .filter(|id| eligible(id));
        let peer = if !mates_having.is_empty() || fetcher.is_some() {
            // Within the site only: a site-mate that has it, else the fetcher. When they
            // are busy this waits; going beyond the site would bring a second copy in.
            mates_having
                .iter()
                .filter(|(_, asked)| *asked < PER_NEIGHBOUR)
                .min_by_key(|(id, asked)| (*asked, *id))
                .map(|(id, _)| *id)
                .or(fetcher.filter(|id| free(&self.neighbours[id])))
        } else {
            let beyond = self
                .neighbours
                .iter()
                .filter(|(id, n)| !n.site_mate && n.has[chunk] && eligible(id) && free(n))
                .min_by_key(|(id, n)| (n.asked, **id))
                .map(|(id, _)| *id);
            beyond.or(self
                .toward_origin
                .filter(|id| eligible(id) && self.neighbours.get(id).is_some_and(free)))
        };
        let Some(peer) = peer else {
            return false;
        };
        if let Some(n) = self.neighbours.get_mut(&peer) {
            n.asked += 1;
        }
        self.pending.insert(chunk, (peer, now));
        self.actions.push(Action::Ask { peer, chunk });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Sites of boxes in a line: box 0 (site 0's gateway) publishes; each site's lowest
    /// id is its gateway and links to the gateways of the sites beside it; boxes of a
    /// site link to each other.
    struct World {
        swarms: Vec<Swarm>,
        site: Vec<usize>,
        links: BTreeSet<(usize, usize)>,
        queue: VecDeque<(usize, Action)>,
        /// Chunks sent into each site from another.
        into_site: BTreeMap<usize, usize>,
        complete: BTreeSet<usize>,
        /// Deliver chunk `.1` from box `.0` damaged, once.
        damage: Option<(usize, usize)>,
        now: Instant,
    }

    fn id(i: usize) -> NodeId {
        NodeId([i as u8 + 1; 32])
    }

    impl World {
        /// `all_across`: every box links to every box of the sites beside its own (as
        /// when each site has as many gateways as boxes), not only the gateways.
        fn new(sites: usize, per_site: usize, chunks: usize, all_across: bool) -> World {
            let n = sites * per_site;
            let site: Vec<usize> = (0..n).map(|i| i / per_site).collect();
            let gateway = |s: usize| s * per_site;
            let mut links = BTreeSet::new();
            for i in 0..n {
                for j in i + 1..n {
                    let gateways = all_across || (i == gateway(site[i]) && j == gateway(site[j]));
                    let beside = site[j] == site[i] + 1 && gateways;
                    if site[i] == site[j] || beside {
                        links.insert((i, j));
                    }
                }
            }
            let now = Instant::now();
            let mut swarms: Vec<Swarm> = (0..n)
                .map(|i| Swarm::new(id(i), chunks, vec![i == 0; chunks]))
                .collect();
            for &(a, b) in &links {
                swarms[a].neighbour_up(now, id(b), site[a] == site[b]);
                swarms[b].neighbour_up(now, id(a), site[a] == site[b]);
            }
            let mut w = World {
                swarms,
                site,
                links,
                queue: VecDeque::new(),
                into_site: BTreeMap::new(),
                complete: BTreeSet::new(),
                damage: None,
                now,
            };
            for i in 0..n {
                let toward = if i == 0 {
                    None
                } else if i == gateway(w.site[i]) {
                    Some(gateway(w.site[i] - 1))
                } else {
                    Some(gateway(w.site[i]))
                };
                w.swarms[i].set_toward_origin(now, toward.map(id));
            }
            // The publisher tells its neighbours it has everything.
            let all: Vec<usize> = (0..chunks).collect();
            for &(a, b) in &w.links.clone() {
                if a == 0 {
                    w.swarms[b].neighbour_has(now, id(0), &all);
                }
            }
            for i in 1..n {
                w.swarms[i].want_all(now);
            }
            w
        }

        fn index(&self, peer: NodeId) -> usize {
            peer.0[0] as usize - 1
        }

        fn linked(&self, a: usize, b: usize) -> bool {
            self.links.contains(&(a.min(b), a.max(b)))
        }

        /// Carries out up to `steps` actions; true when nothing is left to do.
        fn steps(&mut self, steps: usize) -> bool {
            for _ in 0..steps {
                for i in 0..self.swarms.len() {
                    for a in self.swarms[i].poll_actions() {
                        self.queue.push_back((i, a));
                    }
                }
                let Some((from, action)) = self.queue.pop_front() else {
                    return true;
                };
                self.carry_out(from, action);
            }
            false
        }

        fn run(&mut self) {
            assert!(self.steps(1_000_000), "the swarm never settled");
        }

        fn carry_out(&mut self, from: usize, action: Action) {
            let now = self.now;
            match action {
                Action::Ask { peer, chunk } => {
                    let to = self.index(peer);
                    if self.linked(from, to) {
                        self.swarms[to].asked(now, id(from), chunk);
                    }
                }
                Action::Send { peer, chunk } => {
                    let to = self.index(peer);
                    if !self.linked(from, to) {
                        return;
                    }
                    if self.site[from] != self.site[to] {
                        *self.into_site.entry(self.site[to]).or_default() += 1;
                    }
                    let ok = self.damage != Some((from, chunk));
                    if !ok {
                        self.damage = None;
                    }
                    self.swarms[to].received(now, id(from), chunk, ok);
                }
                Action::Have { chunk } => {
                    for j in 0..self.swarms.len() {
                        if j != from && self.linked(from, j) {
                            self.swarms[j].neighbour_has(now, id(from), &[chunk]);
                        }
                    }
                }
                Action::Complete => {
                    self.complete.insert(from);
                }
            }
        }
    }

    #[test]
    fn every_box_gets_every_chunk_and_each_site_takes_one_copy_in() {
        let chunks = 200;
        let mut w = World::new(4, 3, chunks, false);
        w.run();
        assert_eq!(w.complete.len(), 11, "boxes complete: {:?}", w.complete);
        for site in 1..4 {
            assert_eq!(w.into_site[&site], chunks, "chunks into site {site}");
        }
        assert!(!w.into_site.contains_key(&0));
    }

    /// Every box of a site links beyond it, and the publisher's neighbours all have every
    /// chunk: still only the site's lowest box fetches across; the others ask it.
    #[test]
    fn a_site_whose_every_box_links_beyond_still_takes_one_copy_in() {
        let chunks = 100;
        let mut w = World::new(3, 3, chunks, true);
        let all: Vec<usize> = (0..chunks).collect();
        for b in 1..3 {
            for j in 3..6 {
                if w.linked(b, j) {
                    let now = w.now;
                    w.swarms[j].neighbour_has(now, id(0), &all);
                }
            }
        }
        w.run();
        assert_eq!(w.complete.len(), 8, "boxes complete: {:?}", w.complete);
        for site in 1..3 {
            assert_eq!(
                w.into_site[&site], chunks,
                "chunks into site {site}: {:?}",
                w.into_site
            );
        }
        assert!(!w.into_site.contains_key(&0), "{:?}", w.into_site);
    }

    #[test]
    fn a_link_lost_midway_and_a_damaged_chunk_are_fetched_again_elsewhere() {
        let chunks = 120;
        let mut w = World::new(3, 3, chunks, false);
        // Site 1's gateway sends chunk 5 damaged to its site-mates once.
        w.damage = Some((3, 5));
        assert!(!w.steps(600), "the transfer is under way, not done");
        let left = w.swarms[6].missing();
        assert!(
            left > 0 && left < chunks,
            "site 2's gateway is midway: {left} missing"
        );
        // The link between the gateways of sites 1 and 2 goes; site 2's gateway links to
        // site 0's instead, the way the mesh repairs.
        let (g1, g2) = (3, 6);
        w.links.remove(&(g1, g2));
        let now = w.now;
        w.swarms[g1].neighbour_down(now, id(g2));
        w.swarms[g2].neighbour_down(now, id(g1));
        w.links.insert((0, g2));
        w.swarms[0].neighbour_up(now, id(g2), false);
        w.swarms[g2].neighbour_up(now, id(0), false);
        w.swarms[g2].neighbour_has(now, id(0), &(0..chunks).collect::<Vec<_>>());
        w.swarms[g2].set_toward_origin(now, Some(id(0)));
        w.run();
        // Anything still asked of the lost link is asked again once it times out.
        w.now += ASK_TIMEOUT;
        for s in &mut w.swarms {
            s.tick(w.now);
        }
        w.run();
        assert_eq!(w.complete.len(), 8, "boxes complete: {:?}", w.complete);
        assert!(w.damage.is_none(), "the damaged chunk was sent");
        assert!(w.into_site[&2] <= chunks + WINDOW, "{:?}", w.into_site);
        // Site 1 took each chunk once: the damage was within the site.
        assert_eq!(w.into_site[&1], chunks, "{:?}", w.into_site);
    }

    #[test]
    fn an_asker_that_got_the_chunk_elsewhere_no_longer_waits_and_may_be_asked() {
        let (fetcher, mate, origin) = (NodeId([1; 32]), NodeId([2; 32]), NodeId([9; 32]));
        let t0 = Instant::now();
        let mut f = Swarm::new(fetcher, 1, vec![false]);
        f.neighbour_up(t0, mate, true);
        f.neighbour_up(t0, origin, false);
        f.set_toward_origin(t0, Some(origin));
        // The mate asks the fetcher, which asks the origin; that copy never comes.
        f.asked(t0, mate, 0);
        assert_eq!(
            f.poll_actions(),
            vec![Action::Ask {
                peer: origin,
                chunk: 0
            }]
        );
        // The mate got it beyond the site after waiting: the fetcher may ask it now.
        f.neighbour_has(t0, mate, &[0]);
        f.want_all(t0);
        f.tick(t0 + ASK_TIMEOUT);
        assert_eq!(
            f.poll_actions(),
            vec![Action::Ask {
                peer: mate,
                chunk: 0
            }]
        );
    }
}
