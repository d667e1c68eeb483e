//! The box's runtime: it owns threads, sockets and timers and feeds the media crate.
//!
//! - [`pipeline`]: capture and encode threads writing a live broadcast;
//! - [`station`]: the box's live state (what the button and `POST /api/v1/live` change);
//! - [`http`]: the web page, the JSON API, live fragmented MP4 and Prometheus metrics;
//! - [`client`]: fetching a live stream from another box (for `record` and `strip`).

pub mod audit;
pub mod auth;
pub mod board;
pub mod bus;
pub mod bus_api;
pub mod client;
pub mod connection_limit;
pub mod files;
pub mod http;
pub mod https;
pub mod live;
pub mod mesh;
pub mod metrics;
pub mod pipeline;
pub mod registry_client;
pub mod rtsp;
pub mod settings;
pub mod station;
pub mod update;
pub mod viewing;
pub mod watchers;
pub mod whep;

pub use settings::BoxSettings;
pub use station::Station;
