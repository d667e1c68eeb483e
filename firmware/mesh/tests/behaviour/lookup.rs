//! Reaching one node without any node holding a route to every node: a node's `.node`
//! entry stays in its site, and a command for a node of another site goes after a lookup
//! (`Find`, answered by a node that reaches the target, `Found` back the same way).

use std::time::Duration;

use bytes::Bytes;
use cambox_mesh::msg::{Msg, NodeId, Routed, NODE_BROADCAST, ROUTED_COMMAND, ROUTED_REPLY};
use cambox_mesh::routed::CommandAllow;
use cambox_mesh::sim::{LinkSpec, Net};

use crate::common::{watched_in_every_site, PER_SITE, SITES};

fn wan(net: &mut Net) -> LinkSpec {
    let delay = Duration::from_millis(5 + net.random() % 36);
    LinkSpec::wan(delay, Duration::from_millis(2), 0.01)
}

/// Every box of `net` takes commands and has announced itself, 3 s ago.
fn announced(mut net: Net) -> Net {
    for n in 0..net.len() {
        net.node_mut(n).set_command_allow(CommandAllow::Anyone);
        net.announce(n);
    }
    net.run_for(Duration::from_secs(3));
    net
}

/// Sites whose every box has two links to random boxes of other sites.
fn announced_world(seed: u64) -> Net {
    announced(Net::sites(seed, SITES, PER_SITE, 2, wan))
}

#[test]
fn nodes_of_other_sites_are_found_on_demand_and_nobody_holds_every_node() {
    let mut net = announced_world(5);
    // Every node knows the nodes of its own site and no other.
    for n in 0..net.len() {
        let nodes: Vec<NodeId> = net
            .node(n)
            .known_broadcasts(net.now())
            .into_iter()
            .filter(|k| k.broadcast.name == NODE_BROADCAST)
            .map(|k| k.broadcast.origin)
            .collect();
        assert_eq!(
            nodes.len(),
            PER_SITE,
            "node {n} knows {} nodes",
            nodes.len()
        );
        for id in nodes {
            let other = net.index_of(&id).unwrap();
            assert_eq!(net.site_of(other), net.site_of(n), "node {n} knows {other}");
        }
    }

    // Commands from one node to 30 nodes of other sites, each answered (the simulator
    // replies to every command it delivers).
    let asker = 7;
    let mut targets = Vec::new();
    while targets.len() < 30 {
        let t = (net.random() % net.len() as u64) as usize;
        if net.site_of(t) != net.site_of(asker) && !targets.contains(&t) {
            targets.push(t);
        }
    }
    let mut rtts = Vec::new();
    for (i, &t) in targets.iter().enumerate() {
        let sent = net.now();
        net.command(asker, t, i as u64, Bytes::from_static(b"{}"))
            .expect("a lookup starts");
        net.run_for(Duration::from_millis(1500));
        let reply = net
            .routed(asker)
            .iter()
            .find(|(_, r)| r.kind == ROUTED_REPLY && r.id == i as u64 && r.from == net.id(t))
            .unwrap_or_else(|| panic!("no reply from node {t} (site {})", net.site_of(t)));
        rtts.push(reply.0 - sent);
        let got = net
            .routed(t)
            .iter()
            .filter(|(_, r)| r.kind == ROUTED_COMMAND && r.id == i as u64)
            .count();
        assert_eq!(got, 1, "node {t} got command {i} {got} times");
    }
    rtts.sort();
    let stats = net.node(asker).lookup_stats();
    println!(
        "30 commands to other sites: median round trip {:?}, worst {:?}, {stats:?}",
        rtts[rtts.len() / 2],
        rtts[rtts.len() - 1]
    );
    assert_eq!((stats.started, stats.answered), (30, 30));

    // A second command to the same node takes the way found: no new lookup.
    let t = targets[0];
    net.command(asker, t, 99, Bytes::from_static(b"{}"))
        .expect("sent");
    net.run_for(Duration::from_millis(500));
    assert!(net
        .routed(asker)
        .iter()
        .any(|(_, r)| r.kind == ROUTED_REPLY && r.id == 99));
    assert_eq!(net.node(asker).lookup_stats().started, 30);
}

#[test]
fn a_lookup_nobody_answers_gives_up_and_leaves_nothing_behind() {
    let mut net = announced_world(6);
    let asker = 3;
    let before = net.node(asker).state_entries();
    let nobody = NodeId([0xab; 32]);
    let r = Routed::signed(
        net.identity(asker),
        nobody,
        ROUTED_COMMAND,
        1,
        net.wall_ms(),
        Bytes::from_static(b"{}"),
    );
    net.send_routed(asker, r).expect("a lookup starts");
    net.run_for(Duration::from_millis(2500));
    let routed = net.node(asker).routed_stats();
    let lookups = net.node(asker).lookup_stats();
    assert_eq!(routed.unroutable, 1, "{routed:?}");
    assert_eq!((lookups.started, lookups.answered), (1, 0));
    // The question reached every node once; each passed it on at most once.
    let passed: u64 = (0..net.len())
        .map(|n| net.node(n).lookup_stats().passed_on)
        .sum();
    assert!(
        passed < net.len() as u64,
        "{passed} passes for {} nodes",
        net.len()
    );
    // Questions are forgotten after ten seconds.
    net.run_for(Duration::from_secs(10));
    assert_eq!(net.node(asker).state_entries(), before);
}

#[test]
fn a_flood_of_questions_is_dropped_not_passed_on_and_stays_bounded() {
    let mut net = announced_world(8);
    let (liar, victim) = (0, 1);
    let before = net.node(victim).state_entries();
    for i in 0..20_000u64 {
        net.inject(
            liar,
            victim,
            Msg::Find {
                question: i,
                target: NodeId([0xcd; 32]),
                hops: 32,
            },
        );
        if i % 2000 == 0 {
            net.run_for(Duration::from_millis(100));
        }
    }
    net.run_for(Duration::from_secs(1));
    let stats = net.node(victim).lookup_stats();
    let entries = net.node(victim).state_entries();
    println!("after 20 000 questions in 1 s: {stats:?}, state {before} -> {entries}");
    assert!(stats.dropped > 15_000, "{stats:?}");
    assert!(stats.passed_on <= 200 + 400, "{stats:?}");
    assert!(
        net.linked(liar, victim),
        "questions are dropped, not held against it"
    );
    let limits = cambox_mesh::limits::Limits::default();
    assert!(
        entries <= before + 2 * limits.lookups_total,
        "{before} -> {entries}"
    );
}

#[test]
fn a_lookup_crosses_each_site_over_its_gateways_only() {
    // Sites linked as the registry links them: three gateways a site.
    let mut net = announced(Net::sites_by_registry(8, &[PER_SITE; SITES], wan));
    let asker = 11;
    let target = (0..net.len())
        .rev()
        .find(|&t| net.site_of(t) != net.site_of(asker))
        .expect("another site");
    let find_bytes = |net: &Net| net.control_by_type.get("Find").copied().unwrap_or(0);
    let before = find_bytes(&net);
    net.command(asker, target, 1, Bytes::from_static(b"{}"))
        .expect("a lookup starts");
    net.run_for(Duration::from_millis(1500));
    assert!(
        net.routed(asker)
            .iter()
            .any(|(_, r)| r.kind == ROUTED_REPLY && r.id == 1),
        "no reply from node {target}"
    );
    // In a full-mesh site any box answers for every box of it, so a question goes into
    // a site only as far as the boxes with links beyond it: fewer questions than boxes.
    // Passed on to every site-mate by each gateway that heard it, it took 260 here.
    let one = cambox_mesh::wire::encoded_len(&Msg::Find {
        question: 1,
        target: net.id(target),
        hops: 1,
    }) as u64;
    let questions = (find_bytes(&net) - before) / one;
    let boxes = net.len() as u64;
    println!("one lookup among {boxes} boxes in {SITES} sites: {questions} questions");
    assert!(
        questions < boxes,
        "{questions} questions for one lookup among {boxes} boxes"
    );
}

#[test]
fn a_lookup_does_not_cross_the_links_trees_dialed() {
    // Sites linked as the registry links them; broadcasts watched in every site, so that
    // their trees dial links of their own across sites (redirects below other sites).
    let mut net = announced(Net::sites_by_registry(9, &[PER_SITE; SITES], wan));
    watched_in_every_site(&mut net, &[0, PER_SITE, 2 * PER_SITE], "cam");
    net.run_for(Duration::from_secs(3));
    let dialed_across = net
        .dialed_links()
        .into_iter()
        .filter(|&(a, b)| net.site_of(a) != net.site_of(b))
        .count();
    assert!(dialed_across > 0, "the trees dialed no link across sites");

    let finds = |net: &Net| net.control_over_dialed.get("Find").copied().unwrap_or(0);
    let before = finds(&net);
    let mut replies = 0;
    for (i, (asker, target)) in [(PER_SITE + 3, net.len() - 2), (5, 4 * PER_SITE + 7)]
        .into_iter()
        .enumerate()
    {
        net.command(asker, target, i as u64, Bytes::from_static(b"{}"))
            .expect("a lookup starts");
        net.run_for(Duration::from_millis(1500));
        replies += net
            .routed(asker)
            .iter()
            .filter(|(_, r)| r.kind == ROUTED_REPLY && r.id == i as u64)
            .count();
    }
    assert_eq!(replies, 2, "a lookup went unanswered");
    println!("{dialed_across} links across sites that trees dialed");
    assert_eq!(
        finds(&net) - before,
        0,
        "questions crossed the {dialed_across} links that trees dialed"
    );
}
