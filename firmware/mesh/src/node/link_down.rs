//! Root cause notification. A node that loses a link says which link it lost, and every
//! node holding routes over that link drops them at once. Without it, when a watched
//! origin died, each node that lost its route took the next one its neighbours offered,
//! which was just as dead and withdrawn a moment later, and told every neighbour each
//! time (BGP's path hunting): one origin watched in 60 sites of a 600-box world cost
//! 144 MB of catalog in 3 s. The notification goes only to neighbours that were told, or
//! told, a route over the link, so it costs about what the withdrawals do.

use std::time::{Duration, Instant};

use super::Node;
use crate::msg::{CatalogEntry, Hop, Msg, NodeId};

/// How long a lost link's routes are refused: a neighbour that has not heard yet may
/// still tell one. A link that comes back is used again after this.
pub(super) const DEAD_LINK_HOLD: Duration = Duration::from_secs(2);

/// Whether `path` runs over the link between `a` and `b`, either way.
pub(super) fn crosses(path: &[Hop], (a, b): (Hop, Hop)) -> bool {
    path.windows(2)
        .any(|w| (w[0] == a && w[1] == b) || (w[0] == b && w[1] == a))
}

fn key(a: Hop, b: Hop) -> (Hop, Hop) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

impl Node {
    /// This node lost its link to `peer` (called once the peer's routes are gone).
    pub(super) fn link_lost(&mut self, now: Instant, peer: NodeId) {
        self.link_down(now, None, self.id.hop(), peer.hop());
    }

    /// A neighbour says the link between `a` and `b` is gone.
    pub(super) fn on_link_down(&mut self, now: Instant, from: NodeId, a: Hop, b: Hop) {
        self.link_down(now, Some(from), a, b);
    }

    /// Whether a route over a link that was lost moments ago (a stale one, from a
    /// neighbour that has not heard yet).
    pub(super) fn over_dead_link(&self, now: Instant, e: &CatalogEntry) -> bool {
        self.dead_links
            .iter()
            .any(|(link, until)| now < *until && crosses(&e.path, *link))
    }

    fn link_down(&mut self, now: Instant, from: Option<NodeId>, a: Hop, b: Hop) {
        let link = key(a, b);
        self.dead_links.retain(|_, until| now < *until);
        if self.dead_links.contains_key(&link) {
            return;
        }
        let over = |e: &CatalogEntry| crosses(&e.path, link);
        let mut affected = false;
        let mut withdrawn: Vec<(NodeId, Vec<CatalogEntry>)> = Vec::new();
        for (id, p) in self.peers.iter_mut() {
            if Some(*id) != from
                && (p.told_catalog.values().any(|e| over(e)) || p.catalog.values().any(over))
            {
                p.control.push_back(Msg::LinkDown { a, b });
                self.ready_all = true;
                affected = true;
            }
            let gone: Vec<CatalogEntry> = p
                .catalog
                .values()
                .filter(|e| over(e))
                .map(|e| CatalogEntry {
                    path: Vec::new(),
                    ..e.clone()
                })
                .collect();
            if !gone.is_empty() {
                withdrawn.push((*id, gone));
            }
        }
        if !affected && withdrawn.is_empty() {
            // Nothing here ran over it: nothing to remember (a neighbour cannot make
            // this node hold links it never routed over).
            return;
        }
        self.dead_links.insert(link, now + DEAD_LINK_HOLD);
        // Each route over it goes as if its neighbour had withdrawn it.
        for (id, gone) in withdrawn {
            self.on_catalog(now, id, gone);
        }
    }
}
