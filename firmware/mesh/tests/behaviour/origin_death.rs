//! A watched origin that dies costs its withdrawal, not a hunt through every doomed route:
//! the boxes that lost their link to it say which link (`LinkDown`), and every box holding
//! routes over it drops them at once.

use std::time::Duration;

use cambox_mesh::sim::{LinkSpec, Net};

const SITES: usize = 60;
const PER_SITE: usize = 10;

fn wan(_: &mut Net) -> LinkSpec {
    LinkSpec::wan(Duration::from_millis(12), Duration::from_millis(6), 0.01)
}

#[test]
fn a_watched_origin_that_dies_costs_its_withdrawal_not_a_hunt() {
    let mut net = Net::sites_by_registry(3, &[PER_SITE; SITES], wan);
    net.run_for(Duration::from_secs(2));
    let origin = PER_SITE + 2;
    let before_live = net.control_total;
    let cam = net.publish(origin, "cam");
    net.run_for(Duration::from_millis(500));
    let viewers: Vec<usize> = (0..SITES).map(|s| s * PER_SITE + 4).collect();
    for &v in &viewers {
        net.subscribe(v, cam);
    }
    net.run_for(Duration::from_secs(3));
    let live_cost = net.control_total - before_live;
    for &v in &viewers {
        assert!(!net.delivered(v).is_empty(), "viewer {v} receives");
    }

    let before_death = net.control_total;
    let by_type = net.control_by_type.clone();
    net.kill(origin);
    net.run_for(Duration::from_secs(5));
    let death_cost = net.control_total - before_death;
    println!(
        "going live and 60 sites joining: {live_cost} bytes of control; the origin dying: {death_cost} ({:?})",
        net.control_by_type
            .iter()
            .map(|(k, v)| (k, v - by_type.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect::<Vec<_>>()
    );
    // And then it is quiet: the viewers' wishes find no route and wait for news.
    let quiet = net.control_total;
    net.run_for(Duration::from_secs(2));
    let after = net.control_total - quiet;
    println!("the 2 s after: {after} bytes");
    assert!(after < live_cost / 100, "{after} bytes in the 2 s after");
    // Before the notification, dying cost 215 times what going live did (144 MB, path
    // hunting); with it about 3 times (the withdrawals, and a little hunting between
    // notifications of the origin's links arriving a few ms apart).
    assert!(
        death_cost < 10 * live_cost,
        "dying cost {death_cost} bytes, going live {live_cost}"
    );
}
