//! A broadcast that ends leaves every box's stream list within 5 s, and its end costs the
//! mesh about what its going live did (a plain withdrawal cost 115 times as much here:
//! boxes still hearing older routes told them on, path after path).

use std::collections::BTreeMap;
use std::time::Duration;

use cambox_mesh::sim::{LinkSpec, Net};

fn entries(net: &Net) -> u64 {
    net.catalog_entries.values().sum()
}

fn listing(net: &Net, b: usize) -> Vec<usize> {
    let id = &net.broadcasts[b].id;
    let now = net.now();
    (0..net.len())
        .filter(|&n| {
            net.node(n)
                .known_broadcasts(now)
                .iter()
                .any(|k| &k.broadcast == id)
        })
        .collect()
}

/// Eight sites of eight boxes, each box with two links to other sites: many paths of
/// every length to the origin, which a plain withdrawal made boxes try one by one.
#[test]
fn an_ended_broadcast_leaves_every_list_and_costs_about_what_going_live_did() {
    let mut net = Net::sites(5, 8, 8, 2, |_| LinkSpec::WAN);
    net.run_for(Duration::from_secs(2));
    let before = entries(&net);
    let cam = net.publish(3, "cam");
    net.run_for(Duration::from_secs(3));
    let live_cost = entries(&net) - before;
    assert_eq!(listing(&net, cam).len(), net.len(), "every box lists it");

    let before = entries(&net);
    net.unpublish(cam);
    net.run_for(Duration::from_secs(5));
    let end_cost = entries(&net) - before;
    let still: BTreeMap<usize, usize> = listing(&net, cam)
        .into_iter()
        .map(|n| (n, net.site_of(n)))
        .collect();
    assert!(
        still.is_empty(),
        "boxes (and sites) still listing it: {still:?}"
    );
    assert!(
        end_cost <= 2 * live_cost,
        "ending sent {end_cost} catalog entries, going live {live_cost}"
    );
}
