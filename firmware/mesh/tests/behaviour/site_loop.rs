//! A site's puller does not pull through a route that comes back through its own site:
//! the site on that route would pull from it in turn, and neither would ever receive.

use std::time::Duration;

use cambox_mesh::node::Config;
use cambox_mesh::sim::{LinkSpec, Net};

/// Site 0: the origin `o`. Site 1: `a` (watches) and `m`, its site-mate, linked to `o`.
/// Site 2: `b`, linked to `m` and to `a` (the nearer), watching nothing. Sites 3 and 4:
/// the way round, `o - c - e - a`.
///
/// `b`'s shortest route runs through `m`, so what `a` hears from `b` is as short as the
/// way round, and nearer, but it re-enters site 1. Taking it, `a` becomes `b`'s child; `b`
/// then asks `m`, which sends it to the site's puller, `a`: its own child.
#[test]
fn a_puller_takes_the_way_round_rather_than_a_route_back_through_its_own_site() {
    let mut net = Net::new(5);
    let o = net.add_node(0, Config::default());
    let a = net.add_node(1, Config::default());
    let m = net.add_node(1, Config::default());
    let b = net.add_node(2, Config::default());
    let c = net.add_node(3, Config::default());
    let e = net.add_node(4, Config::default());
    net.connect(a, m, LinkSpec::LAN);
    let near = LinkSpec::wan(Duration::from_millis(5), Duration::ZERO, 0.0);
    net.connect(b, a, near);
    for (x, y) in [(o, m), (m, b), (o, c), (c, e), (e, a)] {
        net.connect(x, y, LinkSpec::WAN);
    }
    net.run_for(Duration::from_millis(500));
    let cam = net.publish(o, "cam");
    net.run_for(Duration::from_secs(1));
    net.subscribe(a, cam);
    net.run_for(Duration::from_secs(2));

    let id = net.broadcasts[cam].id.clone();
    assert!(
        net.delivered(a).iter().any(|x| x.broadcast == id),
        "a never received: {}",
        net.node(a).tree_state(&id)
    );
    assert_eq!(
        net.node(a).parent(&id),
        Some(net.id(e)),
        "a pulls through the way round, not through b"
    );
}
