//! Who may join a cambox mesh.
//!
//! A company runs one CA ([`authority`]), whose key stays offline on an administrator's
//! machine. It certifies each box's node key together with the box's site and name
//! ([`node_cert`]), either directly (`cambox ca sign`) or through an enrolment key that a
//! registry holds, which signs for boxes that present a [`token`] from their boot
//! partition. Every box checks every neighbour's certificate against the CA and the CA's
//! list of revoked nodes ([`admission`], [`revocation`]). The same CA certifies each box's
//! HTTPS key for its names and addresses ([`https_cert`]), so browsers can trust the page.
//!
//! Everything here works on bytes and instants the caller gives; reading and writing the
//! files is the caller's.

pub mod admission;
pub mod authority;
pub mod ca_key;
pub mod https_cert;
pub mod node_cert;
pub mod pem;
pub mod revocation;
pub mod token;

pub use admission::{Admission, Refused};
pub use authority::Authority;
pub use ca_key::CaKey;
pub use node_cert::NodeCert;
pub use revocation::RevocationList;
pub use token::JoinToken;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 for an instant before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The instant `secs` seconds after the Unix epoch.
pub fn from_unix_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// An instant as UTC `YYYY-MM-DD HH:MM:SS`, for messages people read.
pub fn utc(t: SystemTime) -> String {
    let secs = unix_secs(t) as i64;
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        ),
        Err(_) => format!("{secs} s after 1970"),
    }
}
