//! The registry: where boxes announce themselves and their live streams, so boxes and
//! viewers at other sites can find them. One small process (or a route inside any box),
//! no database: entries are soft state, signed by the node key, renewed by heartbeats.
//! Media never passes through it.

pub mod api;
pub mod company_ca;
pub mod model;
pub mod signing;
pub mod store;
pub mod updates;

pub use company_ca::CompanyCa;
pub use store::{Admission, Limits, Registry};
pub use updates::UpdateDepot;
