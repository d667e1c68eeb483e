//! The tree of sites: a site sends a broadcast to as many other sites as its uplink budget
//! allows, and a full site sends newcomers one level down, so the tree's depth grows as
//! log(sites). With a fan-out of one the same world builds a chain, which is what the
//! depth bound is checked against.
//!
//! `cargo test -p cambox-mesh --test behaviour site_tree -- --nocapture` prints depths and delays.

use std::time::Duration;

use cambox_mesh::node::Config;
use cambox_mesh::sim::{LinkSpec, Net};

const SITES: usize = 100;
const PER_SITE: usize = 2;

/// Sites of two boxes, two WAN links from each box to random other sites (5-40 ms one
/// way, 1 % loss), one broadcast from site 0 that every box subscribes to, in a random
/// order over the first two seconds.
fn world(wan_children: usize) -> (Net, usize) {
    let mut net = Net::sites(3, SITES, PER_SITE, 2, |net| {
        let delay = Duration::from_millis(5 + (net.random() % 36));
        LinkSpec::wan(delay, Duration::from_millis(2), 0.01)
    });
    for n in 0..net.len() {
        net.node_mut(n).config_mut().wan_children = wan_children;
    }
    net.run_for(Duration::from_millis(300));
    let b = net.publish(0, "cam");
    net.run_for(Duration::from_millis(300));
    let mut order: Vec<usize> = (1..net.len()).collect();
    for i in (1..order.len()).rev() {
        let j = (net.random() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let step = Duration::from_millis(2000 / order.len() as u64);
    for n in order {
        net.subscribe(n, b);
        net.run_for(step);
    }
    net.run_for(Duration::from_secs(2));
    net.measuring = true;
    net.run_for(Duration::from_secs(2));
    (net, b)
}

/// The deepest site, the share of nodes caught between two parents at the end, and the
/// 99th percentile of origin-to-viewer delay over the last 2 s.
fn measure(net: &Net, b: usize) -> (usize, f64, Duration) {
    let depths: Vec<Option<usize>> = (1..net.len()).map(|n| net.site_depth(n, b)).collect();
    let depth = depths.iter().flatten().copied().max().unwrap_or(0);
    let mut hist = vec![0; depth + 1];
    for d in depths.iter().flatten() {
        hist[*d] += 1;
    }
    println!("nodes by sites crossed: {hist:?}");
    let switching = depths.iter().filter(|d| d.is_none()).count() as f64 / depths.len() as f64;
    let epoch = net.now() - net.elapsed();
    let since = net.elapsed() - Duration::from_secs(2);
    let mut delays: Vec<Duration> = (1..net.len())
        .flat_map(|n| net.delivered(n))
        .filter(|d| d.at - epoch >= since)
        .map(|d| d.at - epoch - Duration::from_micros(d.capture_us))
        .collect();
    delays.sort();
    (depth, switching, delays[delays.len() * 99 / 100])
}

#[test]
fn the_tree_of_sites_is_log_deep_where_a_fan_out_of_one_is_a_chain() {
    let fan_out = Config::default().wan_children;
    let (tree, b) = world(fan_out);
    let (depth, switching, p99) = measure(&tree, b);
    let (chain, cb) = world(1);
    let (chain_depth, _, chain_p99) = measure(&chain, cb);
    let bound = (SITES as f64).log(fan_out as f64).ceil() as usize;
    println!(
        "{SITES} sites: fan-out {fan_out}: depth {depth} (log bound {bound}), p99 delay {p99:?}, \
         {:.1} % of nodes between parents; \
         fan-out 1: depth {chain_depth}, p99 delay {chain_p99:?}",
        switching * 100.0
    );
    assert!(
        switching < 0.05,
        "{:.1} % of nodes had no parent chain",
        switching * 100.0
    );
    // Sites join below their nearest carrier, not at the root, so the tree is not a
    // perfect one: its depth stays within a small multiple of the logarithm.
    assert!(
        depth <= 3 * bound,
        "the tree of {SITES} sites is {depth} deep with fan-out {fan_out}"
    );
    assert!(
        p99 <= Duration::from_millis(400),
        "p99 delay {p99:?} over a tree {depth} deep"
    );
    assert!(
        chain_depth >= 2 * depth,
        "with fan-out 1 the tree should be much deeper, but it is {chain_depth} deep"
    );
    // One copy into each site, and out no more than the fan-out, in the tree's world.
    // Wire bytes against media bytes: per-object framing (about 4 %) and the 1 % of
    // packets sent twice count too.
    for site in 1..SITES {
        let w = tree.wan[site];
        let produced = tree.produced[b];
        let copies_in = w.media_in as f64 / produced as f64;
        let copies_out = w.media_out as f64 / produced as f64;
        assert!(copies_in < 1.10, "site {site} pulled {copies_in:.3} copies");
        assert!(
            copies_out <= fan_out as f64 * 1.10,
            "site {site} sent {copies_out:.3} copies, more than its fan-out {fan_out}"
        );
    }
}
