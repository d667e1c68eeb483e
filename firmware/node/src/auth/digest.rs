//! HTTP Digest authentication (RFC 2617, MD5) for RTSP, which is what ffmpeg, GStreamer,
//! VLC and NVRs speak. The box keeps, per local account, MD5(name:realm:password) (the
//! "HA1" Digest needs), made by `cambox user add` beside the argon2 hash: a weaker secret
//! than the argon2 hash, good for RTSP only, so the accounts file stays readable by its
//! owner only.

use md5::{Digest as _, Md5};

/// The realm every box names in its challenge (HA1 depends on it).
pub const REALM: &str = "cambox";

/// MD5(name:realm:password), hex: what the box keeps for RTSP.
pub fn ha1(name: &str, password: &str) -> String {
    md5_hex(&format!("{name}:{REALM}:{password}"))
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `WWW-Authenticate` value that asks for credentials.
pub fn challenge(nonce: &str) -> String {
    format!("Digest realm=\"{REALM}\", nonce=\"{nonce}\"")
}

/// An `Authorization: Digest ...` header's fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub cnonce: Option<String>,
}

/// The fields of a Digest `Authorization` header, or `None` for anything else.
pub fn parse(header: &str) -> Option<Credentials> {
    let rest = header.trim().strip_prefix("Digest ")?;
    let mut c = Credentials::default();
    for part in split_fields(rest) {
        let (k, v) = part.split_once('=')?;
        let v = v.trim().trim_matches('"').to_owned();
        match k.trim().to_ascii_lowercase().as_str() {
            "username" => c.username = v,
            "realm" => c.realm = v,
            "nonce" => c.nonce = v,
            "uri" => c.uri = v,
            "response" => c.response = v,
            "qop" => c.qop = Some(v),
            "nc" => c.nc = Some(v),
            "cnonce" => c.cnonce = Some(v),
            _ => {}
        }
    }
    (!c.username.is_empty() && !c.response.is_empty()).then_some(c)
}

/// Splits on commas outside quotes.
fn split_fields(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, ch) in s.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(s[start..].trim());
    out.retain(|p| !p.is_empty());
    out
}

/// Whether `c` answers the challenge with `nonce` for `method`, given the account's HA1.
pub fn verify(c: &Credentials, ha1: &str, method: &str, nonce: &str) -> bool {
    if c.realm != REALM || c.nonce != nonce {
        return false;
    }
    let ha2 = md5_hex(&format!("{method}:{}", c.uri));
    let expected = match (&c.qop, &c.nc, &c.cnonce) {
        (Some(qop), Some(nc), Some(cnonce)) if qop == "auth" => {
            md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"))
        }
        (None, _, _) => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
        _ => return false,
    };
    // Same length, compared without stopping at the first difference.
    expected.len() == c.response.len()
        && expected
            .bytes()
            .zip(c.response.to_ascii_lowercase().bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617, section 3.5: Mufasa, realm testrealm@host.com, qop auth.
    #[test]
    fn the_rfc_example_verifies() {
        let ha1 = md5_hex("Mufasa:testrealm@host.com:Circle Of Life");
        let header = r#"Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        let mut c = parse(header).unwrap();
        assert_eq!(c.username, "Mufasa");
        assert_eq!(c.uri, "/dir/index.html");
        // The RFC's realm is not the box's; check the arithmetic with it.
        c.realm = REALM.into();
        assert!(verify(
            &c,
            &ha1,
            "GET",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093"
        ));
        assert!(!verify(
            &c,
            &ha1,
            "POST",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093"
        ));
        assert!(!verify(&c, &ha1, "GET", "another-nonce"));
    }

    #[test]
    fn a_response_without_qop_verifies_and_a_wrong_password_does_not() {
        let nonce = "abc123";
        let good = ha1("bob", "bob-password");
        let ha2 = md5_hex("DESCRIBE:rtsp://box/hall");
        let response = md5_hex(&format!("{good}:{nonce}:{ha2}"));
        let header = format!(
            "Digest username=\"bob\", realm=\"cambox\", nonce=\"{nonce}\", uri=\"rtsp://box/hall\", response=\"{response}\""
        );
        let c = parse(&header).unwrap();
        assert!(verify(&c, &good, "DESCRIBE", nonce));
        assert!(!verify(&c, &ha1("bob", "guess"), "DESCRIBE", nonce));
        assert!(parse("Basic Ym9iOnB3").is_none());
        assert!(parse("Digest realm=\"x\"").is_none());
    }
}
