//! The overlay's core, sans IO: it knows no sockets, threads, clocks or hardware.
//!
//! Inputs arrive through `handle_*` calls with the current time; outputs are drained with
//! `poll_*` until nothing is left, and `poll_timeout` says when to call back. One process
//! can therefore simulate thousands of nodes deterministically (see `sim`).

pub mod msg;
pub mod node;
pub mod sim;

pub use msg::{BroadcastId, CatalogEntry, Msg, NodeId, ResumePoint};

/// Bytes a message takes on the wire (for the simulator's accounting).
pub fn wire_len(msg: &Msg) -> usize {
    // WIRE-PENDING: replaced by wire::encoded_len once the codec lands.
    match msg {
        Msg::Object {
            payload, broadcast, ..
        } => 40 + broadcast.name.len() + payload.len(),
        Msg::Catalog { entries } => {
            8 + entries
                .iter()
                .map(|e| 64 + e.path.len() * 32)
                .sum::<usize>()
        }
        Msg::Interest { broadcasts } => 8 + broadcasts.len() * 40,
        _ => 48,
    }
}
