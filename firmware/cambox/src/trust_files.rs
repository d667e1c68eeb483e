//! A box's place in a mesh with a company CA, from its files: the CA's certificate
//! (`mesh_ca`, or the one kept from enrolment), its node certificate (`node.crt` beside
//! the node key) and the revocation list it last took (`revoked.txt`). With a join token
//! and no valid certificate, the box enrols at its registries first.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use cambox_mesh::identity::Identity;
use cambox_node::client::ApiClient;
use cambox_node::mesh::trust::Trust;
use cambox_registry::model::{EnrolReply, Enrolment};
use cambox_trust::{Admission, JoinToken};
use rustls_pki_types::CertificateDer;

use crate::box_files::write_atomic;

/// A certificate closer to its end than this is renewed at start (with a join token).
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);
/// How long a box with a token and no certificate keeps asking its registries at start
/// before it runs unenrolled (and says so).
const ENROL_FOR: Duration = Duration::from_secs(30);

/// The company CA's certificate in `path`, as an admission rule.
pub fn admission(path: &Path) -> anyhow::Result<Admission> {
    let ca = read_certs(path)?.remove(0);
    Admission::new(ca).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    cambox_trust::pem::certificates(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// What the box needs to decide its admission.
#[derive(Debug)]
pub struct TrustFiles<'a> {
    pub mesh_ca: Option<PathBuf>,
    pub node_cert: PathBuf,
    pub join_token: Option<&'a JoinToken>,
    pub registries: &'a [String],
    pub client: &'a ApiClient,
    pub identity: &'a Identity,
    pub site: &'a str,
    pub name: &'a str,
}

impl TrustFiles<'_> {
    /// The CA kept from enrolment, beside the node certificate.
    fn kept_ca(&self) -> PathBuf {
        self.node_cert.with_file_name("ca.crt")
    }

    /// The mesh's admission for this box, enrolling first if it must; `None`: a lab mesh.
    pub async fn trust(&self) -> anyhow::Result<Option<Arc<Trust>>> {
        let ca_path = match (&self.mesh_ca, self.join_token) {
            (Some(p), _) => p.clone(),
            (None, Some(_)) => self.kept_ca(),
            (None, None) => {
                if self.node_cert.exists() {
                    eprintln!(
                        "cambox: {} is not used: no mesh_ca is set, so this mesh is a lab",
                        self.node_cert.display()
                    );
                }
                return Ok(None);
            }
        };
        if let Some(token) = self.join_token {
            if let Some(ca) = &self.mesh_ca {
                let rule = admission(ca)?;
                if rule.ca_key() != &token.ca_key {
                    anyhow::bail!(
                        "the join token is from another CA than mesh_ca {} ({:?})",
                        ca.display(),
                        rule.ca_name()
                    );
                }
            }
            if let Err(why) = self.current(&ca_path) {
                eprintln!("cambox: enrolling with the join token ({why})");
                if let Err(e) = self.enrol(token).await {
                    eprintln!("cambox: not enrolled: {e:#}");
                }
            }
        }
        if !ca_path.exists() {
            eprintln!(
                "cambox: no CA certificate yet ({}): this box joins no mesh until it is enrolled",
                ca_path.display()
            );
            return Ok(None);
        }
        let ca = read_certs(&ca_path)?.remove(0);
        let chain = if self.node_cert.exists() {
            read_certs(&self.node_cert)?
        } else {
            Vec::new()
        };
        let trust = Trust::new(
            ca,
            chain,
            self.identity.node_id(),
            Some(self.node_cert.with_file_name("revoked.txt")),
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", ca_path.display()))?;
        let view = trust.view();
        match (&view.certificate, &view.problem) {
            (Some(c), _) => eprintln!(
                "cambox: enrolled by CA {:?} as {:?} at site {:?} until {}",
                view.ca.clone().unwrap_or_default(),
                c.name,
                c.site,
                c.expires
            ),
            (None, Some(p)) => eprintln!(
                "cambox: this box's node certificate would be refused ({p}): no enrolled box will link to it"
            ),
            (None, None) => {}
        }
        Ok(Some(Arc::new(trust)))
    }

    /// Why the box's certificate must be (re)made, if it must.
    fn current(&self, ca_path: &Path) -> Result<(), String> {
        if !ca_path.exists() || !self.node_cert.exists() {
            return Err("no node certificate yet".into());
        }
        let rule = admission(ca_path).map_err(|e| format!("{e:#}"))?;
        let chain = read_certs(&self.node_cert).map_err(|e| format!("{e:#}"))?;
        let cert = rule
            .check(self.identity.node_id(), &chain, SystemTime::now())
            .map_err(|e| format!("the node certificate: {e}"))?;
        if cert.site != self.site || cert.name != self.name {
            return Err(format!(
                "the node certificate names {:?} at {:?}, this box is {:?} at {:?}",
                cert.name, cert.site, self.name, self.site
            ));
        }
        if cert.not_after < SystemTime::now() + RENEW_BEFORE {
            return Err(format!(
                "the node certificate expires at {}",
                cambox_trust::utc(cert.not_after)
            ));
        }
        Ok(())
    }

    /// Asks each registry in turn, for up to [`ENROL_FOR`], and keeps the certificate and
    /// the CA's certificate the first one answers with.
    async fn enrol(&self, token: &JoinToken) -> anyhow::Result<()> {
        if self.registries.is_empty() {
            anyhow::bail!(
                "a join token needs a registry to enrol at (registry = [\"http://...\"])"
            );
        }
        if token.site != self.site {
            anyhow::bail!(
                "the join token is for site {:?} but this box is at {:?}",
                token.site,
                self.site
            );
        }
        token
            .verify(&token.ca_key, SystemTime::now())
            .map_err(anyhow::Error::msg)?;
        let deadline = tokio::time::Instant::now() + ENROL_FOR;
        let mut last = String::new();
        loop {
            for base in self.registries {
                match self.ask(base, token).await {
                    Ok(reply) => return self.keep(token, reply, base),
                    Err(e) => last = format!("{base}: {e:#}"),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("no registry enrolled this box: {last}");
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    async fn ask(&self, base: &str, token: &JoinToken) -> anyhow::Result<EnrolReply> {
        let enrolment = Enrolment {
            token: token.to_string(),
            node: self.identity.node_id().to_hex(),
            name: self.name.to_owned(),
            site: self.site.to_owned(),
            timestamp_ms: cambox_trust::unix_secs(SystemTime::now()) * 1000,
        };
        let signed = cambox_registry::company_ca::sign(self.identity, enrolment);
        let url = format!("{}/api/v1/enrol", base.trim_end_matches('/'));
        let (status, body) = self
            .client
            .post_json(&url, serde_json::to_vec(&signed)?, None)
            .await?;
        if status != 200 {
            anyhow::bail!(
                "answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            );
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// Checks the answer against the token before keeping anything: the CA must be the
    /// token's, and the certificate must admit this box under it.
    fn keep(&self, token: &JoinToken, reply: EnrolReply, base: &str) -> anyhow::Result<()> {
        let ca = cambox_trust::pem::certificates(&reply.ca)
            .map_err(|e| anyhow::anyhow!("{base} sent no CA certificate: {e}"))?
            .remove(0);
        let rule = Admission::new(ca).map_err(|e| anyhow::anyhow!("{base}'s CA: {e}"))?;
        if rule.ca_key() != &token.ca_key {
            anyhow::bail!("{base} answered with another CA than the join token's");
        }
        let chain = cambox_trust::pem::certificates(&reply.certificate)
            .map_err(|e| anyhow::anyhow!("{base}'s certificate: {e}"))?;
        rule.check(self.identity.node_id(), &chain, SystemTime::now())
            .map_err(|e| anyhow::anyhow!("{base}'s certificate: {e}"))?;
        if let Some(dir) = self
            .node_cert
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot make {}", dir.display()))?;
        }
        if self.mesh_ca.is_none() {
            write_atomic(&self.kept_ca(), reply.ca.as_bytes())?;
        }
        write_atomic(&self.node_cert, reply.certificate.as_bytes())?;
        eprintln!("cambox: enrolled by the registry {base}");
        Ok(())
    }
}
