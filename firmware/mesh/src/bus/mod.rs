//! The bus besides video, sans IO: a node's own `.node` broadcast (what it offers and
//! what it reads), following other nodes' ones, chat rooms, and commands awaiting their
//! replies. The box's driver and the simulator run the same state machines: the driver
//! only turns [`BusEvent`]s into channels and JSON into views for people.

pub mod chat;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::identity::Identity;
use crate::msg::{
    Routed, NODE_BROADCAST, ROUTED_COMMAND, ROUTED_REPLY, ROUTED_WATCHING, TRACK_CATALOG,
    TRACK_CHAT, TRACK_TELEMETRY,
};
use crate::node::{KnownBroadcast, Node, RouteError};
use crate::{BroadcastId, NodeId};
use chat::{Message, Outbox, Room};

/// After someone asked for the mesh's nodes, their announcements and telemetry are
/// followed this long, so repeated asks are answered at once.
pub const FOLLOW_NODES_FOR: Duration = Duration::from_secs(60);
/// A room nobody follows any more is left after this long (a reloaded page finds it).
pub const ROOM_LINGER: Duration = Duration::from_secs(60);
/// A chat broadcast of this node with no new message for this long is withdrawn.
pub const CHAT_IDLE: Duration = Duration::from_secs(3600);
/// A command's reply is awaited this long; a later one is dropped (callers give up sooner).
pub const REPLY_WAIT: Duration = Duration::from_secs(120);

/// What the bus has for the node's user. `W` is whatever the caller of a command waits
/// on (a channel in the box, a send time in the simulator).
#[derive(Debug)]
pub enum BusEvent<W> {
    /// A command for this node, already checked by the core (signature, age, allow list).
    Command { from: NodeId, id: u64, body: Bytes },
    /// The reply to a command this node sent.
    Reply {
        from: NodeId,
        id: u64,
        body: Bytes,
        waiter: W,
    },
    /// A message new to this node in a followed room.
    Chat { room: String, message: Message },
    /// Who watches this node's stream through node `from` now (JSON, the sender's whole
    /// list each time).
    Watching { from: NodeId, body: Bytes },
}

/// A node of the mesh with what it last said, as `cambox sensors` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSeen {
    pub id: NodeId,
    pub site: String,
    /// Links to that node (None for this node).
    pub hops: Option<usize>,
    /// The JSON of its announcement and its latest telemetry, once they arrived.
    pub announcement: Option<Bytes>,
    pub telemetry: Option<Bytes>,
}

#[derive(Debug)]
struct OwnNode {
    id: BroadcastId,
    /// Group numbers start from the wall clock, so they keep growing across restarts.
    next_group: u64,
    announcement: Option<Bytes>,
    telemetry: Option<Bytes>,
}

#[derive(Debug, Default)]
struct Followed {
    announcement: Option<Bytes>,
    telemetry: Option<Bytes>,
}

#[derive(Debug)]
struct ChatRoom {
    room: Room,
    until: Instant,
    /// Senders' broadcasts this node subscribed to.
    subscribed: BTreeSet<BroadcastId>,
    /// This node's own messages in the room: its broadcast, numbering and last message.
    own: Option<(BroadcastId, Outbox, Instant)>,
}

/// Its maps are ordered, not hashed: it subscribes and leaves in the order it walks
/// them, and with a hash map's random order two runs of one simulation sent their
/// messages in different orders.
#[derive(Debug)]
pub struct Bus<W> {
    id: NodeId,
    own_node: Option<OwnNode>,
    followed: BTreeMap<BroadcastId, Followed>,
    follow_nodes_until: Option<Instant>,
    rooms: BTreeMap<String, ChatRoom>,
    waiting: BTreeMap<(NodeId, u64), (Instant, W)>,
    next_routed_id: u64,
    events: VecDeque<BusEvent<W>>,
}

/// Where group numbers of a new broadcast start: 2^16 per ms of wall clock.
fn group_base(core: &Node, now: Instant) -> u64 {
    core.wall_ms(now) << 16
}

impl<W> Bus<W> {
    /// `first_routed_id`: where command ids start; it must grow across restarts (the
    /// receiver drops ids it saw), so a box derives it from its clock or a counter.
    pub fn new(id: NodeId, first_routed_id: u64) -> Self {
        Self {
            id,
            own_node: None,
            followed: BTreeMap::new(),
            follow_nodes_until: None,
            rooms: BTreeMap::new(),
            waiting: BTreeMap::new(),
            next_routed_id: first_routed_id,
            events: VecDeque::new(),
        }
    }

    /// Publishes this node's `.node` broadcast: its route for commands, and where its
    /// announcement and telemetry go.
    pub fn publish_own_node(&mut self, core: &mut Node, now: Instant) -> BroadcastId {
        let id = core.publish(now, NODE_BROADCAST, vec![TRACK_CATALOG, TRACK_TELEMETRY]);
        self.own_node = Some(OwnNode {
            id: id.clone(),
            next_group: group_base(core, now),
            announcement: None,
            telemetry: None,
        });
        id
    }

    /// Sends a new announcement (`TRACK_CATALOG`) or telemetry object as a group of its
    /// own, so a late follower gets the latest at once.
    pub fn set_own(&mut self, core: &mut Node, now: Instant, track: u8, json: Bytes) {
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
        let capture_us = core.wall_ms(now) * 1000;
        core.handle_local_object(&own.id, track, group, 0, capture_us, json);
    }

    /// Sends a signed command to `to`; its reply comes as [`BusEvent::Reply`] with
    /// `waiter`. Gives the waiter back when there is no way to `to`.
    pub fn send_command(
        &mut self,
        core: &mut Node,
        identity: &Identity,
        now: Instant,
        to: NodeId,
        body: Bytes,
        waiter: W,
    ) -> Result<u64, (RouteError, W)> {
        match self.send_new(core, identity, now, to, ROUTED_COMMAND, body) {
            Ok(id) => {
                self.waiting.insert((to, id), (now, waiter));
                Ok(id)
            }
            Err(e) => Err((e, waiter)),
        }
    }

    /// Sends a routed message of `kind` with an id of its own; the id.
    fn send_new(
        &mut self,
        core: &mut Node,
        identity: &Identity,
        now: Instant,
        to: NodeId,
        kind: u8,
        body: Bytes,
    ) -> Result<u64, RouteError> {
        self.next_routed_id += 1;
        let id = self.next_routed_id;
        let r = Routed::signed(identity, to, kind, id, core.wall_ms(now), body);
        core.send_routed(now, r).map(|()| id)
    }

    /// Answers command `id` of node `to`.
    pub fn send_reply(
        &mut self,
        core: &mut Node,
        identity: &Identity,
        now: Instant,
        to: NodeId,
        id: u64,
        body: Bytes,
    ) -> Result<(), RouteError> {
        let r = Routed::signed(identity, to, ROUTED_REPLY, id, core.wall_ms(now), body);
        core.send_routed(now, r)
    }

    /// Tells node `to` who watches its stream through this node (its whole list).
    pub fn send_watching(
        &mut self,
        core: &mut Node,
        identity: &Identity,
        now: Instant,
        to: NodeId,
        body: Bytes,
    ) -> Result<(), RouteError> {
        self.send_new(core, identity, now, to, ROUTED_WATCHING, body)
            .map(|_| ())
    }

    /// A routed message the core let through (its `Event::Routed`).
    pub fn handle_routed(&mut self, r: Routed) {
        match r.kind {
            ROUTED_COMMAND => self.events.push_back(BusEvent::Command {
                from: r.from,
                id: r.id,
                body: r.body,
            }),
            ROUTED_WATCHING => self.events.push_back(BusEvent::Watching {
                from: r.from,
                body: r.body,
            }),
            ROUTED_REPLY => {
                if let Some((_, waiter)) = self.waiting.remove(&(r.from, r.id)) {
                    self.events.push_back(BusEvent::Reply {
                        from: r.from,
                        id: r.id,
                        body: r.body,
                        waiter,
                    });
                }
            }
            _ => {}
        }
    }

    /// An object the core delivered: takes those of `.node` and chat broadcasts and
    /// returns true; false for anything else (media).
    pub fn handle_object(&mut self, b: &BroadcastId, track: u8, payload: &Bytes) -> bool {
        if b.name == NODE_BROADCAST {
            if let Some(f) = self.followed.get_mut(b) {
                match track {
                    TRACK_CATALOG => f.announcement = Some(payload.clone()),
                    TRACK_TELEMETRY => f.telemetry = Some(payload.clone()),
                    _ => {}
                }
            }
            return true;
        }
        let Some(room) = chat::room_of(&b.name) else {
            return false;
        };
        if let (Some(r), TRACK_CHAT) = (self.rooms.get_mut(room), track) {
            match serde_json::from_slice::<chat::Object>(payload) {
                Ok(o) => {
                    for message in r.room.receive(&b.origin.to_hex(), o) {
                        self.events.push_back(BusEvent::Chat {
                            room: room.to_string(),
                            message,
                        });
                    }
                }
                Err(e) => tracing::debug!(room, "unreadable chat object: {e}"),
            }
        }
        true
    }

    /// Every node of the mesh with what it said; starts following them all for
    /// [`FOLLOW_NODES_FOR`] (what they said arrives with the objects that follow).
    pub fn nodes(&mut self, core: &mut Node, now: Instant) -> Vec<NodeSeen> {
        self.follow_nodes_until = Some(now + FOLLOW_NODES_FOR);
        let catalog = core.known_broadcasts(now);
        self.follow_nodes(core, now, &catalog);
        let mut out = Vec::new();
        if let Some(own) = &self.own_node {
            out.push(NodeSeen {
                id: self.id,
                site: core.site().to_string(),
                hops: None,
                announcement: own.announcement.clone(),
                telemetry: own.telemetry.clone(),
            });
        }
        for k in catalog {
            if k.broadcast.name != NODE_BROADCAST || k.broadcast.origin == self.id {
                continue;
            }
            let f = self.followed.get(&k.broadcast);
            out.push(NodeSeen {
                id: k.broadcast.origin,
                site: k.site,
                hops: Some(k.hops),
                announcement: f.and_then(|f| f.announcement.clone()),
                telemetry: f.and_then(|f| f.telemetry.clone()),
            });
        }
        out
    }

    /// Starts following `room` (for [`ROOM_LINGER`] at least) and gives its history.
    pub fn chat_follow(&mut self, core: &mut Node, now: Instant, room: &str) -> Vec<Message> {
        self.hold_room(now, room);
        let history = self.rooms[room].room.history();
        let catalog = core.known_broadcasts(now);
        self.follow_rooms(core, now, &catalog);
        history
    }

    /// Keeps `room` followed for [`ROOM_LINGER`] from now (someone still listens).
    pub fn hold_room(&mut self, now: Instant, room: &str) {
        let r = self
            .rooms
            .entry(room.to_string())
            .or_insert_with(|| ChatRoom {
                room: Room::default(),
                until: now,
                subscribed: BTreeSet::new(),
                own: None,
            });
        r.until = r.until.max(now + ROOM_LINGER);
    }

    /// Sends a message to `room` as this node's broadcast in it (made on the first
    /// message); returns it as followers see it.
    pub fn chat_send(
        &mut self,
        core: &mut Node,
        now: Instant,
        room: &str,
        name: &str,
        text: &str,
    ) -> Message {
        self.hold_room(now, room);
        let r = self.rooms.get_mut(room).expect("held above");
        let (id, outbox, last) = r.own.get_or_insert_with(|| {
            let id = core.publish(now, &chat::broadcast_name(room), vec![TRACK_CHAT]);
            (id, Outbox::default(), now)
        });
        *last = now;
        let wall = core.wall_ms(now);
        let me = self.id.to_hex();
        let mut shown = Vec::new();
        for (group, index, o) in outbox.push(group_base(core, now), name, text, wall) {
            if let chat::Object::Message(_) = o {
                shown.extend(r.room.receive(&me, o.clone()));
            }
            let json = Bytes::from(serde_json::to_vec(&o).unwrap_or_default());
            core.handle_local_object(id, TRACK_CHAT, group, index, wall * 1000, json);
        }
        for m in &shown {
            self.events.push_back(BusEvent::Chat {
                room: room.to_string(),
                message: m.clone(),
            });
        }
        shown.pop().unwrap_or_else(|| Message {
            from: me,
            name: name.into(),
            text: text.into(),
            at_ms: wall,
            seq: 0,
        })
    }

    /// Now and then (the box: twice a second): joins new senders of followed rooms and
    /// new nodes while they are followed, lets go of the rest, withdraws idle chat
    /// broadcasts of this node, and forgets replies nobody waits for any more.
    /// `catalog`: the core's `known_broadcasts` now.
    pub fn tick(&mut self, core: &mut Node, now: Instant, catalog: &[KnownBroadcast]) {
        self.waiting
            .retain(|_, (sent, _)| now.saturating_duration_since(*sent) < REPLY_WAIT);
        self.follow_nodes(core, now, catalog);
        self.follow_rooms(core, now, catalog);
        if self.follow_nodes_until.is_some_and(|t| now >= t) {
            self.follow_nodes_until = None;
        }
    }

    /// True when the bus follows nothing and awaits no reply: ticking it does nothing.
    pub fn is_idle(&self) -> bool {
        self.followed.is_empty()
            && self.follow_nodes_until.is_none()
            && self.rooms.is_empty()
            && self.waiting.is_empty()
    }

    /// Forgets the commands whose waiter `keep` says no to (a caller that gave up).
    pub fn retain_waiting(&mut self, mut keep: impl FnMut(&W) -> bool) {
        self.waiting.retain(|_, (_, w)| keep(w));
    }

    pub fn poll_event(&mut self) -> Option<BusEvent<W>> {
        self.events.pop_front()
    }

    /// Subscribes to every other `.node` broadcast while someone wants them, and lets go
    /// after (or of those that left the catalog).
    fn follow_nodes(&mut self, core: &mut Node, now: Instant, catalog: &[KnownBroadcast]) {
        let wanted = self.follow_nodes_until.is_some_and(|t| now < t);
        let known: BTreeSet<&BroadcastId> = catalog
            .iter()
            .map(|k| &k.broadcast)
            .filter(|b| b.name == NODE_BROADCAST && b.origin != self.id)
            .collect();
        let gone: Vec<BroadcastId> = self
            .followed
            .keys()
            .filter(|b| !wanted || !known.contains(b))
            .cloned()
            .collect();
        for b in gone {
            self.followed.remove(&b);
            core.unsubscribe(&b);
        }
        if wanted {
            for b in known {
                if !self.followed.contains_key(b) {
                    self.followed.insert(b.clone(), Followed::default());
                    core.subscribe(now, b.clone());
                }
            }
        }
    }

    /// Joins every sender's broadcast of the rooms being followed; leaves rooms past
    /// their linger and withdraws this node's idle chat broadcasts.
    fn follow_rooms(&mut self, core: &mut Node, now: Instant, catalog: &[KnownBroadcast]) {
        let senders: Vec<(&str, &BroadcastId)> = catalog
            .iter()
            .map(|k| &k.broadcast)
            .filter(|b| b.origin != self.id)
            .filter_map(|b| Some((chat::room_of(&b.name)?, b)))
            .collect();
        for (name, r) in self.rooms.iter_mut() {
            let followed = now < r.until;
            let now_senders: BTreeSet<BroadcastId> = senders
                .iter()
                .filter(|(room, _)| followed && room == name)
                .map(|(_, b)| (*b).clone())
                .collect();
            for b in r.subscribed.difference(&now_senders) {
                core.unsubscribe(b);
            }
            for b in now_senders.difference(&r.subscribed) {
                core.subscribe(now, b.clone());
            }
            r.subscribed = now_senders;
            if r.own
                .as_ref()
                .is_some_and(|(_, _, last)| now >= *last + CHAT_IDLE)
            {
                if let Some((id, _, _)) = r.own.take() {
                    core.unpublish(now, &id);
                }
            }
        }
        self.rooms.retain(|_, r| r.own.is_some() || now < r.until);
    }
}
