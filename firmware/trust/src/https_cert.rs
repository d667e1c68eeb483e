//! A box's HTTPS certificate: its web key (P-256, apart from the node key, since browsers
//! speak no Ed25519) certified by the company CA for the box's names and addresses.
//!
//! The names a box may have certified are few and follow from what the registry can
//! check: `cambox-<node>.local`, the name the box advertises by mDNS and which comes from
//! its proved node key, and its own box name as a host name. A box cannot ask for
//! `intranet.example.com`, so a stolen join token does not make a company-wide
//! impersonator. Addresses are the box's word: nobody else knows them.

use std::net::IpAddr;
use std::time::SystemTime;

use cambox_mesh::hex::{from_hex, to_hex};
use cambox_mesh::NodeId;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use rustls_pki_types::{CertificateDer, ServerName};

/// The organisation of every HTTPS certificate: not a node certificate, so it cannot
/// join a mesh.
pub const WEB_ORGANIZATION: &str = "cambox box web";

/// What an HTTPS certificate says.
#[derive(Debug, Clone)]
pub struct HttpsClaims {
    pub site: String,
    pub name: String,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub days: u32,
}

/// A box's web key: an uncompressed P-256 point.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct WebKey(pub [u8; 65]);

impl std::fmt::Debug for WebKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebKey({}…)", &self.to_hex()[2..18])
    }
}

impl WebKey {
    /// A new private web key, PKCS#8 PEM, from the OS's random source.
    pub fn generate_pem() -> Result<String, String> {
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map(|doc| crate::pem::encode_private_key(doc.as_ref()))
            .map_err(|_| "the OS random source failed".to_string())
    }

    /// The public half of a private key written by [`Self::generate_pem`].
    pub fn of_private_pem(pem: &str) -> Result<WebKey, String> {
        let der = crate::pem::private_key(pem)?;
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &SystemRandom::new())
                .map_err(|e| format!("not a P-256 key: {e}"))?;
        Ok(WebKey(
            pair.public_key()
                .as_ref()
                .try_into()
                .map_err(|_| "not an uncompressed P-256 point")?,
        ))
    }

    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    pub fn from_hex(hex: &str) -> Option<WebKey> {
        from_hex::<65>(hex).filter(|k| k[0] == 0x04).map(WebKey)
    }
}

impl rcgen::PublicKeyData for WebKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// The host names node `node` named `name` may have certified: its mDNS name, and its box
/// name when that is a valid host name (`lobby`, `lobby.local`).
pub fn allowed_dns(node: &NodeId, name: &str) -> Vec<String> {
    let mut names = vec![format!("cambox-{}.local", node.short())];
    let label = name.to_ascii_lowercase();
    let valid = !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if valid {
        names.push(format!("{label}.local"));
        names.push(label);
    }
    names
}

/// Checks what a box asks to have certified: host names from [`allowed_dns`] only, and
/// addresses a browser could reach it at.
pub fn check_request(
    node: &NodeId,
    name: &str,
    dns: &[String],
    ips: &[IpAddr],
) -> Result<(), String> {
    let allowed = allowed_dns(node, name);
    if let Some(bad) = dns.iter().find(|d| !allowed.contains(d)) {
        return Err(format!(
            "a box may have only {} certified, not {bad:?}",
            allowed.join(", ")
        ));
    }
    if let Some(bad) = ips
        .iter()
        .find(|ip| ip.is_unspecified() || ip.is_multicast())
    {
        return Err(format!("{bad} is no address of a box"));
    }
    if dns.len() + ips.len() > 32 {
        return Err("more than 32 names and addresses".into());
    }
    Ok(())
}

/// Whether `chain` (the HTTPS certificate, then any enrolment certificate) is valid at
/// `now` under the CA `ca` for every name in `names` and is for `key`; its end if so.
pub fn check(
    ca: &CertificateDer<'_>,
    chain: &[CertificateDer<'_>],
    key: &WebKey,
    names: &[String],
    now: SystemTime,
) -> Result<SystemTime, String> {
    let (leaf, intermediates) = chain.split_first().ok_or("no certificate")?;
    let parsed = crate::node_cert::parse(leaf)?;
    if parsed.organization.as_deref() != Some(WEB_ORGANIZATION) {
        return Err("not a cambox HTTPS certificate".into());
    }
    if parsed.p256 != Some(crate::CaKey(key.0)) {
        return Err("it is for another key than the box's web key".into());
    }
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(|e| format!("unreadable: {e}"))?;
    crate::admission::verify_chain(ca, &ee, intermediates, now, webpki::KeyUsage::server_auth())
        .map_err(|e| format!("not valid under the CA: {e:?}"))?;
    for name in names {
        let server_name =
            ServerName::try_from(name.as_str()).map_err(|_| format!("{name:?} is no host name"))?;
        ee.verify_is_valid_for_subject_name(&server_name)
            .map_err(|_| format!("it does not name {name}"))?;
    }
    Ok(parsed.not_after)
}
