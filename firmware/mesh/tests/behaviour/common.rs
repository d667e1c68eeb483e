//! What the simulation tests check of deliveries, shared by their files.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cambox_mesh::sim::{LinkSpec, Net};

/// (group, index) pairs a node delivered for a broadcast, in order, with times.
pub fn deliveries(net: &Net, n: usize, b: usize) -> Vec<(u64, u32, Instant)> {
    let id = &net.broadcasts[b].id;
    net.delivered(n)
        .iter()
        .filter(|d| &d.broadcast == id)
        .map(|d| (d.group, d.index, d.at))
        .collect()
}

/// Every delivered group starts at its first object and has no holes.
pub fn assert_whole_prefixes(d: &[(u64, u32, Instant)], what: &str) {
    let mut cur: Option<(u64, u32)> = None;
    for &(g, i, _) in d {
        match cur {
            Some((cg, ci)) if g == cg => assert_eq!(i, ci + 1, "{what}: hole in group {g}"),
            _ => assert_eq!(i, 0, "{what}: group {g} delivered without its start"),
        }
        cur = Some((g, i));
    }
}

/// Objects (numbered group * fps + index) produced between `start` and `end` but the
/// last half second, still in flight, that are not among the deliveries `d`.
pub fn missing_objects(
    d: &[(u64, u32, Instant)],
    fps: u64,
    start: Duration,
    end: Duration,
) -> Vec<u64> {
    let first = start.as_micros() as u64 * fps / 1_000_000 + 1;
    let last = (end - Duration::from_millis(500)).as_micros() as u64 * fps / 1_000_000;
    let got: BTreeSet<u64> = d.iter().map(|(g, i, _)| g * fps + u64::from(*i)).collect();
    (first..=last).filter(|k| !got.contains(k)).collect()
}

/// Sites of the first simulation world.
pub const SITES: usize = 10;
pub const PER_SITE: usize = 20;

/// 10 sites of 20 boxes: a full LAN mesh inside each site (mDNS finds everyone), two
/// connections from each box to boxes elsewhere (static peers or the registry).
pub fn world(seed: u64) -> Net {
    let mut net = Net::sites(seed, SITES, PER_SITE, 2, |_| LinkSpec::WAN);
    net.run_for(Duration::from_millis(200));
    net
}

/// Five broadcasts from five sites, everyone subscribed to all of them.
pub fn five_broadcasts(net: &mut Net) -> Vec<usize> {
    let mut bs = Vec::new();
    for (k, site) in [0usize, 2, 4, 6, 8].into_iter().enumerate() {
        let origin = site * PER_SITE + (net.random() % PER_SITE as u64) as usize;
        bs.push(net.publish(origin, &format!("cam{k}")));
    }
    for n in 0..net.len() {
        for &b in &bs {
            if net.broadcasts[b].origin != n {
                net.subscribe(n, b);
            }
        }
    }
    bs
}

/// `origin` goes live with broadcast "a"; a second later `viewer` subscribes, and the
/// world runs for `watch`. The broadcast's index.
pub fn publish_and_watch(net: &mut Net, origin: usize, viewer: usize, watch: Duration) -> usize {
    let b = net.publish(origin, "a");
    net.run_for(Duration::from_secs(1));
    net.subscribe(viewer, b);
    net.run_for(watch);
    b
}

/// Broadcasts named `name` from `origins` (boxes of different sites of `SITES` sites of
/// `PER_SITE`), each watched by one box of every other site, so that their trees dial
/// links of their own across sites (redirects below other sites). Returns the
/// (viewer, broadcast) pairs.
pub fn watched_in_every_site(net: &mut Net, origins: &[usize], name: &str) -> Vec<(usize, usize)> {
    let mut watched = Vec::new();
    for &origin in origins {
        let b = net.publish(origin, name);
        net.run_for(Duration::from_millis(300));
        for site in 0..SITES {
            let viewer = site * PER_SITE + PER_SITE - 1 - origin / PER_SITE;
            if net.site_of(viewer) != net.site_of(origin) {
                net.subscribe(viewer, b);
                watched.push((viewer, b));
            }
        }
    }
    watched
}
