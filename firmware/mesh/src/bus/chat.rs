//! Chat rooms over the overlay. Each sender's messages in a room are a broadcast of its
//! own (`.chat/<room>`), so they travel the same trees as video: every subscriber gets
//! each message once and in the sender's order. Like video, a track is cut in groups,
//! and each group starts with a snapshot of the sender's recent messages (its keyframe):
//! a late joiner, who starts at the newest group, sees the history at once.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Messages per group; a group's snapshot holds up to this many earlier ones, so a late
/// joiner sees between `GROUP_LEN` and twice that of each sender.
pub const GROUP_LEN: u32 = 16;
/// Messages a room keeps for a page that opens it.
pub const ROOM_HISTORY: usize = 100;
/// Longest message text, in bytes.
pub const MAX_TEXT: usize = 2000;

/// A room's broadcast name.
pub fn broadcast_name(room: &str) -> String {
    format!(".chat/{room}")
}

/// The room a broadcast name belongs to, if it is a chat.
pub fn room_of(broadcast: &str) -> Option<&str> {
    broadcast.strip_prefix(".chat/")
}

/// Room names: `site:<site>`, `live:<stream>@<origin>` or any short name of letters,
/// digits and `-_.:@`.
pub fn check_room(room: &str) -> Result<(), String> {
    let ok = !room.is_empty()
        && room.len() <= 100
        && room
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "room '{room}' must be 1 to 100 letters, digits and - _ . : @ (e.g. site:hq)"
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sender's node id (hex), filled in from the broadcast's origin on receipt.
    #[serde(default)]
    pub from: String,
    /// The sender's display name.
    pub name: String,
    pub text: String,
    /// Sent at, ms since the Unix epoch.
    pub at_ms: u64,
    /// Per sender and room, from 1.
    pub seq: u64,
}

/// One object of a chat track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Object {
    /// A group's first object: the sender's messages before this group.
    Snapshot(Vec<Message>),
    Message(Message),
}

/// The sending side of one sender in one room: numbers messages and cuts groups.
#[derive(Debug, Default)]
pub struct Outbox {
    recent: VecDeque<Message>,
    seq: u64,
    /// (group, next index) of the current group.
    position: Option<(u64, u32)>,
}

impl Outbox {
    /// The objects to send for one new message: (group, index, object). The first of a
    /// group is a snapshot. `first_group` is where group numbers start (they must keep
    /// growing across restarts, so the driver passes a clock-based base).
    pub fn push(
        &mut self,
        first_group: u64,
        name: &str,
        text: &str,
        at_ms: u64,
    ) -> Vec<(u64, u32, Object)> {
        self.seq += 1;
        let msg = Message {
            from: String::new(),
            name: name.into(),
            text: text.into(),
            at_ms,
            seq: self.seq,
        };
        let mut out = Vec::new();
        let (group, index) = match self.position {
            Some((g, i)) if i <= GROUP_LEN => (g, i),
            Some((g, _)) => (g + 1, 0),
            None => (first_group, 0),
        };
        let index = if index == 0 {
            out.push((
                group,
                0,
                Object::Snapshot(self.recent.iter().cloned().collect()),
            ));
            1
        } else {
            index
        };
        out.push((group, index, Object::Message(msg.clone())));
        self.position = Some((group, index + 1));
        self.recent.push_back(msg);
        while self.recent.len() > GROUP_LEN as usize {
            self.recent.pop_front();
        }
        out
    }
}

/// The receiving side of a room: messages from every sender, each once, in each
/// sender's order, whatever mix of snapshots and messages arrives.
#[derive(Debug, Default)]
pub struct Room {
    last_seq: BTreeMap<String, u64>,
    history: VecDeque<Message>,
}

impl Room {
    /// Takes one object from `from`; returns the messages that are new.
    pub fn receive(&mut self, from: &str, object: Object) -> Vec<Message> {
        let candidates = match object {
            Object::Snapshot(list) => list,
            Object::Message(m) => vec![m],
        };
        let mut new = Vec::new();
        for mut m in candidates {
            let last = self.last_seq.entry(from.to_string()).or_insert(0);
            if m.seq <= *last {
                continue;
            }
            *last = m.seq;
            m.from = from.to_string();
            self.history.push_back(m.clone());
            while self.history.len() > ROOM_HISTORY {
                self.history.pop_front();
            }
            new.push(m);
        }
        new
    }

    pub fn history(&self) -> Vec<Message> {
        self.history.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_start_with_a_snapshot_of_what_came_before() {
        let mut out = Outbox::default();
        let mut objects = Vec::new();
        for k in 0..40 {
            objects.extend(out.push(1000, "ann", &format!("m{k}"), k));
        }
        // Group 1000: snapshot + 16 messages, then 1001 starts with those 16.
        let starts: Vec<&(u64, u32, Object)> = objects.iter().filter(|o| o.1 == 0).collect();
        assert_eq!(starts.len(), 3);
        assert_eq!(starts[0].2, Object::Snapshot(vec![]));
        let Object::Snapshot(s) = &starts[1].2 else {
            panic!()
        };
        assert_eq!(s.len(), GROUP_LEN as usize);
        assert_eq!(s.last().unwrap().text, "m15");
        // Indices run without holes within each group.
        for w in objects.windows(2) {
            if w[1].0 == w[0].0 {
                assert_eq!(w[1].1, w[0].1 + 1);
            } else {
                assert_eq!((w[1].0, w[1].1), (w[0].0 + 1, 0));
            }
        }
    }

    #[test]
    fn a_room_shows_each_message_once_in_order_from_any_mix_of_objects() {
        let mut out = Outbox::default();
        let objects: Vec<Object> = (0..40)
            .flat_map(|k| out.push(0, "ann", &format!("m{k}"), k))
            .map(|o| o.2)
            .collect();
        // A subscriber from the start sees every object; a late one starts at the last
        // group (its snapshot first).
        let mut early = Room::default();
        let seen: Vec<String> = objects
            .iter()
            .flat_map(|o| early.receive("aa", o.clone()))
            .map(|m| m.text)
            .collect();
        assert_eq!(seen, (0..40).map(|k| format!("m{k}")).collect::<Vec<_>>());
        let last_group = objects
            .iter()
            .rposition(|o| matches!(o, Object::Snapshot(_)))
            .unwrap();
        let mut late = Room::default();
        let seen: Vec<u64> = objects[last_group..]
            .iter()
            .flat_map(|o| late.receive("aa", o.clone()))
            .map(|m| m.seq)
            .collect();
        // The last group's snapshot (messages 17 to 32), then its own 33 to 40.
        assert_eq!(seen, (17..=40).collect::<Vec<_>>());
        assert!(seen.len() >= GROUP_LEN as usize);
        assert_eq!(late.history().last().unwrap().from, "aa");
    }

    #[test]
    fn room_names_are_checked() {
        assert!(check_room("site:hq").is_ok());
        assert!(check_room("live:foyer@a1b2c3").is_ok());
        assert!(check_room("").is_err());
        assert!(check_room("a b").is_err());
        assert!(check_room(&"x".repeat(101)).is_err());
    }
}
