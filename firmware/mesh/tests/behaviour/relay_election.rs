//! A site waits a moment (`election_delay`) before it pulls a broadcast across sites, so
//! that its boxes agree on one puller. A relay that a child already asked does not wait:
//! the child has waited (a site-mate) or is on a new path whose every relay would
//! otherwise wait in turn (a child of another site).

use std::time::Duration;

use cambox_mesh::node::Config;
use cambox_mesh::sim::{LinkSpec, Net};

#[test]
fn relays_on_a_new_path_pull_at_once_when_a_child_asks() {
    // One box a site, a chain o - r1 - r2 - r3 - v, 10 ms each way; only v watches.
    let mut net = Net::new(9);
    let [o, r1, r2, r3, v] = [0, 1, 2, 3, 4].map(|site| net.add_node(site, Config::default()));
    for (a, b) in [(o, r1), (r1, r2), (r2, r3), (r3, v)] {
        net.connect(
            a,
            b,
            LinkSpec::wan(Duration::from_millis(10), Duration::ZERO, 0.0),
        );
    }
    net.run_for(Duration::from_millis(500));
    let b = net.publish(o, "cam");
    net.run_for(Duration::from_secs(1));
    let asked = net.now();
    net.subscribe(v, b);
    net.run_for(Duration::from_secs(1));
    let id = net.broadcasts[b].id.clone();
    let joined = net
        .delivered(v)
        .iter()
        .find(|d| d.broadcast == id)
        .map(|d| d.at - asked)
        .expect("v receives the broadcast");
    // v waits its own site's moment (100 ms), then four hops up and four down: 219 ms
    // here. With every relay waiting its moment too, 519 ms.
    let election = Config::default().election_delay;
    println!("joined through three relays in {joined:?}");
    assert!(
        joined < election + Duration::from_millis(150),
        "v received {joined:?} after it asked: the relays waited"
    );
}
