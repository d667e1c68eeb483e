//! Whether a peer may join: its node certificate's chain to the company CA, its key, its
//! validity and the revocation list.
//!
//! The chain is checked by rustls-webpki, the verifier rustls itself uses, with the CA as
//! the one trust anchor; cambox adds what is its own: the certificate must be a node
//! certificate for exactly the key the peer proved in the handshake, and the node must
//! not be revoked.

use std::time::SystemTime;

use cambox_mesh::NodeId;
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::node_cert::{self, NodeCert};
use crate::revocation::RevocationList;
use crate::CaKey;

/// Why a peer was refused. Each says what to do about it, for the logs of both ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "it presented no node certificate; this mesh admits only boxes enrolled by its CA \
         {ca:?} (a join_token in cambox.toml, or cambox ca sign)"
    )]
    NoCertificate { ca: String },
    #[error("its node certificate is not from this mesh's CA {ca:?}: {detail}")]
    Untrusted { ca: String, detail: String },
    #[error("its node certificate expired at {at}; enrol it again")]
    Expired { at: String },
    #[error("its node certificate is not valid yet (is its clock right?)")]
    NotYetValid,
    #[error("node {node} is revoked by the CA (revocation list {list})")]
    Revoked { node: String, list: u64 },
    #[error("its node certificate is for node {certified}, not the key it proved ({proved})")]
    WrongKey { certified: String, proved: String },
}

impl Refused {
    /// Every [`Self::label`], so that counters show from the start.
    pub const LABELS: [&'static str; 6] = [
        "no_certificate",
        "untrusted",
        "expired",
        "not_yet_valid",
        "revoked",
        "wrong_key",
    ];

    /// A short name for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refused::NoCertificate { .. } => "no_certificate",
            Refused::Untrusted { .. } => "untrusted",
            Refused::Expired { .. } => "expired",
            Refused::NotYetValid => "not_yet_valid",
            Refused::Revoked { .. } => "revoked",
            Refused::WrongKey { .. } => "wrong_key",
        }
    }
}

/// A mesh's admission rule: its CA and the newest revocation list seen.
#[derive(Debug, Clone)]
pub struct Admission {
    ca: CertificateDer<'static>,
    ca_key: CaKey,
    ca_name: String,
    revoked: RevocationList,
}

impl Admission {
    /// The rule of the CA whose certificate this is.
    pub fn new(ca: CertificateDer<'static>) -> Result<Admission, String> {
        let parsed = node_cert::parse(&ca)?;
        let (Some(ca_key), true) = (parsed.p256, parsed.self_issued) else {
            return Err("not a cambox CA certificate (made by cambox ca init)".into());
        };
        webpki::anchor_from_trusted_cert(&ca)
            .map_err(|e| format!("not usable as a CA certificate: {e}"))?;
        Ok(Admission {
            ca_key,
            ca_name: parsed.common_name.unwrap_or_default(),
            ca,
            revoked: RevocationList::default(),
        })
    }

    pub fn ca_name(&self) -> &str {
        &self.ca_name
    }

    pub fn ca_key(&self) -> &CaKey {
        &self.ca_key
    }

    pub fn ca_certificate(&self) -> &CertificateDer<'static> {
        &self.ca
    }

    pub fn revocations(&self) -> &RevocationList {
        &self.revoked
    }

    /// Takes `text` as the revocation list if the CA signed it and it is newer than the
    /// one held. `Ok(true)`: adopted; `Ok(false)`: not newer.
    pub fn adopt(&mut self, text: &str) -> Result<bool, String> {
        let list = RevocationList::parse(text, &self.ca_key)?;
        if list.number <= self.revoked.number {
            return Ok(false);
        }
        self.revoked = list;
        Ok(true)
    }

    /// Whether node `proved` (the key its handshake proved) may join with `chain`: its node
    /// certificate first, then any enrolment certificate that signed it.
    pub fn check(
        &self,
        proved: NodeId,
        chain: &[CertificateDer<'_>],
        now: SystemTime,
    ) -> Result<NodeCert, Refused> {
        let untrusted = |detail: String| Refused::Untrusted {
            ca: self.ca_name.clone(),
            detail,
        };
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err(Refused::NoCertificate {
                ca: self.ca_name.clone(),
            });
        };
        let claims = node_cert::read(leaf).map_err(untrusted)?;
        if claims.node != proved {
            return Err(Refused::WrongKey {
                certified: claims.node.short(),
                proved: proved.short(),
            });
        }
        let ee = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| untrusted(format!("unreadable: {e}")))?;
        verify_chain(
            &self.ca,
            &ee,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )
        .map_err(|e| match e {
            webpki::Error::CertExpired { .. } => Refused::Expired {
                at: crate::utc(claims.not_after),
            },
            webpki::Error::CertNotValidYet { .. } => Refused::NotYetValid,
            webpki::Error::UnknownIssuer => {
                untrusted("another CA signed it (or an enrolment key this CA did not)".into())
            }
            webpki::Error::InvalidSignatureForPublicKey => {
                untrusted("its signature does not match: forged or altered".into())
            }
            other => untrusted(format!("{other:?}")),
        })?;
        if self.revoked.is_revoked(&proved) {
            return Err(Refused::Revoked {
                node: proved.short(),
                list: self.revoked.number,
            });
        }
        Ok(claims)
    }
}

/// Whether `leaf` chains to the CA certificate `ca` through `intermediates` at `now`, for
/// `usage`: rustls-webpki's check, with the one signature algorithm cambox CAs use.
pub(crate) fn verify_chain(
    ca: &CertificateDer<'_>,
    leaf: &webpki::EndEntityCert<'_>,
    intermediates: &[CertificateDer<'_>],
    now: SystemTime,
    usage: webpki::KeyUsage,
) -> Result<(), webpki::Error> {
    let anchor = webpki::anchor_from_trusted_cert(ca)?;
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    leaf.verify_for_usage(
        &[webpki::ring::ECDSA_P256_SHA256],
        &[anchor],
        intermediates,
        UnixTime::since_unix_epoch(since_epoch),
        usage,
        None,
        None,
    )
    .map(drop)
}

#[cfg(test)]
mod tests;
