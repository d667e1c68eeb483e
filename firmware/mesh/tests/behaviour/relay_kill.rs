//! A tenth of the relays die at once: every orphaned subscriber receives again within a
//! second, with no partial group (`CAMBOX_SIM_SEED=N` draws another world).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common::{assert_whole_prefixes, deliveries, five_broadcasts, world};

#[test]
fn killing_a_tenth_of_the_relays_heals_within_a_second() {
    let seed = std::env::var("CAMBOX_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    let mut net = world(seed);
    let bs = five_broadcasts(&mut net);
    net.run_for(Duration::from_secs(5));
    let origins: BTreeSet<usize> = bs.iter().map(|&b| net.broadcasts[b].origin).collect();
    let relays: Vec<usize> = (0..net.len())
        .filter(|n| !origins.contains(n))
        .filter(|&n| {
            bs.iter()
                .any(|&b| !net.node(n).children(&net.broadcasts[b].id).is_empty())
        })
        .collect();
    let victims: BTreeSet<usize> = {
        let mut v = BTreeSet::new();
        while v.len() < net.len() / 10 && v.len() < relays.len() {
            v.insert(relays[(net.random() % relays.len() as u64) as usize]);
        }
        v
    };
    let victim_ids: BTreeSet<_> = victims.iter().map(|&v| net.id(v)).collect();
    // Orphans: survivors whose parent for some broadcast is about to die.
    let mut orphans: BTreeMap<(usize, usize), ()> = BTreeMap::new();
    for n in (0..net.len()).filter(|n| !victims.contains(n)) {
        for &b in &bs {
            if net
                .node(n)
                .parent(&net.broadcasts[b].id)
                .is_some_and(|p| victim_ids.contains(&p))
            {
                orphans.insert((n, b), ());
            }
        }
    }
    let killed_at = net.now();
    for &v in &victims {
        net.kill(v);
    }
    net.run_for(Duration::from_secs(5));
    assert!(!orphans.is_empty());
    let mut worst = Duration::ZERO;
    let mut slow = Vec::new();
    for &(n, b) in orphans.keys() {
        let d = deliveries(&net, n, b);
        assert_whole_prefixes(&d, &format!("orphan {n} broadcast {b}"));
        let resumed = d
            .iter()
            .map(|(_, _, at)| *at)
            .filter(|at| *at > killed_at + net.idle_timeout)
            .min()
            .unwrap_or_else(|| panic!("orphan {n} never received broadcast {b} again"));
        worst = worst.max(resumed - killed_at);
        if resumed - killed_at > Duration::from_secs(1) {
            slow.push((n, b, resumed - killed_at));
        }
    }
    println!(
        "orphans slower than 1 s: {} {:?}",
        slow.len(),
        &slow[..slow.len().min(8)]
    );
    // Every survivor, orphan or not, is receiving again at the end.
    for n in (0..net.len()).filter(|n| !victims.contains(n) && !origins.contains(n)) {
        for &b in &bs {
            let d = deliveries(&net, n, b);
            let last = d.last().map(|x| x.2).unwrap_or(killed_at);
            assert!(
                net.now() - last < Duration::from_millis(500),
                "node {n} stopped receiving broadcast {b}"
            );
        }
    }
    println!(
        "{} relays killed, {} orphaned subscriptions, worst time to receive again {:?}",
        victims.len(),
        orphans.len(),
        worst
    );
    assert!(
        worst <= Duration::from_secs(1),
        "an orphan waited {worst:?}"
    );
}
