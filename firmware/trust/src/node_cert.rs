//! What a node certificate says: the node (its key), its site and its name.
//!
//! The subject is `O=cambox node, OU=<site>, CN=<box name>`; the subject key is the node
//! key itself, as in the mesh's own TLS, so the certificate names the node id without
//! any other field. Reading it back takes x509-parser; checking the chain is
//! [`crate::admission`]'s.

use std::time::SystemTime;

use cambox_mesh::NodeId;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The organisation of every node certificate: a certificate of the company's other PKI
/// (signed by the same CA by mistake, say) is not a node certificate.
pub const NODE_ORGANIZATION: &str = "cambox node";
/// The organisation of the CA and of enrolment keys.
pub const CA_ORGANIZATION: &str = "cambox CA";

/// A node certificate's claims, read after its chain was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCert {
    pub node: NodeId,
    pub site: String,
    pub name: String,
    pub not_after: SystemTime,
}

/// Any certificate's fields this crate uses.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    /// The Ed25519 subject key (all zero for another algorithm: never a valid key).
    pub key: [u8; 32],
    pub ed25519: bool,
    /// The subject key when it is a P-256 point (CAs, web keys).
    pub p256: Option<crate::CaKey>,
    pub self_issued: bool,
    pub organization: Option<String>,
    pub unit: Option<String>,
    pub common_name: Option<String>,
    pub not_after: SystemTime,
}

pub(crate) fn parse(der: &[u8]) -> Result<Parsed, String> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    if !rest.is_empty() {
        return Err("bytes after the certificate".into());
    }
    let spki = cert.public_key();
    let ed25519 = spki.algorithm.algorithm == x509_parser::oid_registry::OID_SIG_ED25519;
    let key = match (ed25519, spki.subject_public_key.data.len()) {
        (true, 32) => spki.subject_public_key.data[..]
            .try_into()
            .expect("32 bytes"),
        _ => [0; 32],
    };
    let ec = spki.algorithm.algorithm == x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
        && spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .is_some_and(|curve| curve == x509_parser::oid_registry::OID_EC_P256);
    let p256 = ec
        .then(|| <[u8; 65]>::try_from(&spki.subject_public_key.data[..]).ok())
        .flatten()
        .map(crate::CaKey);
    let subject = cert.subject();
    let not_after = cert.validity().not_after.timestamp().max(0) as u64;
    Ok(Parsed {
        key,
        ed25519: ed25519 && spki.subject_public_key.data.len() == 32,
        p256,
        self_issued: cert.subject().as_raw() == cert.issuer().as_raw(),
        organization: first(subject.iter_organization()),
        unit: first(subject.iter_organizational_unit()),
        common_name: first(subject.iter_common_name()),
        not_after: crate::from_unix_secs(not_after),
    })
}

fn first<'a, 'b: 'a>(
    mut attributes: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'b>>,
) -> Option<String> {
    attributes
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned)
}

/// The claims of a node certificate, or why it is not one.
pub fn read(der: &[u8]) -> Result<NodeCert, String> {
    let p = parse(der)?;
    if p.organization.as_deref() != Some(NODE_ORGANIZATION) {
        return Err(format!(
            "not a cambox node certificate (its organisation is {:?}, not {NODE_ORGANIZATION:?})",
            p.organization.unwrap_or_default()
        ));
    }
    if !p.ed25519 {
        return Err("its key is not an Ed25519 node key".into());
    }
    Ok(NodeCert {
        node: NodeId(p.key),
        site: p.unit.ok_or("it names no site (OU)")?,
        name: p.common_name.ok_or("it names no box (CN)")?,
        not_after: p.not_after,
    })
}
