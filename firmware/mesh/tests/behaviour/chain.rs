//! A chain of static peers across sites (each box told only the previous one's address)
//! carries a broadcast to the far end even where the boxes between watch nothing.

use std::time::Duration;

use cambox_mesh::node::Config;
use cambox_mesh::sim::{LinkSpec, Net};

/// Sites 0..n, one box each, box i linked only to box i-1.
fn chain(n: usize) -> Net {
    let mut net = Net::new(11);
    for site in 0..n {
        net.add_node(site, Config::default());
    }
    for i in 1..n {
        net.connect(i - 1, i, LinkSpec::WAN);
    }
    net.run_for(Duration::from_millis(500));
    net
}

fn receives(net: &Net, node: usize, b: usize) -> bool {
    let id = &net.broadcasts[b].id;
    net.delivered(node).iter().any(|d| &d.broadcast == id)
}

#[test]
fn the_far_end_of_a_chain_plays_when_the_box_between_watches_nothing() {
    let mut net = chain(3);
    let b = net.publish(0, "a");
    net.run_for(Duration::from_secs(1));
    net.subscribe(2, b);
    net.run_for(Duration::from_secs(2));
    assert!(
        receives(&net, 2, b),
        "c never received a's broadcast through b"
    );
    assert!(!receives(&net, 1, b), "b relays without playing it itself");
}

#[test]
fn every_box_of_a_long_chain_plays_with_most_between_watching_nothing() {
    let mut net = chain(8);
    let b = net.publish(0, "a");
    net.run_for(Duration::from_secs(1));
    for watcher in [3, 7] {
        net.subscribe(watcher, b);
    }
    net.run_for(Duration::from_secs(3));
    for watcher in [3, 7] {
        assert!(receives(&net, watcher, b), "box {watcher} never received");
    }
}

/// Inside one site a route is told by one box only, the one with the best route, as a
/// site is meant to be a full LAN mesh. Static peers in one site (or a LAN where mDNS
/// does not pass) make a chain instead: boxes that reach other site-mates than each
/// other (`SiteMates`, told once the site settles) tell each other every route, so the
/// far end still learns and plays.
#[test]
fn the_far_end_of_a_chain_inside_one_site_plays() {
    let mut net = Net::new(11);
    for _ in 0..4 {
        net.add_node(0, Config::default());
    }
    for i in 1..4 {
        net.connect(i - 1, i, LinkSpec::LAN);
    }
    // The site settles (1 s), then the difference must last (2 s).
    net.run_for(Duration::from_millis(3500));
    let b = net.publish(0, "a");
    net.run_for(Duration::from_secs(1));
    net.subscribe(3, b);
    net.run_for(Duration::from_secs(2));
    assert!(receives(&net, 3, b), "d never received a's broadcast");
    assert!(!receives(&net, 1, b), "b relays without playing it itself");
}

/// A site's puller is its lowest box that wants the broadcast, and it need not have a
/// link beyond the site: it takes the broadcast from a site-mate that has one. That
/// site-mate must then pull it across sites itself, not wait for the puller, which is
/// its own child (they would each wait for the other, and nothing would arrive).
#[test]
fn a_site_whose_puller_has_no_link_beyond_plays_through_its_gateway() {
    let mut net = Net::new(5);
    let origin = net.add_node(0, Config::default());
    let (x, y) = (
        net.add_node(1, Config::default()),
        net.add_node(1, Config::default()),
    );
    let (puller, gateway) = if net.id(x) < net.id(y) {
        (x, y)
    } else {
        (y, x)
    };
    net.connect(origin, gateway, LinkSpec::WAN);
    net.connect(gateway, puller, LinkSpec::LAN);
    net.run_for(Duration::from_millis(500));
    let b = crate::common::publish_and_watch(&mut net, origin, puller, Duration::from_secs(2));
    assert!(
        receives(&net, puller, b),
        "the puller never received through its gateway: {}",
        net.node(gateway).tree_state(&net.broadcasts[b].id)
    );
    // Then the gateway's own viewers watch too: it is the site's puller's parent, and
    // stays so.
    net.subscribe(gateway, b);
    net.run_for(Duration::from_secs(2));
    assert!(receives(&net, gateway, b), "the gateway never played it");
}
