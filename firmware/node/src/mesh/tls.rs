//! TLS for the overlay: each node's certificate is self-signed by its own Ed25519 node
//! key, so the handshake itself proves which node is on the other end. The node id *is*
//! the public key, and a certificate is accepted here exactly when its key is the id the
//! dialer expected (or, for a static peer given by address, any valid key, which then
//! becomes that peer's id).
//!
//! In a mesh with a company CA each node sends its node certificate chain after that
//! certificate; whether it admits the node is checked once the handshake is done
//! (`conn::establish`, `trust`), so that a refusal can be closed with its reason.

use std::sync::Arc;

use cambox_mesh::identity::Identity;
use cambox_mesh::NodeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// ALPN of the overlay protocol; a new wire version gets a new string, and a mesh that
/// requires a secret will get its own (see docs/architecture.md, Admission).
pub const ALPN: &[u8] = b"cambox/1";
/// Server name used when the dialer does not know the peer's id (a static `--peer`).
const ANY_NODE: &str = "any.cambox";

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
const ED25519_SPKI: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot make the node certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("QUIC crypto configuration: {0}")]
    Quic(String),
    #[error("the OS random source failed: {0}")]
    Random(String),
}

/// What [`quic_configs`] makes: the endpoint's two sides and the certificate both present.
#[derive(Debug)]
pub struct QuicConfigs {
    pub server: quinn::ServerConfig,
    pub client: quinn::ClientConfig,
    pub certificate: CertificateDer<'static>,
}

/// The node id a certificate proves: the Ed25519 key in its SubjectPublicKeyInfo.
pub fn node_id_of(cert: &[u8]) -> Option<NodeId> {
    let at = cert
        .windows(ED25519_SPKI.len())
        .position(|w| w == ED25519_SPKI)?;
    let key = cert.get(at + ED25519_SPKI.len()..at + ED25519_SPKI.len() + 32)?;
    Some(NodeId(key.try_into().ok()?))
}

/// The server name that asks the verifier for exactly `node` (two hex labels: a DNS label
/// holds at most 63 characters).
pub fn server_name_for(node: Option<NodeId>) -> String {
    match node {
        Some(n) => {
            let hex = n.to_hex();
            format!("{}.{}.cambox", &hex[..32], &hex[32..])
        }
        None => ANY_NODE.into(),
    }
}

fn expected_node(name: &ServerName<'_>) -> Result<Option<NodeId>, rustls::Error> {
    let bad = || rustls::Error::General(format!("not a cambox server name: {name:?}"));
    let ServerName::DnsName(dns) = name else {
        return Err(bad());
    };
    let s = dns.as_ref();
    if s == ANY_NODE {
        return Ok(None);
    }
    let hex = s.strip_suffix(".cambox").ok_or_else(bad)?.replace('.', "");
    NodeId::from_hex(&hex).map(Some).ok_or_else(bad)
}

/// Accepts a certificate whose Ed25519 key is the expected node (or any node), and checks
/// the handshake signature against that key, which proves the peer holds it.
#[derive(Debug)]
struct NodeKeyVerifier {
    provider: Arc<CryptoProvider>,
}

impl NodeKeyVerifier {
    fn check(&self, cert: &CertificateDer<'_>, want: Option<NodeId>) -> Result<(), rustls::Error> {
        let got = node_id_of(cert).ok_or_else(|| {
            rustls::Error::General("peer certificate carries no Ed25519 node key".into())
        })?;
        match want {
            Some(w) if w != got => Err(rustls::Error::General(format!(
                "peer is node {got}, not the node {w} it was reached as"
            ))),
            _ => Ok(()),
        }
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
}

impl ServerCertVerifier for NodeKeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, expected_node(server_name)?)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(
            "the overlay speaks TLS 1.3 only".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for NodeKeyVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, None)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(
            "the overlay speaks TLS 1.3 only".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The node's certificate and key, as rustls wants them. Its serial number is drawn anew
/// by each process, so a connection can tell this very process (a box that dialed its
/// own address) from another box that holds the same node key.
fn node_certificate(
    identity: &Identity,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    let der = identity.pkcs8_der();
    let pkcs8 = PrivatePkcs8KeyDer::from(der.clone());
    let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)?;
    let mut params =
        rcgen::CertificateParams::new(vec![server_name_for(Some(identity.node_id()))])?;
    let mut serial = [0u8; 8];
    getrandom::fill(&mut serial).map_err(|e| TlsError::Random(e.to_string()))?;
    params.serial_number = Some(rcgen::SerialNumber::from(u64::from_be_bytes(serial) >> 1));
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, identity.node_id().short());
    let cert = params.self_signed(&key)?;
    Ok((
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
    ))
}

/// QUIC server and client configurations that prove `identity` and verify peers'. `chain`
/// (the node certificate from a company CA, if any) is presented after the node's own.
pub fn quic_configs(
    identity: &Identity,
    chain: &[CertificateDer<'static>],
    transport: Arc<quinn::TransportConfig>,
) -> Result<QuicConfigs, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(NodeKeyVerifier {
        provider: provider.clone(),
    });
    let (cert, key) = node_certificate(identity)?;
    let presented: Vec<_> = std::iter::once(cert.clone())
        .chain(chain.iter().cloned())
        .collect();

    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(presented.clone(), key.clone_key())?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    let server = quinn::crypto::rustls::QuicServerConfig::try_from(server)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
    server.transport_config(transport.clone());

    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(presented, key)?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    let client = quinn::crypto::rustls::QuicClientConfig::try_from(client)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(client));
    client.transport_config(transport);
    Ok(QuicConfigs {
        server,
        client,
        certificate: cert,
    })
}

/// The certificates an established connection's peer presented, its own first.
pub fn peer_certificates(conn: &quinn::Connection) -> Vec<CertificateDer<'static>> {
    conn.peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .map(|certs| *certs)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_carries_the_node_key() {
        let id = Identity::from_seed([9; 32]);
        let (cert, _) = node_certificate(&id).unwrap();
        assert_eq!(node_id_of(&cert), Some(id.node_id()));
    }

    proptest::proptest! {
        /// A peer's certificate bytes never panic the key lookup, and a key is found
        /// exactly where an Ed25519 SubjectPublicKeyInfo with 32 key bytes is.
        #[test]
        fn any_certificate_bytes_are_safe(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            if let Some(id) = node_id_of(&bytes) {
                let at = bytes.windows(ED25519_SPKI.len()).position(|w| w == ED25519_SPKI).unwrap();
                proptest::prop_assert_eq!(&bytes[at + 12..at + 44], &id.0[..]);
            }
        }
    }

    #[test]
    fn server_name_round_trips_the_node_id() {
        let id = Identity::from_seed([3; 32]).node_id();
        let name = ServerName::try_from(server_name_for(Some(id))).unwrap();
        assert_eq!(expected_node(&name).unwrap(), Some(id));
        let any = ServerName::try_from(server_name_for(None)).unwrap();
        assert_eq!(expected_node(&any).unwrap(), None);
        let other = ServerName::try_from("example.com").unwrap();
        assert!(expected_node(&other).is_err());
    }
}
