//! What a node checks before it acts on a routed message addressed to it: the signature,
//! the age and uniqueness of the message, and whether the sender may command it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::msg::{NodeId, Routed, ROUTED_COMMAND, ROUTED_REPLY, ROUTED_WATCHING};

/// A message sent longer ago than this, or this far in the future, is refused: the two
/// clocks are NTP-synchronised on a box, so a minute is generous.
pub const MAX_AGE_MS: u64 = 60_000;
/// How long a message's id is remembered: anything older is refused by its age anyway.
const REMEMBER_MS: u64 = 2 * MAX_AGE_MS;
/// A reply is accepted this long after its command went out.
pub const REPLY_WINDOW_MS: u64 = 30_000;

/// Who may command this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CommandAllow {
    /// Only the node itself (through its own API, which does not use the overlay).
    #[default]
    Nobody,
    /// Any node of the overlay: for labs and demos.
    Anyone,
    Only(BTreeSet<NodeId>),
}

impl CommandAllow {
    fn permits(&self, node: &NodeId) -> bool {
        match self {
            CommandAllow::Nobody => false,
            CommandAllow::Anyone => true,
            CommandAllow::Only(ids) => ids.contains(node),
        }
    }
}

/// Why a routed message addressed here was not acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The signature is not the sender's.
    Forged,
    /// Seen before, or too old or too far in the future to tell.
    Replayed,
    /// A command from a node not on the allow-list, or a reply nobody asked for.
    Unauthorized,
}

/// Counts of what happened to routed messages at this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoutedStats {
    /// Commands and replies addressed here that passed every check.
    pub delivered: u64,
    /// Passed on towards their target.
    pub forwarded: u64,
    pub forged: u64,
    pub replayed: u64,
    pub unauthorized: u64,
    /// No neighbour knew a way to the target (or the hop count ran out).
    pub unroutable: u64,
}

#[derive(Debug, Default)]
pub struct Gate {
    pub allow: CommandAllow,
    /// Ids seen per sender, with when to forget them, oldest first.
    seen: BTreeSet<(NodeId, u8, u64)>,
    seen_order: VecDeque<(u64, NodeId, u8, u64)>,
    /// Commands sent from here and awaiting their reply: (target, id) -> deadline.
    outstanding: BTreeMap<(NodeId, u64), u64>,
    pub stats: RoutedStats,
}

impl Gate {
    pub fn new(allow: CommandAllow) -> Self {
        Self {
            allow,
            ..Self::default()
        }
    }

    /// A command this node sent: its reply will be let in.
    pub fn expect_reply(&mut self, to: NodeId, id: u64, wall_ms: u64) {
        self.outstanding.insert((to, id), wall_ms + REPLY_WINDOW_MS);
    }

    /// Checks a message addressed to this node, counting the outcome.
    pub fn admit(&mut self, r: &Routed, wall_ms: u64) -> Result<(), Refusal> {
        let verdict = self.check(r, wall_ms);
        match verdict {
            Ok(()) => self.stats.delivered += 1,
            Err(Refusal::Forged) => self.stats.forged += 1,
            Err(Refusal::Replayed) => self.stats.replayed += 1,
            Err(Refusal::Unauthorized) => self.stats.unauthorized += 1,
        }
        verdict
    }

    fn check(&mut self, r: &Routed, wall_ms: u64) -> Result<(), Refusal> {
        // The signature first: an unsigned message must not fill the memory of ids.
        if !r.verify() {
            return Err(Refusal::Forged);
        }
        self.forget(wall_ms);
        if r.sent_ms + MAX_AGE_MS < wall_ms || r.sent_ms > wall_ms + MAX_AGE_MS {
            return Err(Refusal::Replayed);
        }
        let allowed = match r.kind {
            ROUTED_COMMAND => self.allow.permits(&r.from),
            ROUTED_REPLY => self.outstanding.remove(&(r.from, r.id)).is_some(),
            // News, not an order: any node that signed it may tell it.
            ROUTED_WATCHING => true,
            _ => false,
        };
        if !allowed {
            return Err(Refusal::Unauthorized);
        }
        if !self.seen.insert((r.from, r.kind, r.id)) {
            return Err(Refusal::Replayed);
        }
        self.seen_order
            .push_back((wall_ms + REMEMBER_MS, r.from, r.kind, r.id));
        Ok(())
    }

    fn forget(&mut self, wall_ms: u64) {
        while let Some(&(until, from, kind, id)) = self.seen_order.front() {
            if until > wall_ms {
                break;
            }
            self.seen.remove(&(from, kind, id));
            self.seen_order.pop_front();
        }
        self.outstanding.retain(|_, deadline| *deadline > wall_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use bytes::Bytes;

    fn ids() -> (Identity, Identity, Identity) {
        (
            Identity::from_seed([1; 32]),
            Identity::from_seed([2; 32]),
            Identity::from_seed([3; 32]),
        )
    }

    fn cmd(from: &Identity, to: &Identity, id: u64, at: u64) -> Routed {
        Routed::signed(
            from,
            to.node_id(),
            ROUTED_COMMAND,
            id,
            at,
            Bytes::from_static(b"{}"),
        )
    }

    #[test]
    fn commands_pass_once_from_allowed_senders_only() {
        let (a, b, target) = ids();
        let mut g = Gate::new(CommandAllow::Only([a.node_id()].into()));
        let t = 1_000_000;
        assert_eq!(g.admit(&cmd(&a, &target, 1, t), t), Ok(()));
        assert_eq!(
            g.admit(&cmd(&a, &target, 1, t), t + 5),
            Err(Refusal::Replayed)
        );
        assert_eq!(g.admit(&cmd(&a, &target, 2, t), t + 5), Ok(()));
        assert_eq!(
            g.admit(&cmd(&b, &target, 3, t), t),
            Err(Refusal::Unauthorized)
        );
        let mut forged = cmd(&b, &target, 4, t);
        forged.from = a.node_id();
        assert_eq!(g.admit(&forged, t), Err(Refusal::Forged));
        let mut changed = cmd(&a, &target, 5, t);
        changed.body = Bytes::from_static(b"{\"x\":1}");
        assert_eq!(g.admit(&changed, t), Err(Refusal::Forged));
        // Old, and from the future.
        assert_eq!(
            g.admit(&cmd(&a, &target, 6, t - MAX_AGE_MS - 1), t),
            Err(Refusal::Replayed)
        );
        assert_eq!(
            g.admit(&cmd(&a, &target, 7, t + MAX_AGE_MS + 1), t),
            Err(Refusal::Replayed)
        );
        assert_eq!(
            g.stats,
            RoutedStats {
                delivered: 2,
                forged: 2,
                replayed: 3,
                unauthorized: 1,
                ..RoutedStats::default()
            }
        );
        // The hop count is not signed: relays lower it.
        let mut relayed = cmd(&a, &target, 8, t);
        relayed.hops = 3;
        assert_eq!(g.admit(&relayed, t), Ok(()));
    }

    #[test]
    fn a_reply_is_taken_only_for_a_command_sent_and_only_once() {
        let (me, other, target) = ids();
        let mut g = Gate::new(CommandAllow::Nobody);
        let t = 5_000_000;
        let reply = |from: &Identity, id| {
            Routed::signed(from, me.node_id(), ROUTED_REPLY, id, t, Bytes::new())
        };
        assert_eq!(g.admit(&reply(&target, 9), t), Err(Refusal::Unauthorized));
        g.expect_reply(target.node_id(), 9, t);
        assert_eq!(g.admit(&reply(&other, 9), t), Err(Refusal::Unauthorized));
        assert_eq!(g.admit(&reply(&target, 9), t), Ok(()));
        assert_eq!(g.admit(&reply(&target, 9), t), Err(Refusal::Unauthorized));
        g.expect_reply(target.node_id(), 10, t);
        assert_eq!(
            g.admit(&reply(&target, 10), t + REPLY_WINDOW_MS + 1),
            Err(Refusal::Unauthorized),
            "too late"
        );
    }

    #[test]
    fn ids_are_forgotten_only_once_their_messages_are_too_old_anyway() {
        let (a, _, target) = ids();
        let mut g = Gate::new(CommandAllow::Anyone);
        let t = 10_000_000;
        for id in 0..1000 {
            assert_eq!(g.admit(&cmd(&a, &target, id, t), t), Ok(()));
        }
        assert_eq!(g.seen.len(), 1000);
        let later = t + REMEMBER_MS;
        assert_eq!(
            g.admit(&cmd(&a, &target, 5, t), later),
            Err(Refusal::Replayed),
            "refused by age"
        );
        assert_eq!(g.admit(&cmd(&a, &target, 5000, later), later), Ok(()));
        assert_eq!(g.seen.len(), 1, "old ids forgotten");
    }
}
