//! Tier (a): the overlay on a simulated network with a fake clock, deterministic per seed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use cambox_mesh::node::Config;
use cambox_mesh::sim::{LinkSpec, Net};

mod common;
use common::{assert_whole_prefixes, deliveries, missing_objects};

const SITES: usize = 10;
const PER_SITE: usize = 20;

/// 10 sites of 20 boxes: a full LAN mesh inside each site (mDNS finds everyone), two
/// connections from each box to boxes elsewhere (static peers or the registry).
fn world(seed: u64) -> Net {
    let mut net = Net::sites(seed, SITES, PER_SITE, 2, |_| LinkSpec::WAN);
    net.run_for(Duration::from_millis(200));
    net
}

/// Five broadcasts from five sites, everyone subscribed to all of them.
fn five_broadcasts(net: &mut Net) -> Vec<usize> {
    let mut bs = Vec::new();
    for (k, site) in [0usize, 2, 4, 6, 8].into_iter().enumerate() {
        let origin = site * PER_SITE + (net.random() % PER_SITE as u64) as usize;
        bs.push(net.publish(origin, &format!("cam{k}")));
    }
    for n in 0..net.len() {
        for &b in &bs {
            if net.broadcasts[b].origin != n {
                net.subscribe(n, b);
            }
        }
    }
    bs
}

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

/// One origin with three children on the LAN; child 3's link is too slow for the stream.
fn star(slow: bool) -> (Net, usize) {
    let mut net = Net::new(3);
    for _ in 0..4 {
        net.add_node(0, Config::default());
    }
    for c in 1..4 {
        net.connect(0, c, LinkSpec::LAN);
    }
    net.run_for(Duration::from_millis(50));
    if slow {
        // The stream needs about 500 kbit/s; this child gets 300.
        net.set_bandwidth(0, 3, 300_000);
    }
    let b = net.publish(0, "cam");
    for c in 1..4 {
        net.subscribe(c, b);
    }
    net.run_for(Duration::from_secs(20));
    (net, b)
}

#[test]
fn a_slow_child_gets_whole_groups_and_its_siblings_do_not_notice() {
    let (net, b) = star(true);
    let slow = deliveries(&net, 3, b);
    assert_whole_prefixes(&slow, "slow child");
    let mut per_group: BTreeMap<u64, u32> = BTreeMap::new();
    for (g, _, _) in &slow {
        *per_group.entry(*g).or_default() += 1;
    }
    let last_group = per_group.keys().last().copied();
    let partial: Vec<_> = per_group
        .iter()
        .filter(|(g, n)| **n != 30 && Some(**g) != last_group)
        .collect();
    assert!(
        partial.is_empty(),
        "partial groups at the slow child: {partial:?}"
    );
    let skipped = per_group
        .keys()
        .zip(per_group.keys().skip(1))
        .filter(|(a, b)| **b > **a + 1)
        .count();
    assert!(
        skipped > 0,
        "the slow child should have lost whole groups: {per_group:?}"
    );

    // Same seed without the slow link: the siblings' deliveries are identical, object for
    // object and to the nanosecond of simulated time.
    let (fast_net, fb) = star(false);
    let relative = |net: &Net, n: usize, b: usize| -> Vec<(u64, u32, Duration)> {
        let epoch = net.now() - net.elapsed();
        deliveries(net, n, b)
            .into_iter()
            .map(|(g, i, at)| (g, i, at - epoch))
            .collect()
    };
    for sibling in [1, 2] {
        let with_slow = relative(&net, sibling, b);
        assert!(
            with_slow.len() > 500,
            "sibling {sibling} got {} objects",
            with_slow.len()
        );
        assert_eq!(
            with_slow,
            relative(&fast_net, sibling, fb),
            "sibling {sibling} changed"
        );
    }
}

// ----- the overlay as a bus: commands, chat, telemetry -------------------------------

use bytes::Bytes;
use cambox_mesh::msg::{BroadcastId, Routed, ROUTED_COMMAND, TRACK_TELEMETRY};
use cambox_mesh::routed::{CommandAllow, RoutedStats};

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

#[test]
fn chat_and_telemetry_reach_every_subscriber_once_in_order_with_history_for_late_joiners() {
    let mut net = world(12);
    // Five people chatting in one room, from five sites: each sender's messages are a
    // broadcast of its own, all subscribed by everyone.
    const TRACK_CHAT: u8 = 4;
    let senders: Vec<usize> = (0..5).map(|k| k * 2 * PER_SITE + 1).collect();
    let rooms: Vec<BroadcastId> = senders
        .iter()
        .map(|&s| net.publish_quiet(s, ".chat/all", vec![TRACK_CHAT]))
        .collect();
    // A sensor in site 9 reports twice a second; 60 nodes follow it.
    let sensor = 9 * PER_SITE + 4;
    let telemetry = net.announce(sensor);
    let watchers: Vec<usize> = (0..60).map(|k| (k * 3 + 1) % net.len()).collect();
    net.run_for(Duration::from_millis(500));
    for n in 0..net.len() {
        for (k, room) in rooms.iter().enumerate() {
            if senders[k] != n {
                net.subscribe_to(n, room.clone());
            }
        }
    }
    for &w in watchers.iter().filter(|&&w| w != sensor) {
        net.subscribe_to(w, telemetry.clone());
    }
    net.run_for(Duration::from_secs(2));

    // 40 messages from each sender, eight to a group (a new group starts with the
    // history, as the box does), interleaved; 10 readings.
    const PER_GROUP: u64 = 8;
    for m in 0..40u64 {
        for (k, &s) in senders.iter().enumerate() {
            let payload = Bytes::from(format!("{k}:{m}"));
            net.local_object(
                s,
                &rooms[k],
                TRACK_CHAT,
                m / PER_GROUP,
                (m % PER_GROUP) as u32,
                payload,
            );
        }
        if m % 4 == 0 {
            let reading = Bytes::from(format!("{{\"temp\":{}}}", 20 + m));
            net.local_object(sensor, &telemetry, TRACK_TELEMETRY, m / 4, 0, reading);
        }
        net.run_for(Duration::from_millis(50));
    }
    net.run_for(Duration::from_secs(1));

    for n in 0..net.len() {
        for (k, room) in rooms.iter().enumerate() {
            if senders[k] == n {
                continue;
            }
            let got: Vec<String> = net
                .delivered(n)
                .iter()
                .filter(|d| &d.broadcast == room && d.track == TRACK_CHAT)
                .map(|d| format!("{}", d.group * PER_GROUP + u64::from(d.index)))
                .collect();
            let want: Vec<String> = (0..40).map(|m: u64| m.to_string()).collect();
            assert_eq!(
                got, want,
                "node {n}: messages of sender {k} not once each in order"
            );
        }
    }
    for &w in watchers.iter().filter(|&&w| w != sensor) {
        let got: Vec<u64> = net
            .delivered(w)
            .iter()
            .filter(|d| d.broadcast == telemetry && d.track == TRACK_TELEMETRY)
            .map(|d| d.group)
            .collect();
        assert_eq!(got, (0..10).collect::<Vec<_>>(), "node {w}'s readings");
    }

    // A late joiner gets the current group at once: the history since the last group
    // start, then what follows.
    let late = 3 * PER_SITE + 11;
    net.node_mut(late).unsubscribe(&rooms[0]);
    net.run_for(Duration::from_secs(6));
    let before = net.delivered(late).len();
    net.subscribe_to(late, rooms[0].clone());
    net.run_for(Duration::from_millis(500));
    let history: Vec<(u64, u32)> = net.delivered(late)[before..]
        .iter()
        .filter(|d| d.broadcast == rooms[0])
        .map(|d| (d.group, d.index))
        .collect();
    assert_eq!(
        history,
        (0..PER_GROUP as u32).map(|i| (4, i)).collect::<Vec<_>>(),
        "the last group, whole"
    );
}
