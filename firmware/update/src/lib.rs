//! Updates for cambox boxes: a bundle is a signed manifest (board, version, the images and
//! the SHA-256 of every chunk) followed by the images. The manifest's signature covers the
//! chunk hashes, so a box can take chunks from any neighbour and check each one on arrival,
//! and a bundle half received is as trustworthy as a whole one.
//!
//! Sans-IO apart from reading and writing files: what a box accepts ([`policy`]) and how a
//! slot is written are decided here, and tested without a board.

pub mod bundle;
pub mod install;
pub mod policy;
pub mod release_key;
pub mod rollout;
pub mod slots;
pub mod version;

pub use bundle::{Bundle, Image, Manifest};
pub use policy::{Policy, Refusal};
pub use release_key::{ReleaseKey, ReleasePublic};
pub use rollout::{Plan, Rollout};
pub use version::Version;
