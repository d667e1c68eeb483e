//! Routed messages (commands and replies) addressed to one node, hop by hop.

use std::time::Instant;

use super::{Event, Node, RouteError};
use crate::msg::{BroadcastId, Msg, NodeId, Routed, NODE_BROADCAST, ROUTED_COMMAND};
use crate::routed::{CommandAllow, RoutedStats};

impl Node {
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

    /// Sends a routed message (signed by the caller) towards its target: along a route
    /// this node knows, or, for a node beyond its site, after a lookup (which may go
    /// unanswered; the message is then counted unroutable). A command's reply is let in
    /// when it comes back.
    pub fn send_routed(&mut self, now: Instant, r: Routed) -> Result<(), RouteError> {
        let to = r.to;
        let command = r.kind == ROUTED_COMMAND;
        let id = r.id;
        match self.next_hop(now, &to, None) {
            Some(next) => {
                self.send(next, Msg::Routed(Box::new(r)));
                self.flush_peer(next);
            }
            None => {
                if !self.look_up(now, r) {
                    self.gate.stats.unroutable += 1;
                    return Err(RouteError::NoRoute(to));
                }
                self.flush();
            }
        }
        if command {
            self.gate.expect_reply(to, id, self.wall_ms(now));
        }
        Ok(())
    }

    /// Changes who may command this node.
    pub fn set_command_allow(&mut self, allow: CommandAllow) {
        self.gate.allow = allow;
    }

    pub fn routed_stats(&self) -> RoutedStats {
        self.gate.stats
    }

    /// Whether this node knows a way to `node` now (within its site, or found by a
    /// lookup).
    pub fn reaches(&self, now: Instant, node: &NodeId) -> bool {
        self.next_hop(now, node, None).is_some()
    }

    /// The neighbour to hand a message for `target` to: the target itself when it is a
    /// neighbour, else the one with the shortest route to the target's node broadcast
    /// (in this site), else the way a lookup found; never back where it came from.
    pub(super) fn next_hop(
        &self,
        now: Instant,
        target: &NodeId,
        came_from: Option<NodeId>,
    ) -> Option<NodeId> {
        self.next_hop_within_site(target, came_from).or_else(|| {
            self.found_hop(now, target)
                .filter(|hop| Some(*hop) != came_from)
        })
    }

    /// The target itself when it is a neighbour, else the neighbour with the shortest
    /// route to its node broadcast, which only its own site's nodes hold.
    pub(super) fn next_hop_within_site(
        &self,
        target: &NodeId,
        came_from: Option<NodeId>,
    ) -> Option<NodeId> {
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

    pub(super) fn on_routed(&mut self, now: Instant, from: NodeId, mut r: Routed) {
        self.learn_route_back(now, r.from, from);
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
            self.next_hop(now, &r.to, Some(from))
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
}
