//! What a neighbour may make this node hold or do. Any machine that speaks the protocol can
//! be a neighbour, so every table that neighbours feed has a limit per neighbour and in
//! total; a neighbour past one is disconnected (with the limit as the reason), and what it
//! sent goes no further: its catalog leaves with it, so its entries are never gossiped on.

use std::time::{Duration, Instant};

/// The limits; defaults leave room for a few hundred broadcasts and nodes in view.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Catalog entries one neighbour may offer at once.
    pub entries_per_peer: usize,
    /// Encoded bytes of those entries (names and paths make entries vary in size).
    pub catalog_bytes_per_peer: usize,
    /// Broadcasts this node keeps track of, from all neighbours together.
    pub entries_total: usize,
    /// Relays on a catalog entry's path: deeper than any tree the overlay builds.
    pub path_len: usize,
    /// Broadcasts one neighbour may say it is interested in.
    pub interest_per_peer: usize,
    /// Broadcasts one neighbour may receive from this node at once.
    pub subscriptions_per_peer: usize,
    /// Routed messages (commands, replies) one neighbour may hand this node per second,
    /// with bursts of twice as many.
    pub routed_per_second: u32,
    /// Lookups (`Find`) one neighbour may pass this node per second, bursts twice as
    /// many. A lookup floods, so one neighbour passes on every node's questions: those
    /// over the rate are dropped (and counted), not held against the neighbour.
    pub finds_per_second: u32,
    /// Lookups remembered (to drop repeats and to send answers back) and routes found,
    /// each; the oldest go first.
    pub lookups_total: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            entries_per_peer: 2048,
            catalog_bytes_per_peer: 1 << 20,
            entries_total: 4096,
            path_len: 64,
            interest_per_peer: 1024,
            subscriptions_per_peer: 256,
            routed_per_second: 100,
            finds_per_second: 200,
            lookups_total: 4096,
        }
    }
}

/// Which limit a neighbour went past: the reason it was disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Limit {
    EntriesPerPeer,
    CatalogBytesPerPeer,
    EntriesTotal,
    PathLen,
    InterestPerPeer,
    SubscriptionsPerPeer,
    RoutedRate,
}

impl Limit {
    pub const ALL: [Limit; 7] = [
        Limit::EntriesPerPeer,
        Limit::CatalogBytesPerPeer,
        Limit::EntriesTotal,
        Limit::PathLen,
        Limit::InterestPerPeer,
        Limit::SubscriptionsPerPeer,
        Limit::RoutedRate,
    ];

    /// A short name for metrics labels and logs.
    pub fn label(self) -> &'static str {
        match self {
            Limit::EntriesPerPeer => "catalog_entries",
            Limit::CatalogBytesPerPeer => "catalog_bytes",
            Limit::EntriesTotal => "catalog_total",
            Limit::PathLen => "path_length",
            Limit::InterestPerPeer => "interest",
            Limit::SubscriptionsPerPeer => "subscriptions",
            Limit::RoutedRate => "routed_rate",
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limit::EntriesPerPeer => "offered more catalog entries than a neighbour may",
            Limit::CatalogBytesPerPeer => "offered more catalog bytes than a neighbour may",
            Limit::EntriesTotal => "would take this node past the broadcasts it keeps in all",
            Limit::PathLen => "sent a catalog entry with a path longer than any tree",
            Limit::InterestPerPeer => "said it wants more broadcasts than a neighbour may",
            Limit::SubscriptionsPerPeer => "subscribed to more broadcasts than a neighbour may",
            Limit::RoutedRate => "sent routed messages faster than a neighbour may",
        })
    }
}

/// A token bucket: `rate` a second, up to `2 * rate` saved up.
#[derive(Debug, Clone, Copy)]
pub struct RateBucket {
    tokens: f64,
    at: Option<Instant>,
}

impl RateBucket {
    pub fn new() -> Self {
        Self {
            tokens: f64::INFINITY,
            at: None,
        }
    }

    /// Takes one token; false when the bucket is empty.
    pub fn take(&mut self, now: Instant, rate: u32) -> bool {
        let burst = 2.0 * f64::from(rate.max(1));
        let since = self
            .at
            .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        self.tokens = (self.tokens + since.as_secs_f64() * f64::from(rate)).min(burst);
        self.at = Some(now);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

impl Default for RateBucket {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = RateBucket::new();
        let burst = (0..100).take_while(|_| b.take(t0, 10)).count();
        assert_eq!(burst, 20);
        assert!(!b.take(t0, 10));
        // Half a second later, five more.
        let t1 = t0 + Duration::from_millis(500);
        let more = (0..100).take_while(|_| b.take(t1, 10)).count();
        assert_eq!(more, 5);
    }

    #[test]
    fn every_limit_has_a_label_of_its_own() {
        let labels: std::collections::BTreeSet<&str> =
            Limit::ALL.iter().map(|l| l.label()).collect();
        assert_eq!(labels.len(), Limit::ALL.len());
    }
}
