//! Commands routed hop by hop to targets in other sites: each arrives once, its reply
//! comes back, and forged, replayed and unauthorized ones are refused and counted.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cambox_mesh::msg::{Routed, ROUTED_COMMAND};
use cambox_mesh::routed::{CommandAllow, RoutedStats};
use cambox_mesh::sim::Net;

use crate::common::{world, PER_SITE};

/// A node's commands (kind 1) and replies (kind 2) received: (kind, from, id, body).
fn routed_at(net: &Net, n: usize) -> Vec<(u8, usize, u64, Bytes, Instant)> {
    net.routed(n)
        .iter()
        .map(|(at, r)| {
            let from = (0..net.len()).find(|&k| net.id(k) == r.from).unwrap();
            (r.kind, from, r.id, r.body.clone(), *at)
        })
        .collect()
}

fn total_stats(net: &Net) -> RoutedStats {
    let mut t = RoutedStats::default();
    for n in 0..net.len() {
        let s = net.node(n).routed_stats();
        t.delivered += s.delivered;
        t.forwarded += s.forwarded;
        t.forged += s.forged;
        t.replayed += s.replayed;
        t.unauthorized += s.unauthorized;
        t.unroutable += s.unroutable;
    }
    t
}

#[test]
fn commands_reach_targets_in_other_sites_replies_return_and_bad_ones_are_refused() {
    let mut net = world(11);
    // Five operators anyone obeys; everyone announces itself (its route).
    let operators: Vec<usize> = (0..5).map(|k| k * 2 * PER_SITE + 3).collect();
    let allowed: BTreeSet<_> = operators.iter().map(|&o| net.id(o)).collect();
    for n in 0..net.len() {
        net.node_mut(n)
            .set_command_allow(CommandAllow::Only(allowed.clone()));
        net.announce(n);
    }
    net.run_for(Duration::from_secs(3));

    // Each operator commands eight nodes of other sites.
    let mut sent = Vec::new();
    for (k, &op) in operators.iter().enumerate() {
        for j in 0..8u64 {
            let target = loop {
                let t = (net.random() % net.len() as u64) as usize;
                if net.site_of(t) != net.site_of(op) {
                    break t;
                }
            };
            let id = k as u64 * 100 + j;
            let body = Bytes::from(format!("{{\"cmd\":{id}}}"));
            net.command(op, target, id, body.clone())
                .expect("a route to every announced node");
            sent.push((op, target, id, body, net.now()));
            net.run_for(Duration::from_millis(20));
        }
    }
    net.run_for(Duration::from_secs(2));
    let mut worst = Duration::ZERO;
    for (op, target, id, body, at) in &sent {
        let got: Vec<_> = routed_at(&net, *target)
            .into_iter()
            .filter(|(kind, from, i, _, _)| *kind == ROUTED_COMMAND && from == op && i == id)
            .collect();
        assert_eq!(
            got.len(),
            1,
            "command {id} reached node {target} {} times",
            got.len()
        );
        assert_eq!(&got[0].3, body);
        let replies: Vec<_> = routed_at(&net, *op)
            .into_iter()
            .filter(|(kind, from, i, _, _)| *kind != ROUTED_COMMAND && from == target && i == id)
            .collect();
        assert_eq!(
            replies.len(),
            1,
            "reply to {id} came back {} times",
            replies.len()
        );
        worst = worst.max(replies[0].4 - *at);
    }
    let good = total_stats(&net);
    println!(
        "40 commands across sites: worst round trip {worst:?}, {} relays on the way, {good:?}",
        good.forwarded
    );
    assert_eq!(good.delivered, 80, "40 commands and 40 replies");
    assert_eq!((good.forged, good.replayed, good.unauthorized), (0, 0, 0));

    // Now the bad ones, each from somewhere in another site.
    let (op, target) = (operators[0], operators[3]);
    let outsider = 5 * PER_SITE + 7;
    let before = routed_at(&net, target).len();
    // Forged: signed by the outsider, claiming to be an operator.
    let mut forged = Routed::signed(
        net.identity(outsider),
        net.id(target),
        ROUTED_COMMAND,
        900,
        net.wall_ms(),
        Bytes::from_static(b"{\"live\":true}"),
    );
    forged.from = net.id(op);
    net.send_routed(outsider, forged).unwrap();
    // Replayed: an operator's genuine command, sent again by the outsider.
    net.command(op, target, 901, Bytes::from_static(b"{}"))
        .unwrap();
    net.run_for(Duration::from_millis(500));
    let genuine = net
        .routed(target)
        .iter()
        .find(|(_, r)| r.id == 901)
        .expect("the genuine command arrived")
        .1
        .clone();
    net.send_routed(outsider, genuine).unwrap();
    // Unauthorized: the outsider's own, correctly signed command.
    net.command(outsider, target, 902, Bytes::from_static(b"{}"))
        .unwrap();
    // Stale: an operator's command signed two minutes ago.
    let stale = Routed::signed(
        net.identity(op),
        net.id(target),
        ROUTED_COMMAND,
        903,
        net.wall_ms() - 120_000,
        Bytes::new(),
    );
    net.send_routed(op, stale).unwrap();
    net.run_for(Duration::from_secs(1));
    let after = routed_at(&net, target);
    assert_eq!(
        after[before..].iter().map(|r| r.2).collect::<Vec<_>>(),
        vec![901],
        "only the genuine command was acted on"
    );
    let s = net.node(target).routed_stats();
    println!("target after the bad ones: {s:?}");
    assert_eq!((s.forged, s.replayed, s.unauthorized), (1, 2, 1));
}
