//! Five broadcasts from five sites, everyone subscribed: every subscriber gets every
//! object, whole groups, and each site's uplink carries one copy in.

use std::time::Duration;

use crate::common::{
    assert_whole_prefixes, deliveries, five_broadcasts, missing_objects, world, SITES,
};

#[test]
fn every_subscriber_gets_every_object_and_each_site_pulls_one_copy() {
    let mut net = world(7);
    let bs = five_broadcasts(&mut net);
    net.run_for(Duration::from_secs(5));
    let start = net.elapsed();
    net.measuring = true;
    net.run_for(Duration::from_secs(10));
    net.measuring = false;
    let end = net.elapsed();

    // Every object produced in the window (but its last half second, still in flight)
    // reached every subscriber.
    for n in 0..net.len() {
        for &b in &bs {
            if net.broadcasts[b].origin == n {
                continue;
            }
            let d = deliveries(&net, n, b);
            assert_whole_prefixes(&d, &format!("node {n} broadcast {b}"));
            let missing = missing_objects(&d, 30, start, end);
            assert!(
                missing.is_empty(),
                "node {n} (site {}) missed {} objects of broadcast {b}, first {:?}",
                net.site_of(n),
                missing.len(),
                missing.first()
            );
        }
    }

    // Each site's WAN link carries each broadcast once in, and out at most the fan-out of
    // the tree of sites.
    let fan_out = cambox_mesh::node::Config::default().wan_children as f64;
    let origin_site: Vec<usize> = bs
        .iter()
        .map(|&b| net.site_of(net.broadcasts[b].origin))
        .collect();
    println!("site  media in (copies)  media out (copies)  control in+out");
    for site in 0..SITES {
        let w = net.wan[site];
        let inbound: u64 = bs
            .iter()
            .zip(&origin_site)
            .filter(|(_, s)| **s != site)
            .map(|(&b, _)| net.produced[b])
            .sum();
        let all: u64 = bs.iter().map(|&b| net.produced[b]).sum();
        let copies_in = w.media_in as f64 / inbound as f64;
        let copies_out = w.media_out as f64 / all as f64;
        println!(
            "{site:>4}  {:>10} ({copies_in:.3})  {:>10} ({copies_out:.3})  {:>10}",
            w.media_in,
            w.media_out,
            w.control_in + w.control_out
        );
        assert!(
            copies_in > 0.99 && copies_in < 1.05,
            "site {site} pulled {copies_in:.3} copies"
        );
        assert!(
            copies_out < fan_out * 1.05,
            "site {site} sent {copies_out:.3} copies of everything"
        );
    }
}

/// A subscription that was not answered in time is given up and made elsewhere; the
/// answer that comes after must not leave the first node sending a second copy for good.
#[test]
fn a_late_answer_to_a_subscription_given_up_sends_no_second_copy() {
    use cambox_mesh::node::Config;
    use cambox_mesh::sim::{LinkSpec, Net};

    let mut net = Net::new(3);
    let origin = net.add_node(0, Config::default());
    let viewer = net.add_node(1, Config::default());
    let relay = net.add_node(2, Config::default());
    // The viewer's own link to the origin is slow: its round trip (400 ms) is longer than
    // a subscription is waited for (250 ms). The way through the relay is fast.
    let slow = LinkSpec::wan(Duration::from_millis(200), Duration::ZERO, 0.0);
    net.connect(origin, viewer, slow);
    net.connect(viewer, relay, LinkSpec::WAN);
    net.connect(relay, origin, LinkSpec::WAN);
    net.run_for(Duration::from_secs(2));
    let b = crate::common::publish_and_watch(&mut net, origin, viewer, Duration::from_secs(3));

    let id = net.broadcasts[b].id.clone();
    assert!(
        !deliveries(&net, viewer, b).is_empty(),
        "the viewer never played"
    );
    assert!(
        !net.node(origin).children(&id).contains(&net.id(viewer)),
        "the origin still serves the viewer beside its parent {:?}",
        net.node(viewer).parent(&id)
    );
    net.measuring = true;
    net.run_for(Duration::from_secs(4));
    net.measuring = false;
    let copies = net.wan[1].media_in as f64 / net.produced[b] as f64;
    assert!(copies < 1.05, "{copies:.3} copies into the viewer's site");
}
