//! PEM, the form certificates and keys take on disk and in configuration.

use rustls_pki_types::CertificateDer;

/// Every certificate of a PEM text, in order.
pub fn certificates(text: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let blocks = pem::parse_many(text).map_err(|e| format!("not PEM: {e}"))?;
    let certs: Vec<_> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err("no certificate in it (expected -----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// Certificates as PEM text, one block each.
pub fn encode_certificates(certs: &[CertificateDer<'_>]) -> String {
    let blocks: Vec<_> = certs
        .iter()
        .map(|c| pem::Pem::new("CERTIFICATE", c.as_ref()))
        .collect();
    pem::encode_many(&blocks)
}

/// The one `PRIVATE KEY` block of a PEM text, as DER.
pub fn private_key(text: &str) -> Result<Vec<u8>, String> {
    let blocks = pem::parse_many(text).map_err(|e| format!("not PEM: {e}"))?;
    let mut keys = blocks.into_iter().filter(|b| b.tag() == "PRIVATE KEY");
    match (keys.next(), keys.next()) {
        (Some(k), None) => Ok(k.into_contents()),
        (None, _) => Err("no PRIVATE KEY block in it".into()),
        (Some(_), Some(_)) => Err("more than one PRIVATE KEY block in it".into()),
    }
}

/// A PKCS#8 key as a PEM `PRIVATE KEY` block.
pub fn encode_private_key(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("PRIVATE KEY", der))
}
