//! The relay's side of sparse broadcasts (chat objects and telemetry sent by the test
//! itself, no bus): every subscriber gets each object once, in order, and a late joiner
//! the sender's last group whole.

use std::time::Duration;

use bytes::Bytes;
use cambox_mesh::msg::{BroadcastId, TRACK_TELEMETRY};

use crate::common::{world, PER_SITE};

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
