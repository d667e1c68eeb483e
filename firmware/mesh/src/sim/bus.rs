//! The bus in the simulation: each node runs `bus::Bus` as the box's driver does (ticked
//! twice a second while it follows anything), so chat, following nodes' announcements and
//! telemetry, and commands with their replies are simulated end to end.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Action, Net};
use crate::bus::chat::Message;
use crate::bus::{BusEvent, NodeSeen};
use crate::node::RouteError;
use crate::NodeId;

/// How often the box's driver ticks the bus.
const BUS_TICK: Duration = Duration::from_millis(500);

/// A chat message a node's user saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatSeen {
    pub at: Instant,
    pub room: String,
    pub message: Message,
}

/// A reply to a command a node sent through its bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    pub from: NodeId,
    pub id: u64,
    pub sent: Instant,
    pub at: Instant,
    pub body: Bytes,
}

/// What a node's bus gave its user, in order.
#[derive(Debug, Default)]
pub(super) struct Seen {
    chat: Vec<ChatSeen>,
    answered: Vec<Answered>,
}

impl Net {
    /// Node `i`'s announcement (`TRACK_CATALOG`) or telemetry (`TRACK_TELEMETRY`), as JSON,
    /// on its `.node` broadcast (published by [`Net::announce`]).
    pub fn set_own(&mut self, i: usize, track: u8, json: Bytes) {
        let now = self.now;
        let n = &mut self.nodes[i];
        n.bus.set_own(&mut n.node, now, track, json);
        self.pump(i);
    }

    /// Every node node `i` knows, with what they said; starts following them (as
    /// `cambox sensors` does).
    pub fn nodes_seen(&mut self, i: usize) -> Vec<NodeSeen> {
        let now = self.now;
        let n = &mut self.nodes[i];
        let seen = n.bus.nodes(&mut n.node, now);
        self.bus_used(i);
        seen
    }

    /// Node `i` follows `room`; returns its history.
    pub fn chat_follow(&mut self, i: usize, room: &str) -> Vec<Message> {
        let now = self.now;
        let n = &mut self.nodes[i];
        let history = n.bus.chat_follow(&mut n.node, now, room);
        self.bus_used(i);
        history
    }

    /// Node `i` says `text` in `room`.
    pub fn chat_send(&mut self, i: usize, room: &str, name: &str, text: &str) -> Message {
        let now = self.now;
        let n = &mut self.nodes[i];
        let m = n.bus.chat_send(&mut n.node, now, room, name, text);
        self.bus_used(i);
        m
    }

    /// Chat messages node `i`'s user saw, its own included.
    pub fn chat_seen(&self, i: usize) -> &[ChatSeen] {
        &self.nodes[i].bus_seen.chat
    }

    /// Node `from` sends a command to `to` through its bus; the reply shows in
    /// [`Net::answered`]. Returns the command's id.
    pub fn ask(&mut self, from: usize, to: usize, body: Bytes) -> Result<u64, RouteError> {
        let (now, target) = (self.now, self.id(to));
        let n = &mut self.nodes[from];
        let sent = n
            .bus
            .send_command(&mut n.node, &n.identity, now, target, body, now);
        self.bus_used(from);
        sent.map_err(|(e, _)| e)
    }

    /// Replies to node `i`'s commands, in arrival order.
    pub fn answered(&self, i: usize) -> &[Answered] {
        &self.nodes[i].bus_seen.answered
    }

    /// After a use of node `i`'s bus: what it emitted goes out, and it is ticked from now.
    fn bus_used(&mut self, i: usize) {
        self.drain_bus(i);
        self.pump(i);
        if !self.nodes[i].bus_ticking {
            self.nodes[i].bus_ticking = true;
            self.schedule(self.now + BUS_TICK, Action::BusTick { at: i });
        }
    }

    pub(super) fn bus_tick(&mut self, i: usize) {
        let now = self.now;
        let alive = self.alive[i];
        let n = &mut self.nodes[i];
        if !alive || n.bus.is_idle() {
            n.bus_ticking = false;
            return;
        }
        let catalog = n.node.known_broadcasts(now);
        n.bus.tick(&mut n.node, now, &catalog);
        self.drain_bus(i);
        self.pump(i);
        self.schedule(now + BUS_TICK, Action::BusTick { at: i });
    }

    /// Takes what node `i`'s bus has for its user; answers commands when `auto_reply`.
    pub(super) fn drain_bus(&mut self, i: usize) {
        let now = self.now;
        let n = &mut self.nodes[i];
        while let Some(event) = n.bus.poll_event() {
            match event {
                BusEvent::Command { from, id, body } => {
                    if self.auto_reply {
                        let _ = n
                            .bus
                            .send_reply(&mut n.node, &n.identity, now, from, id, body);
                    }
                }
                BusEvent::Reply {
                    from,
                    id,
                    body,
                    waiter,
                } => n.bus_seen.answered.push(Answered {
                    from,
                    id,
                    sent: waiter,
                    at: now,
                    body,
                }),
                BusEvent::Watching { .. } => {}
                BusEvent::Chat { room, message } => n.bus_seen.chat.push(ChatSeen {
                    at: now,
                    room,
                    message,
                }),
            }
        }
    }
}
