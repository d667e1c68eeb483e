//! Bounded state: whatever one neighbour says, the node it talks to (and every node beyond)
//! holds at most its limits. A neighbour past a limit is disconnected, counted, and what it
//! sent goes no further.

use std::time::Duration;

use bytes::Bytes;
use cambox_mesh::limits::{Limit, Limits};
use cambox_mesh::msg::{Routed, ROUTED_COMMAND};
use cambox_mesh::node::Config;
use cambox_mesh::sim::{made_up_entries, LinkSpec, Net};
use cambox_mesh::{BroadcastId, CatalogEntry, Msg, NodeId};

/// A rogue node `r` next to `a` (site 0), and `a`'s neighbour `b` in another site; `a`
/// carries one real broadcast of its own.
fn world() -> (Net, usize, usize, usize) {
    let mut net = Net::new(7);
    let a = net.add_node(0, Config::default());
    let b = net.add_node(1, Config::default());
    let r = net.add_node(0, Config::default());
    net.connect(a, b, LinkSpec::WAN);
    net.connect(a, r, LinkSpec::LAN);
    net.publish(a, "cam");
    net.run_for(Duration::from_secs(1));
    (net, a, b, r)
}

/// `n` made-up broadcasts, numbered from `first`.
fn made_up(n: usize, first: usize, sender: NodeId) -> Vec<CatalogEntry> {
    made_up_entries(first..first + n, sender)
}

fn known(net: &Net, i: usize) -> usize {
    net.node(i).known_broadcasts(net.now()).len()
}

#[test]
fn a_million_made_up_broadcasts_cost_the_mesh_nothing_beyond_its_bounds() {
    let (mut net, a, b, r) = world();
    let before = (net.node(a).state_entries(), net.node(b).state_entries());
    let rogue = net.id(r);
    // A million entries, in the largest lists the wire's u16 count allows.
    for chunk in 0..16 {
        let entries = made_up(
            65_535.min(1_000_000 - chunk * 65_535),
            chunk * 65_535,
            rogue,
        );
        net.inject(r, a, Msg::Catalog { entries });
    }
    net.run_for(Duration::from_secs(2));
    let after = (net.node(a).state_entries(), net.node(b).state_entries());
    println!("state entries of a, b: before {before:?}, after a million entries {after:?}");
    assert_eq!(
        net.node(a).disconnected().get(&Limit::EntriesPerPeer),
        Some(&1)
    );
    assert!(!net.linked(a, r), "the rogue's link is closed");
    assert_eq!(known(&net, a), 1, "a knows only its own broadcast");
    assert_eq!(known(&net, b), 1, "nothing the rogue said reached b");
    assert!(
        after.0 <= before.0 + 8 && after.1 <= before.1 + 8,
        "{before:?} {after:?}"
    );
}

#[test]
fn entries_within_the_limit_leave_with_the_neighbour_that_went_past_it() {
    let (mut net, a, b, r) = world();
    let rogue = net.id(r);
    let per_peer = Limits::default().entries_per_peer;
    // Within the limit: taken and passed on, as from any neighbour.
    net.inject(
        r,
        a,
        Msg::Catalog {
            entries: made_up(per_peer / 2, 0, rogue),
        },
    );
    net.run_for(Duration::from_millis(500));
    assert_eq!(known(&net, b), 1 + per_peer / 2);
    // Past it: the neighbour goes, and with it everything it said, at b too.
    net.inject(
        r,
        a,
        Msg::Catalog {
            entries: made_up(per_peer, per_peer, rogue),
        },
    );
    net.run_for(Duration::from_secs(2));
    assert_eq!(
        net.node(a).disconnected().get(&Limit::EntriesPerPeer),
        Some(&1)
    );
    assert_eq!(known(&net, a), 1);
    assert_eq!(known(&net, b), 1, "b was told the routes are gone");
}

#[test]
fn paths_interest_subscriptions_and_routed_floods_have_limits_too() {
    let limits = Limits::default();

    let (mut net, a, _, r) = world();
    let rogue = net.id(r);
    let mut long = made_up(1, 0, rogue);
    long[0].path = vec![rogue.hop(); limits.path_len + 1];
    net.inject(r, a, Msg::Catalog { entries: long });
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.node(a).disconnected().get(&Limit::PathLen), Some(&1));

    let (mut net, a, _, r) = world();
    let wanted: Vec<BroadcastId> = made_up(limits.interest_per_peer + 1, 0, rogue)
        .into_iter()
        .map(|e| e.broadcast)
        .collect();
    net.inject(r, a, Msg::Interest { broadcasts: wanted });
    net.run_for(Duration::from_millis(100));
    assert_eq!(
        net.node(a).disconnected().get(&Limit::InterestPerPeer),
        Some(&1)
    );
    // Told as changes, the same list is over the same limit.
    let (mut net, a, _, r) = world();
    let wanted: Vec<BroadcastId> = made_up(limits.interest_per_peer + 1, 0, rogue)
        .into_iter()
        .map(|e| e.broadcast)
        .collect();
    let (first, rest) = wanted.split_at(limits.interest_per_peer);
    net.inject(
        r,
        a,
        Msg::Interest {
            broadcasts: first.to_vec(),
        },
    );
    net.run_for(Duration::from_millis(100));
    assert_eq!(
        net.node(a).disconnected().get(&Limit::InterestPerPeer),
        None
    );
    net.inject(
        r,
        a,
        Msg::InterestChange {
            added: rest.to_vec(),
            removed: vec![],
        },
    );
    net.run_for(Duration::from_millis(100));
    assert_eq!(
        net.node(a).disconnected().get(&Limit::InterestPerPeer),
        Some(&1)
    );

    // Subscriptions: `a` must know the broadcasts, from a neighbour within its limits.
    let (mut net, a, b, r) = world();
    let feeder = net.id(b);
    let many = limits.subscriptions_per_peer + 1;
    net.inject(
        b,
        a,
        Msg::Catalog {
            entries: made_up(many, 0, feeder),
        },
    );
    net.run_for(Duration::from_millis(200));
    assert_eq!(known(&net, a), 1 + many);
    for e in made_up(many, 0, feeder) {
        net.inject(
            r,
            a,
            Msg::Subscribe {
                broadcast: e.broadcast,
                resume: vec![],
            },
        );
    }
    net.run_for(Duration::from_millis(200));
    assert_eq!(
        net.node(a).disconnected().get(&Limit::SubscriptionsPerPeer),
        Some(&1)
    );
    assert!(net.linked(a, b), "the neighbour that offered them stays");

    let (mut net, a, b, r) = world();
    let target = net.id(b);
    for id in 0..(3 * limits.routed_per_second as u64) {
        let m = Routed::signed(
            net.identity(r),
            target,
            ROUTED_COMMAND,
            id,
            net.wall_ms(),
            Bytes::new(),
        );
        net.inject(r, a, Msg::Routed(Box::new(m)));
    }
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.node(a).disconnected().get(&Limit::RoutedRate), Some(&1));
}

#[test]
fn a_neighbour_within_every_limit_is_never_disconnected() {
    let (mut net, a, b, r) = world();
    let rogue = net.id(r);
    // Just under the limit (the rogue, a real node too, also passes `a`'s own broadcast
    // back, which counts against it), again and again: replacing entries does not add up.
    let per_peer = Limits::default().entries_per_peer - 1;
    for round in 0..5 {
        let mut entries = made_up(per_peer, 0, rogue);
        for e in &mut entries {
            e.version = round + 2;
        }
        net.inject(r, a, Msg::Catalog { entries });
        net.run_for(Duration::from_millis(300));
    }
    assert!(
        net.node(a).disconnected().is_empty(),
        "{:?}",
        net.node(a).disconnected()
    );
    assert!(net.linked(a, r));
    assert_eq!(known(&net, b), 1 + per_peer);
}
