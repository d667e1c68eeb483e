//! A box's place in a mesh with a company CA, from its files: the CA's certificate
//! (`mesh_ca`, or the one kept from enrolment), its node certificate (`node.crt` beside
//! the node key), the revocation list it last took (`revoked.txt`), and its web key and
//! HTTPS certificate (`https.key`, `https.crt`). With a join token and no valid node
//! certificate, the box enrols at its registries first; with a node certificate but no
//! HTTPS certificate for its present names and addresses, it renews at them with the node
//! certificate as its proof.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use cambox_mesh::identity::Identity;
use cambox_node::client::ApiClient;
use cambox_node::mesh::trust::Trust;
use cambox_registry::model::{EnrolReply, Enrolment};
use cambox_trust::https_cert::{self, WebKey};
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

/// The host names and addresses a box listening for HTTP on `listen` has certified: its
/// mDNS name and box name, and the address it listens on (every address of the machine,
/// loopback included, when it listens on all).
pub fn web_names(identity: &Identity, name: &str, listen: std::net::SocketAddr) -> Vec<String> {
    let mut names = https_cert::allowed_dns(&identity.node_id(), name);
    let ips = if listen.ip().is_unspecified() {
        let mut all = cambox_node::board::runner::addresses();
        all.push(std::net::Ipv4Addr::LOCALHOST.into());
        all.push(std::net::Ipv6Addr::LOCALHOST.into());
        all
    } else {
        vec![listen.ip()]
    };
    names.extend(ips.iter().map(|ip| ip.to_canonical().to_string()));
    names
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
    /// The host names and addresses the HTTPS certificate must name; none: the box serves
    /// no HTTPS and asks for no certificate.
    pub web_names: Vec<String>,
}

/// What a box shows a registry to be enrolled.
#[derive(Debug, Clone)]
enum Proof<'a> {
    /// First enrolment.
    Token(&'a JoinToken),
    /// Renewal: the node certificate chain it holds (PEM) and the CA it chains to.
    Certificate {
        chain: String,
        ca: CertificateDer<'static>,
    },
}

/// The box's HTTPS certificate chain and web key, PEM.
#[derive(Debug)]
pub struct WebCertificate {
    pub chain: String,
    pub key: String,
    pub names: Vec<String>,
}

impl TrustFiles<'_> {
    /// The CA kept from enrolment, beside the node certificate.
    fn kept_ca(&self) -> PathBuf {
        self.node_cert.with_file_name("ca.crt")
    }

    fn web_key_path(&self) -> PathBuf {
        self.node_cert.with_file_name("https.key")
    }

    fn web_cert_path(&self) -> PathBuf {
        self.node_cert.with_file_name("https.crt")
    }

    /// The CA this box's mesh trusts, if any is set or kept.
    fn ca_path(&self) -> Option<PathBuf> {
        match (&self.mesh_ca, self.join_token) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(_)) => Some(self.kept_ca()),
            (None, None) => None,
        }
    }

    /// The mesh's admission for this box, enrolling first if it must; `None`: a lab mesh.
    pub async fn trust(&self) -> anyhow::Result<Option<Arc<Trust>>> {
        let Some(ca_path) = self.ca_path() else {
            if self.node_cert.exists() {
                eprintln!(
                    "cambox: {} is not used: no mesh_ca is set, so this mesh is a lab",
                    self.node_cert.display()
                );
            }
            return Ok(None);
        };
        if let (Some(token), Some(ca)) = (self.join_token, &self.mesh_ca) {
            let rule = admission(ca)?;
            if rule.ca_key() != &token.ca_key {
                anyhow::bail!(
                    "the join token is from another CA than mesh_ca {} ({:?})",
                    ca.display(),
                    rule.ca_name()
                );
            }
        }
        // Whether the node certificate is good, read once (and again after enrolling).
        let mut node = self.current(&ca_path);
        match (self.join_token, &node) {
            (Some(token), Err(why)) => {
                eprintln!("cambox: enrolling with the join token ({why})");
                if let Err(e) = self.enrol(Proof::Token(token), ENROL_FOR).await {
                    eprintln!("cambox: not enrolled: {e:#}");
                }
                node = self.current(&ca_path);
            }
            (None, Err(why)) => {
                eprintln!("cambox: {why}; a join_token in cambox.toml would enrol this box again");
            }
            (_, Ok(())) => {}
        }
        let web = match (self.web_names.is_empty(), &node) {
            (false, Ok(())) => self.web_current(&ca_path),
            _ => Ok(()),
        };
        if let Err(why) = web {
            if self.registries.is_empty() {
                eprintln!("cambox: no HTTPS certificate ({why}) and no registry to ask for one");
            } else {
                eprintln!("cambox: asking for an HTTPS certificate ({why})");
                let proof = Proof::Certificate {
                    chain: std::fs::read_to_string(&self.node_cert)?,
                    ca: read_certs(&ca_path)?.remove(0),
                };
                if let Err(e) = self.enrol(proof, Duration::ZERO).await {
                    eprintln!("cambox: no HTTPS certificate: {e:#}");
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

    /// The box's HTTPS certificate and web key, when the CA certified them for all of the
    /// box's present names and addresses; `None` (and why, on stderr): serve plain HTTP.
    pub fn web(&self) -> Option<WebCertificate> {
        if self.web_names.is_empty() {
            return None;
        }
        let ca_path = self.ca_path()?;
        match self.web_current(&ca_path) {
            Ok(()) => Some(WebCertificate {
                chain: std::fs::read_to_string(self.web_cert_path()).ok()?,
                key: std::fs::read_to_string(self.web_key_path()).ok()?,
                names: self.web_names.clone(),
            }),
            Err(why) => {
                eprintln!("cambox: serving plain HTTP only: {why}");
                None
            }
        }
    }

    /// Why the HTTPS certificate must be (re)made, if it must.
    fn web_current(&self, ca_path: &Path) -> Result<(), String> {
        let (key_path, cert_path) = (self.web_key_path(), self.web_cert_path());
        if !cert_path.exists() || !key_path.exists() {
            return Err("no HTTPS certificate yet".into());
        }
        let key = std::fs::read_to_string(&key_path)
            .map_err(|e| format!("cannot read {}: {e}", key_path.display()))
            .and_then(|pem| WebKey::of_private_pem(&pem))?;
        let ca = read_certs(ca_path).map_err(|e| format!("{e:#}"))?.remove(0);
        let chain = read_certs(&cert_path).map_err(|e| format!("{e:#}"))?;
        let ends = https_cert::check(&ca, &chain, &key, &self.web_names, SystemTime::now())
            .map_err(|e| format!("the HTTPS certificate: {e}"))?;
        if ends < SystemTime::now() + RENEW_BEFORE {
            return Err(format!(
                "the HTTPS certificate expires at {}",
                cambox_trust::utc(ends)
            ));
        }
        Ok(())
    }

    /// The web key's public half, made first if the box has none.
    fn web_key(&self) -> anyhow::Result<WebKey> {
        let path = self.web_key_path();
        if !path.exists() {
            let pem = WebKey::generate_pem().map_err(anyhow::Error::msg)?;
            crate::box_files::write_private(&path, &pem)?;
        }
        let pem = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        WebKey::of_private_pem(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Asks each registry in turn, again for up to `patience`, and keeps the certificates
    /// and the CA's certificate the first one answers with.
    async fn enrol(&self, proof: Proof<'_>, patience: Duration) -> anyhow::Result<()> {
        if self.registries.is_empty() {
            anyhow::bail!(
                "a join token needs a registry to enrol at (registry = [\"http://...\"])"
            );
        }
        if let Proof::Token(token) = proof {
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
        }
        let web_key = match self.web_names.is_empty() {
            true => None,
            false => Some(self.web_key()?),
        };
        let deadline = tokio::time::Instant::now() + patience;
        let mut last = String::new();
        loop {
            for base in self.registries {
                match self.ask(base, &proof, web_key.as_ref()).await {
                    Ok(reply) => return self.keep(&proof, reply, base, web_key.as_ref()),
                    Err(e) => last = format!("{base}: {e:#}"),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("no registry enrolled this box: {last}");
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    async fn ask(
        &self,
        base: &str,
        proof: &Proof<'_>,
        web_key: Option<&WebKey>,
    ) -> anyhow::Result<EnrolReply> {
        let (token, certificate) = match proof {
            Proof::Token(t) => (t.to_string(), None),
            Proof::Certificate { chain, .. } => (String::new(), Some(chain.clone())),
        };
        let enrolment = Enrolment {
            token,
            certificate,
            node: self.identity.node_id().to_hex(),
            name: self.name.to_owned(),
            site: self.site.to_owned(),
            timestamp_ms: cambox_trust::unix_secs(SystemTime::now()) * 1000,
            web_key: web_key.map(WebKey::to_hex),
            web_names: self.web_names.clone(),
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

    /// Checks the answer before keeping anything: the CA must be the token's (or the one
    /// the box already trusts), and the certificates must be for this box under it.
    fn keep(
        &self,
        proof: &Proof<'_>,
        reply: EnrolReply,
        base: &str,
        web_key: Option<&WebKey>,
    ) -> anyhow::Result<()> {
        let ca = cambox_trust::pem::certificates(&reply.ca)
            .map_err(|e| anyhow::anyhow!("{base} sent no CA certificate: {e}"))?
            .remove(0);
        let rule = Admission::new(ca.clone()).map_err(|e| anyhow::anyhow!("{base}'s CA: {e}"))?;
        let ours = match proof {
            Proof::Token(token) => rule.ca_key() == &token.ca_key,
            Proof::Certificate { ca: held, .. } => held == &ca,
        };
        if !ours {
            anyhow::bail!("{base} answered with another CA than this box's");
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
        let web = match (&reply.web_certificate, web_key) {
            (Some(pem), Some(web_key)) => {
                let chain = cambox_trust::pem::certificates(pem)
                    .map_err(|e| anyhow::anyhow!("{base}'s HTTPS certificate: {e}"))?;
                https_cert::check(&ca, &chain, web_key, &self.web_names, SystemTime::now())
                    .map_err(|e| anyhow::anyhow!("{base}'s HTTPS certificate: {e}"))?;
                Some(pem)
            }
            _ => None,
        };
        if self.mesh_ca.is_none() {
            write_atomic(&self.kept_ca(), reply.ca.as_bytes())?;
        }
        write_atomic(&self.node_cert, reply.certificate.as_bytes())?;
        match web {
            Some(pem) => {
                write_atomic(&self.web_cert_path(), pem.as_bytes())?;
                eprintln!(
                    "cambox: enrolled by the registry {base}, with HTTPS for {}",
                    self.web_names.join(", ")
                );
            }
            None => eprintln!("cambox: enrolled by the registry {base}"),
        }
        Ok(())
    }
}
