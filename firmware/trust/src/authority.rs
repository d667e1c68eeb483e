//! The company CA and the enrolment keys it delegates to registries.
//!
//! Both are an *authority*: an ECDSA P-256 key with a certificate. The root's certificate
//! is self-signed and is what every box (and every browser that opens a box's page)
//! trusts; an enrolment key's certificate is signed by the root and may sign end
//! certificates only (path length 0), so a registry that holds one can enrol boxes but
//! cannot make another CA, and losing it costs what the root revokes, not the root.
//!
//! An authority signs two kinds of certificate: a node certificate for a box's Ed25519
//! node key (the mesh's admission), and an HTTPS certificate for the box's P-256 web key
//! with its names and addresses (browsers). P-256 for the authorities because browsers
//! verify no Ed25519 signature in a chain ([`crate::ca_key`]).

use std::time::{Duration, SystemTime};

use cambox_mesh::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256, PKCS_ED25519,
};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use crate::ca_key::CaKey;
use crate::https_cert::{HttpsClaims, WebKey};
use crate::pem;

/// Certificates are valid from a little before they are made: a box whose clock is a few
/// minutes behind the authority's must not find a new certificate "not yet valid".
const BACKDATE: Duration = Duration::from_secs(10 * 60);
const DAY: Duration = Duration::from_secs(86_400);

#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("cannot make the certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("the key is not a P-256 PKCS#8 key (cambox CAs make only those): {0}")]
    Key(String),
    #[error("the certificate: {0}")]
    Cert(String),
    #[error("{0}")]
    Refused(String),
    #[error("the OS random source failed")]
    Random,
}

/// A key that signs certificates, with its certificate.
pub struct Authority {
    key: EcdsaKeyPair,
    /// The key as PKCS#8, which rcgen takes to sign certificates.
    pkcs8: Vec<u8>,
    public: CaKey,
    cert: CertificateDer<'static>,
    /// True for the company's root, false for an enrolment key.
    root: bool,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// What a new node certificate says.
#[derive(Debug, Clone)]
pub struct NodeClaims {
    pub node: NodeId,
    pub site: String,
    pub name: String,
    pub days: u32,
}

impl Authority {
    /// A new company CA named `name`, valid for `days`, with a new key from the OS's
    /// random source.
    pub fn create_root(name: &str, days: u32, now: SystemTime) -> Result<Self, AuthorityError> {
        let pkcs8 = new_key()?;
        let mut params = authority_params(name, days, serial()?, now)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        let cert = params.self_signed(&key_pair(&pkcs8)?)?;
        Self::with_key(pkcs8, cert.der().clone(), true)
    }

    fn with_key(
        pkcs8: Vec<u8>,
        cert: CertificateDer<'static>,
        root: bool,
    ) -> Result<Self, AuthorityError> {
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|e| AuthorityError::Key(e.to_string()))?;
        let public = CaKey(
            key.public_key()
                .as_ref()
                .try_into()
                .map_err(|_| AuthorityError::Key("not an uncompressed P-256 point".into()))?,
        );
        Ok(Self {
            key,
            pkcs8,
            public,
            cert,
            root,
        })
    }

    /// An authority from its certificate and key as written by [`Self::cert_pem`] and
    /// [`Self::key_pem`].
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, AuthorityError> {
        let cert = pem::certificates(cert_pem)
            .map_err(AuthorityError::Cert)?
            .remove(0);
        let pkcs8 = pem::private_key(key_pem).map_err(AuthorityError::Key)?;
        let parsed = crate::node_cert::parse(&cert).map_err(AuthorityError::Cert)?;
        let authority = Self::with_key(pkcs8, cert, parsed.self_issued)?;
        if parsed.p256 != Some(authority.public) {
            return Err(AuthorityError::Key(
                "it does not belong to the certificate beside it".into(),
            ));
        }
        Ok(authority)
    }

    /// An enrolment key for a registry, signed by this root.
    pub fn create_enroller(
        &self,
        name: &str,
        days: u32,
        now: SystemTime,
    ) -> Result<Authority, AuthorityError> {
        if !self.root {
            return Err(AuthorityError::Refused(
                "only the company's root CA makes enrolment keys".into(),
            ));
        }
        let pkcs8 = new_key()?;
        let mut params = authority_params(name, days, serial()?, now)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let cert = params.signed_by(&key_pair(&pkcs8)?, &self.issuer()?)?;
        Self::with_key(pkcs8, cert.der().clone(), false)
    }

    /// A node certificate for `claims`, as the chain a box presents: the node certificate,
    /// then this authority's own when it is an enrolment key.
    pub fn issue_node(
        &self,
        claims: &NodeClaims,
        now: SystemTime,
    ) -> Result<Vec<CertificateDer<'static>>, AuthorityError> {
        let mut params = end_params(
            crate::node_cert::NODE_ORGANIZATION,
            &claims.site,
            &claims.name,
            claims.days,
            now,
        )?;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&NodeKey(claims.node.0), &self.issuer()?)?;
        Ok(self.chain(cert.der().clone()))
    }

    /// An HTTPS certificate for a box's web key, its names and its addresses, as the chain
    /// its web server presents. What the names may be is the caller's rule
    /// ([`crate::https_cert::allowed_names`]).
    pub fn issue_https(
        &self,
        claims: &HttpsClaims,
        key: &WebKey,
        now: SystemTime,
    ) -> Result<Vec<CertificateDer<'static>>, AuthorityError> {
        let mut params = end_params(
            crate::https_cert::WEB_ORGANIZATION,
            &claims.site,
            &claims.name,
            claims.days,
            now,
        )?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        for dns in &claims.dns {
            params.subject_alt_names.push(SanType::DnsName(
                dns.as_str()
                    .try_into()
                    .map_err(|_| AuthorityError::Refused(format!("{dns:?} is not a DNS name")))?,
            ));
        }
        for ip in &claims.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        if params.subject_alt_names.is_empty() {
            return Err(AuthorityError::Refused(
                "an HTTPS certificate needs at least one name or address".into(),
            ));
        }
        let cert = params.signed_by(key, &self.issuer()?)?;
        Ok(self.chain(cert.der().clone()))
    }

    /// `leaf`, then this authority's certificate when it is an enrolment key (the root's
    /// is what the other side already trusts).
    fn chain(&self, leaf: CertificateDer<'static>) -> Vec<CertificateDer<'static>> {
        let mut chain = vec![leaf];
        if !self.root {
            chain.push(self.cert.clone());
        }
        chain
    }

    /// Signs `msg` with the authority's key (revocation lists, join tokens).
    pub fn sign(&self, msg: &[u8]) -> Result<[u8; 64], AuthorityError> {
        let sig = self
            .key
            .sign(&SystemRandom::new(), msg)
            .map_err(|_| AuthorityError::Random)?;
        sig.as_ref().try_into().map_err(|_| AuthorityError::Random)
    }

    /// The authority's public key.
    pub fn public_key(&self) -> CaKey {
        self.public
    }

    pub fn is_root(&self) -> bool {
        self.root
    }

    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    pub fn cert_pem(&self) -> String {
        pem::encode_certificates(std::slice::from_ref(&self.cert))
    }

    /// The private key, PKCS#8 PEM (what `openssl pkey` reads).
    pub fn key_pem(&self) -> String {
        pem::encode_private_key(&self.pkcs8)
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, AuthorityError> {
        Ok(Issuer::from_ca_cert_der(
            &self.cert,
            key_pair(&self.pkcs8)?,
        )?)
    }
}

/// What every end certificate has: subject `O=<organization>, OU=<site>, CN=<name>`,
/// validity, a random serial, no CA.
fn end_params(
    organization: &str,
    site: &str,
    name: &str,
    days: u32,
    now: SystemTime,
) -> Result<CertificateParams, AuthorityError> {
    if days == 0 {
        return Err(AuthorityError::Refused(
            "a certificate must be valid for at least one day".into(),
        ));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, organization);
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, site);
    params.distinguished_name.push(DnType::CommonName, name);
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + DAY * days).into();
    params.serial_number = Some(serial()?);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn authority_params(
    name: &str,
    days: u32,
    serial: SerialNumber,
    now: SystemTime,
) -> Result<CertificateParams, AuthorityError> {
    if name.trim().is_empty() {
        return Err(AuthorityError::Refused("the CA needs a name".into()));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, crate::node_cert::CA_ORGANIZATION);
    params.distinguished_name.push(DnType::CommonName, name);
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + DAY * days.max(1)).into();
    params.serial_number = Some(serial);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// A positive random 16-byte serial number.
fn serial() -> Result<SerialNumber, AuthorityError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| AuthorityError::Random)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// A new P-256 key as PKCS#8.
fn new_key() -> Result<Vec<u8>, AuthorityError> {
    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .map(|doc| doc.as_ref().to_vec())
        .map_err(|_| AuthorityError::Random)
}

fn key_pair(pkcs8: &[u8]) -> Result<KeyPair, AuthorityError> {
    let der = PrivatePkcs8KeyDer::from(pkcs8.to_vec());
    Ok(KeyPair::from_pkcs8_der_and_sign_algo(
        &der,
        &PKCS_ECDSA_P256_SHA256,
    )?)
}

/// A node's public key, which is all a certificate for it needs: the node proves it holds
/// the private key in each handshake, not here.
struct NodeKey([u8; 32]);

impl rcgen::PublicKeyData for NodeKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &PKCS_ED25519
    }
}
