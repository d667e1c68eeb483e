//! The overlay's core, sans IO: it knows no sockets, threads, clocks or hardware.
//!
//! Inputs arrive through `handle_*` calls with the current time; outputs are drained with
//! `poll_*` until nothing is left, and `poll_timeout` says when to call back. One process
//! can therefore simulate thousands of nodes deterministically (`sim`, behind the `sim` feature: tests and benches only).

pub mod bus;
pub mod hex;
pub mod identity;
pub mod limits;
pub mod msg;
pub mod node;
pub mod routed;
#[cfg(feature = "sim")]
pub mod sim;
pub mod site_graph;
pub mod swarm;
pub mod wire;

pub use msg::{BroadcastId, CatalogEntry, Msg, NodeId, ResumePoint};

/// Bytes a message takes on the wire (for the simulator's accounting).
pub fn wire_len(msg: &Msg) -> usize {
    wire::encoded_len(msg)
}
