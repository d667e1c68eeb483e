//! The company CA and the enrolment keys it delegates to registries.
//!
//! Both are an *authority*: an Ed25519 key with a certificate. The root's certificate is
//! self-signed and is what every box trusts; an enrolment key's certificate is signed by
//! the root and may sign node certificates only (path length 0), so a registry that holds
//! one can enrol boxes but cannot make another CA, and losing it costs what the root
//! revokes, not the root.
//!
//! Ed25519 throughout: the node keys already are, and one algorithm is one thing to check.

use std::time::{Duration, SystemTime};

use cambox_mesh::identity::Identity;
use cambox_mesh::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber, PKCS_ED25519,
};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use crate::pem;

/// Certificates are valid from a little before they are made: a box whose clock is a few
/// minutes behind the authority's must not find a new certificate "not yet valid".
const BACKDATE: Duration = Duration::from_secs(10 * 60);
const DAY: Duration = Duration::from_secs(86_400);

#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("cannot make the certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("the key is not an Ed25519 PKCS#8 key (cambox CAs make only those): {0}")]
    Key(String),
    #[error("the certificate: {0}")]
    Cert(String),
    #[error("{0}")]
    Refused(String),
}

/// A key that signs certificates, with its certificate.
pub struct Authority {
    key: Identity,
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
    /// A new company CA named `name`, valid for `days`. `seed` is the key and must come
    /// from the OS's random source.
    pub fn create_root(
        name: &str,
        days: u32,
        seed: [u8; 32],
        now: SystemTime,
    ) -> Result<Self, AuthorityError> {
        let key = Identity::from_seed(seed);
        let mut params = authority_params(name, days, serial(&seed), now)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        let cert = params.self_signed(&key_pair(&key)?)?;
        Ok(Self {
            key,
            cert: cert.der().clone(),
            root: true,
        })
    }

    /// An authority from its certificate and key as written by [`Self::cert_pem`] and
    /// [`Self::key_pem`].
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, AuthorityError> {
        let cert = pem::certificates(cert_pem)
            .map_err(AuthorityError::Cert)?
            .remove(0);
        let key = identity_from_pkcs8(&pem::private_key(key_pem).map_err(AuthorityError::Key)?)?;
        let parsed = crate::node_cert::parse(&cert).map_err(AuthorityError::Cert)?;
        if parsed.key != key.node_id().0 {
            return Err(AuthorityError::Key(
                "it does not belong to the certificate beside it".into(),
            ));
        }
        Ok(Self {
            key,
            root: parsed.self_issued,
            cert,
        })
    }

    /// An enrolment key for a registry, signed by this root.
    pub fn create_enroller(
        &self,
        name: &str,
        days: u32,
        seed: [u8; 32],
        now: SystemTime,
    ) -> Result<Authority, AuthorityError> {
        if !self.root {
            return Err(AuthorityError::Refused(
                "only the company's root CA makes enrolment keys".into(),
            ));
        }
        let key = Identity::from_seed(seed);
        let mut params = authority_params(name, days, serial(&seed), now)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let cert = params.signed_by(&key_pair(&key)?, &self.issuer()?)?;
        Ok(Authority {
            key,
            cert: cert.der().clone(),
            root: false,
        })
    }

    /// A node certificate for `claims`, as the chain a box presents: the node certificate,
    /// then this authority's own when it is an enrolment key.
    pub fn issue_node(
        &self,
        claims: &NodeClaims,
        serial_seed: [u8; 32],
        now: SystemTime,
    ) -> Result<Vec<CertificateDer<'static>>, AuthorityError> {
        if claims.days == 0 {
            return Err(AuthorityError::Refused(
                "a certificate must be valid for at least one day".into(),
            ));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::OrganizationName,
            crate::node_cert::NODE_ORGANIZATION,
        );
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, claims.site.as_str());
        params
            .distinguished_name
            .push(DnType::CommonName, claims.name.as_str());
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + DAY * claims.days).into();
        params.serial_number = Some(serial(&serial_seed));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&NodeKey(claims.node.0), &self.issuer()?)?;
        let mut chain = vec![cert.der().clone()];
        if !self.root {
            chain.push(self.cert.clone());
        }
        Ok(chain)
    }

    /// Signs `msg` with the authority's key (revocation lists, join tokens).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg)
    }

    /// The authority's Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.node_id().0
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
        pem::encode_private_key(&self.key.pkcs8_der())
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, AuthorityError> {
        Ok(Issuer::from_ca_cert_der(&self.cert, key_pair(&self.key)?)?)
    }
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

/// A positive 16-byte serial number from random bytes.
fn serial(random: &[u8; 32]) -> SerialNumber {
    let mut bytes = random[16..].to_vec();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn key_pair(key: &Identity) -> Result<KeyPair, AuthorityError> {
    let der = PrivatePkcs8KeyDer::from(key.pkcs8_der());
    Ok(KeyPair::from_pkcs8_der_and_sign_algo(&der, &PKCS_ED25519)?)
}

/// The Ed25519 key in a PKCS#8 v1 document of the one layout Ed25519 keys have.
fn identity_from_pkcs8(der: &[u8]) -> Result<Identity, AuthorityError> {
    let layout = Identity::from_seed([0; 32]).pkcs8_der();
    let prefix = &layout[..layout.len() - 32];
    match der.strip_prefix(prefix) {
        Some(seed) if seed.len() == 32 => Ok(Identity::from_seed(
            seed.try_into().expect("length checked"),
        )),
        _ => Err(AuthorityError::Key(format!(
            "{} bytes of another layout",
            der.len()
        ))),
    }
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
