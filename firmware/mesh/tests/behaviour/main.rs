//! The mesh's behaviours, each a module of its own (`cargo test -p cambox-mesh --test
//! behaviour relay_kill` runs one). One test binary rather than one per file: each binary
//! is compiled at the mesh's opt-level 2 and linked, from cold three such binaries took
//! 30 s of CPU, all twenty files in one 13 s.

mod bounds;
mod broadcast_end;
mod bus;
mod chain;
mod chat_relay;
mod common;
mod gateway_standin;
mod lookup;
mod lossy_links;
mod news_hold;
mod one_copy_per_site;
mod origin_death;
mod patience;
mod relay_election;
mod relay_kill;
mod route_stability;
mod routed_commands;
mod site_hold;
mod site_loop;
mod site_tree;
mod slow_child;
mod tree_links;
mod wire_arbitrary;
