//! A child whose link is too slow for the stream gets whole groups (stale ones dropped
//! whole), and its siblings do not notice.

use std::collections::BTreeMap;
use std::time::Duration;

use cambox_mesh::node::Config;
use cambox_mesh::sim::{LinkSpec, Net};

use crate::common::{assert_whole_prefixes, deliveries};

/// One origin with three children on the LAN; child 3's link is too slow for the stream.
fn star(slow: bool) -> (Net, usize) {
    let mut net = Net::new(3);
    for _ in 0..4 {
        net.add_node(0, Config::default());
    }
    for c in 1..4 {
        net.connect(0, c, LinkSpec::LAN);
    }
    net.run_for(Duration::from_millis(50));
    if slow {
        // The stream needs about 500 kbit/s; this child gets 300.
        net.set_bandwidth(0, 3, 300_000);
    }
    let b = net.publish(0, "cam");
    for c in 1..4 {
        net.subscribe(c, b);
    }
    net.run_for(Duration::from_secs(20));
    (net, b)
}

#[test]
fn a_slow_child_gets_whole_groups_and_its_siblings_do_not_notice() {
    let (net, b) = star(true);
    let slow = deliveries(&net, 3, b);
    assert_whole_prefixes(&slow, "slow child");
    let mut per_group: BTreeMap<u64, u32> = BTreeMap::new();
    for (g, _, _) in &slow {
        *per_group.entry(*g).or_default() += 1;
    }
    let last_group = per_group.keys().last().copied();
    let partial: Vec<_> = per_group
        .iter()
        .filter(|(g, n)| **n != 30 && Some(**g) != last_group)
        .collect();
    assert!(
        partial.is_empty(),
        "partial groups at the slow child: {partial:?}"
    );
    let skipped = per_group
        .keys()
        .zip(per_group.keys().skip(1))
        .filter(|(a, b)| **b > **a + 1)
        .count();
    assert!(
        skipped > 0,
        "the slow child should have lost whole groups: {per_group:?}"
    );

    // Same seed without the slow link: the siblings' deliveries are identical, object for
    // object and to the nanosecond of simulated time.
    let (fast_net, fb) = star(false);
    let relative = |net: &Net, n: usize, b: usize| -> Vec<(u64, u32, Duration)> {
        let epoch = net.now() - net.elapsed();
        deliveries(net, n, b)
            .into_iter()
            .map(|(g, i, at)| (g, i, at - epoch))
            .collect()
    };
    for sibling in [1, 2] {
        let with_slow = relative(&net, sibling, b);
        assert!(
            with_slow.len() > 500,
            "sibling {sibling} got {} objects",
            with_slow.len()
        );
        assert_eq!(
            with_slow,
            relative(&fast_net, sibling, fb),
            "sibling {sibling} changed"
        );
    }
}

// ----- the overlay as a bus: commands, chat, telemetry -------------------------------
