//! A node keeps telling the route it told while no shorter one appears: a new neighbour
//! with a route as short (a link a redirect dialed, a box that came up) does not make it
//! tell every neighbour a new path, and them theirs.

use std::time::Duration;

use cambox_mesh::node::Config;
use cambox_mesh::sim::{LinkSpec, Net};

#[test]
fn a_new_neighbour_with_a_route_as_short_changes_nothing_told() {
    let mut net = Net::new(3);
    let o = net.add_node(0, Config::default());
    let a = net.add_node(1, Config::default());
    let b = net.add_node(2, Config::default());
    let x = net.add_node(3, Config::default());
    let y = net.add_node(4, Config::default());
    let far = LinkSpec::wan(Duration::from_millis(40), Duration::ZERO, 0.0);
    let near = LinkSpec::wan(Duration::from_millis(5), Duration::ZERO, 0.0);
    for (p, q) in [(o, a), (o, b), (a, x), (x, y)] {
        net.connect(p, q, far);
    }
    let cam = net.publish(o, "cam");
    net.run_for(Duration::from_secs(1));
    let id = net.broadcasts[cam].id.clone();
    let through_a = vec![net.id(o).hop(), net.id(a).hop(), net.id(x).hop()];
    assert_eq!(net.node(x).told_path(&id), Some(through_a.clone()));

    // b's route is as short and nearer: a choice made afresh would take it.
    net.connect(b, x, near);
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        net.node(x).told_path(&id),
        Some(through_a),
        "x switched to an equal route and told y a new path"
    );

    // Once a's route goes, b's is taken.
    net.kill(a);
    net.run_for(Duration::from_secs(1));
    let through_b = vec![net.id(o).hop(), net.id(b).hop(), net.id(x).hop()];
    assert_eq!(net.node(x).told_path(&id), Some(through_b));
}
