//! News of a broadcast waits a moment before it goes to other sites, so that a box tells
//! them the shortest path once rather than the fastest first and the shortest after
//! (BGP's path exploration, which was half of what 100 broadcasts going live sent
//! across sites at 1 000 nodes).

use std::collections::BTreeSet;
use std::time::Duration;

use cambox_mesh::node::Config;
use cambox_mesh::sim::{LinkSpec, Net};

/// Five sites of one box each: `o` reaches `x` directly over a slow link (20 ms one way)
/// and through `a` and `b` over fast ones (1 ms each); `w` hears of `o`'s broadcast from
/// `x` alone.
#[test]
fn a_box_tells_other_sites_the_shortest_path_not_the_first() {
    let mut net = Net::new(3);
    let o = net.add_node(0, Config::default());
    let a = net.add_node(1, Config::default());
    let b = net.add_node(2, Config::default());
    let x = net.add_node(3, Config::default());
    let w = net.add_node(4, Config::default());
    let ms = |ms| LinkSpec::wan(Duration::from_millis(ms), Duration::ZERO, 0.0);
    net.connect(o, x, ms(20));
    for (p, q) in [(o, a), (a, b), (b, x)] {
        net.connect(p, q, ms(1));
    }
    net.connect(x, w, ms(1));
    net.run_for(Duration::from_secs(1));
    let cam = net.publish(o, "cam");
    let id = net.broadcasts[cam].id.clone();
    let mut heard = BTreeSet::new();
    for _ in 0..300 {
        net.run_for(Duration::from_millis(1));
        let now = net.now();
        if let Some(k) = net
            .node(w)
            .known_broadcasts(now)
            .into_iter()
            .find(|k| k.broadcast == id)
        {
            heard.insert(k.hops);
        }
    }
    assert_eq!(
        heard,
        BTreeSet::from([2]),
        "w heard these route lengths one after another"
    );
}
