//! The driver's part of the bus: this node's own `.node` broadcast (announcement and
//! telemetry), following other nodes' ones for `cambox sensors`, routed commands and
//! replies, and chat rooms.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cambox_mesh::msg::{
    Routed, NODE_BROADCAST, ROUTED_COMMAND, ROUTED_REPLY, TRACK_CATALOG, TRACK_TELEMETRY,
};
use cambox_mesh::node::KnownBroadcast;
use cambox_mesh::{BroadcastId, NodeId};
use tokio::sync::{broadcast, oneshot};

use super::{Driver, MeshError};
use crate::bus::chat::{self, Message, Outbox, Room};
use crate::bus::{wall_ms, Announcement, NodeView, Telemetry};

/// Track of a chat broadcast.
pub const TRACK_CHAT: u8 = 4;
/// After `cambox sensors` or the page asked, other nodes' announcements and telemetry
/// are followed this long, so repeated asks are answered at once.
const FOLLOW_NODES_FOR: Duration = Duration::from_secs(60);
/// A room nobody follows any more is left after this long.
const ROOM_LINGER: Duration = Duration::from_secs(60);
/// A chat broadcast of this box with no new message for this long is withdrawn.
const CHAT_IDLE: Duration = Duration::from_secs(3600);

/// A command for this box that came over the overlay (already checked by the core).
#[derive(Debug)]
pub struct Incoming {
    pub from: NodeId,
    pub id: u64,
    pub body: Bytes,
}

/// This node's own `.node` broadcast.
pub(super) struct OwnNode {
    pub id: BroadcastId,
    /// Group numbers start from the wall clock, so they keep growing across restarts.
    pub next_group: u64,
    pub announcement: Option<Bytes>,
    pub telemetry: Option<Bytes>,
}

#[derive(Default)]
pub(super) struct Followed {
    pub announcement: Option<Announcement>,
    pub telemetry: Option<Telemetry>,
}

pub(super) struct ChatRoom {
    pub room: Room,
    pub followers: broadcast::Sender<Message>,
    pub until: Instant,
    pub subscribed: HashSet<BroadcastId>,
    /// This box's own messages in the room: its broadcast and numbering.
    pub own: Option<(BroadcastId, Outbox, Instant)>,
}

/// Where group numbers of a new broadcast start: 2^16 per ms of wall clock.
pub(super) fn group_base() -> u64 {
    wall_ms() << 16
}

impl Driver {
    pub(super) fn publish_own_node(&mut self, now: Instant) {
        let id = self
            .core
            .publish(now, NODE_BROADCAST, vec![TRACK_CATALOG, TRACK_TELEMETRY]);
        self.own_node = Some(OwnNode {
            id,
            next_group: group_base(),
            announcement: None,
            telemetry: None,
        });
    }

    /// Sends a new announcement or telemetry object as a group of its own.
    pub(super) fn set_own(&mut self, track: u8, json: Bytes) {
        let Some(own) = self.own_node.as_mut() else {
            return;
        };
        let group = own.next_group;
        own.next_group += 1;
        if track == TRACK_CATALOG {
            own.announcement = Some(json.clone());
        } else {
            own.telemetry = Some(json.clone());
        }
        let id = own.id.clone();
        let capture_us = wall_ms() * 1000;
        self.core
            .handle_local_object(&id, track, group, 0, capture_us, json);
    }

    pub(super) fn send_command(
        &mut self,
        now: Instant,
        to: NodeId,
        body: Bytes,
        reply: oneshot::Sender<Result<Bytes, MeshError>>,
    ) {
        self.next_routed_id += 1;
        let id = self.next_routed_id;
        let r = Routed::signed(&self.identity, to, ROUTED_COMMAND, id, wall_ms(), body);
        match self.core.send_routed(now, r) {
            Ok(()) => {
                self.pending_replies.insert((to, id), reply);
            }
            Err(e) => {
                let _ = reply.send(Err(MeshError::Route(e.to_string())));
            }
        }
    }

    pub(super) fn send_reply(&mut self, now: Instant, to: NodeId, id: u64, body: Bytes) {
        let r = Routed::signed(&self.identity, to, ROUTED_REPLY, id, wall_ms(), body);
        if let Err(e) = self.core.send_routed(now, r) {
            tracing::info!(%to, "cannot send a command's reply: {e}");
        }
    }

    /// A routed message the core let through.
    pub(super) fn routed(&mut self, r: Routed) {
        match r.kind {
            ROUTED_COMMAND => {
                tracing::info!(from = %r.from, id = r.id, "command over the mesh");
                let _ = self.incoming.send(Incoming {
                    from: r.from,
                    id: r.id,
                    body: r.body,
                });
            }
            ROUTED_REPLY => {
                if let Some(tx) = self.pending_replies.remove(&(r.from, r.id)) {
                    let _ = tx.send(Ok(r.body));
                }
            }
            _ => {}
        }
    }

    /// Objects of `.node` and chat broadcasts; false for anything else (media).
    pub(super) fn deliver_bus(&mut self, b: &BroadcastId, track: u8, payload: &Bytes) -> bool {
        if b.name == NODE_BROADCAST {
            let f = self.followed.entry(b.clone()).or_default();
            match track {
                TRACK_CATALOG => f.announcement = serde_json::from_slice(payload).ok(),
                TRACK_TELEMETRY => f.telemetry = serde_json::from_slice(payload).ok(),
                _ => {}
            }
            return true;
        }
        if let Some(room) = chat::room_of(&b.name) {
            if let (Some(r), TRACK_CHAT) = (self.rooms.get_mut(room), track) {
                match serde_json::from_slice::<chat::Object>(payload) {
                    Ok(o) => {
                        for m in r.room.receive(&b.origin.to_hex(), o) {
                            let _ = r.followers.send(m);
                        }
                    }
                    Err(e) => tracing::debug!(room, "unreadable chat object: {e}"),
                }
            }
            return true;
        }
        false
    }

    /// Every node of the mesh with what it announced; starts following them all.
    pub(super) fn nodes(&mut self, now: Instant) -> Vec<NodeView> {
        self.follow_nodes_until = Some(now + FOLLOW_NODES_FOR);
        let catalog = self.core.known_broadcasts(now);
        let known: HashSet<BroadcastId> = catalog.iter().map(|k| k.broadcast.clone()).collect();
        self.follow_nodes(now, &known);
        let mut out = Vec::new();
        if let Some(own) = &self.own_node {
            out.push(NodeView {
                id: self.id.to_hex(),
                short: self.id.short(),
                site: self.core.site().to_string(),
                hops: None,
                local: true,
                announcement: own
                    .announcement
                    .as_ref()
                    .and_then(|a| serde_json::from_slice(a).ok()),
                telemetry: own
                    .telemetry
                    .as_ref()
                    .and_then(|t| serde_json::from_slice(t).ok()),
            });
        }
        for KnownBroadcast {
            broadcast: b,
            site,
            hops,
            ..
        } in catalog
        {
            if b.name != NODE_BROADCAST || b.origin == self.id {
                continue;
            }
            let f = self.followed.get(&b);
            out.push(NodeView {
                id: b.origin.to_hex(),
                short: b.origin.short(),
                site,
                hops: Some(hops),
                local: false,
                announcement: f.and_then(|f| f.announcement.clone()),
                telemetry: f.and_then(|f| f.telemetry.clone()),
            });
        }
        out
    }

    /// Subscribes to every `.node` broadcast while someone wants them, and lets go after.
    /// `known`: every broadcast in the catalog now.
    /// The ids in the catalog as it stands: what the node and chat followers follow.
    pub(super) fn known_ids(&self, now: Instant) -> HashSet<BroadcastId> {
        self.core
            .known_broadcasts(now)
            .into_iter()
            .map(|k| k.broadcast)
            .collect()
    }

    pub(super) fn follow_nodes(&mut self, now: Instant, known: &HashSet<BroadcastId>) {
        let wanted = self.follow_nodes_until.is_some_and(|t| now < t);
        let known: HashSet<BroadcastId> = known
            .iter()
            .filter(|b| b.name == NODE_BROADCAST && b.origin != self.id)
            .cloned()
            .collect();
        let gone: Vec<BroadcastId> = self
            .followed
            .keys()
            .filter(|b| !wanted || !known.contains(*b))
            .cloned()
            .collect();
        for b in gone {
            self.followed.remove(&b);
            self.core.unsubscribe(&b);
        }
        if wanted {
            for b in known {
                if !self.followed.contains_key(&b) {
                    self.followed.insert(b.clone(), Followed::default());
                    self.core.subscribe(now, b);
                }
            }
        }
    }

    fn room(&mut self, now: Instant, room: &str) -> &mut ChatRoom {
        self.rooms
            .entry(room.to_string())
            .or_insert_with(|| ChatRoom {
                room: Room::default(),
                followers: broadcast::channel(256).0,
                until: now + ROOM_LINGER,
                subscribed: HashSet::new(),
                own: None,
            })
    }

    pub(super) fn chat_follow(
        &mut self,
        now: Instant,
        room: &str,
    ) -> (Vec<Message>, broadcast::Receiver<Message>) {
        let r = self.room(now, room);
        r.until = r.until.max(now + ROOM_LINGER);
        let out = (r.room.history(), r.followers.subscribe());
        let known = self.known_ids(now);
        self.follow_rooms(now, &known);
        out
    }

    pub(super) fn chat_send(
        &mut self,
        now: Instant,
        room: &str,
        name: &str,
        text: &str,
    ) -> Message {
        let me = self.id.to_hex();
        let name_b = chat::broadcast_name(room);
        let r = self.room(now, room);
        r.until = r.until.max(now + ROOM_LINGER);
        if r.own.is_none() {
            let id = self.core.publish(now, &name_b, vec![TRACK_CHAT]);
            let r = self.room(now, room);
            r.own = Some((id, Outbox::default(), now));
        }
        let r = self.rooms.get_mut(room).expect("made above");
        let (id, outbox, last) = r.own.as_mut().expect("made above");
        *last = now;
        let id = id.clone();
        let objects = outbox.push(group_base(), name, text, wall_ms());
        let mut shown = Vec::new();
        for (group, index, o) in &objects {
            if let chat::Object::Message(_) = o {
                shown.extend(r.room.receive(&me, o.clone()));
            }
            let json = Bytes::from(serde_json::to_vec(o).unwrap_or_default());
            self.core
                .handle_local_object(&id, TRACK_CHAT, *group, *index, wall_ms() * 1000, json);
        }
        let r = self.rooms.get_mut(room).expect("made above");
        for m in &shown {
            let _ = r.followers.send(m.clone());
        }
        shown.pop().unwrap_or_else(|| Message {
            from: me,
            name: name.into(),
            text: text.into(),
            at_ms: wall_ms(),
            seq: 0,
        })
    }

    /// Joins every sender's broadcast of the rooms being followed; leaves rooms nobody
    /// follows and withdraws this box's idle chat broadcasts. `known`: every broadcast in
    /// the catalog now.
    pub(super) fn follow_rooms(&mut self, now: Instant, known: &HashSet<BroadcastId>) {
        let known: Vec<&BroadcastId> = known
            .iter()
            .filter(|b| b.origin != self.id && chat::room_of(&b.name).is_some())
            .collect();
        let mut leave = Vec::new();
        let mut join = Vec::new();
        let mut withdraw = Vec::new();
        for (name, r) in self.rooms.iter_mut() {
            let followed = r.followers.receiver_count() > 0 || now < r.until;
            let senders: HashSet<BroadcastId> = known
                .iter()
                .filter(|b| followed && chat::room_of(&b.name) == Some(name.as_str()))
                .map(|b| (*b).clone())
                .collect();
            leave.extend(r.subscribed.difference(&senders).cloned());
            join.extend(senders.difference(&r.subscribed).cloned());
            r.subscribed = senders;
            if r.own
                .as_ref()
                .is_some_and(|(_, _, last)| now >= *last + CHAT_IDLE)
            {
                if let Some((id, _, _)) = r.own.take() {
                    withdraw.push(id);
                }
            }
        }
        for b in leave {
            self.core.unsubscribe(&b);
        }
        for b in join {
            self.core.subscribe(now, b);
        }
        for b in withdraw {
            self.core.unpublish(now, &b);
        }
        self.rooms
            .retain(|_, r| r.own.is_some() || r.followers.receiver_count() > 0 || now < r.until);
    }
}

/// Keys of commands awaiting replies.
pub(super) type PendingReplies = HashMap<(NodeId, u64), oneshot::Sender<Result<Bytes, MeshError>>>;
