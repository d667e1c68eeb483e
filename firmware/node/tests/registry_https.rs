//! Registries over https://: the box trusts the built-in public roots plus a company CA
//! from `ca_file`, and refuses a server whose certificate it cannot verify.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use cambox_node::client::{ApiClient, ClientError};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A company CA and a server certificate for `localhost` signed by it.
fn company_pki() -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (
        issuer.pem(),
        leaf.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

/// Serves `n` TLS connections, answering each request with a small JSON body; returns
/// the port and a receiver of the requests' heads.
fn tls_server(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    n: usize,
) -> (u16, std::sync::mpsc::Receiver<String>) {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(n) {
            let Ok(tcp) = stream else { continue };
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match tls.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let text = String::from_utf8_lossy(&head).to_string();
            let len = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            let _ = tls.read_exact(&mut body);
            let reply = b"{\"ok\":true}";
            let _ = write!(
                tls,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                reply.len()
            );
            let _ = tls.write_all(reply);
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
            let _ = tx.send(text);
        }
    });
    (port, rx)
}

#[tokio::test]
async fn https_registries_are_verified_against_the_company_ca() {
    let (ca_pem, cert, key) = company_pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("company-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let (port, heads) = tls_server(cert, key, 2);
    let url = format!("https://localhost:{port}/api/v1/register");

    let trusting = ApiClient::new(Some(&ca_file)).unwrap();
    let (status, body) = trusting
        .post_json(&url, b"{}".to_vec(), Some("s3cret"))
        .await
        .expect("the company CA vouches for the server");
    assert_eq!((status, &body[..]), (200, &b"{\"ok\":true}"[..]));
    let head = heads.recv().unwrap().to_ascii_lowercase();
    assert!(head.starts_with("post /api/v1/register"), "{head}");
    assert!(head.contains("authorization: bearer s3cret"), "{head}");

    // Without the CA, the same server is refused.
    let public_only = ApiClient::new(None).unwrap();
    let err = public_only
        .post_json(&url, b"{}".to_vec(), None)
        .await
        .expect_err("an unknown CA must be refused");
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}

#[test]
fn a_ca_file_that_is_not_pem_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, "not a certificate").unwrap();
    let err = ApiClient::new(Some(&path)).unwrap_err();
    assert!(err.to_string().contains("ca.pem"), "{err}");
}
