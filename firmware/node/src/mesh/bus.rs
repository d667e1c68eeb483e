//! The driver's side of the bus. Its state machines (own `.node` broadcast, following
//! nodes and rooms, commands awaiting replies) are `cambox_mesh::bus`, which the
//! simulator runs too; here they meet channels: chat followers, callers waiting for a
//! reply, the box's command executor, and JSON turned into views for people.

use std::time::Instant;

use bytes::Bytes;
use cambox_mesh::bus::{BusEvent, NodeSeen};
use cambox_mesh::node::KnownBroadcast;
use cambox_mesh::{BroadcastId, NodeId};
use tokio::sync::{broadcast, oneshot};

use super::{Driver, MeshError};
use crate::bus::chat::Message;
use crate::bus::NodeView;

/// A command for this box that came over the overlay (already checked by the core).
#[derive(Debug)]
pub struct Incoming {
    pub from: NodeId,
    pub id: u64,
    pub body: Bytes,
}

/// A caller waiting for a command's reply.
pub(super) type Waiter = oneshot::Sender<Result<Bytes, MeshError>>;

/// Messages a room's followers may lag behind before they miss some.
const FOLLOWER_BACKLOG: usize = 256;

impl Driver {
    pub(super) fn set_own(&mut self, now: Instant, track: u8, json: Bytes) {
        self.bus.set_own(&mut self.core, now, track, json);
    }

    pub(super) fn send_command(&mut self, now: Instant, to: NodeId, body: Bytes, reply: Waiter) {
        let sent = self
            .bus
            .send_command(&mut self.core, &self.identity, now, to, body, reply);
        if let Err((e, reply)) = sent {
            let _ = reply.send(Err(MeshError::Route(e.to_string())));
        }
    }

    pub(super) fn send_reply(&mut self, now: Instant, to: NodeId, id: u64, body: Bytes) {
        if let Err(e) = self
            .bus
            .send_reply(&mut self.core, &self.identity, now, to, id, body)
        {
            tracing::info!(%to, "cannot send a command's reply: {e}");
        }
    }

    /// A routed message the core let through.
    pub(super) fn routed(&mut self, r: cambox_mesh::msg::Routed) {
        self.bus.handle_routed(r);
        self.drain_bus();
    }

    /// Objects of `.node` and chat broadcasts; false for anything else (media).
    pub(super) fn deliver_bus(&mut self, b: &BroadcastId, track: u8, payload: &Bytes) -> bool {
        let taken = self.bus.handle_object(b, track, payload);
        self.drain_bus();
        taken
    }

    /// Every node of the mesh with what it announced; starts following them all.
    pub(super) fn nodes(&mut self, now: Instant) -> Vec<NodeView> {
        self.bus
            .nodes(&mut self.core, now)
            .into_iter()
            .map(node_view)
            .collect()
    }

    pub(super) fn chat_follow(
        &mut self,
        now: Instant,
        room: &str,
    ) -> (Vec<Message>, broadcast::Receiver<Message>) {
        let history = self.bus.chat_follow(&mut self.core, now, room);
        let rx = self
            .rooms
            .entry(room.to_string())
            .or_insert_with(|| broadcast::channel(FOLLOWER_BACKLOG).0)
            .subscribe();
        (history, rx)
    }

    pub(super) fn chat_send(
        &mut self,
        now: Instant,
        room: &str,
        name: &str,
        text: &str,
    ) -> Message {
        let m = self.bus.chat_send(&mut self.core, now, room, name, text);
        self.drain_bus();
        m
    }

    /// Twice a second: rooms someone still listens to stay followed, and the bus follows
    /// the catalog as it stands.
    pub(super) fn bus_tick(&mut self, now: Instant, catalog: &[KnownBroadcast]) {
        self.rooms.retain(|_, tx| tx.receiver_count() > 0);
        for room in self.rooms.keys() {
            self.bus.hold_room(now, room);
        }
        self.bus.tick(&mut self.core, now, catalog);
        self.bus.retain_waiting(|w| !w.is_closed());
        self.drain_bus();
    }

    fn drain_bus(&mut self) {
        while let Some(event) = self.bus.poll_event() {
            match event {
                BusEvent::Command { from, id, body } => {
                    tracing::info!(%from, id, "command over the mesh");
                    let _ = self.incoming.send(Incoming { from, id, body });
                }
                BusEvent::Reply { body, waiter, .. } => {
                    let _ = waiter.send(Ok(body));
                }
                BusEvent::Chat { room, message } => {
                    if let Some(tx) = self.rooms.get(&room) {
                        let _ = tx.send(message);
                    }
                }
                BusEvent::Watching { from, body } => {
                    #[derive(serde::Deserialize)]
                    struct Told {
                        viewers: Vec<crate::watchers::Watching>,
                    }
                    match serde_json::from_slice::<Told>(&body) {
                        Ok(t) => self.watchers.told_by(from, from.short(), t.viewers),
                        Err(e) => tracing::debug!(%from, "unreadable list of viewers: {e}"),
                    }
                }
            }
        }
    }
}

fn node_view(n: NodeSeen) -> NodeView {
    NodeView {
        id: n.id.to_hex(),
        short: n.id.short(),
        site: n.site,
        hops: n.hops,
        local: n.hops.is_none(),
        announcement: n.announcement.and_then(|a| serde_json::from_slice(&a).ok()),
        telemetry: n.telemetry.and_then(|t| serde_json::from_slice(&t).ok()),
    }
}
