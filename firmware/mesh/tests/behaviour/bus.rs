//! The bus's state machines (`cambox_mesh::bus`), run by every simulated node as the box's
//! driver runs them: chat rooms across sites, following site-mates' announcements and
//! telemetry, and commands with their replies.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use cambox_mesh::bus::chat::{self, GROUP_LEN};
use cambox_mesh::bus::FOLLOW_NODES_FOR;
use cambox_mesh::msg::{Routed, ROUTED_REPLY, TRACK_CATALOG, TRACK_TELEMETRY};
use cambox_mesh::routed::CommandAllow;
use cambox_mesh::sim::{LinkSpec, Net};
use cambox_mesh::{BroadcastId, NodeId};

const PER_SITE: usize = 5;
const SITES: usize = 8;

fn wan(_: &mut Net) -> LinkSpec {
    LinkSpec::wan(Duration::from_millis(12), Duration::from_millis(6), 0.01)
}

fn world(seed: u64) -> Net {
    let mut net = Net::sites_by_registry(seed, &[PER_SITE; SITES], wan);
    net.run_for(Duration::from_secs(2));
    net
}

/// Each sender's message numbers as node `n` saw them in `room`, by sender.
fn seen_by_sender(net: &Net, n: usize, room: &str) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for c in net.chat_seen(n).iter().filter(|c| c.room == room) {
        out.entry(c.message.from.clone())
            .or_default()
            .push(c.message.seq);
    }
    out
}

#[test]
fn chat_reaches_every_follower_once_in_order_and_a_late_one_sees_the_history() {
    let mut net = world(3);
    let followers: Vec<usize> = (0..SITES).map(|s| s * PER_SITE + 2).collect();
    let senders = [PER_SITE + 3, 6 * PER_SITE + 3];
    for &n in followers.iter().chain(&senders) {
        assert!(net.chat_follow(n, "ops").is_empty(), "a new room is empty");
    }
    net.run_for(Duration::from_millis(500));
    for m in 0..40 {
        for (k, &s) in senders.iter().enumerate() {
            net.chat_send(s, "ops", &format!("sender{k}"), &format!("m{m}"));
        }
        net.run_for(Duration::from_millis(100));
    }
    net.run_for(Duration::from_secs(3));

    let all: Vec<u64> = (1..=40).collect();
    for &n in followers.iter().chain(&senders) {
        let seen = seen_by_sender(&net, n, "ops");
        for &s in &senders {
            assert_eq!(
                seen.get(&net.id(s).to_hex()),
                Some(&all),
                "node {n} (site {}): sender {s}'s messages once each, in order",
                net.site_of(n)
            );
        }
        assert_eq!(seen.len(), senders.len(), "node {n} saw no one else");
    }

    // A quiet room costs nothing: its followers neither re-join nor re-tell their
    // catalogs (a chat broadcast goes quiet between messages; its parent is not dead).
    let parents = |net: &Net| -> Vec<Option<NodeId>> {
        let mut out = Vec::new();
        for &n in &followers {
            for &s in senders.iter().filter(|&&s| s != n) {
                let b = BroadcastId {
                    origin: net.id(s),
                    name: chat::broadcast_name("ops").into(),
                };
                out.push(net.node(n).parent(&b));
            }
        }
        out
    };
    let (before, sent) = (parents(&net), net.control_total);
    assert!(before.iter().all(|p| p.is_some()), "{before:?}");
    net.run_for(Duration::from_secs(5));
    assert_eq!(
        parents(&net),
        before,
        "the same parents after 5 s of silence"
    );
    assert_eq!(
        net.control_total - sent,
        0,
        "control bytes in 5 s of silence"
    );

    // Someone opening the room now sees, from each sender, the newest group's snapshot
    // and messages: at least GROUP_LEN of the latest, in order, up to the last.
    let late = 4 * PER_SITE + 1;
    net.chat_follow(late, "ops");
    net.run_for(Duration::from_secs(2));
    let seen = seen_by_sender(&net, late, "ops");
    for &s in &senders {
        let got = &seen[&net.id(s).to_hex()];
        assert!(got.len() >= GROUP_LEN as usize, "late joiner got {got:?}");
        let want: Vec<u64> = (41 - got.len() as u64..=40).collect();
        assert_eq!(got, &want, "the latest of sender {s}, in order");
    }
    // And a second look at the room gives the same history at once.
    let history = net.chat_follow(late, "ops");
    assert_eq!(history.len(), 2 * seen[&net.id(senders[0]).to_hex()].len());
}

#[test]
fn asking_for_the_nodes_follows_site_mates_announcements_and_latest_readings_for_a_while() {
    let mut net = world(5);
    let site: Vec<usize> = (2 * PER_SITE..3 * PER_SITE).collect();
    let mut own = Vec::new();
    for &n in &site {
        own.push(net.announce(n));
        let a = format!("{{\"name\":\"box{n}\"}}");
        net.set_own(n, TRACK_CATALOG, Bytes::from(a));
    }
    net.run_for(Duration::from_secs(1));
    let asker = site[0];
    let sensor = site[3];
    let first = net.nodes_seen(asker);
    assert_eq!(
        first.len(),
        PER_SITE,
        "itself and its site-mates: {first:?}"
    );
    assert!(first[0].hops.is_none(), "itself first");
    for k in 0..5 {
        let t = format!("{{\"temp\":{}}}", 20 + k);
        net.set_own(sensor, TRACK_TELEMETRY, Bytes::from(t));
        net.run_for(Duration::from_millis(300));
    }
    let seen = net.nodes_seen(asker);
    for (k, &n) in site.iter().enumerate() {
        let s = seen
            .iter()
            .find(|s| s.id == net.id(n))
            .unwrap_or_else(|| panic!("node {n} listed"));
        let want = format!("{{\"name\":\"box{n}\"}}");
        assert_eq!(s.announcement.as_deref(), Some(want.as_bytes()), "{k}");
    }
    let readings = seen.iter().find(|s| s.id == net.id(sensor)).unwrap();
    assert_eq!(readings.telemetry.as_deref(), Some(&b"{\"temp\":24}"[..]));

    // Nobody asks again: the asker lets go of the site-mates' broadcasts.
    assert!(net.node(asker).parent(&own[3]).is_some(), "followed now");
    net.run_for(FOLLOW_NODES_FOR + Duration::from_secs(1));
    for b in &own[1..] {
        assert_eq!(net.node(asker).parent(b), None, "{b:?} let go");
    }
}

#[test]
fn commands_sent_through_the_bus_get_their_own_replies_across_sites() {
    let mut net = world(9);
    for n in 0..net.len() {
        net.announce(n);
        net.node_mut(n).set_command_allow(CommandAllow::Anyone);
    }
    net.auto_reply = true;
    net.run_for(Duration::from_secs(1));
    let from = 1;
    let mut asked = BTreeMap::new();
    for site in 1..SITES {
        let to = site * PER_SITE + 4;
        let body = Bytes::from(format!("to {to}"));
        let id = net
            .ask(from, to, body.clone())
            .expect("a route or a lookup");
        asked.insert(id, (net.id(to), body));
        net.run_for(Duration::from_millis(20));
    }
    // A reply to no command of the asker's is not surfaced.
    let stranger = 7 * PER_SITE;
    let forged = Routed::signed(
        net.identity(stranger),
        net.id(from),
        ROUTED_REPLY,
        4242,
        net.wall_ms(),
        Bytes::from_static(b"unasked"),
    );
    net.send_routed(stranger, forged).unwrap();
    net.run_for(Duration::from_secs(2));

    let answered = net.answered(from);
    assert_eq!(answered.len(), asked.len(), "{answered:?}");
    for a in answered {
        let (to, body) = &asked[&a.id];
        assert_eq!(
            (&a.from, &a.body),
            (to, body),
            "reply {} from its target",
            a.id
        );
        assert!(a.at > a.sent);
    }
}
