//! A registry in a mesh with a company CA: it takes registrations only from enrolled
//! boxes, enrols new boxes that bring a join token (when it holds an enrolment key), and
//! keeps and serves the CA's newest revocation list, so that boxes learn of it with their
//! next heartbeat.

use std::sync::RwLock;
use std::time::SystemTime;

use cambox_mesh::hex::from_hex;
use cambox_mesh::identity;
use cambox_mesh::NodeId;
use cambox_trust::authority::NodeClaims;
use cambox_trust::https_cert::{self, HttpsClaims, WebKey};
use cambox_trust::{Admission, Authority, JoinToken};

use crate::model::{EnrolReply, Enrolment, SignedEnrolment};

/// What the signature of an enrolment covers besides its JSON: no other signed cambox
/// message reads as one.
const CONTEXT: &[u8] = b"cambox-enrolment-v1\n";

/// The company CA as a registry applies it.
#[derive(Debug)]
pub struct CompanyCa {
    rule: RwLock<Admission>,
    enroller: Option<Authority>,
    /// How long the node certificates it issues are valid.
    pub days: u32,
    /// Where a newer revocation list is kept, so a restarted registry still has it.
    revocations_file: Option<std::path::PathBuf>,
}

impl CompanyCa {
    /// `enroller`: the enrolment key (`cambox ca enroller`), without which the registry
    /// checks boxes but enrols none.
    pub fn new(rule: Admission, enroller: Option<Authority>, days: u32) -> Result<Self, String> {
        if let Some(e) = &enroller {
            let probe = e
                .issue_node(
                    &NodeClaims {
                        node: identity::Identity::from_seed([1; 32]).node_id(),
                        site: "probe".into(),
                        name: "probe".into(),
                        days: 1,
                    },
                    SystemTime::now(),
                )
                .map_err(|e| e.to_string())?;
            rule.check(
                identity::Identity::from_seed([1; 32]).node_id(),
                &probe,
                SystemTime::now(),
            )
            .map_err(|e| format!("the enrolment key is not this CA's: {e}"))?;
        }
        Ok(Self {
            rule: RwLock::new(rule),
            enroller,
            days,
            revocations_file: None,
        })
    }

    /// Keeps every newer revocation list in `path`, and starts from the list there.
    pub fn keeping_revocations(mut self, path: std::path::PathBuf) -> Result<Self, String> {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                self.adopt(&text)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
        self.revocations_file = Some(path);
        Ok(self)
    }

    pub fn rule(&self) -> std::sync::RwLockReadGuard<'_, Admission> {
        self.rule.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `node` may register at `site` with `chain` (PEM).
    pub fn check(&self, node: NodeId, site: &str, chain: Option<&str>) -> Result<(), String> {
        self.certified(node, site, chain).map(drop)
    }

    /// What `node`'s chain (PEM) certifies, if it is admitted at `site`.
    fn certified(
        &self,
        node: NodeId,
        site: &str,
        chain: Option<&str>,
    ) -> Result<cambox_trust::NodeCert, String> {
        let certs = match chain {
            Some(pem) => {
                cambox_trust::pem::certificates(pem).map_err(|e| format!("the certificate: {e}"))?
            }
            None => Vec::new(),
        };
        let claims = self
            .rule()
            .check(node, &certs, SystemTime::now())
            .map_err(|e| format!("node {} is not admitted: {e}", node.short()))?;
        if claims.site != site {
            return Err(format!(
                "the registration says site {site:?} but the node certificate says {:?}",
                claims.site
            ));
        }
        Ok(claims)
    }

    /// Takes a newer revocation list signed by the CA. `Ok(false)`: not newer.
    pub fn adopt(&self, text: &str) -> Result<bool, String> {
        let adopted = self
            .rule
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .adopt(text)?;
        if let (true, Some(path)) = (adopted, &self.revocations_file) {
            let tmp = path.with_extension("new");
            if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
                tracing::warn!(path = %path.display(), "cannot keep the revocation list: {e}");
            }
        }
        Ok(adopted)
    }

    /// A node certificate for a box that proved its key and brought a valid join token or
    /// its current node certificate; with a web key, an HTTPS certificate too.
    pub fn enrol(&self, signed: &SignedEnrolment, now: SystemTime) -> Result<EnrolReply, String> {
        let enroller = self.enroller.as_ref().ok_or(
            "this registry holds no enrolment key (cambox registry --enroller DIR), so it enrols no box",
        )?;
        let e = &signed.enrolment;
        let node = NodeId::from_hex(&e.node).ok_or("'node' must be 64 hex digits")?;
        let sig = from_hex::<64>(&signed.signature).ok_or("'signature' must be 128 hex digits")?;
        if !identity::verify(&node, &signed_bytes(e), &sig) {
            return Err("the signature does not match the enrolment and the node key".into());
        }
        match (e.token.as_str(), &e.certificate) {
            ("", Some(chain)) => {
                let held = self.certified(node, &e.site, Some(chain))?;
                if held.name != e.name {
                    return Err(format!(
                        "the node certificate names the box {:?}, not {:?}; rename it with a join token",
                        held.name, e.name
                    ));
                }
            }
            ("", None) => {
                return Err("an enrolment needs a join token or the box's node certificate".into())
            }
            (token, _) => {
                let token = JoinToken::parse(token)?;
                token.verify(self.rule().ca_key(), now)?;
                if token.site != e.site {
                    return Err(format!(
                        "the join token is for site {:?}, not {:?}",
                        token.site, e.site
                    ));
                }
            }
        }
        if self.rule().revocations().is_revoked(&node) {
            return Err(format!("node {} is revoked by the CA", node.short()));
        }
        let web_certificate = match &e.web_key {
            Some(key) => Some(self.web_certificate(enroller, node, e, key, now)?),
            None => None,
        };
        let chain = enroller
            .issue_node(
                &NodeClaims {
                    node,
                    site: e.site.clone(),
                    name: e.name.clone(),
                    days: self.days,
                },
                now,
            )
            .map_err(|e| e.to_string())?;
        let rule = self.rule();
        Ok(EnrolReply {
            certificate: cambox_trust::pem::encode_certificates(&chain),
            ca: cambox_trust::pem::encode_certificates(std::slice::from_ref(rule.ca_certificate())),
            web_certificate,
        })
    }

    /// The HTTPS certificate chain (PEM) for the web key `key` of box `node`.
    fn web_certificate(
        &self,
        enroller: &Authority,
        node: NodeId,
        e: &Enrolment,
        key: &str,
        now: SystemTime,
    ) -> Result<String, String> {
        let key = WebKey::from_hex(key)
            .ok_or("'web_key' must be 130 hex digits of an uncompressed P-256 point")?;
        let (mut dns, mut ips) = (Vec::new(), Vec::new());
        for name in &e.web_names {
            match name.parse::<std::net::IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => dns.push(name.clone()),
            }
        }
        https_cert::check_request(&node, &e.name, &dns, &ips)?;
        let claims = HttpsClaims {
            site: e.site.clone(),
            name: e.name.clone(),
            dns,
            ips,
            days: self.days,
        };
        let chain = enroller
            .issue_https(&claims, &key, now)
            .map_err(|e| e.to_string())?;
        Ok(cambox_trust::pem::encode_certificates(&chain))
    }
}

/// The bytes an enrolment's signature covers: the context, then its canonical JSON.
pub fn signed_bytes(e: &Enrolment) -> Vec<u8> {
    let mut out = CONTEXT.to_vec();
    out.extend_from_slice(&serde_json::to_vec(e).unwrap_or_default());
    out
}

/// An enrolment signed by the box's node key.
pub fn sign(id: &identity::Identity, enrolment: Enrolment) -> SignedEnrolment {
    SignedEnrolment {
        signature: cambox_mesh::hex::to_hex(&id.sign(&signed_bytes(&enrolment))),
        enrolment,
    }
}
