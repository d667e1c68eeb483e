//! A site's gateways hear a new broadcast from other sites at different moments; the site
//! is told it once, by one of them, not by each in turn with withdrawals after.

use std::collections::BTreeMap;
use std::time::Duration;

use cambox_mesh::node::Config;
use cambox_mesh::sim::{LinkSpec, Net};

/// Site 0: the origin. Site 1: twelve boxes on a LAN; its three lowest ids are its
/// gateways, linked to the origin with one-way delays of 35, 20 and 5 ms: the lowest id,
/// which wins among equal routes, hears last.
#[test]
fn a_new_broadcast_is_told_in_a_site_once_and_never_withdrawn() {
    let mut net = Net::new(9);
    let o = net.add_node(0, Config::default());
    let mut site: Vec<usize> = (0..12)
        .map(|_| net.add_node(1, Config::default()))
        .collect();
    for (i, &a) in site.iter().enumerate() {
        for &b in &site[i + 1..] {
            net.connect(a, b, LinkSpec::LAN);
        }
    }
    site.sort_by_key(|&n| net.id(n));
    for (gateway, ms) in site.iter().zip([35, 20, 5]) {
        let wan = LinkSpec::wan(Duration::from_millis(ms), Duration::ZERO, 0.0);
        net.connect(o, *gateway, wan);
    }
    net.run_for(Duration::from_secs(2));
    let before = net.catalog_entries.clone();
    let cam = net.publish(o, "cam");
    net.run_for(Duration::from_secs(1));

    let sent = |kind: &str, at: &BTreeMap<&str, u64>| at.get(kind).copied().unwrap_or(0);
    let told = sent("in site, told", &net.catalog_entries) - sent("in site, told", &before);
    let withdrawn =
        sent("in site, withdrawn", &net.catalog_entries) - sent("in site, withdrawn", &before);
    let id = net.broadcasts[cam].id.clone();
    for &n in &site {
        let now = net.now();
        assert!(
            net.node(n)
                .known_broadcasts(now)
                .iter()
                .any(|k| k.broadcast == id),
            "box {n} does not list the broadcast"
        );
    }
    assert_eq!(withdrawn, 0, "entries withdrawn in the site ({told} told)");
    assert_eq!(told, 11, "one gateway tells its eleven site-mates");
}
