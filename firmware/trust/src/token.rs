//! Join tokens: what a box's boot partition carries to be enrolled without a manual step.
//!
//! A token is signed by the company's root CA and names the site its boxes join and when
//! it expires. One token enrols any number of boxes (one SD image for a whole site), so it
//! is a secret of that site's installers and should expire soon. It also names the CA's
//! key, so a box that has nothing else pins the CA by it: the CA certificate it then
//! fetches from a registry is trusted only if its key is the token's.
//!
//! `cambox-join1.<site, hex of UTF-8>.<expires, Unix seconds>.<CA key, 130 hex>.<signature,
//! 128 hex>`: hex, so that the token is one word in TOML, shells and URLs.

use std::time::SystemTime;

use cambox_mesh::hex::{from_hex, to_hex, vec_from_hex};

use crate::authority::Authority;
use crate::CaKey;

const PREFIX: &str = "cambox-join1";
/// What the signature covers besides the fields: no other signed cambox message reads as
/// a token.
const CONTEXT: &[u8] = b"cambox join token v1\0";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub site: String,
    pub expires: u64,
    pub ca_key: CaKey,
    signature: [u8; 64],
}

impl JoinToken {
    /// A token for boxes of `site`, valid until `expires`, signed by the root.
    pub fn issue(ca: &Authority, site: &str, expires: SystemTime) -> Result<JoinToken, String> {
        if !ca.is_root() {
            return Err("only the company's root CA issues join tokens".into());
        }
        if site.is_empty() {
            return Err("a join token names the site its boxes join".into());
        }
        let mut token = JoinToken {
            site: site.to_owned(),
            expires: crate::unix_secs(expires),
            ca_key: ca.public_key(),
            signature: [0; 64],
        };
        token.signature = ca.sign(&token.signed_bytes()).map_err(|e| e.to_string())?;
        Ok(token)
    }

    /// A token's fields; its signature is checked by [`Self::verify`].
    pub fn parse(text: &str) -> Result<JoinToken, String> {
        let bad = |what: &str| format!("not a cambox join token ({what})");
        let mut parts = text.trim().split('.');
        if parts.next() != Some(PREFIX) {
            return Err(bad(&format!("it does not start with {PREFIX}.")));
        }
        let mut next = |what: &str| parts.next().ok_or_else(|| bad(&format!("no {what}")));
        let site_hex = next("site")?;
        let site = vec_from_hex(site_hex)
            .filter(|b| !b.is_empty())
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| bad("the site is not hex of UTF-8"))?;
        let expires = next("expiry")?
            .parse()
            .map_err(|_| bad("the expiry is not a number"))?;
        let ca_key = CaKey::from_hex(next("CA key")?).ok_or_else(|| bad("the CA key"))?;
        let signature = from_hex::<64>(next("signature")?).ok_or_else(|| bad("the signature"))?;
        if parts.next().is_some() {
            return Err(bad("more than five parts"));
        }
        Ok(JoinToken {
            site,
            expires,
            ca_key,
            signature,
        })
    }

    /// Whether the token is the CA's (key `ca_key`) and valid at `now`.
    pub fn verify(&self, ca_key: &CaKey, now: SystemTime) -> Result<(), String> {
        if &self.ca_key != ca_key {
            return Err("the join token is another CA's".into());
        }
        if !ca_key.verify(&self.signed_bytes(), &self.signature) {
            return Err(
                "the join token's signature does not match: it was altered or forged".into(),
            );
        }
        if crate::unix_secs(now) >= self.expires {
            return Err(format!(
                "the join token expired at {}; make a new one with cambox ca token",
                crate::utc(crate::from_unix_secs(self.expires))
            ));
        }
        Ok(())
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut b = CONTEXT.to_vec();
        b.extend_from_slice(format!("{}\n{}\n", self.site, self.expires).as_bytes());
        b.extend_from_slice(&self.ca_key.0);
        b
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{PREFIX}.{}.{}.{}.{}",
            to_hex(self.site.as_bytes()),
            self.expires,
            self.ca_key.to_hex(),
            to_hex(&self.signature)
        )
    }
}
