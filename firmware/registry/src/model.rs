//! What boxes send and what the registry answers. The same types produce the OpenAPI
//! document, so the document cannot drift from the code.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One broadcast a box announces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BroadcastInfo {
    /// The broadcast's name at its origin (played as `name@origin`).
    #[schema(example = "hall", max_length = 256)]
    pub name: String,
    /// True while it is live.
    pub live: bool,
}

/// What a box says about itself. Signed as a whole (see `signing`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// The node id: 64 hex digits of its Ed25519 public key.
    #[schema(example = "4a2562df0a1e7c1b0a6b2f3e4d5c6b7a8f9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c")]
    pub node: String,
    /// The box's human name.
    #[schema(example = "hall-box", max_length = 256)]
    pub name: String,
    /// The site (office, building) the box is at.
    #[schema(example = "berlin", max_length = 256)]
    pub site: String,
    /// Where its mesh endpoint (QUIC, UDP) is reached, `ip:port`. An unspecified IP
    /// (`0.0.0.0:4433`) stands for the address the registration came from.
    #[schema(example = json!(["0.0.0.0:4433"]), max_items = 16)]
    pub addrs: Vec<String>,
    /// Its web page and API, `ip:port`, with the same rule for an unspecified IP.
    #[schema(example = "0.0.0.0:8080", max_length = 256)]
    pub http: Option<String>,
    #[schema(max_items = 32)]
    pub broadcasts: Vec<BroadcastInfo>,
    /// What the box can do: `camera`, `microphone`, `button`, `led`, sensor names.
    #[schema(max_items = 64)]
    pub capabilities: Vec<String>,
    /// When the box signed this, ms since the Unix epoch; must be newer than the last
    /// registration the registry accepted from the node and close to the registry's clock.
    #[serde(deserialize_with = "whole_number")]
    pub timestamp_ms: u64,
    /// How long the entry lives without a renewal, seconds (capped by the registry).
    #[serde(deserialize_with = "whole_number")]
    pub ttl_s: u32,
    /// Where its mesh endpoint over TLS on TCP is reached (for networks that drop UDP),
    /// `ip:port`, with the same rule for an unspecified IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "0.0.0.0:443", max_length = 256)]
    pub tcp: Option<String>,
    /// `site` when the box's operator says it cannot be reached from outside its site
    /// (a firewall that lets nothing in); left out, the registry finds that out itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable: Option<Reach>,
    /// The image it runs: board and release version (absent off an image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "rpi4_64", max_length = 256)]
    pub board: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "2026.12.1", max_length = 256)]
    pub version: Option<String>,
    /// Its last update: state and version (`committed 2026.12.1`, `failed 2026.12.2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "committed 2026.12.1", max_length = 256)]
    pub update: Option<String>,
}

/// From where a box can be dialed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Reach {
    /// From any site: its registration came from the address it listens on.
    #[default]
    Anywhere,
    /// From its own site only: it sits behind NAT or a proxy (its registration came from
    /// another address than the one it listens on), or its operator says so. It dials
    /// out to the boxes of other sites, and they wait for it instead of dialing it.
    Site,
}

impl Reach {
    pub fn as_str(self) -> &'static str {
        match self {
            Reach::Anywhere => "anywhere",
            Reach::Site => "site",
        }
    }
}

/// JSON Schema's `integer` includes `30.0`: accept a number with no fraction in range,
/// whether the sender wrote it with a decimal point or not.
fn whole_number<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    let n = serde_json::Number::deserialize(d)?;
    let whole = n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
            .map(|f| f as u64)
    });
    whole
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a whole number in range")))
}

/// A registration and the node key's signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedRegistration {
    pub registration: Registration,
    /// 128 hex digits: Ed25519 over `cambox-registration-v1\n` + the registration's
    /// canonical JSON (its fields in the order above, no spaces).
    pub signature: String,
    /// The node certificate chain from the company CA, PEM; required by a registry that
    /// has a CA, which refuses boxes the CA did not enrol (or revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 8192)]
    pub certificate: Option<String>,
}

/// A box asks a registry with an enrolment key for its node certificate, and for an HTTPS
/// certificate for its web key. It proves it may by a join token (first enrolment) or by
/// the node certificate it holds (renewal, new addresses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Enrolment {
    /// The join token from the box's cambox.toml (`cambox ca token`); empty when the box
    /// renews with `certificate`.
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub token: String,
    /// The box's node certificate chain, PEM, instead of a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 8192)]
    pub certificate: Option<String>,
    /// The node id: 64 hex digits of its Ed25519 public key.
    pub node: String,
    /// The box's name, as its certificate will say.
    #[schema(example = "hall-box", max_length = 256)]
    pub name: String,
    /// The site, which must be the token's.
    #[schema(example = "berlin", max_length = 256)]
    pub site: String,
    /// When the box signed this, ms since the Unix epoch (close to the registry's clock).
    #[serde(deserialize_with = "whole_number")]
    pub timestamp_ms: u64,
    /// The box's web key to certify for HTTPS: 130 hex digits, an uncompressed P-256
    /// point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 130)]
    pub web_key: Option<String>,
    /// The host names (`cambox-<node>.local`, the box's name) and addresses the HTTPS
    /// certificate is for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 32)]
    pub web_names: Vec<String>,
}

/// An enrolment and the node key's signature over it, which proves the box holds the key
/// it asks a certificate for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedEnrolment {
    pub enrolment: Enrolment,
    /// 128 hex digits: Ed25519 over `cambox-enrolment-v1\n` + the enrolment's canonical
    /// JSON (its fields in the order above, no spaces).
    pub signature: String,
}

/// A new node certificate and the CA it chains to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnrolReply {
    /// The node certificate, then the enrolment key's certificate, PEM.
    pub certificate: String,
    /// The company CA's certificate, PEM (the box checks its key against the token's).
    pub ca: String,
    /// The HTTPS certificate for the web key, then the enrolment key's certificate, PEM;
    /// absent when no web key was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_certificate: Option<String>,
}

/// The answer to a new revocation list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevocationsReply {
    /// The number of the list in force now.
    pub number: u64,
    /// False when the registry already had this list or a newer one.
    pub adopted: bool,
}

/// A registered node as the registry shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    pub node: String,
    pub name: String,
    pub site: String,
    /// Mesh endpoints, with unspecified IPs replaced by the registration's source.
    pub addrs: Vec<String>,
    /// Its mesh endpoint over TCP, the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// From where it can be dialed; boxes of other sites never dial a box reached from
    /// its own site only (it dials them).
    #[serde(default)]
    pub reachable: Reach,
    /// The image it runs, and its last update, as it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<String>,
    pub http: Option<String>,
    pub broadcasts: Vec<BroadcastInfo>,
    pub capabilities: Vec<String>,
    /// Seconds until the entry expires unless renewed.
    pub expires_in_s: u64,
}

/// One broadcast with the node that originates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BroadcastView {
    pub name: String,
    pub live: bool,
    /// The origin's node id (hex).
    pub origin: String,
    /// The origin's name and site.
    pub origin_name: String,
    pub site: String,
    /// The origin box's web address, when it gave one.
    pub http: Option<String>,
}

/// The answer to a registration: how long it lives, and the nodes the box should reach:
/// every other box of its site, and the gateways (three lowest ids) of the few sites its site
/// links to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegisterReply {
    pub expires_in_s: u64,
    /// Renew this often.
    pub heartbeat_s: u64,
    pub nodes: Vec<NodeView>,
    /// The number of the company CA's newest revocation list the registry holds (0: none
    /// or no CA); a box with an older one fetches `/api/v1/revocations`.
    #[serde(default)]
    pub revocations: u64,
    /// From where the registry takes the box to be reachable.
    #[serde(default)]
    pub reachable: Reach,
    /// The address the registration came from (a NAT's or a proxy's, when it is not the
    /// box's own).
    #[serde(default)]
    pub seen_from: String,
    /// The update bundles the registry holds (`cambox update publish --registry`).
    #[serde(default)]
    pub updates: Vec<crate::updates::UpdateRef>,
}

/// Where a request came from, as the registry sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SeenAddress {
    /// An IP address (a NAT's or a proxy's, when one stands between).
    #[schema(example = "203.0.113.7")]
    pub address: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeList {
    pub nodes: Vec<NodeView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BroadcastList {
    pub broadcasts: Vec<BroadcastView>,
}

/// Every error: a sentence a person can act on.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::whole_number;

    fn parse(json: &str) -> Result<u64, serde_json::Error> {
        whole_number(&mut serde_json::Deserializer::from_str(json))
    }

    /// Schemathesis sent 2^51 - 1 written with a decimal point; the default float parser
    /// read it a quarter off and the registration was refused as fractional.
    #[test]
    fn a_large_whole_number_with_a_decimal_point_is_whole() {
        assert_eq!(parse("2251799813685247.0").unwrap(), 2_251_799_813_685_247);
        assert_eq!(parse("30.0").unwrap(), 30);
        assert!(parse("30.5").is_err());
        assert!(parse("-1").is_err());
    }
}
