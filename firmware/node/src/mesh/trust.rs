//! Admission to a mesh that has a company CA, as the driver and each connection apply it.
//!
//! Every box presents, after the per-process certificate that proves its node key in the
//! TLS handshake, its node certificate chain from the CA. Both ends of a new connection
//! check the other's chain before a single protocol message, and a refused connection is
//! closed with the reason, so the refused box logs why as well
//! (see docs/architecture.md, Admission).

use std::path::PathBuf;
use std::sync::RwLock;
use std::time::SystemTime;

use bytes::Bytes;
use cambox_mesh::NodeId;
use cambox_trust::{Admission, NodeCert, Refused};
use rustls::pki_types::CertificateDer;
use serde::Serialize;

/// A mesh's CA, this box's place in it and the newest revocation list.
#[derive(Debug)]
pub struct Trust {
    rule: RwLock<Admission>,
    /// This box's node certificate and any enrolment certificate above it; empty when the
    /// box is not enrolled (every neighbour will refuse it).
    chain: Vec<CertificateDer<'static>>,
    /// What the box's own certificate says, or why it would be refused.
    own: Result<NodeCert, String>,
    /// Where an adopted revocation list is kept, so a restart still refuses revoked boxes.
    revocations_file: Option<PathBuf>,
}

/// The admission part of `/api/v1/status`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrustView {
    /// "ca": only boxes the CA enrolled join; "lab": any box that speaks the protocol.
    pub mode: &'static str,
    /// The CA's name.
    pub ca: Option<String>,
    /// This box's node certificate: site, name and when it expires.
    pub certificate: Option<CertificateView>,
    /// Why this box's own certificate would be refused, if it would.
    pub problem: Option<String>,
    /// The number of the revocation list in force (0: none).
    pub revocation_list: u64,
    pub revoked_nodes: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CertificateView {
    pub site: String,
    pub name: String,
    pub expires: String,
}

impl TrustView {
    /// A mesh without a CA: a lab, which the page says.
    pub fn lab() -> TrustView {
        TrustView {
            mode: "lab",
            ca: None,
            certificate: None,
            problem: None,
            revocation_list: 0,
            revoked_nodes: 0,
        }
    }
}

impl Trust {
    /// The rule of CA `ca` for node `me` holding `chain`, with the revocation list last
    /// kept in `revocations_file` (a damaged or foreign file is reported and ignored).
    pub fn new(
        ca: CertificateDer<'static>,
        chain: Vec<CertificateDer<'static>>,
        me: NodeId,
        revocations_file: Option<PathBuf>,
    ) -> Result<Trust, String> {
        let mut rule = Admission::new(ca)?;
        if let Some(path) = &revocations_file {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    if let Err(e) = rule.adopt(&text) {
                        tracing::warn!(path = %path.display(), "ignoring the kept revocation list: {e}");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), "cannot read the kept revocation list: {e}")
                }
            }
        }
        let own = rule
            .check(me, &chain, SystemTime::now())
            .map_err(|e| e.to_string());
        Ok(Trust {
            rule: RwLock::new(rule),
            chain,
            own,
            revocations_file,
        })
    }

    /// The rule as it stands (for a registry the box serves).
    pub fn admission(&self) -> Admission {
        self.read().clone()
    }

    /// The certificates this box presents after its per-process one.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// Whether node `proved` may join with the certificates it presented after its first.
    pub fn check(&self, proved: NodeId, chain: &[CertificateDer<'_>]) -> Result<NodeCert, Refused> {
        self.read().check(proved, chain, SystemTime::now())
    }

    pub fn is_revoked(&self, node: &NodeId) -> bool {
        self.read().revocations().is_revoked(node)
    }

    /// Takes a revocation list if the CA signed it and it is newer, and keeps it on disk.
    /// `Ok(true)`: adopted, to be passed on.
    pub fn adopt(&self, list: &[u8]) -> Result<bool, String> {
        let text = std::str::from_utf8(list).map_err(|_| "the list is not text".to_string())?;
        let adopted = self
            .rule
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .adopt(text)?;
        if adopted {
            if let Some(path) = &self.revocations_file {
                if let Err(e) = crate::files::write_atomic(path, list) {
                    tracing::warn!("cannot keep the revocation list: {e:#}");
                }
            }
        }
        Ok(adopted)
    }

    /// The list in force as it travels, or `None` before any.
    pub fn list(&self) -> Option<Bytes> {
        let rule = self.read();
        let text = rule.revocations().text();
        (!text.is_empty()).then(|| Bytes::copy_from_slice(text.as_bytes()))
    }

    pub fn list_number(&self) -> u64 {
        self.read().revocations().number
    }

    pub fn view(&self) -> TrustView {
        let rule = self.read();
        TrustView {
            mode: "ca",
            ca: Some(rule.ca_name().to_owned()),
            certificate: self.own.as_ref().ok().map(|c| CertificateView {
                site: c.site.clone(),
                name: c.name.clone(),
                expires: cambox_trust::utc(c.not_after),
            }),
            problem: self.own.as_ref().err().cloned(),
            revocation_list: rule.revocations().number,
            revoked_nodes: rule.revocations().nodes.len(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Admission> {
        self.rule.read().unwrap_or_else(|p| p.into_inner())
    }
}
