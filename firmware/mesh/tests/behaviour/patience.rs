//! A parent that starves because its own parent died says so (it no longer carries the
//! broadcast) and is finding a feed: its child waits for it while no other neighbour
//! carries the broadcast, instead of leaving for a neighbour that would have to pull it
//! in along a longer way.

use std::time::Duration;

use cambox_mesh::node::Config;
use cambox_mesh::sim::{LinkSpec, Net};

fn wan(ms: u64) -> LinkSpec {
    LinkSpec::wan(Duration::from_millis(ms), Duration::ZERO, 0.0)
}

#[test]
fn a_child_waits_for_its_repairing_parent_while_nobody_else_carries() {
    // One box per site. The viewer g takes the broadcast through p, which takes it
    // through x; when x dies, p's other way in runs through y over a slow link, so g
    // hears nothing for longer than it would wait for a quiet parent (450 ms). g's other
    // neighbour z does not carry it and is as far from the origin as p.
    let mut net = Net::new(5);
    let [o, x, p, y, g, z, w] =
        [0, 1, 2, 3, 4, 5, 6].map(|site| net.add_node(site, Config::default()));
    for (a, b, ms) in [
        (o, x, 20),
        (x, p, 20),
        (o, y, 20),
        (y, p, 80),
        (p, g, 20),
        (g, z, 40),
        (z, w, 60),
        (w, o, 60),
    ] {
        net.connect(a, b, wan(ms));
    }
    net.run_for(Duration::from_millis(500));
    let b = net.publish(o, "cam");
    net.run_for(Duration::from_secs(1));
    net.subscribe(g, b);
    net.run_for(Duration::from_secs(2));
    let id = net.broadcasts[b].id.clone();
    assert_eq!(
        net.node(g).parent(&id),
        Some(net.id(p)),
        "g takes it through p"
    );
    assert_eq!(
        net.node(p).parent(&id),
        Some(net.id(x)),
        "p takes it through x"
    );

    let killed_at = net.now();
    net.kill(x);
    let mut parents = Vec::new();
    for _ in 0..200 {
        net.run_for(Duration::from_millis(5));
        let parent = net.node(g).parent(&id).or_else(|| net.node(g).pending(&id));
        if parents.last() != Some(&parent) {
            parents.push(parent);
        }
    }
    assert_eq!(
        parents,
        [Some(net.id(p))],
        "g left p while p was finding a feed (its parents in turn)"
    );
    let resumed = net
        .delivered(g)
        .iter()
        .find(|d| d.broadcast == id && d.at > killed_at + Duration::from_millis(1))
        .map(|d| d.at - killed_at)
        .expect("g receives again");
    assert!(
        resumed < Duration::from_millis(700),
        "g received again {resumed:?} after x died"
    );
}
