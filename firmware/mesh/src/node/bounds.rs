//! What neighbours may make this node hold: the checks against `Limits`, and what
//! happens to a neighbour past one.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{Event, Node};
use crate::limits::Limit;
use crate::msg::{BroadcastId, CatalogEntry, NodeId};

impl Node {
    /// Whether taking `entries` from `from` keeps within the limits. Checked before any
    /// of them is taken, so a message past a limit changes nothing.
    pub(super) fn check_catalog(
        &self,
        from: NodeId,
        entries: &[CatalogEntry],
    ) -> Result<(), Limit> {
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
    pub(super) fn subscriptions_of(&self, peer: NodeId) -> usize {
        self.subs
            .values()
            .filter(|s| s.children.contains(&peer))
            .count()
    }

    /// Drops a neighbour that went past a limit: everything it told this node goes (so
    /// none of it is gossiped on), and the driver is asked to close the connection.
    pub(super) fn disconnect(&mut self, now: Instant, peer: NodeId, limit: Limit) {
        tracing::warn!(node = %self.id, %peer, %limit, "neighbour disconnected");
        *self.disconnected.entry(limit).or_default() += 1;
        self.handle_peer_down(now, peer);
        // Broadcasts that only this neighbour offered are forgotten now, not at expiry.
        let offers = &self.offers;
        self.learned.retain(|b, _| offers.contains_key(b));
        let learned = &self.learned;
        self.expiring.retain(|b| learned.contains_key(b));
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
            .map(|s| 1 + s.children.len() + s.tracks.iter().map(|t| t.groups.len()).sum::<usize>())
            .sum();
        peers
            + subs
            + self.learned.len()
            + self.origins.len()
            + self.retired.len()
            + self.wants.len()
            + self.lookups.len()
    }
}
