//! Reaching a node in another site without any node holding a route to every node.
//!
//! A node's `.node` entry stays inside its site, so beyond the site nobody knows the way
//! to it. A node with a routed message for such a target asks its neighbours (`Find`);
//! each passes the question on once, remembering where it came from, until it reaches a
//! node that reaches the target (the target itself, a neighbour of it, or a site-mate,
//! whose site's catalog has its route). That node answers (`Found`), and the answer
//! travels back the way the question came, leaving at each hop a route to the target.
//! The messages the asker then sends that way leave routes back to it for the replies;
//! the question names no asker, so it costs 47 bytes a link instead of 79, and the boxes
//! it floods keep no route to an asker they will never hear from again. Routes are
//! forgotten after a minute, questions after ten seconds, and both tables are bounded.
//!
//! Inside a site the question goes only to the site-mates that pass it on to other sites
//! (`Node::ask_on`): any box of a full-mesh site answers for all of it, so a lookup costs
//! about one message per WAN link and gateway, not one per box or pair of site-mates.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::Node;
use crate::msg::{Msg, NodeId, Routed};

/// Links a question may cross: more than the diameter of any mesh the tree builds.
const FIND_HOPS: u8 = 32;
/// A routed message waits this long for its lookup's answer, then counts as unroutable.
const LOOKUP_WAIT: Duration = Duration::from_secs(2);
/// How long a question is remembered: long after any copy of it can still arrive.
const QUESTION_FOR: Duration = Duration::from_secs(10);
/// How long a route found (or learned from a message that came along it) is used.
const ROUTE_FOR: Duration = Duration::from_secs(60);
/// Messages waiting for one target, and targets waiting, at most.
const WAITING_PER_TARGET: usize = 16;
const WAITING_TARGETS: usize = 256;

#[derive(Debug)]
struct Question {
    /// The neighbour it came from; `None` for this node's own.
    from: Option<NodeId>,
    target: NodeId,
    until: Instant,
    answered: bool,
}

#[derive(Debug)]
struct Waiting {
    until: Instant,
    messages: Vec<Routed>,
}

/// Counts of this node's lookups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LookupStats {
    /// Lookups this node started.
    pub started: u64,
    /// Of those, answered.
    pub answered: u64,
    /// Questions passed on for other nodes.
    pub passed_on: u64,
    /// Questions dropped: a neighbour passed more than `finds_per_second`.
    pub dropped: u64,
}

#[derive(Debug, Default)]
pub(super) struct Lookups {
    questions: BTreeMap<u64, Question>,
    /// Questions by when they are forgotten, oldest first.
    question_order: VecDeque<(Instant, u64)>,
    /// Routes to nodes beyond this site: target -> (next hop, until).
    routes: BTreeMap<NodeId, (NodeId, Instant)>,
    waiting: BTreeMap<NodeId, Waiting>,
    next_nonce: u64,
    pub(super) stats: LookupStats,
}

impl Lookups {
    /// Entries in its tables, for `Node::state_entries`.
    pub(super) fn len(&self) -> usize {
        self.questions.len()
            + self.routes.len()
            + self
                .waiting
                .values()
                .map(|w| w.messages.len())
                .sum::<usize>()
    }

    pub(super) fn route(&self, target: &NodeId, now: Instant) -> Option<NodeId> {
        self.routes
            .get(target)
            .filter(|(_, until)| *until > now)
            .map(|(hop, _)| *hop)
    }

    /// The next instant something here expires: a wait, or the oldest question.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let question = self.question_order.front().map(|q| q.0);
        self.waiting.values().map(|w| w.until).chain(question).min()
    }

    /// Forgets questions and routes past their time.
    fn forget_old(&mut self, now: Instant) {
        while let Some(&(until, question)) = self.question_order.front() {
            if until > now {
                break;
            }
            self.question_order.pop_front();
            self.questions.remove(&question);
        }
        self.routes.retain(|_, (_, until)| *until > now);
    }

    fn remember_route(&mut self, target: NodeId, hop: NodeId, now: Instant, max: usize) {
        if self.routes.len() >= max && !self.routes.contains_key(&target) {
            self.routes.retain(|_, (_, until)| *until > now);
            if self.routes.len() >= max {
                let oldest = self
                    .routes
                    .iter()
                    .min_by_key(|(_, (_, until))| *until)
                    .map(|(id, _)| *id);
                if let Some(id) = oldest {
                    self.routes.remove(&id);
                }
            }
        }
        self.routes.insert(target, (hop, now + ROUTE_FOR));
    }

    /// Records a question; false if it was seen before (a copy from another way).
    fn remember_question(&mut self, key: u64, q: Question, now: Instant, max: usize) -> bool {
        while let Some(&(until, question)) = self.question_order.front() {
            if until > now && self.questions.len() < max {
                break;
            }
            self.question_order.pop_front();
            self.questions.remove(&question);
        }
        if self.questions.contains_key(&key) {
            return false;
        }
        self.question_order.push_back((q.until, key));
        self.questions.insert(key, q);
        true
    }
}

/// A question's id from its asker and the asker's count of questions: the asker's id
/// (a public key) mixed in keeps two askers' ids apart, and the mixing (SplitMix64's
/// finaliser) spreads consecutive counts over all 64 bits. Two questions alive at once
/// share an id by a 2^-64 chance per pair; a node that reuses one on purpose only hides
/// its own questions or another's for 10 s, as one that drops questions can.
fn question_id(asker: &NodeId, count: u64) -> u64 {
    let mut z = asker.prefix() ^ count.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Node {
    /// A routed message for a node beyond this site with no route yet: it waits while
    /// this node asks its neighbours. False if too many already wait.
    pub(super) fn look_up(&mut self, now: Instant, r: Routed) -> bool {
        let target = r.to;
        if !self.find(now, target) {
            return false;
        }
        let Some(w) = self.lookups.waiting.get_mut(&target) else {
            return false;
        };
        if w.messages.len() >= WAITING_PER_TARGET {
            return false;
        }
        w.messages.push(r);
        true
    }

    /// Asks the neighbours for a way to `target`, unless a question is out already.
    /// False if too many lookups are out.
    pub(super) fn find(&mut self, now: Instant, target: NodeId) -> bool {
        let l = &mut self.lookups;
        if l.waiting.contains_key(&target) {
            return true;
        }
        if l.waiting.len() >= WAITING_TARGETS {
            return false;
        }
        l.waiting.insert(
            target,
            Waiting {
                until: now + LOOKUP_WAIT,
                messages: Vec::new(),
            },
        );
        if l.next_nonce == 0 {
            // From the wall clock, so a restarted node does not repeat its questions.
            l.next_nonce = self.cfg.first_version << 16;
        }
        l.next_nonce += 1;
        let id = question_id(&self.id, l.next_nonce);
        l.stats.started += 1;
        let question = Question {
            from: None,
            target,
            until: now + QUESTION_FOR,
            answered: false,
        };
        let max = self.cfg.limits.lookups_total;
        l.remember_question(id, question, now, max);
        let ask = Msg::Find {
            question: id,
            target,
            hops: FIND_HOPS,
        };
        for p in self.ask_on(None) {
            self.send(p, ask.clone());
        }
        true
    }

    /// The neighbours a question heard from `from` (`None`: this node's own) goes on to.
    /// Every box of a full-mesh site reaches every site-mate, so any one of them answers
    /// for the site: a site-mate hears it only to pass it to other sites (it has links
    /// there) or when it reaches other boxes than this node. A question heard from a
    /// site-mate goes to other sites only: its site-mates hear it from it. Each site then
    /// carries a question over its gateways alone, about a message per WAN link, instead
    /// of a copy to every box from each gateway that heard it (4.5 messages per box at
    /// 1 000 boxes). Links that trees dialed carry no questions: the links the registry,
    /// static peers and mDNS made join the mesh without them, and at 1 000 boxes they
    /// were four in ten of the WAN links questions crossed.
    fn ask_on(&mut self, from: Option<NodeId>) -> Vec<NodeId> {
        let (count, digest) = self.site_reach();
        let from_site_mate = from.is_some_and(|f| self.is_site_mate(&f));
        self.peers
            .iter()
            .filter(|(id, _)| Some(**id) != from)
            .filter(|(_, p)| {
                if p.site_mate {
                    !from_site_mate && (p.beyond || p.reaches != Some((count, digest)))
                } else {
                    !p.tree
                }
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// The neighbour a lookup found towards `target`, if it is still a neighbour.
    pub(super) fn found_hop(&self, now: Instant, target: &NodeId) -> Option<NodeId> {
        self.lookups
            .route(target, now)
            .filter(|hop| self.peers.contains_key(hop))
    }

    pub(super) fn on_find(
        &mut self,
        now: Instant,
        from: NodeId,
        (id, target, hops): (u64, NodeId, u8),
    ) {
        let rate = self.cfg.limits.finds_per_second;
        let within = self
            .peers
            .get_mut(&from)
            .is_some_and(|p| p.find_bucket.take(now, rate));
        if !within {
            self.lookups.stats.dropped += 1;
            return;
        }
        let question = Question {
            from: Some(from),
            target,
            until: now + QUESTION_FOR,
            answered: false,
        };
        let max = self.cfg.limits.lookups_total;
        // This node's own questions are remembered too, so a copy coming back ends here.
        if !self.lookups.remember_question(id, question, now, max) {
            return;
        }
        if target == self.id || self.next_hop_within_site(&target, None).is_some() {
            if let Some(q) = self.lookups.questions.get_mut(&id) {
                q.answered = true;
            }
            self.send(
                from,
                Msg::Found {
                    question: id,
                    target,
                },
            );
            return;
        }
        if hops == 0 {
            return;
        }
        let on = self.ask_on(Some(from));
        self.lookups.stats.passed_on += 1;
        let ask = Msg::Find {
            question: id,
            target,
            hops: hops - 1,
        };
        for p in on {
            self.send(p, ask.clone());
        }
    }

    pub(super) fn on_found(&mut self, now: Instant, from: NodeId, (id, target): (u64, NodeId)) {
        // Only an answer to a question that passed here, about its own target, once.
        let Some(q) = self.lookups.questions.get_mut(&id) else {
            return;
        };
        if q.target != target || q.answered {
            return;
        }
        q.answered = true;
        let back = q.from;
        let max = self.cfg.limits.lookups_total;
        self.lookups.remember_route(target, from, now, max);
        match back {
            Some(back) => self.send(
                back,
                Msg::Found {
                    question: id,
                    target,
                },
            ),
            None => {
                self.lookups.stats.answered += 1;
                let waiting = self.lookups.waiting.remove(&target);
                for r in waiting.map(|w| w.messages).unwrap_or_default() {
                    self.send(from, Msg::Routed(Box::new(r)));
                }
                // A node broadcast followed from beyond its site can now find a parent.
                self.dirty = true;
            }
        }
    }

    /// A routed message from `r_from` arrived through `via`: the way back to its sender,
    /// kept for the reply when no better route is known.
    pub(super) fn learn_route_back(&mut self, now: Instant, r_from: NodeId, via: NodeId) {
        if r_from != self.id
            && self.next_hop_within_site(&r_from, None).is_none()
            && self.lookups.route(&r_from, now).is_none()
        {
            let max = self.cfg.limits.lookups_total;
            self.lookups.remember_route(r_from, via, now, max);
        }
    }

    /// Messages whose lookup went unanswered are given up (counted as unroutable), and
    /// old questions and routes forgotten.
    pub(super) fn expire_lookups(&mut self, now: Instant) {
        self.lookups.forget_old(now);
        let before = self.lookups.waiting.len();
        let mut lost = 0;
        self.lookups.waiting.retain(|_, w| {
            let keep = w.until > now;
            if !keep {
                lost += w.messages.len() as u64;
            }
            keep
        });
        if self.lookups.waiting.len() != before {
            tracing::debug!(node = %self.id, lost, "lookups unanswered");
        }
        self.gate.stats.unroutable += lost;
    }

    pub fn lookup_stats(&self) -> LookupStats {
        self.lookups.stats
    }
}
