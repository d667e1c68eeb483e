//! A site whose gateways all die at once is not cut off until the registry forgets them:
//! its lowest living boxes stand in within the idle timeout and its viewers receive again
//! within the repair goal (1.5 s at most).

use std::time::Duration;

use cambox_mesh::sim::{LinkSpec, Net};

fn wan(_: &mut Net) -> LinkSpec {
    LinkSpec::wan(Duration::from_millis(15), Duration::ZERO, 0.0)
}

/// The ids of a site's boxes, lowest first (the lowest three are its gateways).
fn by_rank(net: &Net, site: usize) -> Vec<usize> {
    let mut nodes: Vec<usize> = (0..net.len()).filter(|&n| net.site_of(n) == site).collect();
    nodes.sort_by_key(|&n| net.id(n));
    nodes
}

#[test]
fn the_lowest_living_boxes_stand_in_for_a_sites_dead_gateways() {
    let mut net = Net::sites_by_registry(7, &[6; 8], wan);
    net.run_for(Duration::from_secs(2));
    let origin = by_rank(&net, 0)[4];
    let cam = net.publish(origin, "cam");
    net.run_for(Duration::from_secs(2));
    let site = 5;
    let boxes = by_rank(&net, site);
    let viewer = boxes[5];
    net.subscribe(viewer, cam);
    net.run_for(Duration::from_secs(2));
    assert!(
        !net.delivered(viewer).is_empty(),
        "the viewer receives before"
    );

    for &gateway in &boxes[..3] {
        net.kill(gateway);
    }
    let killed_at = net.now();
    net.run_for(Duration::from_secs(3));
    let again = net
        .delivered(viewer)
        .iter()
        .find(|d| d.at > killed_at + net.idle_timeout)
        .map(|d| d.at - killed_at);
    let again = again.expect("the viewer receives again");
    assert!(
        again <= Duration::from_millis(1500),
        "received again {again:?} after its gateways died"
    );
    let standins: Vec<bool> = boxes[3..]
        .iter()
        .map(|&n| (0..net.len()).any(|m| net.site_of(m) != site && net.linked(n, m)))
        .collect();
    assert_eq!(
        standins,
        vec![true; 3],
        "every living box links across sites"
    );
}
